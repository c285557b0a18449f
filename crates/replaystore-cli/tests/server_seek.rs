//! `GET /api/sessions/<team>/<session>/events?from_ms=MS` through a real server: a ranged read
//! that starts at the meta + full snapshot at or before MS and returns every later event.

mod common;

use common::server::{http, Server};
use serde_json::Value;

fn events(addr: &str, path: &str) -> (u16, Vec<Value>) {
    let (status, _, body) = http(
        addr,
        "GET",
        path,
        &[("Authorization", "Bearer sekrit")],
        b"",
    );
    let lines = match status {
        200 => String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        _ => Vec::new(),
    };
    (status, lines)
}

#[test]
fn events_from_ms_start_at_the_keyframe_at_or_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (w, s) = common::stored_long_session(dir.path());
    let server = Server::start(dir.path(), &["--read-token", "sekrit"]);
    let a = &server.addr;
    let base = format!("/api/sessions/1/{}/events", s.session_id);
    let (status, whole) = events(a, &base);
    assert_eq!(status, 200);
    let ts = |e: &Value| e["timestamp"].as_i64().unwrap();
    for minute in [1.0, 7.5, 15.2] {
        let from_ms = w.start_ms + (minute * 60_000.0) as i64;
        let (status, seek) = events(a, &format!("{base}?from_ms={from_ms}"));
        assert_eq!(status, 200);
        let at = (0..whole.len() - 1)
            .filter(|&i| whole[i]["type"] == 4 && whole[i + 1]["type"] == 2)
            .filter(|&i| ts(&whole[i]) <= from_ms)
            .max()
            .unwrap();
        assert_eq!(
            at > 0,
            minute > 2.0,
            "minute {minute}: a checkout every 2 minutes"
        );
        assert_eq!(seek[..], whole[at..], "from minute {minute}");
    }
    let (status, _) = events(a, &format!("{base}?from_ms=soon"));
    assert_eq!(status, 400, "from_ms must be a number");
    let (status, _, _) = http(a, "GET", &format!("{base}?from_ms=1"), &[], b"");
    assert_eq!(status, 401, "the read token is still required");
    server.stop();
}
