//! A recording's timeline for the replay page: the moments worth a marker (clicks, rage
//! clicks, console errors, page views, the page's custom events), the pages visited with
//! their times, and the windows. Computed from the session's events by the same walk that
//! writes its summary (`rrweb`), so a marker and a count always agree on what a rage click is.

use serde::Serialize;

use replaystore::{PayloadTransform, StoredChunk};

use crate::posthog::Normalize;

/// Markers kept per session: a 3-hour recording can click thousands of times, and a timeline
/// cannot show more than a few hundred anyway. Rarer kinds are kept first (see `Timeline`).
pub const MAX_MARKERS: usize = 2000;
/// Bytes kept of a marker's label.
const MAX_LABEL: usize = 200;
/// Page views of the same URL this close are one (posthog-js's `$pageview` and rrweb's meta
/// event and full snapshot for the same load).
const SAME_VIEW_MS: i64 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    // In the order markers are kept when there are too many: the rare, telling ones first.
    ConsoleError,
    RageClick,
    PageView,
    Custom,
    Click,
}

/// One moment of the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    pub ts_ms: i64,
    pub kind: MarkerKind,
    /// The URL of a page view, the message of a console error, the tag of a custom event.
    pub label: String,
    pub window_id: Option<String>,
}

/// What the walk collects (`rrweb::marks`).
#[derive(Debug, Default)]
pub(crate) struct Marks {
    pub(crate) list: Vec<Marker>,
    /// The window of the chunk being walked.
    pub(crate) window: Option<String>,
    /// A page load (meta event) waiting for its full snapshot.
    pending_page: Option<(i64, String)>,
}

impl Marks {
    /// A page loaded (rrweb's meta event). Its marker goes at the full snapshot that follows:
    /// a player seeking there shows the page, where at the meta event it shows the page before.
    pub(crate) fn page_loaded(&mut self, ts_ms: i64, href: String) {
        self.page_without_snapshot();
        self.pending_page = Some((ts_ms, href));
    }

    pub(crate) fn full_snapshot(&mut self, ts_ms: i64) {
        if let Some((_, href)) = self.pending_page.take() {
            self.push(ts_ms, MarkerKind::PageView, href);
        }
    }

    /// A page load no full snapshot followed: marked at its own time.
    pub(crate) fn page_without_snapshot(&mut self) {
        if let Some((ts, href)) = self.pending_page.take() {
            self.push(ts, MarkerKind::PageView, href);
        }
    }

    pub(crate) fn push(&mut self, ts_ms: i64, kind: MarkerKind, mut label: String) {
        if label.len() > MAX_LABEL {
            let mut end = MAX_LABEL;
            while !label.is_char_boundary(end) {
                end -= 1;
            }
            label.truncate(end);
        }
        self.list.push(Marker {
            ts_ms,
            kind,
            label,
            window_id: self.window.clone(),
        });
    }
}

/// A page the person was on, from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageVisit {
    pub ts_ms: i64,
    pub url: String,
}

/// One window (browser tab) of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowSpan {
    pub window_id: Option<String>,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub chunks: u64,
}

/// The replay page's side panel and marker bar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// The first and last event timestamps (0 when none).
    pub start_ms: i64,
    pub end_ms: i64,
    /// In time order; at most `MAX_MARKERS`, the rarer kinds kept first when cut.
    pub markers: Vec<Marker>,
    /// Markers left out by the cap.
    pub markers_dropped: usize,
    /// Page views in time order, a page repeated only when the person left it in between.
    pub pages: Vec<PageVisit>,
    pub windows: Vec<WindowSpan>,
}

/// The timeline of a session's chunks (in the store's order), posthog-js's in-event gzip
/// inflated first so compressed events are seen too.
pub fn timeline(chunks: &[StoredChunk]) -> Timeline {
    let plain: Vec<Option<Vec<u8>>> = chunks
        .iter()
        .map(|c| Normalize.transform(&c.payload))
        .collect();
    let marks = crate::rrweb::marks(chunks.iter().zip(&plain).map(|(c, p)| {
        let bytes = p.as_deref().unwrap_or(&c.payload);
        (bytes, c.window_id.as_deref())
    }));
    let mut markers = marks.list;
    markers.sort_by_key(|m| m.ts_ms);
    merge_views(&mut markers);
    let pages = pages(&markers);
    let dropped = cap(&mut markers);
    Timeline {
        start_ms: chunks.iter().map(|c| c.first_ts_ms).min().unwrap_or(0),
        end_ms: chunks.iter().map(|c| c.last_ts_ms).max().unwrap_or(0),
        markers,
        markers_dropped: dropped,
        pages,
        windows: windows(chunks),
    }
}

/// One marker per page load: of page views of the same URL with no other page view between
/// them and under `SAME_VIEW_MS` apart, the last stays (the one a seek shows the page at).
fn merge_views(markers: &mut Vec<Marker>) {
    let mut last_view: Option<usize> = None;
    let mut drop = vec![false; markers.len()];
    for (i, m) in markers.iter().enumerate() {
        if m.kind != MarkerKind::PageView {
            continue;
        }
        if let Some(j) = last_view {
            let prev = &markers[j];
            if prev.label == m.label && m.ts_ms - prev.ts_ms <= SAME_VIEW_MS {
                drop[j] = true;
            }
        }
        last_view = Some(i);
    }
    let mut i = 0;
    markers.retain(|_| {
        i += 1;
        !drop[i - 1]
    });
}

/// The page views, consecutive repeats of a URL (a meta event and posthog-js's `$pageview`
/// for the same load) merged.
fn pages(markers: &[Marker]) -> Vec<PageVisit> {
    let mut out: Vec<PageVisit> = Vec::new();
    for m in markers.iter().filter(|m| m.kind == MarkerKind::PageView) {
        if out.last().is_none_or(|p| p.url != m.label) {
            out.push(PageVisit {
                ts_ms: m.ts_ms,
                url: m.label.clone(),
            });
        }
    }
    out
}

/// Keeps at most `MAX_MARKERS` (rarer kinds first, then earlier), in time order; returns how
/// many it dropped.
fn cap(markers: &mut Vec<Marker>) -> usize {
    if markers.len() <= MAX_MARKERS {
        return 0;
    }
    let dropped = markers.len() - MAX_MARKERS;
    markers.sort_by_key(|m| (m.kind, m.ts_ms));
    markers.truncate(MAX_MARKERS);
    markers.sort_by_key(|m| m.ts_ms);
    dropped
}

fn windows(chunks: &[StoredChunk]) -> Vec<WindowSpan> {
    let mut out: Vec<WindowSpan> = Vec::new();
    for c in chunks {
        match out.iter_mut().find(|w| w.window_id == c.window_id) {
            Some(w) => {
                w.first_ts_ms = w.first_ts_ms.min(c.first_ts_ms);
                w.last_ts_ms = w.last_ts_ms.max(c.last_ts_ms);
                w.chunks += 1;
            }
            None => out.push(WindowSpan {
                window_id: c.window_id.clone(),
                first_ts_ms: c.first_ts_ms,
                last_ts_ms: c.last_ts_ms,
                chunks: 1,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(window: &str, first: i64, last: i64, payload: &str) -> StoredChunk {
        StoredChunk {
            window_id: Some(window.into()),
            first_ts_ms: first,
            last_ts_ms: last,
            arrival_ms: 0,
            keyframe_ms: None,
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn marks_clicks_rage_errors_pages_and_custom_events() {
        let click = |ts: i64, x: i64| {
            format!(
                r#"{{"type":3,"data":{{"source":2,"type":2,"x":{x},"y":10}},"timestamp":{ts}}}"#
            )
        };
        let first = format!(
            r#"[{{"type":4,"data":{{"href":"https://shop/a","width":800,"height":600}},"timestamp":1000}},{},{},{},{},{{"type":6,"data":{{"plugin":"rrweb/console@1","payload":{{"level":"error","payload":["\"boom happened\""]}}}},"timestamp":1500}}]"#,
            click(1100, 10),
            click(1200, 12),
            click(1300, 14),
            click(4000, 500)
        );
        let second = r#"[{"type":5,"data":{"tag":"$pageview","payload":{"href":"https://shop/b"}},"timestamp":5000},{"type":5,"data":{"tag":"checkout-failed","payload":{}},"timestamp":5100}]"#;
        let t = timeline(&[
            chunk("w1", 1000, 4000, &first),
            chunk("w2", 5000, 5100, second),
        ]);
        let kinds: Vec<(i64, MarkerKind)> = t.markers.iter().map(|m| (m.ts_ms, m.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1000, MarkerKind::PageView),
                (1100, MarkerKind::Click),
                (1200, MarkerKind::Click),
                (1300, MarkerKind::Click),
                (1300, MarkerKind::RageClick),
                (1500, MarkerKind::ConsoleError),
                (4000, MarkerKind::Click),
                (5000, MarkerKind::PageView),
                (5100, MarkerKind::Custom),
            ]
        );
        assert_eq!(t.markers[5].label, "\"boom happened\"");
        assert_eq!(t.markers[8].label, "checkout-failed");
        assert_eq!(t.markers[8].window_id.as_deref(), Some("w2"));
        assert_eq!(
            t.pages,
            [
                PageVisit {
                    ts_ms: 1000,
                    url: "https://shop/a".into()
                },
                PageVisit {
                    ts_ms: 5000,
                    url: "https://shop/b".into()
                },
            ]
        );
        assert_eq!((t.start_ms, t.end_ms, t.windows.len()), (1000, 5100, 2));
    }

    #[test]
    fn a_page_load_is_one_marker_at_its_full_snapshot() {
        let payload = r#"[{"type":5,"data":{"tag":"$pageview","payload":{"href":"https://s/p2"}},"timestamp":90},{"type":4,"data":{"href":"https://s/p2"},"timestamp":100},{"type":2,"data":{},"timestamp":105},{"type":4,"data":{"href":"https://s/p3"},"timestamp":9000}]"#;
        let t = timeline(&[chunk("w", 90, 9000, payload)]);
        let views: Vec<(i64, &str)> = t
            .markers
            .iter()
            .map(|m| (m.ts_ms, m.label.as_str()))
            .collect();
        assert_eq!(views, [(105, "https://s/p2"), (9000, "https://s/p3")]);
    }

    #[test]
    fn too_many_markers_keep_the_rare_kinds() {
        let clicks: Vec<String> = (0..MAX_MARKERS as i64 + 10)
            .map(|i| {
                format!(
                    r#"{{"type":3,"data":{{"source":2,"type":2,"x":{},"y":0}},"timestamp":{}}}"#,
                    i * 100,
                    10 + i * 2000
                )
            })
            .collect();
        let payload = format!(
            r#"[{},{{"type":5,"data":{{"tag":"late"}},"timestamp":99999999}}]"#,
            clicks.join(",")
        );
        let t = timeline(&[chunk("w", 0, 0, &payload)]);
        assert_eq!(t.markers.len(), MAX_MARKERS);
        assert_eq!(t.markers_dropped, 11);
        assert_eq!(t.markers.last().map(|m| m.kind), Some(MarkerKind::Custom));
    }
}
