//! `replaystore serve` over real HTTP: the posthog-js wire bodies are stored durably and
//! exported back; bad requests are refused whole; CORS, configuration and metrics endpoints.

mod common;

use std::path::{Path, PathBuf};

use common::server::{http, Server};

use common::server::TOKEN;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/posthog-js")
}

/// Opens what the server wrote, with the annotator it wrote with (the summaries of a session
/// of several blocks are merged by it).
fn open_store(dir: &Path) -> replaystore::Store {
    replaystore::Store::open(
        dir,
        replaystore::Config::default()
            .with_annotator(Some(std::sync::Arc::new(
                replaystore_posthog::RrwebAnnotator,
            )))
            .with_default_retention_days(3650)
            .with_maintenance_interval(None),
    )
    .unwrap()
}

#[test]
fn the_sdks_wire_bodies_are_stored_durably_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let mut wire: Vec<PathBuf> = std::fs::read_dir(data().join("wire"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    wire.sort();
    for f in &wire {
        let body = std::fs::read(f).unwrap();
        let (status, _, resp) = http(
            &server.addr,
            "POST",
            "/s/",
            &[("Content-Type", "text/plain")],
            &body,
        );
        assert_eq!(
            status,
            200,
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&resp)
        );
    }
    let (_, _, metrics) = http(&server.addr, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("replaystore_requests_total 16"),
        "{metrics}"
    );
    assert!(metrics.contains("replaystore_chunks_total 24"), "{metrics}");
    assert!(
        metrics.contains("replaystore_flush_seconds_count 16"),
        "{metrics}"
    );
    let err = server.stop();
    assert!(err.contains("shut down cleanly"), "{err}");

    let store = open_store(dir.path());
    let sessions = store.list_sessions(1, &Default::default()).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].chunk_count, 24);
    assert_eq!(sessions[0].person, "realclient-user-1-20261126033322");
    assert!(replaystore_posthog::listing::activity(&sessions[0]).click_count > 0);
}

#[test]
fn bad_requests_are_refused_whole_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-body-bytes",
            "100000",
            "--max-decoded-bytes",
            "1000000",
            "--max-events-per-request",
            "3",
        ],
    );
    let good = std::fs::read_to_string(data().join("snapshot-batches.jsonl")).unwrap();
    let first_line = good.lines().nth(1).unwrap(); // a small request of the fixture
    let a = &server.addr;
    // Unknown token.
    let other = first_line.replace(TOKEN, "phc_unknown");
    assert_eq!(http(a, "POST", "/s/", &[], other.as_bytes()).0, 401);
    // Invalid gzip, invalid JSON, an event without $session_id, a body over the limit.
    assert_eq!(
        http(a, "POST", "/s/", &[], &[0x1f, 0x8b, 8, 0, 1, 2]).0,
        400
    );
    assert_eq!(http(a, "POST", "/s/", &[], b"[{not json").0, 400);
    let no_session = first_line.replace("$session_id", "$nope");
    let (status, _, body) = http(a, "POST", "/s/", &[], no_session.as_bytes());
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("$session_id"));
    assert_eq!(http(a, "POST", "/s/", &[], &vec![b' '; 200_000]).0, 413);
    // A gzip bomb past the decoded cap, and more events than a request may hold.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &vec![b' '; 2_000_000]).unwrap();
    let (status, _, body) = http(a, "POST", "/s/", &[], &gz.finish().unwrap());
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("decoded body exceeds 1000000 bytes"));
    let event: serde_json::Value = serde_json::from_str::<Vec<serde_json::Value>>(first_line)
        .unwrap()
        .remove(0);
    let four = serde_json::to_string(&vec![event; 4]).unwrap();
    let (status, _, body) = http(a, "POST", "/s/", &[], four.as_bytes());
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("more than 3 events"));
    // Other encodings posthog-js uses: base64 forms and lz64.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(first_line.as_bytes());
    let form = format!(
        "data={}",
        b64.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(
        http(a, "POST", "/s/?compression=base64", &[ct], form.as_bytes()).0,
        200
    );
    let lz = lz_str::compress_to_base64(first_line);
    let form = format!(
        "data={}",
        lz.replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    assert_eq!(
        http(a, "POST", "/s?compression=lz64", &[ct], form.as_bytes()).0,
        200
    );
    server.stop();
    let store = open_store(dir.path());
    let s = &store.list_sessions(1, &Default::default()).unwrap()[0];
    assert_eq!(s.chunk_count, 2, "only the two good requests were stored");
}

#[test]
fn cors_configuration_and_analytics_endpoints_answer_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let a = &server.addr;
    let origin = ("Origin", "http://shop.example.test");
    let (status, head, _) = http(
        a,
        "OPTIONS",
        "/s/",
        &[
            origin,
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    );
    assert_eq!(status, 200);
    assert!(
        head.contains("access-control-allow-origin: http://shop.example.test"),
        "{head}"
    );
    for path in ["/flags/?v=2", "/decide/?v=3", "/array/phc_x/config"] {
        let (status, _, body) = http(a, "POST", path, &[origin], b"{}");
        assert_eq!(status, 200, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["sessionRecording"]["endpoint"], "/s/", "{path}");
    }
    let (status, _, js) = http(a, "GET", "/array/phc_x/config.js", &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&js).contains("_POSTHOG_REMOTE_CONFIG[\"phc_x\"]"));
    for path in ["/e/", "/i/v0/e/", "/batch"] {
        assert_eq!(
            http(a, "POST", path, &[], b"[{\"event\":\"$pageview\"}]").0,
            200,
            "{path}"
        );
    }
    server.stop();
}

#[test]
fn past_the_in_flight_bound_requests_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    // Each request holds its place for 600 ms; one place.
    let server = Server::start_with_env(
        dir.path(),
        &["--max-inflight", "1"],
        &[("REPLAYSTORE_CAPTURE_DELAY_MS", "600")],
    );
    let body = std::fs::read(data().join("wire/s-002.gz")).unwrap();
    let addr = server.addr.clone();
    let first = std::thread::spawn({
        let body = body.clone();
        move || http(&addr, "POST", "/s/", &[], &body).0
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (status, head, _) = http(&server.addr, "POST", "/s/", &[], &body);
    assert_eq!(status, 503);
    assert!(head.contains("retry-after: 1"), "{head}");
    assert_eq!(
        first.join().unwrap(),
        200,
        "the request holding the place succeeds"
    );
    let (_, _, metrics) = http(&server.addr, "GET", "/metrics", &[], b"");
    assert!(String::from_utf8_lossy(&metrics)
        .contains("replaystore_rejected_total{reason=\"overloaded\"} 1"));
    server.stop();
    let store = open_store(dir.path());
    assert_eq!(
        store.list_sessions(1, &Default::default()).unwrap()[0].chunk_count,
        1,
        "the refused one stored nothing"
    );
}

#[test]
fn the_read_api_is_off_without_a_read_token_and_requires_it_when_on() {
    let dir = tempfile::tempdir().unwrap();
    let off = Server::start(dir.path(), &[]);
    assert_eq!(
        http(&off.addr, "GET", "/api/sessions?team=1", &[], b"").0,
        404
    );
    assert_eq!(http(&off.addr, "GET", "/", &[], b"").0, 404);
    let body = std::fs::read(data().join("wire/s-001.gz")).unwrap();
    assert_eq!(http(&off.addr, "POST", "/s/", &[], &body).0, 200);
    off.stop();

    let on = Server::start(dir.path(), &["--read-token", "sekrit"]);
    let a = &on.addr;
    assert_eq!(http(a, "GET", "/api/sessions?team=1", &[], b"").0, 401);
    assert_eq!(
        http(a, "GET", "/api/sessions?team=1&token=wrong", &[], b"").0,
        401
    );
    let (status, _, list) = http(
        a,
        "GET",
        "/api/sessions?team=1",
        &[("Authorization", "Bearer sekrit")],
        b"",
    );
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let sid = list["sessions"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, events) = http(
        a,
        "GET",
        &format!("/api/sessions/1/{sid}/events?token=sekrit"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let lines: Vec<serde_json::Value> = String::from_utf8(events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|e| e["type"] == 2),
        "a full snapshot, inflated to plain rrweb JSON"
    );
    assert!(lines.iter().all(|e| e.get("cv").is_none()));
    let (status, _, page) = http(a, "GET", "/?team=1&token=sekrit", &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains(&sid));
    on.stop();
}
