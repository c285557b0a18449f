//! The rrweb annotator: computes a block's `Summary` from its rrweb events (as posthog-js
//! sends them or normalized), as PostHog's session_replay_events defines the fields, and merges
//! the summaries of a session's parts. It reads only the fields it needs with a scanner
//! (`jsonscan`) that steps over full snapshots and mutations without parsing them: the engine
//! calls it on the flush path.

use crate::jsonscan::{each_element, members, number, string};
use crate::markers::{MarkerKind, Marks};
use crate::summary::{Summary, ACTIVITY_GAP_MS, MAX_URLS};
use replaystore::{
    AnnotationPart, Annotator, BlockContext, Chunk, Facets, SeekRead, SessionData, Store,
};

/// Rage clicks (posthog-js's rule): 3 or more clicks, each within 1 s and 30 px of the last.
const RAGE_CLICKS: u32 = 3;
const RAGE_MS: f64 = 1000.0;
const RAGE_PX: f64 = 30.0;

#[derive(Debug, Default, Clone, Copy)]
pub struct RrwebAnnotator;

/// State carried through a session's events.
#[derive(Default)]
struct Walk {
    s: Summary,
    /// (count, x, y, ts) of the current run of nearby clicks.
    clicks: Option<(u32, f64, f64, f64)>,
    /// Where the moments worth a marker go, when a timeline is wanted (`markers`): the same
    /// walk decides what a click or a rage click is for the summary and for the timeline.
    marks: Option<Marks>,
}

impl Walk {
    fn activity(&mut self, ts: i64) {
        let s = &mut self.s;
        if s.first_activity_ts == 0 {
            s.first_activity_ts = ts;
        } else {
            let gap = ts - s.last_activity_ts;
            if (0..=ACTIVITY_GAP_MS).contains(&gap) {
                s.active_milliseconds += gap as u64;
            }
        }
        s.last_activity_ts = s.last_activity_ts.max(ts);
    }

    fn mark(&mut self, ts: f64, kind: MarkerKind, label: impl FnOnce() -> String) {
        if let Some(m) = &mut self.marks {
            m.push(ts as i64, kind, label());
        }
    }

    fn click(&mut self, x: f64, y: f64, ts: f64) {
        self.clicks = match self.clicks {
            Some((n, lx, ly, lts))
                if (x - lx).abs() + (y - ly).abs() < RAGE_PX && ts - lts < RAGE_MS =>
            {
                if n + 1 == RAGE_CLICKS {
                    self.s.rage_click_count += 1;
                    self.mark(ts, MarkerKind::RageClick, || format!("at {x:.0},{y:.0}"));
                }
                Some((n + 1, x, y, ts))
            }
            _ => Some((1, x, y, ts)),
        };
    }

    fn url(&mut self, href: String) {
        if self.s.urls.len() < MAX_URLS && !self.s.urls.contains(&href) {
            self.s.urls.push(href);
        }
    }

    /// One event: its type, timestamp and data (a slice of the payload, not parsed yet).
    fn event(&mut self, kind: i64, timestamp: f64, data: &[u8]) {
        self.s.event_count += 1;
        match kind {
            3 => self.incremental(timestamp, data),
            2 => {
                if let Some(m) = &mut self.marks {
                    m.full_snapshot(timestamp as i64);
                }
            }
            4 => self.meta(timestamp, data),
            5 => self.custom(timestamp, data),
            6 => self.plugin(timestamp, data),
            _ => {}
        }
    }

    /// An incremental snapshot (type 3): activity, mouse, clicks, keys.
    fn incremental(&mut self, timestamp: f64, data: &[u8]) {
        let ts = timestamp as i64;
        let (mut source, mut interaction, mut x, mut y) = (None, None, None, None);
        members(data, 0, &mut |k, v| match k {
            b"source" => source = number(v).map(|n| n as i64),
            b"type" => interaction = number(v).map(|n| n as i64),
            b"x" => x = number(v),
            b"y" => y = number(v),
            _ => {}
        });
        let Some(source) = source else { return };
        if (1..=7).contains(&source) || source == 12 {
            self.activity(ts);
        }
        match source {
            1 | 6 => self.s.mouse_activity_count += 1,
            2 => {
                self.s.mouse_activity_count += 1;
                // Click, ContextMenu, DblClick, TouchEnd.
                if matches!(interaction, Some(2 | 3 | 4 | 9)) {
                    self.s.click_count += 1;
                    self.mark(timestamp, MarkerKind::Click, String::new);
                    if let (Some(2), Some(x), Some(y)) = (interaction, x, y) {
                        self.click(x, y, timestamp);
                    }
                }
            }
            5 => self.s.keypress_count += 1,
            _ => {}
        }
    }

    /// A meta event (type 4): URL and viewport.
    fn meta(&mut self, ts: f64, data: &[u8]) {
        let (mut href, mut width, mut height) = (None, 0.0, 0.0);
        members(data, 0, &mut |k, v| match k {
            b"href" => href = string(v),
            b"width" => width = number(v).unwrap_or(0.0),
            b"height" => height = number(v).unwrap_or(0.0),
            _ => {}
        });
        if self.s.viewport_width == 0 {
            (self.s.viewport_width, self.s.viewport_height) = (width as u16, height as u16);
        }
        if let Some(h) = href {
            if let Some(m) = &mut self.marks {
                m.page_loaded(ts as i64, h.clone());
            }
            self.url(h);
        }
    }

    /// A custom event (type 5): posthog-js's `$pageview` carries the URL; other tags are
    /// the page's own events (a marker each when a timeline is wanted).
    fn custom(&mut self, ts: f64, data: &[u8]) {
        let (mut tag, mut payload) = (None, None);
        members(data, 0, &mut |k, v| match k {
            b"tag" => tag = Some(v),
            b"payload" => payload = Some(v),
            _ => {}
        });
        let pageview = tag == Some(&b"\"$pageview\""[..]);
        if !pageview {
            // posthog-js's own (`$session_options`, `$recording_started`...) are its
            // bookkeeping, not the page's events.
            let name = tag.and_then(string).unwrap_or_default();
            if !name.starts_with('$') {
                self.mark(ts, MarkerKind::Custom, || name);
            }
        }
        if let (true, Some(p)) = (pageview, payload) {
            let mut href = None;
            members(p, 0, &mut |k, v| {
                if k == b"href" {
                    href = string(v);
                }
            });
            if let Some(h) = href {
                self.mark(ts, MarkerKind::PageView, || h.clone());
                self.url(h);
            }
        }
    }

    /// A plugin event (type 6): console logs by level.
    fn plugin(&mut self, ts: f64, data: &[u8]) {
        let (mut console, mut payload) = (false, None);
        members(data, 0, &mut |k, v| match k {
            b"plugin" => console = v == b"\"rrweb/console@1\"",
            b"payload" => payload = Some(v),
            _ => {}
        });
        if !console {
            return;
        }
        let (mut level, mut message) = (Vec::new(), None);
        if let Some(p) = payload {
            members(p, 0, &mut |k, v| match k {
                b"level" => level = v.to_vec(),
                b"payload" => message = Some(v),
                _ => {}
            });
        }
        match level.as_slice() {
            b"\"warn\"" | b"\"countReset\"" => self.s.console_warn_count += 1,
            b"\"error\"" | b"\"assert\"" => {
                self.s.console_error_count += 1;
                self.mark(ts, MarkerKind::ConsoleError, || {
                    message.map(console_text).unwrap_or_default()
                });
            }
            _ => self.s.console_log_count += 1,
        }
    }

    /// Every event of one payload (a JSON array of rrweb events).
    fn payload(&mut self, payload: &[u8]) {
        each_element(payload, 0, &mut |at| {
            let (mut kind, mut ts, mut data) = (None, 0.0, &b"{}"[..]);
            let end = members(payload, at, &mut |k, v| match k {
                b"type" => kind = number(v).map(|n| n as i64),
                b"timestamp" => ts = number(v).unwrap_or(0.0),
                b"data" => data = v,
                _ => {}
            })?;
            if let Some(kind) = kind {
                self.event(kind, ts, data);
            }
            Some(end)
        });
    }
}

/// rrweb's console plugin sends the logged values as an array of strings (each JSON-encoded
/// by the page): the first, unquoted, is the marker's label.
fn console_text(values: &[u8]) -> String {
    let mut first = None;
    each_element(values, 0, &mut |at| {
        let end = crate::jsonscan::skip_value(values, at)?;
        first = string(&values[at..end]);
        None
    });
    first.unwrap_or_default()
}

/// The marks of plain rrweb payloads, in the order given (`markers::timeline`).
pub(crate) fn marks<'a>(payloads: impl IntoIterator<Item = (&'a [u8], Option<&'a str>)>) -> Marks {
    let mut walk = Walk {
        marks: Some(Marks::default()),
        ..Walk::default()
    };
    for (payload, window) in payloads {
        if let Some(m) = &mut walk.marks {
            m.window = window.map(String::from);
        }
        walk.payload(payload);
    }
    let mut marks = walk.marks.unwrap_or_default();
    marks.page_without_snapshot();
    marks
}

impl RrwebAnnotator {
    /// The summary of one block's chunks (one session, in append order).
    pub fn summarize(&self, chunks: &[Chunk]) -> Summary {
        let mut walk = Walk::default();
        for c in chunks {
            // Each element of the payload array is an event; anything else is not counted.
            walk.payload(&c.payload);
        }
        walk.s.add_windows(chunks);
        walk.s
    }
}

/// Where a chunk's first keyframe starts: a meta event (type 4) directly followed by a full
/// snapshot (type 2), the pair rrweb records at each page load and each checkout
/// (`checkoutEveryNms`), from which a player can start without any earlier event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeAt {
    /// Byte offset of the meta event in the payload (a JSON array of events).
    pub offset: usize,
    /// The meta event's timestamp (the SDK's clock).
    pub ts_ms: i64,
}

/// The first keyframe of a chunk payload (a JSON array of rrweb events), found with the
/// scanner: the full snapshot is stepped over, never parsed.
pub fn first_keyframe(payload: &[u8]) -> Option<KeyframeAt> {
    // The meta event seen last, if it was the event just before.
    let mut meta: Option<KeyframeAt> = None;
    let mut found = None;
    each_element(payload, 0, &mut |at| {
        let (mut kind, mut ts) = (None, 0.0);
        let end = members(payload, at, &mut |k, v| match k {
            b"type" => kind = number(v).map(|n| n as i64),
            b"timestamp" => ts = number(v).unwrap_or(0.0),
            _ => {}
        })?;
        match (kind, meta) {
            (Some(2), Some(m)) => {
                found = Some(m);
                return None; // stop: the first one is all we need
            }
            (Some(4), _) => {
                meta = Some(KeyframeAt {
                    offset: at,
                    ts_ms: ts as i64,
                })
            }
            _ => meta = None,
        }
        Some(end)
    });
    found
}

/// The payload's events from its first keyframe on (a JSON array again), or `None` when it
/// has no keyframe: what a read from a keyframe plays first (`Store::read_session_from`
/// returns the whole chunk that holds it).
pub fn from_first_keyframe(payload: &[u8]) -> Option<Vec<u8>> {
    let k = first_keyframe(payload)?;
    let mut out = Vec::with_capacity(payload.len() - k.offset + 1);
    out.push(b'[');
    out.extend_from_slice(&payload[k.offset..]);
    Some(out)
}

/// Makes a read from a keyframe start at it: the first chunk (the one holding the keyframe)
/// loses the events before its meta + full snapshot, so a player gets that pair, then every
/// later event. A whole read (no keyframe) is left as it is.
pub fn trim_to_keyframe(read: &mut SeekRead) {
    let Some(first) = read
        .data
        .as_mut()
        .filter(|_| read.keyframe_ms.is_some())
        .and_then(|d| d.chunks.first_mut())
    else {
        return;
    };
    if let Some(trimmed) = from_first_keyframe(&first.payload) {
        first.payload = trimmed;
    }
}

/// A session as a player wants it: whole, or from `from_ms` on (`Store::read_session_from`:
/// the meta + full snapshot at or before it, then every later event). What `export
/// --from-ms` and the server's `events?from_ms=` return.
pub fn read_for_playback(
    store: &Store,
    team: u64,
    session: &str,
    from_ms: Option<i64>,
) -> replaystore::Result<Option<SessionData>> {
    let Some(from_ms) = from_ms else {
        return store.read_session(team, session);
    };
    let mut read = store.read_session_from(team, session, from_ms)?;
    trim_to_keyframe(&mut read);
    Ok(read.data)
}

impl Annotator for RrwebAnnotator {
    fn name(&self) -> &'static str {
        "rrweb"
    }

    /// The block's summary, with the clock-skew correction the store applied to it.
    fn analyze(&self, chunks: &[Chunk], ctx: &BlockContext) -> Option<Vec<u8>> {
        let mut summary = self.summarize(chunks);
        summary.clock_offset_ms = ctx.clock_offset_ms;
        Some(summary.to_bytes())
    }

    /// The parts' summaries merged in time order; a part that does not decode (not written by
    /// this annotator) counts as empty.
    fn merge(&self, parts: &[AnnotationPart<'_>]) -> Vec<u8> {
        let parts = parts
            .iter()
            .map(|p| (p.first_ts_ms, decode_or_empty(p.bytes)))
            .collect();
        Summary::merge_in_order(parts).to_bytes()
    }

    /// The chunk's first meta + full snapshot pair, by the meta event's timestamp.
    fn keyframe(&self, chunk: &Chunk) -> Option<i64> {
        first_keyframe(&chunk.payload).map(|k| k.ts_ms)
    }

    /// What `ActivityFilter` compares, in `crate::listing::facet` order, and the URLs.
    fn facets(&self, annotation: &[u8]) -> Facets {
        crate::listing::facets_of(&decode_or_empty(annotation))
    }
}

/// The summary in `bytes`, or an empty one (with a warning) when they are not one.
pub(crate) fn decode_or_empty(bytes: &[u8]) -> Summary {
    Summary::decode(bytes).unwrap_or_else(|e| {
        log::warn!("annotation of {} bytes: {e}", bytes.len());
        Summary::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_a_meta_followed_by_a_full_snapshot() -> Result<(), Box<dyn std::error::Error>>
    {
        let payload = br#"[{"type":3,"data":{"source":1},"timestamp":5},{"type":4,"data":{"href":"x"},"timestamp":7},{"type":3,"data":{},"timestamp":8},{"type":4,"data":{},"timestamp":10},{"type":2,"data":{"node":{"type":0,"childNodes":[]}},"timestamp":11},{"type":3,"data":{},"timestamp":12}]"#;
        let k = first_keyframe(payload).ok_or("no keyframe found")?;
        assert_eq!(
            k.ts_ms, 10,
            "a meta not followed by a full snapshot is no keyframe"
        );
        let trimmed = from_first_keyframe(payload).ok_or("no keyframe")?;
        let events: Vec<serde_json::Value> = serde_json::from_slice(&trimmed)?;
        let kinds: Vec<i64> = events.iter().filter_map(|e| e["type"].as_i64()).collect();
        assert_eq!(kinds, vec![4, 2, 3]);
        let no_full = br#"[{"type":4,"data":{},"timestamp":1},{"type":3,"data":{},"timestamp":2}]"#;
        assert_eq!(first_keyframe(no_full), None);
        assert_eq!(first_keyframe(b"not json"), None);
        let chunk = Chunk {
            team: 1,
            session_id: "s".into(),
            person: "p".into(),
            window_id: None,
            first_ts_ms: 5,
            last_ts_ms: 12,
            sent_at_ms: None,
            payload: payload.to_vec(),
        };
        assert_eq!(RrwebAnnotator.keyframe(&chunk), Some(10));
        Ok(())
    }
}
