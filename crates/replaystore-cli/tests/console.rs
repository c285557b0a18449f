//! The recordings console over plain HTTP (no browser): every page and endpoint refuses a
//! missing or wrong token with 401; the read token works as a header, once in the URL and then
//! as the cookie the server sets; the list filters and pages like `ls`; a session's markers
//! and its events from a moment; deletions need the admin token and report their receipt.
//! tests/e2e.rs drives the same pages in Chromium.

mod common;

use common::server::{http, Server, TOKEN};
use serde_json::Value;

const READ: &str = "read-tok-1";
const ADMIN: &str = "admin-tok-2";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A `$snapshot` event of session `sid` for `person` carrying `events` (rrweb JSON).
fn snapshot(sid: &str, person: &str, events: &[String]) -> String {
    format!(
        r#"{{"event":"$snapshot","properties":{{"$session_id":"{sid}","$window_id":"w-{sid}","distinct_id":"{person}","token":"{TOKEN}","$snapshot_data":[{}]}}}}"#,
        events.join(",")
    )
}

fn meta(ts: i64, href: &str) -> String {
    format!(r#"{{"type":4,"data":{{"href":"{href}","width":1000,"height":700}},"timestamp":{ts}}}"#)
}

fn full(ts: i64, text: &str) -> String {
    format!(
        r#"{{"type":2,"data":{{"node":{{"type":0,"childNodes":[{{"type":3,"textContent":"{text}","id":2}}],"id":1}},"initialOffset":{{"left":0,"top":0}}}},"timestamp":{ts}}}"#
    )
}

fn click(ts: i64, x: i64) -> String {
    format!(r#"{{"type":3,"data":{{"source":2,"type":2,"id":2,"x":{x},"y":5}},"timestamp":{ts}}}"#)
}

fn console_error(ts: i64) -> String {
    format!(
        r#"{{"type":6,"data":{{"plugin":"rrweb/console@1","payload":{{"level":"error","payload":["\"checkout failed\""],"trace":[]}}}},"timestamp":{ts}}}"#
    )
}

fn get(addr: &str, path: &str, auth: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    http(addr, "GET", path, auth, b"")
}

fn get_json(addr: &str, path: &str) -> Value {
    let bearer = format!("Bearer {READ}");
    let (status, _, body) = get(addr, path, &[("Authorization", &bearer)]);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_string())
        .collect()
}

/// Two sessions: "bad" (person alice, two pages, a rage click, a console error, a second full
/// snapshot 60 s in) and "calm" (person bob, one page, one click).
fn record(addr: &str, t0: i64) {
    let bad = [
        snapshot(
            "bad",
            "alice",
            &[meta(t0, "https://shop/home"), full(t0 + 1, "home-text")],
        ),
        snapshot(
            "bad",
            "alice",
            &[
                click(t0 + 1000, 10),
                click(t0 + 1200, 12),
                click(t0 + 1400, 14),
                console_error(t0 + 2000),
            ],
        ),
        snapshot(
            "bad",
            "alice",
            &[
                meta(t0 + 60_000, "https://shop/checkout"),
                full(t0 + 60_001, "checkout-text"),
            ],
        ),
        snapshot("bad", "alice", &[click(t0 + 61_000, 300)]),
    ];
    let calm = [snapshot(
        "calm",
        "bob",
        &[
            meta(t0 + 5, "https://shop/about"),
            full(t0 + 6, "about-text"),
            click(t0 + 3000, 50),
        ],
    )];
    let body = format!(
        "[{}]",
        bad.iter()
            .chain(&calm)
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    );
    let (status, _, resp) = http(addr, "POST", "/s/", &[], body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
}

/// Every console page and endpoint, with the method it takes.
const ALL: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/privacy"),
    ("GET", "/storage"),
    ("GET", "/replay/1/bad"),
    ("GET", "/assets/console.js"),
    ("GET", "/assets/console.css"),
    ("GET", "/assets/rrweb-player/index.js"),
    ("GET", "/api/sessions?team=1"),
    ("GET", "/api/sessions/1/bad/events"),
    ("GET", "/api/sessions/1/bad/events?from_ms=0"),
    ("GET", "/api/sessions/1/bad/markers"),
    ("GET", "/api/teams"),
    ("GET", "/api/storage"),
    ("GET", "/api/deletions"),
    ("GET", "/api/deletions/1"),
    ("POST", "/api/deletions"),
];

#[test]
fn every_page_and_endpoint_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--read-token", READ, "--admin-token", ADMIN]);
    let a = &server.addr;
    record(a, now_ms() - 120_000);
    for (method, path) in ALL {
        let sep = if path.contains('?') { '&' } else { '?' };
        let cases: [(String, Vec<(&str, String)>); 5] = [
            (path.to_string(), vec![]),
            (format!("{path}{sep}token=wrong"), vec![]),
            (
                path.to_string(),
                vec![("Authorization", "Bearer wrong".into())],
            ),
            (
                path.to_string(),
                vec![("Cookie", "replaystore_read=wrong".into())],
            ),
            (
                path.to_string(),
                vec![("Authorization", "Basic cmVhZA==".into())],
            ),
        ];
        for (p, headers) in &cases {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, head, _) = http(a, method, p, &h, br#"{"team":1,"person":"alice"}"#);
            assert_eq!(status, 401, "{method} {p} {headers:?}");
            assert!(head.contains("www-authenticate: bearer"), "{method} {p}");
        }
    }
    // The read token is not the admin token: a deletion with it is refused too, and nothing
    // was deleted by any of the refused requests.
    let bearer = format!("Bearer {READ}");
    let (status, _, _) = http(
        a,
        "POST",
        "/api/deletions",
        &[("Authorization", &bearer)],
        br#"{"team":1,"person":"alice"}"#,
    );
    assert_eq!(status, 401);
    assert_eq!(ids(&get_json(a, "/api/sessions?team=1")).len(), 2);

    // With the token every read page and endpoint answers (the player's file may be absent).
    for (method, path) in ALL.iter().filter(|(m, _)| *m == "GET") {
        let (status, _, body) = http(a, method, path, &[("Authorization", &bearer)], b"");
        let player = path.contains("rrweb-player");
        assert!(
            status == 200 || (player && status == 404),
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // `?token=` once: the answer sets an HttpOnly, SameSite=Strict cookie that then suffices.
    let (status, head, _) = get(a, &format!("/privacy?token={READ}"), &[]);
    assert_eq!(status, 200);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .to_string();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    let pair = format!("replaystore_read={READ}");
    for path in ["/storage", "/api/teams", "/assets/console.js"] {
        assert_eq!(get(a, path, &[("Cookie", &pair)]).0, 200, "{path}");
    }
    // Without --read-token the console is off altogether.
    server.stop();
    let off = Server::start(dir.path(), &[]);
    assert_eq!(get(&off.addr, "/storage", &[]).0, 404);
    off.stop();
}

#[test]
fn the_list_filters_and_pages_and_a_replay_seeks_by_its_markers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--read-token", READ]);
    let a = &server.addr;
    let t0 = now_ms() - 120_000;
    record(a, t0);
    let all = get_json(a, "/api/sessions?team=1");
    assert_eq!(ids(&all), ["bad", "calm"]);
    let bad = &all["sessions"][0];
    assert_eq!(
        (bad["person"].as_str(), bad["click_count"].as_u64()),
        (Some("alice"), Some(4))
    );
    assert_eq!(bad["rage_click_count"], 1);
    assert_eq!(bad["console_error_count"], 1);
    for (query, want) in [
        ("errors=1", vec!["bad"]),
        ("rage=true", vec!["bad"]),
        ("url=checkout", vec!["bad"]),
        ("person=bob", vec!["calm"]),
        ("min_clicks=2", vec!["bad"]),
        ("min_duration_s=30", vec!["bad"]),
        ("to_ms=0", vec![]),
        (&format!("from_ms={}", t0 + 10_000), vec!["bad"]),
        ("sort=duration&desc=1", vec!["bad", "calm"]),
        ("sort=duration", vec!["calm", "bad"]),
        ("errors=&url=&person=", vec!["bad", "calm"]),
    ] {
        let page = get_json(a, &format!("/api/sessions?team=1&{query}"));
        assert_eq!(ids(&page), want, "{query}");
    }
    let first = get_json(a, "/api/sessions?team=1&limit=1");
    assert_eq!(ids(&first), ["bad"]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = get_json(a, &format!("/api/sessions?team=1&limit=1&cursor={cursor}"));
    assert_eq!(ids(&second), ["calm"]);
    assert!(second["next_cursor"].is_null());
    let bearer = format!("Bearer {READ}");
    for bad_query in [
        "min_clicks=many",
        "limit=0",
        "sort=size",
        "from_ms=yesterday",
    ] {
        let (status, _, _) = get(
            a,
            &format!("/api/sessions?team=1&{bad_query}"),
            &[("Authorization", &bearer)],
        );
        assert_eq!(status, 400, "{bad_query}");
    }
    // The Recordings page holds its first page, filtered as its address says.
    let (_, _, html) = get(a, "/?team=1&person=bob", &[("Authorization", &bearer)]);
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains(r#""session_id":"calm""#) && !html.contains(r#""session_id":"bad""#));

    // The timeline: markers of every kind, pages with times, the window.
    let m = get_json(a, "/api/sessions/1/bad/markers");
    let kinds: Vec<&str> = m["timeline"]["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    for k in ["page_view", "click", "rage_click", "console_error"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let pages: Vec<(i64, &str)> = m["timeline"]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["ts_ms"].as_i64().unwrap(), p["url"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pages,
        [
            (t0 + 1, "https://shop/home"),
            (t0 + 60_001, "https://shop/checkout")
        ],
        "each page at its full snapshot"
    );
    assert_eq!(m["session"]["person"], "alice");
    assert_eq!(m["timeline"]["windows"][0]["window_id"], "w-bad");

    // Events from a moment: the meta and full snapshot at or before it, then every later event.
    let events = |q: &str| -> Vec<Value> {
        let (status, _, body) = get(
            a,
            &format!("/api/sessions/1/bad/events{q}"),
            &[("Authorization", &bearer)],
        );
        assert_eq!(status, 200);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let whole = events("");
    assert_eq!(whole.len(), 9);
    let late = events(&format!("?from_ms={}", t0 + 61_000));
    let ts: Vec<i64> = late
        .iter()
        .map(|e| e["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(ts, [t0 + 60_000, t0 + 60_001, t0 + 61_000]);
    assert!(late[1]["data"].to_string().contains("checkout-text"));
    assert_eq!(
        events(&format!("?from_ms={}", t0 + 30_000)).len(),
        whole.len()
    );
    assert_eq!(
        get(
            a,
            "/api/sessions/1/nope/events?from_ms=1",
            &[("Authorization", &bearer)]
        )
        .0,
        404
    );
    server.stop();
}

#[test]
fn the_admin_token_deletes_a_person_and_the_receipt_and_bytes_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--read-token", READ, "--admin-token", ADMIN]);
    let a = &server.addr;
    record(a, now_ms() - 120_000);
    let before = get_json(a, "/api/storage");
    assert_eq!(before["all"]["sessions"], 2);
    assert_eq!(before["teams"][0]["retention_days"], 3650);
    assert_eq!(
        before["heaviest"][0]["session_id"], "bad",
        "the larger session first"
    );
    let hist: u64 = before["all"]["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(hist, 2);

    let admin = format!("Bearer {ADMIN}");
    let (status, _, body) = http(
        a,
        "POST",
        "/api/deletions",
        &[("Authorization", &admin)],
        br#"{"team":1,"person":"alice","session":"x"}"#,
    );
    assert_eq!(
        status,
        400,
        "one target: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = http(
        a,
        "POST",
        "/api/deletions",
        &[("Authorization", &admin)],
        br#"{"team":1,"person":"alice"}"#,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let made: Value = serde_json::from_slice(&body).unwrap();
    let id = made["request"]["id"].as_u64().unwrap();
    assert_eq!(made["request"]["kind"], "person");
    // Hidden from the list at once.
    assert_eq!(ids(&get_json(a, "/api/sessions?team=1")), ["calm"]);
    // Purged soon (the console asks for a purge at once), with its receipt.
    let mut status = Value::Null;
    for _ in 0..200 {
        status = get_json(a, &format!("/api/deletions/{id}"))["status"].clone();
        if status["status"] == "done" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["sessions_removed"], 1);
    assert!(status["bytes_removed"].as_u64().unwrap() > 0);
    let listed = get_json(a, "/api/deletions");
    assert_eq!(listed["requests"][0]["request"]["id"], id);
    assert_eq!(listed["requests"][0]["status"]["status"], "done");
    let after = get_json(a, "/api/storage");
    assert_eq!(after["all"]["sessions"], 1);
    assert!(
        after["all"]["stored_bytes"].as_u64() < before["all"]["stored_bytes"].as_u64(),
        "{after}"
    );
    // Gone from the files, not only from the list: the segments' own totals shrank.
    assert!(
        after["stats"]["stored_bytes"].as_u64() < before["stats"]["stored_bytes"].as_u64(),
        "{after}"
    );
    server.stop();
}
