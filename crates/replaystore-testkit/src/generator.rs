//! A deterministic, seeded generator of rrweb-shaped sessions, shaped like the real posthog-js
//! captures in tests/data: per page load a Meta and a FullSnapshot (a DOM tree of realistic
//! size, most of the bytes), then incremental events (mutations, mouse moves, clicks, scrolls,
//! masked input, console and network plugin events), cut into chunks the way posthog-js cuts
//! them (every ~2 s or ~0.9 MB). Session sizes are log-normal; sessions and persons interleave
//! in time. The same (seed, index) always gives the same session, so callers can regenerate a
//! session to compare instead of keeping it in memory.

use std::fmt::Write;

use replaystore::Chunk;

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

/// xoshiro256** seeded by splitmix64: small, fast, and stable forever (the generator's output
/// must not change when a dependency does).
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const TAGS: &[&str] = &[
    "div", "div", "div", "span", "span", "a", "p", "li", "ul", "section", "button", "img", "h2",
    "h3", "td", "tr", "label", "input", "svg", "path", "code", "pre", "em", "strong", "nav",
];
const CLASSES: &[&str] = &[
    "container",
    "row",
    "col-md-6",
    "card",
    "card-body",
    "btn",
    "btn-primary",
    "nav-link",
    "sidebar",
    "content",
    "header",
    "footer",
    "highlight",
    "toc",
    "reference",
    "internal",
    "sig-name",
    "descname",
    "pre",
    "admonition",
    "note",
    "headerlink",
    "wy-menu",
    "caption",
    "flex",
    "items-center",
    "justify-between",
    "px-4",
    "py-2",
    "text-sm",
    "font-medium",
];
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "for",
    "function",
    "returns",
    "value",
    "object",
    "module",
    "string",
    "list",
    "data",
    "stream",
    "buffer",
    "event",
    "process",
    "option",
    "default",
    "parameter",
    "example",
    "class",
    "method",
    "error",
    "callback",
    "promise",
    "file",
    "path",
    "request",
    "response",
    "server",
    "client",
    "session",
    "user",
    "order",
    "cart",
    "checkout",
    "price",
    "product",
    "account",
    "settings",
    "search",
    "results",
    "page",
    "new",
    "this",
    "with",
    "that",
    "from",
    "when",
    "can",
    "be",
    "not",
    "if",
    "are",
    "will",
    "by",
    "an",
];

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
        events.push(ts, format!(r#"{{"type":4,"data":{{"href":"{href}","width":1280,"height":800}},"timestamp":{ts}}}"#));
        let mut page_rng = Rng::new(
            w.seed ^ team.wrapping_mul(0x51_7C_C1_B7) ^ page.wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        let dom_bytes =
            (60_000.0 * (0.9 * page_rng.normal()).exp()).clamp(20_000.0, 1_200_000.0) as usize;
        // rrweb numbers the nodes of each page load from 1.
        let mut next_id = 1u64;
        let snapshot = full_snapshot(&mut page_rng, dom_bytes, &mut next_id);
        ts += rng.range(5, 40);
        events.push(
            ts,
            format!(r#"{{"type":2,"data":{snapshot},"timestamp":{ts}}}"#),
        );
        let nodes = next_id - 1;
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

/// What the random events of a session may contain.
struct Plant {
    /// Console errors allowed (planted sessions only).
    errors: bool,
    /// Clicks so far: random clicks are placed at least 200 px apart, so they never form a
    /// rage click by chance.
    clicks: u64,
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

/// A serialized rrweb FullSnapshot `data` of about `bytes` bytes.
fn full_snapshot(rng: &mut Rng, bytes: usize, next_id: &mut u64) -> String {
    let mut s = String::with_capacity(bytes + 4096);
    let doc = *next_id;
    *next_id += 1;
    s.push_str(r#"{"node":{"type":0,"childNodes":[{"type":1,"name":"html","publicId":"","systemId":"","id":"#);
    let _ = write!(s, "{}}},", *next_id);
    *next_id += 1;
    s.push_str(r#"{"type":2,"tagName":"html","attributes":{"lang":"en"},"childNodes":["#);
    let mut first = true;
    while s.len() < bytes {
        if !first {
            s.push(',');
        }
        first = false;
        element(rng, &mut s, next_id, 0);
    }
    let html = *next_id;
    *next_id += 1;
    let _ = write!(
        s,
        r#"],"id":{html}}}],"id":{doc}}},"initialOffset":{{"left":0,"top":0}}}}"#
    );
    s
}

fn element(rng: &mut Rng, s: &mut String, next_id: &mut u64, depth: u32) {
    let tag = rng.pick(TAGS);
    let _ = write!(
        s,
        r#"{{"type":2,"tagName":"{tag}","attributes":{{"class":"{} {}""#,
        rng.pick(CLASSES),
        rng.pick(CLASSES)
    );
    if tag == "a" {
        let _ = write!(
            s,
            r##","href":"/{}/{}.html#{}""##,
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.below(100)
        );
    }
    s.push_str(r#"},"childNodes":["#);
    let children = if depth >= 6 { 0 } else { rng.below(5) };
    for i in 0..children {
        if i > 0 {
            s.push(',');
        }
        element(rng, s, next_id, depth + 1);
    }
    if children > 0 {
        s.push(',');
    }
    text(rng, s, next_id);
    let _ = write!(s, r#"],"id":{}}}"#, *next_id);
    *next_id += 1;
}

fn text(rng: &mut Rng, s: &mut String, next_id: &mut u64) {
    s.push_str(r#"{"type":3,"textContent":""#);
    for i in 0..rng.range(1, 14) {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    let _ = write!(s, r#"","id":{}}}"#, *next_id);
    *next_id += 1;
}

/// A mouse-move event's positions: 1 to 9 points near (x, y).
fn mouse_positions(rng: &mut Rng, node: u64, x: u64, y: u64) -> String {
    let mut p = String::from("[");
    for i in 0..rng.range(1, 10) {
        if i > 0 {
            p.push(',');
        }
        let _ = write!(
            p,
            r#"{{"x":{},"y":{},"id":{node},"timeOffset":{}}}"#,
            x + rng.below(40),
            y + rng.below(40),
            -(i * 50)
        );
    }
    p.push(']');
    p
}

/// One incremental (or plugin) event at `ts` touching `node`.
fn incremental(rng: &mut Rng, ts: i64, node: u64, next_id: &mut u64, plant: &mut Plant) -> String {
    let kind = rng.below(100);
    let (x, y) = (rng.below(1280), rng.below(800));
    match kind {
        0..=34 => {
            let p = mouse_positions(rng, node, x, y);
            format!(r#"{{"type":3,"data":{{"source":1,"positions":{p}}},"timestamp":{ts}}}"#)
        }
        35..=59 => {
            let mut adds = String::new();
            element(rng, &mut adds, next_id, 4);
            format!(
                r#"{{"type":3,"data":{{"source":0,"texts":[],"attributes":[{{"id":{node},"attributes":{{"class":"{}"}}}}],"removes":[],"adds":[{{"parentId":{node},"nextId":null,"node":{adds}}}]}},"timestamp":{ts}}}"#,
                rng.pick(CLASSES)
            )
        }
        60..=74 => format!(
            r#"{{"type":3,"data":{{"source":3,"id":1,"x":0,"y":{}}},"timestamp":{ts}}}"#,
            rng.below(20_000)
        ),
        75..=84 => {
            plant.clicks += 1;
            let (cx, cy) = (
                40 + (plant.clicks * 211) % 1200,
                50 + (plant.clicks * 137) % 700,
            );
            format!(
                r#"{{"type":3,"data":{{"source":2,"type":{},"id":{node},"x":{cx}.5,"y":{cy}.25}},"timestamp":{ts}}}"#,
                rng.below(3)
            )
        }
        85..=91 => format!(
            r#"{{"type":3,"data":{{"source":5,"text":"{}","isChecked":false,"id":{node}}},"timestamp":{ts}}}"#,
            "*".repeat(rng.range(1, 12) as usize)
        ),
        92..=96 => {
            let levels = if plant.errors {
                ["log", "log", "warn", "error"]
            } else {
                ["log", "log", "warn", "info"]
            };
            let level = levels[rng.below(4) as usize];
            format!(
                r#"{{"type":6,"data":{{"plugin":"rrweb/console@1","payload":{{"level":"{level}","trace":["at {} (https://app.example.com/static/app.js:{}:{})"],"payload":["\"{} {} {}\""]}}}},"timestamp":{ts}}}"#,
                rng.pick(WORDS),
                rng.below(9000),
                rng.below(80),
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.below(1000)
            )
        }
        _ => format!(
            r#"{{"type":6,"data":{{"plugin":"rrweb/network@1","payload":{{"requests":[{{"name":"https://api.example.com/{}/{}","entryType":"resource","startTime":{}.5,"duration":{}.25,"initiatorType":"fetch","transferSize":{},"responseStatus":200}}]}}}},"timestamp":{ts}}}"#,
            rng.pick(WORDS),
            rng.below(500),
            rng.below(100_000),
            rng.below(900),
            rng.below(50_000)
        ),
    }
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
