//! Recordings as PostHog lists them: an engine `SessionSummary` with its annotation decoded
//! (the JSON row of `replaystore ls --json` and the server's `/api/sessions`), and the filters
//! on what happened in a session (`ActivityFilter`, an engine `AnnotationFilter`).

use std::sync::Arc;

use replaystore::{AnnotationFilter, Facets, SessionFilter, SessionSummary, SortBy};
use serde::Serialize;

use replaystore::Annotator;

use crate::rrweb::{decode_or_empty, RrwebAnnotator};
use crate::summary::Summary;

/// What happened in a listed or read session: its annotation decoded, an empty summary when it
/// has none.
pub fn activity(s: &SessionSummary) -> Summary {
    s.annotation
        .as_deref()
        .map(decode_or_empty)
        .unwrap_or_default()
}

/// One listed session as JSON: the engine's figures, PostHog's `size` and `first_url`, and the
/// summary's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    pub team: u64,
    pub session_id: String,
    pub person: String,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub chunk_count: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub duration_ms: i64,
    /// PostHog's `size`: the recording's bytes as sent (raw_bytes).
    pub size: u64,
    pub first_url: Option<String>,
    /// What happened in it (clicks, console errors, active time, URLs...).
    #[serde(flatten)]
    pub activity: Summary,
}

impl SessionRow {
    pub fn new(s: &SessionSummary) -> SessionRow {
        let activity = activity(s);
        SessionRow {
            team: s.team,
            session_id: s.session_id.clone(),
            person: s.person.clone(),
            first_ts_ms: s.first_ts_ms,
            last_ts_ms: s.last_ts_ms,
            chunk_count: s.chunk_count,
            raw_bytes: s.raw_bytes,
            stored_bytes: s.stored_bytes,
            duration_ms: s.duration_ms,
            size: s.raw_bytes,
            first_url: activity.first_url().map(String::from),
            activity,
        }
    }

    /// The rows of a listing, in its order.
    pub fn all(sessions: &[SessionSummary]) -> Vec<SessionRow> {
        sessions.iter().map(SessionRow::new).collect()
    }
}

/// Sessions by what happened in them. Every set field must match; a session without a summary
/// counts as one with nothing in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    pub min_active_ms: Option<u64>,
    pub has_console_errors: bool,
    pub has_rage_clicks: bool,
    pub min_clicks: Option<u32>,
    /// A visited URL contains this.
    pub url_contains: Option<String>,
}

impl ActivityFilter {
    pub fn matches_summary(&self, a: &Summary) -> bool {
        self.min_active_ms
            .is_none_or(|m| a.active_milliseconds >= m)
            && (!self.has_console_errors || a.console_error_count > 0)
            && (!self.has_rage_clicks || a.rage_click_count > 0)
            && self.min_clicks.is_none_or(|m| a.click_count >= m)
            && self
                .url_contains
                .as_deref()
                .is_none_or(|u| a.urls.iter().any(|x| x.contains(u)))
    }

    /// `filter` that also keeps only the sessions this matches (unchanged when this filter
    /// is empty: no annotation is decoded then).
    pub fn apply(self, mut filter: SessionFilter) -> SessionFilter {
        if self != ActivityFilter::default() {
            filter.annotation = Some(Arc::new(self));
        }
        filter
    }
}

impl AnnotationFilter for ActivityFilter {
    fn matches(&self, annotation: Option<&[u8]>) -> bool {
        let summary = annotation.map(decode_or_empty).unwrap_or_default();
        self.matches_summary(&summary)
    }

    /// The same test on the facets `RrwebAnnotator` made (`facets_of`); another annotator's
    /// facets mean something else, so those go back to `matches`.
    fn matches_facets(&self, annotator: &str, facets: &Facets) -> Option<bool> {
        if annotator != RrwebAnnotator.name() {
            return None;
        }
        let n = |i: usize| facets.numbers.get(i).copied().unwrap_or(0);
        Some(
            self.min_active_ms.is_none_or(|m| n(facet::ACTIVE_MS) >= m)
                && (!self.has_console_errors || n(facet::CONSOLE_ERRORS) > 0)
                && (!self.has_rage_clicks || n(facet::RAGE_CLICKS) > 0)
                && self
                    .min_clicks
                    .is_none_or(|m| n(facet::CLICKS) >= u64::from(m))
                && self
                    .url_contains
                    .as_deref()
                    .is_none_or(|u| facets.texts.iter().any(|x| x.contains(u))),
        )
    }
}

/// Positions of `RrwebAnnotator`'s facet numbers (what `ActivityFilter` filters on).
pub mod facet {
    pub const ACTIVE_MS: usize = 0;
    pub const CONSOLE_ERRORS: usize = 1;
    pub const RAGE_CLICKS: usize = 2;
    pub const CLICKS: usize = 3;
}

/// The facets of a summary: the numbers at the `facet` positions, the URLs as texts.
pub fn facets_of(s: &Summary) -> Facets {
    Facets {
        numbers: vec![
            s.active_milliseconds,
            u64::from(s.console_error_count),
            u64::from(s.rage_click_count),
            u64::from(s.click_count),
        ],
        texts: s.urls.clone(),
    }
}

/// The filters, order and paging of a listing as `replaystore ls` flags and the console's
/// `/api/sessions` query parameters name them (one conversion for both).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub person: Option<String>,
    /// Active at or after this time (ms since epoch).
    pub from_ms: Option<i64>,
    /// Active at or before this time (ms since epoch).
    pub to_ms: Option<i64>,
    pub min_duration_s: Option<f64>,
    pub max_duration_s: Option<f64>,
    pub min_active_s: Option<f64>,
    /// Only sessions with console errors.
    pub errors: bool,
    /// Only sessions with rage clicks.
    pub rage: bool,
    pub min_clicks: Option<u32>,
    /// A visited URL contains this.
    pub url: Option<String>,
    /// `duration` sorts by duration; anything else by start.
    pub sort: String,
    pub desc: bool,
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn into_filter(self) -> SessionFilter {
        let ms = |s: f64| (s * 1000.0) as i64;
        let activity = ActivityFilter {
            min_active_ms: self.min_active_s.map(|s| ms(s) as u64),
            has_console_errors: self.errors,
            has_rage_clicks: self.rage,
            min_clicks: self.min_clicks,
            url_contains: self.url,
        };
        activity.apply(SessionFilter {
            person: self.person,
            from_ts_ms: self.from_ms,
            to_ts_ms: self.to_ms,
            min_duration_ms: self.min_duration_s.map(ms),
            max_duration_ms: self.max_duration_s.map(ms),
            annotation: None,
            sort: if self.sort == "duration" {
                SortBy::Duration
            } else {
                SortBy::StartTime
            },
            descending: self.desc,
            limit: self.limit,
            cursor: self.cursor,
        })
    }
}
