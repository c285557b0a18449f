//! Finding sessions: the filters, sort orders and paging of `list_sessions` / `list_page`,
//! applied to what footers and indexes hold (never payloads). What happened in a session is the
//! annotator's to say: an `AnnotationFilter` reads the annotations.

use std::sync::Arc;

use crate::annotation::AnnotationFilter;
use crate::read::SessionSummary;

/// How listed sessions are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortBy {
    #[default]
    StartTime,
    Duration,
}

/// Which sessions to list. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub person: Option<String>,
    /// Active at or after this time (ms since epoch).
    pub from_ts_ms: Option<i64>,
    /// Active at or before this time.
    pub to_ts_ms: Option<i64>,
    pub min_duration_ms: Option<i64>,
    pub max_duration_ms: Option<i64>,
    /// Decides by the session's annotation (for recordings:
    /// `replaystore_posthog::ActivityFilter`).
    pub annotation: Option<Arc<dyn AnnotationFilter>>,
    pub sort: SortBy,
    pub descending: bool,
    pub limit: Option<usize>,
    /// Continue after this point (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub sessions: Vec<SessionSummary>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl SessionFilter {
    pub fn matches(&self, s: &SessionSummary) -> bool {
        self.matches_span(s.first_ts_ms, s.last_ts_ms)
            && self
                .annotation
                .as_ref()
                .is_none_or(|f| f.matches(s.annotation.as_deref()))
    }

    /// The time and duration conditions alone, on a session's first and last timestamps.
    pub(crate) fn matches_span(&self, first_ts_ms: i64, last_ts_ms: i64) -> bool {
        let duration = last_ts_ms - first_ts_ms;
        self.from_ts_ms.is_none_or(|f| last_ts_ms >= f)
            && self.to_ts_ms.is_none_or(|t| first_ts_ms <= t)
            && self.min_duration_ms.is_none_or(|d| duration >= d)
            && self.max_duration_ms.is_none_or(|d| duration <= d)
    }

    /// The sort key of a session: what `sort` orders by, then the id.
    pub(crate) fn sort_key(&self, first_ts_ms: i64, last_ts_ms: i64) -> i64 {
        match self.sort {
            SortBy::StartTime => first_ts_ms,
            SortBy::Duration => last_ts_ms - first_ts_ms,
        }
    }

    fn key<'a>(&self, s: &'a SessionSummary) -> (i64, &'a str) {
        (
            self.sort_key(s.first_ts_ms, s.last_ts_ms),
            s.session_id.as_str(),
        )
    }

    /// The decoded cursor, if any.
    pub(crate) fn cursor_key(&self) -> Option<(i64, String)> {
        self.cursor.as_deref().and_then(parse_cursor)
    }

    /// Whether a session of sort key `key` comes after `cursor` in this listing's order.
    pub(crate) fn after(&self, key: (i64, &str), cursor: &(i64, String)) -> bool {
        let cursor = (cursor.0, cursor.1.as_str());
        if self.descending {
            key < cursor
        } else {
            key > cursor
        }
    }

    /// The page of `sorted` (already filtered, in this listing's order, past the cursor, at
    /// most one more than the limit): cut at the limit, with the cursor of the next page.
    pub(crate) fn cut(&self, mut sorted: Vec<SessionSummary>) -> Page {
        let limit = self.limit.unwrap_or(usize::MAX);
        let more = sorted.len() > limit;
        sorted.truncate(limit);
        let next_cursor = more
            .then(|| {
                sorted.last().map(|s| {
                    let (k, id) = self.key(s);
                    format!("{k}:{id}")
                })
            })
            .flatten();
        Page {
            sessions: sorted,
            next_cursor,
        }
    }

    /// Sorts, skips past the cursor, cuts at the limit.
    pub(crate) fn page(&self, mut all: Vec<SessionSummary>) -> Page {
        all.retain(|s| self.matches(s));
        all.sort_unstable_by(|a, b| self.key(a).cmp(&self.key(b)));
        if self.descending {
            all.reverse();
        }
        if let Some(cursor) = self.cursor_key() {
            all.retain(|s| self.after(self.key(s), &cursor));
        }
        self.cut(all)
    }
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (k, id) = c.split_once(':')?;
    Some((k.parse().ok()?, id.to_string()))
}
