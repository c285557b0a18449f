//! Client clocks: the store's own clock (arrival time) decides retention and erasure; the SDK's
//! timestamps are validated (and corrected from the client's send time) but never trusted for
//! either. Every test runs on a manual clock: no sleeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all_block_payloads, contains, files_under, payload};
use replaystore::{
    Chunk, Config, DeletionStatus, Error, ManualClock, SessionFilter, Store, DAY_MS,
};

/// The store's clock at the start of every test (2026-11-18).
const T0: i64 = 1_795_000_000_000;
const HOUR: i64 = 3_600_000;
const YEAR: i64 = 365 * DAY_MS;
const TEAM: u64 = 5;
const ALICE: &str = "alice@example.com";

/// With the rrweb annotator: it records the clock-skew correction of each block (the engine
/// keeps none without an annotator).
fn config(clock: &Arc<ManualClock>) -> Config {
    Config::default()
        .with_annotator(Some(Arc::new(replaystore_posthog::RrwebAnnotator)))
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_segment_bytes(1 << 20)
        .with_default_retention_days(30)
        .with_clock(clock.clone())
}

/// A chunk of `session` whose SDK timestamps read `client_ms` (the device's clock), sent at
/// `sent_at` by the same clock when given; its payload carries `marker`.
fn chunk(session: &str, person: &str, client_ms: i64, sent_at: Option<i64>, marker: &str) -> Chunk {
    let mut p = payload(session, 1, 800);
    let at = p.len() / 2;
    p.splice(at..at, marker.bytes());
    Chunk {
        team: TEAM,
        session_id: session.into(),
        person: person.into(),
        window_id: None,
        first_ts_ms: client_ms,
        last_ts_ms: client_ms + 1500,
        sent_at_ms: sent_at,
        payload: p,
    }
}

/// A device whose clock reads `skew_ms` off the store's, sending right after recording.
fn from_device(session: &str, person: &str, now: i64, skew_ms: i64, marker: &str) -> Chunk {
    let device_now = now + skew_ms;
    chunk(session, person, device_now - 2000, Some(device_now), marker)
}

fn listed(store: &Store) -> Vec<String> {
    let all = store
        .list_sessions(TEAM, &SessionFilter::default())
        .unwrap();
    let mut ids: Vec<String> = all.into_iter().map(|s| s.session_id).collect();
    ids.sort();
    ids
}

fn nothing_on_disk_holds(dir: &std::path::Path, needles: &[&str]) {
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        for n in needles {
            assert!(!contains(&bytes, n.as_bytes()), "{n} in {}", f.display());
        }
    }
    for block in all_block_payloads(dir) {
        for n in needles {
            assert!(
                !contains(&block, n.as_bytes()),
                "{n} in a decompressed block"
            );
        }
    }
}

#[test]
fn erasure_covers_every_clock_a_device_can_have() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    // alice: a correct clock, one a year ahead, a dead RTC battery (1970); bob: correct.
    let devices = [
        ("s-alice-ok", 0, "CANARY-alice-ok"),
        ("s-alice-ahead", YEAR, "CANARY-alice-ahead"),
        ("s-alice-1970", -T0 + 5_000, "CANARY-alice-1970"),
    ];
    for (session, skew, marker) in devices {
        store
            .append(from_device(session, ALICE, T0, skew, marker))
            .unwrap();
    }
    store
        .append(from_device("s-bob", "bob", T0, 0, "KEEP-bob"))
        .unwrap();
    store.flush().unwrap();
    // One more chunk of the skewed session, still in the write buffer at the request.
    clock.advance(Duration::from_secs(5));
    let now = clock.now();
    let late = from_device("s-alice-ahead", ALICE, now, YEAR, "CANARY-buffered");
    store.append(late).unwrap();
    assert_eq!(store.stats().unwrap().chunks_clock_corrected, 3);
    assert_eq!(listed(&store).len(), 4);

    let id = store.delete_person(TEAM, ALICE).unwrap();
    for (session, _, _) in devices {
        assert!(
            store.read_session(TEAM, session).unwrap().is_none(),
            "{session}"
        );
    }
    assert_eq!(listed(&store), vec!["s-bob"]);
    store.compact().unwrap();
    let DeletionStatus::Done { purged, .. } = store.deletion_status(id) else {
        panic!("not done: {:?}", store.deletion_status(id));
    };
    assert_eq!(
        purged.sessions_removed, 3,
        "every session of alice is counted"
    );
    store.close().unwrap();

    let needles = [
        "CANARY-alice-ok",
        "CANARY-alice-ahead",
        "CANARY-alice-1970",
        "CANARY-buffered",
        "s-alice-",
        ALICE,
    ];
    nothing_on_disk_holds(dir.path(), &needles);
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    assert_eq!(listed(&store), vec!["s-bob"]);
    let bob = store.read_session(TEAM, "s-bob").unwrap().unwrap();
    assert!(contains(&bob.chunks[0].payload, b"KEEP-bob"));
}

#[test]
fn chunks_after_an_erasure_are_refused_when_recorded_before_it_and_kept_when_new() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    store
        .append(from_device("s-1", "carol", T0, 0, "OLD-1"))
        .unwrap();
    store.flush().unwrap();
    let request_at = clock.now();
    store.delete_person(TEAM, "carol").unwrap();

    // Wrong way 1: a chunk recorded before the request reaches the store after it (an offline
    // queue replayed 10 minutes later). It must not escape the erasure.
    clock.advance(Duration::from_secs(600));
    let replayed = chunk("s-1", "carol", request_at - 60_000, None, "OLD-2");
    assert!(matches!(store.append(replayed), Err(Error::Deleted { .. })));
    // The same from a device a year ahead that reports its send time: corrected, then refused.
    let now = clock.now();
    let ahead = chunk(
        "s-1",
        "carol",
        request_at - 60_000 + YEAR,
        Some(now + YEAR),
        "OLD-3",
    );
    assert!(matches!(store.append(ahead), Err(Error::Deleted { .. })));

    // Wrong way 2: carol comes back and records a new session after the request; erasure is
    // of what was recorded, not a ban, so it is kept through compaction.
    store
        .append(from_device("s-2", "carol", now, 0, "NEW-1"))
        .unwrap();
    store.flush().unwrap();
    store.compact().unwrap();
    assert_eq!(listed(&store), vec!["s-2"]);
    let kept = store.read_session(TEAM, "s-2").unwrap().unwrap();
    assert_eq!(kept.chunks.len(), 1);
    assert!(kept.chunks[0].arrival_ms > request_at);
    store.close().unwrap();
    nothing_on_disk_holds(dir.path(), &["OLD-1", "OLD-2", "OLD-3"]);
}

#[test]
fn retention_is_by_arrival_whatever_the_devices_clocks_say() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let max_age = Duration::from_secs(3600);
    let store = Store::open(dir.path(), config(&clock).with_segment_max_age(max_age)).unwrap();
    // bob on a correct clock shares the segment with a device at the edge of the window
    // (59 minutes ahead, no send time) and one a year ahead (corrected from its send time).
    store
        .append(from_device("s-bob", "bob", T0, 0, "BOB"))
        .unwrap();
    store
        .append(chunk(
            "s-edge",
            "dan",
            T0 + 59 * 60_000 - 1500,
            None,
            "EDGE",
        ))
        .unwrap();
    store
        .append(from_device("s-future", "eve", T0, YEAR, "FUTURE"))
        .unwrap();
    store.flush().unwrap();
    let stored = store
        .read_session(TEAM, "s-future")
        .unwrap()
        .expect("corrected, stored");
    let activity = replaystore_posthog::listing::activity(&stored.summary);
    assert_eq!(activity.clock_offset_ms, -YEAR);
    assert!(
        stored.chunks[0].first_ts_ms <= T0,
        "re-timed to the store's clock"
    );

    // Still kept just before retention (30 days after arrival)...
    clock.set(T0 + 30 * DAY_MS - HOUR);
    store.flush().unwrap(); // seals the segment by age
    store.enforce_retention(clock.now()).unwrap();
    assert_eq!(listed(&store).len(), 3);
    // ...and gone, files and all, once retention + segment_max_age + one maintenance interval
    // have passed since arrival (the bound docs/privacy.md states).
    let interval = 10 * 60_000;
    clock.set(T0 + 30 * DAY_MS + max_age.as_millis() as i64 + interval);
    store.flush().unwrap();
    assert!(listed(&store).is_empty(), "hidden by arrival time");
    let report = store.enforce_retention(clock.now()).unwrap();
    assert_eq!(report.segments_removed, 1);
    store.close().unwrap();
    let segments = files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .count();
    assert_eq!(segments, 0);
}

#[test]
fn untrustworthy_timestamps_are_refused_with_their_field_or_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    let ten_years = 3650 * DAY_MS;
    // (client timestamp, send time, Ok(corrected first_ts) or Err(field))
    let cases: Vec<(i64, Option<i64>, Result<i64, &str>)> = vec![
        (-1, None, Err("first_ts_ms")),
        (0, None, Err("first_ts_ms")),
        (i64::MAX - 1500, None, Err("last_ts_ms")),
        (i64::MIN, None, Err("first_ts_ms")),
        (T0 + ten_years, None, Err("last_ts_ms")),
        (T0 - 49 * HOUR, None, Err("first_ts_ms")),
        (5_000, Some(7_000), Ok(T0 - 2000)),
        (T0 + ten_years, Some(T0 + ten_years + 2000), Ok(T0 - 2000)),
        (T0 - 72 * HOUR, Some(T0), Err("first_ts_ms")),
        (T0, Some(i64::MIN), Err("sent_at_ms")),
        (T0 - 1000, Some(T0 - 500), Ok(T0 - 1000)),
    ];
    let mut refused = 0;
    for (k, (ts, sent, want)) in cases.iter().enumerate() {
        let session = format!("s-{k}");
        let got = store.append(chunk(&session, "p", *ts, *sent, "x"));
        match (want, got) {
            (Ok(first), Ok(())) => {
                store.flush().unwrap();
                let s = store.read_session(TEAM, &session).unwrap().unwrap();
                assert_eq!(s.chunks[0].first_ts_ms, *first, "case {k}");
                assert_eq!(s.chunks[0].arrival_ms, T0, "case {k}");
            }
            (
                Err(field),
                Err(Error::Timestamp {
                    field: f,
                    value_ms,
                    arrival_ms,
                    reason,
                }),
            ) => {
                assert_eq!(*field, f, "case {k}: {reason}");
                assert_eq!(arrival_ms, T0);
                assert!(value_ms == *ts || value_ms == ts + 1500 || Some(value_ms) == *sent);
                refused += 1;
            }
            (want, got) => panic!("case {k}: wanted {want:?}, got {got:?}"),
        }
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.chunks_refused_timestamp, refused);
    assert_eq!(stats.chunks_clock_corrected, 2);
    assert_eq!(listed(&store).len(), 3, "nothing refused was stored");
}

#[test]
fn arrival_times_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    for i in 0..3 {
        store
            .append(from_device("s", "p", clock.now(), 0, "x"))
            .unwrap();
        store.flush().unwrap();
        if i == 1 {
            store.seal_active().unwrap();
        }
        clock.advance(Duration::from_secs(60));
    }
    let before = store.read_session(TEAM, "s").unwrap().unwrap();
    let arrivals: Vec<i64> = before.chunks.iter().map(|c| c.arrival_ms).collect();
    assert_eq!(arrivals, vec![T0, T0 + 60_000, T0 + 120_000]);
    store.simulate_crash();
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    let after = store.read_session(TEAM, "s").unwrap().unwrap();
    assert_eq!(after.chunks, before.chunks);
    // An hour on, compaction seals the active segment by age and regroups both segments:
    // arrival times are carried chunk by chunk into the regrouped block.
    clock.advance(Duration::from_secs(3600));
    let report = store.compact().unwrap();
    assert_eq!(report.segments_rewritten, 2, "{report:?}");
    let regrouped = store.read_session(TEAM, "s").unwrap().unwrap();
    assert_eq!(regrouped.chunks, before.chunks);
}
