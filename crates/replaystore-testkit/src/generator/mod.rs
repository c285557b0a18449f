//! A deterministic, seeded generator of rrweb-shaped sessions, shaped like the real posthog-js
//! captures in tests/data: per page load a Meta and a FullSnapshot (a DOM tree of realistic
//! size, most of the bytes), then incremental events (mutations, mouse moves, clicks, scrolls,
//! masked input, console and network plugin events), cut into chunks the way posthog-js cuts
//! them (every ~2 s or ~0.9 MB). Session sizes are log-normal; sessions and persons interleave
//! in time. The same (seed, index) always gives the same session, so callers can regenerate a
//! session to compare instead of keeping it in memory.

mod rng;
mod rrweb;

use replaystore::Chunk;

pub use rng::Rng;
use rrweb::{full_snapshot, incremental, Plant, WORDS};

/// Parameters of a generated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub seed: u64,
    pub sessions: usize,
    /// Distinct persons the sessions are spread over.
    pub persons: usize,
    pub teams: u64,
    /// Median raw size of a session in bytes (log-normal, sigma 0.6).
    pub median_session_bytes: usize,
    /// Start of the first session (ms since epoch); later ones start a few seconds apart.
    pub start_ms: i64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            seed: 42,
            sessions: 200,
            persons: 80,
            teams: 2,
            median_session_bytes: 2 << 20,
            start_ms: recent_start_ms(),
        }
    }
}

/// Two hours ago, rounded down to the hour: generated sessions start there, so that a store
/// on the system clock accepts their timestamps (within `Config::max_ts_behind`), and the
/// workload stays the same for a whole hour.
pub fn recent_start_ms() -> i64 {
    const HOUR_MS: i64 = 3_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    (now - 2 * HOUR_MS) / HOUR_MS * HOUR_MS
}

impl Workload {
    /// The small workload `replaystore crash-writer` appends and the crash test regenerates to
    /// compare: one definition, so the two cannot drift apart.
    pub fn crash_test(seed: u64, start_ms: i64) -> Workload {
        Workload {
            seed,
            start_ms,
            sessions: 30,
            persons: 8,
            teams: 1,
            median_session_bytes: 100_000,
        }
    }
}

/// One generated session.
#[derive(Debug, Clone)]
pub struct GeneratedSession {
    pub team: u64,
    pub session_id: String,
    pub person: String,
    pub chunks: Vec<Chunk>,
    /// Planted: the session has console errors (no other session has any).
    pub has_console_errors: bool,
    /// Planted: the session has a rage-click burst (no other session's clicks can form one).
    pub has_rage_clicks: bool,
}

/// Which sessions of a workload get console errors and rage clicks.
pub fn planted(index: usize) -> (bool, bool) {
    (index % 7 == 3, index % 5 == 2)
}

impl GeneratedSession {
    pub fn raw_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.payload.len()).sum()
    }
}

/// Generates session `index` of the workload.
pub fn session(w: &Workload, index: usize) -> GeneratedSession {
    let mut rng = Rng::new(w.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let team = 1 + (index as u64 % w.teams.max(1));
    let person = format!("person-{}", rng.below(w.persons.max(1) as u64));
    // Sessions start ~1.5 s apart on average, so hundreds overlap in time.
    let start = w.start_ms + index as i64 * 1500 + rng.range(0, 1000);
    let session_id = uuid_v7(start, &mut rng);
    let window_id = uuid_v7(start, &mut rng);
    let target = (w.median_session_bytes as f64 * (0.6 * rng.normal()).exp())
        .clamp(50_000.0, 24.0 * 1024.0 * 1024.0) as usize;

    let mut events = EventSink::new(team, &session_id, &person, &window_id, start);
    let mut ts = start;
    // The site: a dozen pages whose DOM depends only on (seed, team, page), so a page a
    // session comes back to (or another session visits) has the same full snapshot, as real
    // sites do. A session browses a few of them, revisiting some.
    let site_pages = 12;
    let (has_console_errors, has_rage_clicks) = planted(index);
    let mut plant = Plant {
        errors: has_console_errors,
        clicks: 0,
    };
    let mut first_page = true;
    while events.total < target {
        let page = if rng.chance(70) {
            rng.below(4)
        } else {
            rng.below(site_pages)
        };
        let href = format!(
            "https://app{team}.example.com/{}/{page}",
            WORDS[page as usize % WORDS.len()]
        );
        let snapshot = page_snapshot(w, team, page);
        ts = keyframe(&mut events, &mut rng, ts, &href, &snapshot.json);
        let (nodes, mut next_id) = (snapshot.nodes, snapshot.nodes + 1);
        if first_page {
            first_page = false;
            if has_rage_clicks {
                // Four clicks on one spot, 120 ms apart.
                for _ in 0..4 {
                    ts += 120;
                    events.push(ts, format!(r#"{{"type":3,"data":{{"source":2,"type":2,"id":3,"x":640,"y":400}},"timestamp":{ts}}}"#));
                }
            }
            if has_console_errors {
                ts += 50;
                events.push(ts, format!(r#"{{"type":6,"data":{{"plugin":"rrweb/console@1","payload":{{"level":"error","trace":["at checkout (https://app.example.com/static/app.js:1:1)"],"payload":["\"TypeError: cart is undefined\""]}}}},"timestamp":{ts}}}"#));
            }
        }
        // Activity on this page: tens of seconds of incremental events.
        let page_ms = rng.range(5_000, 90_000);
        let page_end = ts + page_ms;
        while ts < page_end && events.total < target {
            ts += rng.range(15, 400);
            let node = 1 + rng.below(nodes.max(1));
            let e = incremental(&mut rng, ts, node, &mut next_id, &mut plant);
            events.push(ts, e);
        }
    }
    let mut s = events.finish();
    (s.has_console_errors, s.has_rage_clicks) = (has_console_errors, has_rage_clicks);
    s
}

/// A page's DOM as a full snapshot: it depends only on (seed, team, page), so a page a session
/// comes back to (or another session visits) has the same one, as real sites do.
struct PageSnapshot {
    json: String,
    nodes: u64,
}

fn page_snapshot(w: &Workload, team: u64, page: u64) -> PageSnapshot {
    let mut page_rng = Rng::new(
        w.seed ^ team.wrapping_mul(0x51_7C_C1_B7) ^ page.wrapping_mul(0x2545_F491_4F6C_DD1D),
    );
    let dom_bytes =
        (60_000.0 * (0.9 * page_rng.normal()).exp()).clamp(20_000.0, 1_200_000.0) as usize;
    // rrweb numbers the nodes of each page load from 1.
    let mut next_id = 1u64;
    let json = full_snapshot(&mut page_rng, dom_bytes, &mut next_id);
    PageSnapshot {
        json,
        nodes: next_id - 1,
    }
}

/// A keyframe at `ts`: a Meta event, then the FullSnapshot a few ms later (what rrweb records
/// at a page load and at each checkout). Returns the time of the snapshot.
fn keyframe(events: &mut EventSink, rng: &mut Rng, ts: i64, href: &str, snapshot: &str) -> i64 {
    events.push(
        ts,
        format!(
            r#"{{"type":4,"data":{{"href":"{href}","width":1280,"height":800}},"timestamp":{ts}}}"#
        ),
    );
    let ts = ts + rng.range(5, 40);
    events.push(
        ts,
        format!(r#"{{"type":2,"data":{snapshot},"timestamp":{ts}}}"#),
    );
    ts
}

/// A long session on one page (an app left open for hours) with a new keyframe (Meta +
/// FullSnapshot) every `checkout_every_ms`, as rrweb records with `checkoutEveryNms`:
/// the input of the seekable-playback benchmark (`bench --seek`). Deterministic in
/// (seed, index).
pub fn long_session(
    w: &Workload,
    index: usize,
    duration_ms: i64,
    checkout_every_ms: i64,
) -> GeneratedSession {
    let mut rng = Rng::new(w.seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let team = 1 + (index as u64 % w.teams.max(1));
    let person = format!("person-{}", rng.below(w.persons.max(1) as u64));
    let start = w.start_ms + index as i64 * 1500;
    let session_id = uuid_v7(start, &mut rng);
    let window_id = uuid_v7(start, &mut rng);
    let mut events = EventSink::new(team, &session_id, &person, &window_id, start);
    let href = format!("https://app{team}.example.com/dashboard");
    let snapshot = page_snapshot(w, team, 0);
    let mut plant = Plant {
        errors: false,
        clicks: 0,
    };
    let mut ts = keyframe(&mut events, &mut rng, start, &href, &snapshot.json);
    let mut next_id = snapshot.nodes + 1;
    let mut next_checkout = start + checkout_every_ms;
    while ts < start + duration_ms {
        ts += rng.range(15, 400);
        if ts >= next_checkout {
            ts = keyframe(&mut events, &mut rng, ts, &href, &snapshot.json);
            next_checkout += checkout_every_ms;
        }
        let node = 1 + rng.below(snapshot.nodes.max(1));
        let e = incremental(&mut rng, ts, node, &mut next_id, &mut plant);
        events.push(ts, e);
    }
    events.finish()
}

/// All chunks of all sessions, ordered by time as an ingestion server receives them.
pub fn interleaved(w: &Workload) -> Vec<Chunk> {
    let mut all: Vec<Chunk> = (0..w.sessions).flat_map(|i| session(w, i).chunks).collect();
    all.sort_by_key(|c| c.last_ts_ms);
    all
}

/// Collects events into chunks the way posthog-js flushes: every ~2 s of events or ~0.9 MB.
struct EventSink {
    proto: Chunk,
    chunks: Vec<Chunk>,
    cur: String,
    cur_first: i64,
    cur_last: i64,
    total: usize,
}

impl EventSink {
    fn new(team: u64, session: &str, person: &str, window: &str, start: i64) -> Self {
        EventSink {
            proto: Chunk {
                team,
                session_id: session.to_string(),
                person: person.to_string(),
                window_id: Some(window.to_string()),
                first_ts_ms: start,
                last_ts_ms: start,
                sent_at_ms: None,
                payload: Vec::new(),
            },
            chunks: Vec::new(),
            cur: String::new(),
            cur_first: start,
            cur_last: start,
            total: 0,
        }
    }

    fn push(&mut self, ts: i64, event: String) {
        if !self.cur.is_empty()
            && (ts - self.cur_first > 2000 || self.cur.len() + event.len() > 900_000)
        {
            self.cut();
        }
        if self.cur.is_empty() {
            self.cur.push('[');
            self.cur_first = ts;
        } else {
            self.cur.push(',');
        }
        self.total += event.len() + 1;
        self.cur.push_str(&event);
        self.cur_last = ts;
    }

    fn cut(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        self.cur.push(']');
        let mut c = self.proto.clone();
        c.first_ts_ms = self.cur_first;
        c.last_ts_ms = self.cur_last;
        c.payload = std::mem::take(&mut self.cur).into_bytes();
        self.chunks.push(c);
    }

    fn finish(mut self) -> GeneratedSession {
        self.cut();
        GeneratedSession {
            team: self.proto.team,
            session_id: self.proto.session_id,
            person: self.proto.person,
            chunks: self.chunks,
            has_console_errors: false,
            has_rage_clicks: false,
        }
    }
}

fn uuid_v7(ms: i64, rng: &mut Rng) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        (ms as u64 >> 16) as u32,
        ms as u64 & 0xffff,
        a & 0xfff,
        0x8000 | ((a >> 12) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_valid_json_and_posthog_shaped_chunks() -> Result<(), Box<dyn std::error::Error>>
    {
        let w = Workload {
            sessions: 3,
            median_session_bytes: 300_000,
            ..Workload::default()
        };
        let a = session(&w, 1);
        let b = session(&w, 1);
        assert_eq!(a.chunks, b.chunks);
        assert_ne!(session(&w, 2).session_id, a.session_id);
        for c in &a.chunks {
            let v: serde_json::Value = serde_json::from_slice(&c.payload)?;
            let events = v.as_array().ok_or("array of events")?;
            assert!(!events.is_empty());
            assert!(c.payload.len() <= 1_300_000);
            assert!(c.first_ts_ms <= c.last_ts_ms);
            c.validate(16 << 20)?;
        }
        assert!(a.raw_bytes() >= 50_000);
        let ts: Vec<i64> = a.chunks.iter().map(|c| c.first_ts_ms).collect();
        assert!(ts.windows(2).all(|p| p[0] <= p[1]));
        Ok(())
    }
}
