//! Invalid input gets a typed error naming the field; the store is unaffected.

mod common;

use common::{chunk, config, open};
use replaystore::{Config, Error, Store};

#[test]
fn invalid_chunks_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config().with_max_payload_bytes(10_000)).unwrap();
    store.append(chunk(1, "good", "p", 0, 500)).unwrap();
    store.flush().unwrap();
    let before = store.stats().unwrap();

    let mut cases = Vec::new();
    let mut c = chunk(1, "x", "p", 0, 10);
    c.session_id = String::new();
    cases.push((c, "session_id"));
    let mut c = chunk(1, "x", "p", 0, 10);
    c.session_id = "s".repeat(129);
    cases.push((c, "session_id"));
    let mut c = chunk(1, "x", "p", 0, 10);
    c.person = String::new();
    cases.push((c, "person"));
    let mut c = chunk(1, "x", "p", 0, 10);
    c.person = "p".repeat(257);
    cases.push((c, "person"));
    let mut c = chunk(1, "x", "p", 0, 10);
    c.window_id = Some("w".repeat(129));
    cases.push((c, "window_id"));
    let mut c = chunk(1, "x", "p", 0, 10);
    c.first_ts_ms = c.last_ts_ms + 1;
    cases.push((c, "first_ts_ms"));
    cases.push((chunk(1, "x", "p", 0, 10_001), "payload"));
    for (c, field) in cases {
        match store.append(c) {
            Err(Error::InvalidChunk { field: f, reason }) => {
                assert_eq!(f, field);
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidChunk({field}), got {other:?}"),
        }
    }
    store.flush().unwrap();
    let after = store.stats().unwrap();
    assert_eq!(
        (after.sessions, after.chunks, after.raw_bytes),
        (before.sessions, before.chunks, before.raw_bytes)
    );
    assert!(store.read_session(1, "x").unwrap().is_none());
    assert!(store.read_session(1, "good").unwrap().is_some());
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        (Config::default().with_segment_bytes(10), "segment_bytes"),
        (
            Config::default().with_compression_level(99),
            "compression_level",
        ),
        (
            Config::default().with_compression_threads(0),
            "compression_threads",
        ),
        (
            Config::default().with_team_retention_days(1, 0),
            "team_retention_days",
        ),
        (
            Config::default().with_team_retention_days(1, 3651),
            "team_retention_days",
        ),
        (
            Config::default().with_max_payload_bytes(0),
            "max_payload_bytes",
        ),
    ];
    for (cfg, field) in bad {
        match Store::open(dir.path(), cfg) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!(
                "expected InvalidConfig({field}), got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[test]
fn close_flushes_everything_appended() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(chunk(1, "a", "p", 0, 10)).unwrap();
    store.close().unwrap();
    let store = open(dir.path());
    assert!(
        store.read_session(1, "a").unwrap().is_some(),
        "close flushed"
    );
}
