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
        self.from_ts_ms.is_none_or(|f| s.last_ts_ms >= f)
            && self.to_ts_ms.is_none_or(|t| s.first_ts_ms <= t)
            && self.min_duration_ms.is_none_or(|d| s.duration_ms >= d)
            && self.max_duration_ms.is_none_or(|d| s.duration_ms <= d)
            && self
                .annotation
                .as_ref()
                .is_none_or(|f| f.matches(s.annotation.as_deref()))
    }

    fn key<'a>(&self, s: &'a SessionSummary) -> (i64, &'a str) {
        let k = match self.sort {
            SortBy::StartTime => s.first_ts_ms,
            SortBy::Duration => s.duration_ms,
        };
        (k, s.session_id.as_str())
    }

    /// Sorts, skips past the cursor, cuts at the limit.
    pub(crate) fn page(&self, mut all: Vec<SessionSummary>) -> Page {
        all.retain(|s| self.matches(s));
        all.sort_unstable_by(|a, b| self.key(a).cmp(&self.key(b)));
        if self.descending {
            all.reverse();
        }
        if let Some((k, id)) = self.cursor.as_deref().and_then(parse_cursor) {
            let cursor = (k, id.as_str());
            all.retain(|s| {
                let key = self.key(s);
                if self.descending {
                    key < cursor
                } else {
                    key > cursor
                }
            });
        }
        let limit = self.limit.unwrap_or(usize::MAX);
        let more = all.len() > limit;
        all.truncate(limit);
        let next_cursor = more
            .then(|| {
                all.last().map(|s| {
                    let (k, id) = self.key(s);
                    format!("{k}:{id}")
                })
            })
            .flatten();
        Page {
            sessions: all,
            next_cursor,
        }
    }
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (k, id) = c.split_once(':')?;
    Some((k.parse().ok()?, id.to_string()))
}
