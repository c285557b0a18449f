//! The rrweb events of a generated session: FullSnapshot DOM trees of a given size, and the
//! incremental events of a page (mutations, mouse moves, clicks, scrolls, masked input,
//! console and network plugin events), from a small vocabulary of tags, classes and words.

use std::fmt::Write;

use super::rng::Rng;

pub(super) const TAGS: &[&str] = &[
    "div", "div", "div", "span", "span", "a", "p", "li", "ul", "section", "button", "img", "h2",
    "h3", "td", "tr", "label", "input", "svg", "path", "code", "pre", "em", "strong", "nav",
];
pub(super) const CLASSES: &[&str] = &[
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
pub(super) const WORDS: &[&str] = &[
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

/// What the random events of a session may contain.
pub(super) struct Plant {
    /// Console errors allowed (planted sessions only).
    pub errors: bool,
    /// Clicks so far: random clicks are placed at least 200 px apart, so they never form a
    /// rage click by chance.
    pub clicks: u64,
}

/// A serialized rrweb FullSnapshot `data` of about `bytes` bytes.
pub(super) fn full_snapshot(rng: &mut Rng, bytes: usize, next_id: &mut u64) -> String {
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
pub(super) fn incremental(
    rng: &mut Rng,
    ts: i64,
    node: u64,
    next_id: &mut u64,
    plant: &mut Plant,
) -> String {
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
