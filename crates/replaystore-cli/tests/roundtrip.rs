//! Bit-exact round trips across segment rolls, reopen and the read API.

mod common;

use common::{chunk, config, open, segment_files};
use replaystore::{SessionFilter, Store};

#[test]
fn interleaved_sessions_round_trip_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = 60;
    let per_session = 12;
    let mut expected: Vec<Vec<replaystore::Chunk>> = vec![Vec::new(); sessions];
    {
        let store = open(dir.path());
        // Round-robin over sessions, flushing every few chunks: blocks of one session spread
        // over many flushes and, with 256 KiB segments, over many segments.
        for i in 0..per_session {
            for (s, exp) in expected.iter_mut().enumerate() {
                let c = chunk(
                    1 + (s % 3) as u64,
                    &format!("sess-{s}"),
                    &format!("p{}", s % 7),
                    i,
                    500 + 97 * s + 13 * i,
                );
                exp.push(c.clone());
                store.append(c).unwrap();
            }
            if i % 3 == 2 {
                store.flush().unwrap();
            }
        }
        store.flush().unwrap();
        check_all(&store, &expected);
        store.close().unwrap();
    }
    assert!(
        segment_files(dir.path(), common::LANE).len() > 3,
        "expected several segment rolls"
    );
    let store = open(dir.path());
    assert!(store.recovery_report().sealed_segments >= 3);
    check_all(&store, &expected);
    let st = store.stats().unwrap();
    assert_eq!(st.sessions, sessions as u64);
    assert_eq!(st.chunks, (sessions * per_session) as u64);
    let raw: usize = expected.iter().flatten().map(|c| c.payload.len()).sum();
    assert_eq!(st.raw_bytes, raw as u64);
    assert!(
        st.ratio > 1.5,
        "payloads are compressible: ratio {}",
        st.ratio
    );

    // Appends after reopen land next to the old data of the same session.
    let extra = chunk(1, "sess-0", "p0", per_session, 700);
    store.append(extra.clone()).unwrap();
    store.flush().unwrap();
    expected[0].push(extra);
    check_all(&store, &expected);
}

fn check_all(store: &Store, expected: &[Vec<replaystore::Chunk>]) {
    for (s, chunks) in expected.iter().enumerate() {
        let team = chunks[0].team;
        let got = store
            .read_session(team, &format!("sess-{s}"))
            .unwrap()
            .expect("session present");
        assert_eq!(got.chunks.len(), chunks.len(), "session {s}");
        for (a, b) in got.chunks.iter().zip(chunks) {
            assert_eq!(a.payload, b.payload, "session {s}");
            assert_eq!((a.first_ts_ms, a.last_ts_ms), (b.first_ts_ms, b.last_ts_ms));
            assert_eq!(a.window_id, b.window_id);
        }
        assert_eq!(got.summary.person, chunks[0].person);
        assert_eq!(got.summary.chunk_count, chunks.len() as u64);
        assert_eq!(got.summary.first_ts_ms, chunks[0].first_ts_ms);
        // Another team never sees it.
        assert!(store
            .read_session(team + 100, &format!("sess-{s}"))
            .unwrap()
            .is_none());
    }
}

#[test]
fn chunks_come_back_in_timestamp_order_with_append_order_for_ties() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut late = chunk(1, "s", "p", 5, 100);
    let mut early = chunk(1, "s", "p", 1, 100);
    let mut tie_a = chunk(1, "s", "p", 7, 100);
    let mut tie_b = chunk(1, "s", "p", 8, 100);
    tie_a.first_ts_ms = early.first_ts_ms;
    tie_b.first_ts_ms = early.first_ts_ms;
    store.append(late.clone()).unwrap();
    store.flush().unwrap();
    store.append(early.clone()).unwrap();
    store.append(tie_a.clone()).unwrap();
    store.flush().unwrap();
    store.append(tie_b.clone()).unwrap();
    store.flush().unwrap();
    let got: Vec<Vec<u8>> = store
        .read_session(1, "s")
        .unwrap()
        .unwrap()
        .chunks
        .into_iter()
        .map(|c| c.payload)
        .collect();
    for c in [&mut late, &mut early, &mut tie_a, &mut tie_b] {
        c.window_id = None;
    }
    assert_eq!(
        got,
        vec![early.payload, tie_a.payload, tie_b.payload, late.payload]
    );
}

/// A recent, fixed time base for hand-set timestamps.
const T0: i64 = 1_795_000_000_000;

#[test]
fn list_sessions_filters_by_person_time_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for s in 0..30 {
        for i in 0..3 {
            let mut c = chunk(9, &format!("s{s:02}"), &format!("person-{}", s % 4), i, 300);
            c.first_ts_ms = T0 + 1000 * s as i64 + i as i64 * 10;
            c.last_ts_ms = c.first_ts_ms + 5;
            store.append(c).unwrap();
        }
        if s % 7 == 0 {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    store.seal_active().unwrap();
    let mut late = chunk(9, "s00", "person-0", 9, 100);
    (late.first_ts_ms, late.last_ts_ms) = (T0 + 100, T0 + 105);
    store.append(late).unwrap();
    store.flush().unwrap();

    let all = store.list_sessions(9, &SessionFilter::default()).unwrap();
    assert_eq!(all.len(), 30);
    assert!(all.windows(2).all(|w| w[0].first_ts_ms <= w[1].first_ts_ms));
    // s00 spans a sealed segment and the active one: one summary, all four chunks.
    assert_eq!(all[0].session_id, "s00");
    assert_eq!(all[0].chunk_count, 4);

    let p1 = store
        .list_sessions(
            9,
            &SessionFilter {
                person: Some("person-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p1.len(), 8);
    assert!(p1.iter().all(|s| s.person == "person-1"));

    let window = SessionFilter {
        from_ts_ms: Some(T0 + 5000),
        to_ts_ms: Some(T0 + 9999),
        ..Default::default()
    };
    let got: Vec<String> = store
        .list_sessions(9, &window)
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(got, vec!["s05", "s06", "s07", "s08", "s09"]);

    let limited = store
        .list_sessions(
            9,
            &SessionFilter {
                limit: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(limited.len(), 3);
    assert!(store
        .list_sessions(10, &SessionFilter::default())
        .unwrap()
        .is_empty());
}

#[test]
fn segments_roll_by_age_with_an_injected_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(replaystore::ManualClock::new(1_795_000_000_000));
    let cfg = config()
        .with_segment_bytes(1 << 30)
        .with_segment_max_age(std::time::Duration::from_secs(3600))
        .with_clock(clock.clone());
    let store = Store::open(dir.path(), cfg).unwrap();
    store.append(chunk(1, "a", "p", 0, 100)).unwrap();
    store.flush().unwrap();
    clock.advance(std::time::Duration::from_secs(1800));
    store.append(chunk(1, "a", "p", 1, 100)).unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().sealed_segments, 0);
    clock.advance(std::time::Duration::from_secs(1800));
    store.flush().unwrap(); // a round with nothing to write still seals the old segment
    let st = store.stats().unwrap();
    assert_eq!((st.segments, st.sealed_segments), (1, 1));
    store.append(chunk(1, "a", "p", 2, 100)).unwrap();
    store.flush().unwrap();
    let st = store.stats().unwrap();
    assert_eq!((st.segments, st.sealed_segments), (2, 1));
    assert_eq!(store.read_session(1, "a").unwrap().unwrap().chunks.len(), 3);
}

#[test]
fn retention_lanes_put_teams_in_their_own_directories() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config().with_team_retention_days(2, 90)).unwrap();
    store.append(chunk(1, "a", "p", 0, 100)).unwrap();
    store.append(chunk(2, "b", "p", 0, 100)).unwrap();
    store.flush().unwrap();
    assert_eq!(segment_files(dir.path(), common::LANE).len(), 1);
    assert_eq!(segment_files(dir.path(), 90).len(), 1);
    drop(store);
    let store = Store::open(dir.path(), config().with_team_retention_days(2, 90)).unwrap();
    assert!(store.read_session(2, "b").unwrap().is_some());
    assert!(store.read_session(1, "a").unwrap().is_some());
}

#[test]
fn a_session_whose_person_changes_is_found_under_both() {
    // posthog-js `identify()` switches the distinct id mid-session.
    let dir = tempfile::tempdir().unwrap();
    let check = |store: &Store| {
        let got = store.read_session(1, "s").unwrap().unwrap();
        assert_eq!(got.chunks.len(), 3);
        assert_eq!(got.summary.chunk_count, 3);
        assert_eq!(
            got.summary.person, "anon-123",
            "the person it started under"
        );
        for p in ["anon-123", "user@example.com"] {
            let f = SessionFilter {
                person: Some(p.into()),
                ..Default::default()
            };
            assert_eq!(store.list_sessions(1, &f).unwrap().len(), 1, "{p}");
        }
        assert_eq!(store.stats().unwrap().sessions, 1);
    };
    {
        let store = open(dir.path());
        store.append(chunk(1, "s", "anon-123", 0, 300)).unwrap();
        store
            .append(chunk(1, "s", "user@example.com", 1, 300))
            .unwrap();
        store.flush().unwrap();
        store
            .append(chunk(1, "s", "user@example.com", 2, 300))
            .unwrap();
        store.flush().unwrap();
        check(&store); // active segment, in-memory index
        store.seal_active().unwrap();
    }
    check(&open(dir.path())); // sealed segment, footer index
}
