//! What happened in (part of) a recording: PostHog's session summary (field names follow its
//! `session_replay_events`), computed per block by `RrwebAnnotator`, stored by the engine as the
//! block's annotation, merged per session, and decoded here for listings and filters. The
//! encoding is the one the engine wrote itself before annotations were opaque: stores written
//! then list the same summaries.

use serde::Serialize;

use replaystore::Chunk;

/// URLs kept per session.
pub const MAX_URLS: usize = 25;
/// Window ids kept per session.
const MAX_WINDOWS: usize = 16;
/// An activity segment closes after this long without activity.
pub const ACTIVITY_GAP_MS: i64 = 5000;
/// Version 2 added `clock_offset_ms`; version 1 summaries still decode (offset 0).
const VERSION: u8 = 2;
/// Bytes kept of each URL and window id (cut at a character boundary). With the caps on
/// their numbers, an encoded summary stays under 64 KiB, the engine's `MAX_ANNOTATION_BYTES`.
const MAX_STRING: usize = 2048;

/// Why bytes are not a summary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a session summary: {0}")]
pub struct DecodeError(&'static str);

/// What happened in (part of) a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub event_count: u64,
    pub click_count: u32,
    pub keypress_count: u32,
    pub mouse_activity_count: u32,
    pub console_log_count: u32,
    pub console_warn_count: u32,
    pub console_error_count: u32,
    pub rage_click_count: u32,
    pub active_milliseconds: u64,
    /// First and last activity timestamps (0 when none): merging two parts of a session adds
    /// the gap between them to the active time when it is under `ACTIVITY_GAP_MS`.
    #[serde(skip)]
    pub first_activity_ts: i64,
    #[serde(skip)]
    pub last_activity_ts: i64,
    pub viewport_width: u16,
    pub viewport_height: u16,
    pub urls: Vec<String>,
    pub windows: Vec<String>,
    /// The clock-skew correction the store applied to this session's timestamps (store clock
    /// minus the client's at send time), the largest in magnitude if it varied; 0 when none.
    pub clock_offset_ms: i64,
}

impl Summary {
    pub fn first_url(&self) -> Option<&str> {
        self.urls.first().map(String::as_str)
    }

    /// Adds `later`, the summary of a part of the session that comes after this one.
    pub fn merge(&mut self, later: &Summary) {
        self.event_count += later.event_count;
        self.click_count += later.click_count;
        self.keypress_count += later.keypress_count;
        self.mouse_activity_count += later.mouse_activity_count;
        self.console_log_count += later.console_log_count;
        self.console_warn_count += later.console_warn_count;
        self.console_error_count += later.console_error_count;
        self.rage_click_count += later.rage_click_count;
        self.active_milliseconds += later.active_milliseconds;
        if later.first_activity_ts != 0 {
            if self.last_activity_ts != 0 {
                let gap = later.first_activity_ts - self.last_activity_ts;
                if (0..=ACTIVITY_GAP_MS).contains(&gap) {
                    self.active_milliseconds += gap as u64;
                }
            } else {
                self.first_activity_ts = later.first_activity_ts;
            }
            self.last_activity_ts = self.last_activity_ts.max(later.last_activity_ts);
        }
        if self.viewport_width == 0 {
            (self.viewport_width, self.viewport_height) =
                (later.viewport_width, later.viewport_height);
        }
        for u in &later.urls {
            if self.urls.len() < MAX_URLS && !self.urls.contains(u) {
                self.urls.push(u.clone());
            }
        }
        for w in &later.windows {
            if self.windows.len() < MAX_WINDOWS && !self.windows.contains(w) {
                self.windows.push(w.clone());
            }
        }
        if later.clock_offset_ms.unsigned_abs() > self.clock_offset_ms.unsigned_abs() {
            self.clock_offset_ms = later.clock_offset_ms;
        }
    }

    /// Merges parts given with their first timestamps, in time order.
    pub fn merge_in_order(mut parts: Vec<(i64, Summary)>) -> Summary {
        parts.sort_by_key(|(ts, _)| *ts);
        let mut out = Summary::default();
        for (_, s) in &parts {
            out.merge(s);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        *self == Summary::default()
    }

    /// Records a window id (the engine knows them from the chunks).
    pub fn add_windows(&mut self, chunks: &[Chunk]) {
        for c in chunks {
            if let Some(w) = &c.window_id {
                if self.windows.len() < MAX_WINDOWS && !self.windows.contains(w) {
                    self.windows.push(w.clone());
                }
            }
        }
    }

    /// The summary's bytes (the annotation `RrwebAnnotator` gives the engine). Version 2:
    /// version u8 | event_count u64 | 7 counts u32 | active_milliseconds u64 |
    /// first_activity_ts i64 | last_activity_ts i64 | viewport width u16, height u16 |
    /// urls, then windows: count u8, each len u16 + UTF-8 bytes | clock_offset_ms i64.
    /// Little-endian; docs/format.md keeps the layout.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.event_count.to_le_bytes());
        for n in self.counts() {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.active_milliseconds.to_le_bytes());
        out.extend_from_slice(&self.first_activity_ts.to_le_bytes());
        out.extend_from_slice(&self.last_activity_ts.to_le_bytes());
        out.extend_from_slice(&self.viewport_width.to_le_bytes());
        out.extend_from_slice(&self.viewport_height.to_le_bytes());
        for list in [&self.urls, &self.windows] {
            out.push(list.len().min(u8::MAX as usize) as u8);
            for s in list.iter().take(u8::MAX as usize) {
                let s = cut(s, MAX_STRING);
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out.extend_from_slice(&self.clock_offset_ms.to_le_bytes());
    }

    /// `encode` into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Summary, DecodeError> {
        let mut b = Reader(buf);
        let version = b.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(DecodeError("unknown summary version"));
        }
        let mut s = Summary {
            event_count: u64::from_le_bytes(b.array()?),
            ..Summary::default()
        };
        for n in s.counts_mut() {
            *n = u32::from_le_bytes(b.array()?);
        }
        s.active_milliseconds = u64::from_le_bytes(b.array()?);
        s.first_activity_ts = i64::from_le_bytes(b.array()?);
        s.last_activity_ts = i64::from_le_bytes(b.array()?);
        s.viewport_width = u16::from_le_bytes(b.array()?);
        s.viewport_height = u16::from_le_bytes(b.array()?);
        for list in [&mut s.urls, &mut s.windows] {
            let n = b.u8()?;
            for _ in 0..n {
                let len = u16::from_le_bytes(b.array()?) as usize;
                let bytes = b.take(len)?;
                let text = std::str::from_utf8(bytes).map_err(|_| DecodeError("not UTF-8"))?;
                list.push(text.to_string());
            }
        }
        if version >= 2 {
            s.clock_offset_ms = i64::from_le_bytes(b.array()?);
        }
        Ok(s)
    }

    fn counts(&self) -> [u32; 7] {
        [
            self.click_count,
            self.keypress_count,
            self.mouse_activity_count,
            self.console_log_count,
            self.console_warn_count,
            self.console_error_count,
            self.rage_click_count,
        ]
    }

    fn counts_mut(&mut self) -> [&mut u32; 7] {
        [
            &mut self.click_count,
            &mut self.keypress_count,
            &mut self.mouse_activity_count,
            &mut self.console_log_count,
            &mut self.console_warn_count,
            &mut self.console_error_count,
            &mut self.rage_click_count,
        ]
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bounds-checked reads from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_merges() -> Result<(), Box<dyn std::error::Error>> {
        let a = Summary {
            event_count: 3,
            click_count: 1,
            active_milliseconds: 1000,
            first_activity_ts: 10_000,
            last_activity_ts: 11_000,
            urls: vec!["https://a/".into()],
            ..Summary::default()
        };
        let b = Summary {
            event_count: 2,
            console_error_count: 1,
            active_milliseconds: 500,
            first_activity_ts: 13_000,
            last_activity_ts: 13_500,
            urls: vec!["https://a/".into(), "https://b/".into()],
            viewport_width: 1280,
            viewport_height: 800,
            clock_offset_ms: -5000,
            ..Summary::default()
        };
        let buf = b.to_bytes();
        assert_eq!(Summary::decode(&buf)?, b);
        assert!(Summary::decode(&buf[..buf.len() - 1]).is_err());
        let m = Summary::merge_in_order(vec![(13_000, b), (10_000, a)]);
        assert_eq!(m.event_count, 5);
        assert_eq!(
            m.active_milliseconds,
            1000 + 500 + 2000,
            "a 2 s gap joins the segments"
        );
        assert_eq!(m.urls, vec!["https://a/", "https://b/"]);
        assert_eq!(m.clock_offset_ms, -5000);
        assert_eq!(
            (m.viewport_width, m.first_activity_ts, m.last_activity_ts),
            (1280, 10_000, 13_500)
        );
        Ok(())
    }
}
