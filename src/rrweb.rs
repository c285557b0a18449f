//! The rrweb analyzer: computes a session's `Summary` from its rrweb events (as posthog-js
//! sends them or normalized), as PostHog's session_replay_events defines the fields. It reads
//! only what it needs from each event; full snapshots are skipped over, not parsed.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::chunk::Chunk;
use crate::summary::{Analyzer, Summary, ACTIVITY_GAP_MS, MAX_URLS};

/// Rage clicks (posthog-js's rule): 3 or more clicks, each within 1 s and 30 px of the last.
const RAGE_CLICKS: u32 = 3;
const RAGE_MS: f64 = 1000.0;
const RAGE_PX: f64 = 30.0;

#[derive(Debug, Default, Clone, Copy)]
pub struct RrwebAnalyzer;

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default)]
    timestamp: f64,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Incremental {
    source: Option<i64>,
    #[serde(rename = "type")]
    interaction: Option<i64>,
    x: Option<f64>,
    y: Option<f64>,
}

#[derive(Deserialize)]
struct Meta {
    href: Option<String>,
    width: Option<f64>,
    height: Option<f64>,
}

#[derive(Deserialize)]
struct Plugin<'a> {
    plugin: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ConsolePayload {
    level: Option<String>,
}

#[derive(Deserialize)]
struct Custom<'a> {
    tag: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Href {
    href: Option<String>,
}

/// State carried through a session's events.
#[derive(Default)]
struct Walk {
    s: Summary,
    /// (count, x, y, ts) of the current run of nearby clicks.
    clicks: Option<(u32, f64, f64, f64)>,
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

    fn click(&mut self, x: f64, y: f64, ts: f64) {
        self.clicks = match self.clicks {
            Some((n, lx, ly, lts))
                if (x - lx).abs() + (y - ly).abs() < RAGE_PX && ts - lts < RAGE_MS =>
            {
                if n + 1 == RAGE_CLICKS {
                    self.s.rage_click_count += 1;
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

    fn event(&mut self, e: &Event) {
        self.s.event_count += 1;
        let ts = e.timestamp as i64;
        let Some(data) = e.data else { return };
        match e.kind {
            3 => {
                let Ok(inc) = serde_json::from_str::<Incremental>(data.get()) else {
                    return;
                };
                let Some(source) = inc.source else { return };
                if (1..=7).contains(&source) || source == 12 {
                    self.activity(ts);
                }
                match source {
                    1 | 6 => self.s.mouse_activity_count += 1,
                    2 => {
                        self.s.mouse_activity_count += 1;
                        // Click, ContextMenu, DblClick, TouchEnd.
                        if matches!(inc.interaction, Some(2 | 3 | 4 | 9)) {
                            self.s.click_count += 1;
                            if let (Some(2), Some(x), Some(y)) = (inc.interaction, inc.x, inc.y) {
                                self.click(x, y, e.timestamp);
                            }
                        }
                    }
                    5 => self.s.keypress_count += 1,
                    _ => {}
                }
            }
            4 => {
                let Ok(m) = serde_json::from_str::<Meta>(data.get()) else {
                    return;
                };
                if self.s.viewport_width == 0 {
                    self.s.viewport_width = m.width.unwrap_or(0.0) as u16;
                    self.s.viewport_height = m.height.unwrap_or(0.0) as u16;
                }
                if let Some(h) = m.href {
                    self.url(h);
                }
            }
            5 => {
                let Ok(c) = serde_json::from_str::<Custom>(data.get()) else {
                    return;
                };
                if c.tag == Some("$pageview") {
                    if let Some(h) = c
                        .payload
                        .and_then(|p| serde_json::from_str::<Href>(p.get()).ok()?.href)
                    {
                        self.url(h);
                    }
                }
            }
            6 => {
                let Ok(p) = serde_json::from_str::<Plugin>(data.get()) else {
                    return;
                };
                if p.plugin != Some("rrweb/console@1") {
                    return;
                }
                let level = p
                    .payload
                    .and_then(|p| serde_json::from_str::<ConsolePayload>(p.get()).ok()?.level)
                    .unwrap_or_default();
                match level.as_str() {
                    "warn" | "countReset" => self.s.console_warn_count += 1,
                    "error" | "assert" => self.s.console_error_count += 1,
                    _ => self.s.console_log_count += 1,
                }
            }
            _ => {}
        }
    }
}

impl Analyzer for RrwebAnalyzer {
    fn analyze(&self, chunks: &[Chunk]) -> Summary {
        let mut walk = Walk::default();
        for c in chunks {
            // Not an array of rrweb events: an opaque payload, nothing to count.
            let Ok(events) = serde_json::from_slice::<Vec<Event>>(&c.payload) else {
                continue;
            };
            for e in &events {
                walk.event(e);
            }
        }
        walk.s.add_windows(chunks);
        walk.s
    }
}
