//! Per-session metadata computed at ingest (by an `Analyzer`), stored with each block, kept per
//! session in the footers and merged across blocks and segments, so sessions can be found by
//! what happened in them without reading payloads. Field names follow PostHog's
//! `session_replay_events`.

use serde::Serialize;

use crate::chunk::Chunk;
use crate::format::{put_i64, put_u16, put_u32, put_u64, Bytes, DecodeError, DecodeResult};

/// URLs kept per session.
pub const MAX_URLS: usize = 25;
/// Window ids kept per session.
const MAX_WINDOWS: usize = 16;
/// An activity segment closes after this long without activity.
pub const ACTIVITY_GAP_MS: i64 = 5000;
/// Version 2 added `clock_offset_ms`; version 1 summaries still decode (offset 0).
const VERSION: u8 = 2;
/// Upper bound of an encoded summary (URLs are capped too).
pub const MAX_ENCODED: usize = 64 << 10;

/// Computes the summary of the chunks of one block (one session, in append order). The
/// engine calls it on the flush path, off every lock; `replaystore_posthog::rrweb::RrwebAnalyzer` is
/// the one for rrweb events.
pub trait Analyzer: Send + Sync + std::fmt::Debug {
    fn analyze(&self, chunks: &[Chunk]) -> Summary;
}

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

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        put_u64(out, self.event_count);
        for n in [
            self.click_count,
            self.keypress_count,
            self.mouse_activity_count,
            self.console_log_count,
            self.console_warn_count,
            self.console_error_count,
            self.rage_click_count,
        ] {
            put_u32(out, n);
        }
        put_u64(out, self.active_milliseconds);
        put_i64(out, self.first_activity_ts);
        put_i64(out, self.last_activity_ts);
        put_u16(out, self.viewport_width);
        put_u16(out, self.viewport_height);
        for list in [&self.urls, &self.windows] {
            out.push(list.len() as u8);
            for s in list.iter() {
                let s = &s.as_bytes()[..s.len().min(2048)];
                put_u16(out, s.len() as u16);
                out.extend_from_slice(s);
            }
        }
        put_i64(out, self.clock_offset_ms);
    }

    pub fn decode(buf: &[u8]) -> DecodeResult<Summary> {
        let mut b = Bytes::new(buf);
        let version = b.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(DecodeError::new("unknown summary version"));
        }
        let mut s = Summary {
            event_count: b.u64()?,
            ..Summary::default()
        };
        for n in [
            &mut s.click_count,
            &mut s.keypress_count,
            &mut s.mouse_activity_count,
            &mut s.console_log_count,
            &mut s.console_warn_count,
            &mut s.console_error_count,
            &mut s.rage_click_count,
        ] {
            *n = b.u32()?;
        }
        s.active_milliseconds = b.u64()?;
        s.first_activity_ts = b.i64()?;
        s.last_activity_ts = b.i64()?;
        s.viewport_width = b.u16()?;
        s.viewport_height = b.u16()?;
        for list in [&mut s.urls, &mut s.windows] {
            let n = b.u8()? as usize;
            for _ in 0..n {
                let len = b.u16()? as usize;
                list.push(b.str(len, "summary string")?.to_string());
            }
        }
        if version >= 2 {
            s.clock_offset_ms = b.i64()?;
        }
        Ok(s)
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
        let mut buf = Vec::new();
        b.encode(&mut buf);
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
