//! Regrouping idle sessions into one block each (the cold copy), with and without the posthog-js
//! normalization, keeps every chunk and its order and shrinks the store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{chunk, config, open};
use replaystore::{ManualClock, Store};

#[test]
fn idle_sessions_become_one_block_each_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..20 {
        for s in 0..10 {
            store
                .append(chunk(1, &format!("s{s}"), "p", i, 600 + 37 * s))
                .unwrap();
        }
        store.flush().unwrap(); // one block per session per flush, as posthog-js sends
    }
    store.seal_active().unwrap();
    let before = store.stats().unwrap();
    assert_eq!(store.verify().unwrap().blocks, 200);

    let r = store.compact().unwrap();
    assert_eq!((r.segments_rewritten, r.segments_written), (1, 1), "{r:?}");
    let after = store.stats().unwrap();
    let v = store.verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.blocks, 10, "one block per session");
    assert!(
        after.bytes_on_disk < before.bytes_on_disk,
        "{} !< {}",
        after.bytes_on_disk,
        before.bytes_on_disk
    );
    let check = |store: &Store| {
        for s in 0..10 {
            let got = store.read_session(1, &format!("s{s}")).unwrap().unwrap();
            assert_eq!(got.chunks.len(), 20);
            for (i, c) in got.chunks.iter().enumerate() {
                let want = chunk(1, &format!("s{s}"), "p", i, 600 + 37 * s);
                assert_eq!(
                    (&c.payload, c.first_ts_ms, &c.window_id),
                    (&want.payload, want.first_ts_ms, &want.window_id)
                );
            }
        }
    };
    check(&store);
    // Regrouped once: the next pass leaves it alone.
    assert_eq!(store.compact().unwrap().segments_written, 0);
    drop(store);
    check(&open(dir.path()));
}

#[test]
fn recent_data_is_not_regrouped_until_idle() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_795_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let cfg = config()
        .with_clock(clock.clone())
        .with_regroup_idle(Duration::from_secs(1800));
    let store = Store::open(dir.path(), cfg).unwrap();
    for i in 0..3 {
        let mut c = chunk(1, "s", "p", i, 500);
        (c.first_ts_ms, c.last_ts_ms) = (t0 - 1000, t0);
        store.append(c).unwrap();
        store.flush().unwrap();
    }
    store.seal_active().unwrap();
    assert_eq!(store.compact().unwrap().segments_written, 0, "not idle yet");
    clock.advance(Duration::from_secs(1801));
    assert_eq!(store.compact().unwrap().segments_written, 1);
    assert_eq!(store.verify().unwrap().blocks, 1);
}

#[test]
fn normalized_regroup_of_real_posthog_data_gives_the_plain_rrweb_events() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/posthog-js");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config().with_transform(Arc::new(replaystore_posthog::posthog::Normalize), false);
    let store = Store::open(dir.path(), cfg).unwrap();
    let body = std::fs::read(data.join("snapshot-batches.jsonl")).unwrap();
    let mut session = String::new();
    for (_, c) in replaystore_posthog::posthog::parse_body(1, &body) {
        let c = c.unwrap().unwrap();
        session = c.session_id.clone();
        store.append(c).unwrap();
        store.flush().unwrap();
    }
    store.seal_active().unwrap();
    let as_sent = store.stats().unwrap().bytes_on_disk;
    store.compact().unwrap();
    let regrouped = store.stats().unwrap().bytes_on_disk;
    println!("shop session: {as_sent} bytes as sent, one block per chunk; {regrouped} bytes regrouped and normalized");
    assert!(regrouped * 2 < as_sent, "{regrouped} vs {as_sent}");

    let got = store.read_session(1, &session).unwrap().unwrap();
    let mut events: Vec<String> = Vec::new();
    for c in &got.chunks {
        for e in replaystore_posthog::posthog::payload_events(&c.payload).unwrap() {
            events.push(
                serde_json::from_str::<serde_json::Value>(e.get())
                    .unwrap()
                    .to_string(),
            );
        }
    }
    let plain = std::fs::read_to_string(data.join("session-plain-events.jsonl")).unwrap();
    let mut want: Vec<String> = plain
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(events.len(), want.len());
    let mut got_sorted = events.clone();
    got_sorted.sort();
    want.sort();
    assert!(
        got_sorted == want,
        "the regrouped session holds exactly the plain rrweb events"
    );
}
