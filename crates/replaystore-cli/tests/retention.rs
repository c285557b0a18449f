//! Retention with an injected clock: no sleeping, exact cutoffs, and the documented bound on how
//! long data can outlive its retention on disk.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{all_block_payloads, chunk, contains, segment_files};
use replaystore::{Config, ManualClock, SessionFilter, Store, DAY_MS};

const T0: i64 = 1_795_000_000_000;
const HOUR: i64 = 3_600_000;

fn config(clock: &Arc<ManualClock>) -> Config {
    common::config()
        .with_default_retention_days(30)
        .with_team_retention_days(2, 90)
        .with_segment_max_age(Duration::from_secs(3600))
        .with_clock(clock.clone())
}

#[test]
fn sessions_vanish_at_their_lanes_retention_and_files_go_at_the_next_enforcement() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    for team in [1, 2] {
        for i in 0..5 {
            store
                .append(chunk(team, &format!("t{team}-s{i}"), "p", 0, 500))
                .unwrap();
        }
    }
    store.flush().unwrap();
    clock.set(T0 + 2 * HOUR);
    store.flush().unwrap(); // seals both lanes' segments by age
                            // Retention counts from arrival (the store's clock at append), not the SDK timestamps.
    let last_ts = T0;
    let visible = |team: u64| {
        store
            .list_sessions(team, &SessionFilter::default())
            .unwrap()
            .len()
    };

    clock.set(last_ts + 30 * DAY_MS - 1);
    assert_eq!(
        store
            .enforce_retention(clock.now())
            .unwrap()
            .segments_removed,
        0
    );
    assert_eq!((visible(1), visible(2)), (5, 5));

    clock.set(last_ts + 30 * DAY_MS + 1);
    assert_eq!(
        (visible(1), visible(2)),
        (0, 5),
        "hidden before the file is gone"
    );
    assert!(store.read_session(1, "t1-s4").unwrap().is_none());
    assert_eq!(segment_files(dir.path(), 30).len(), 1);
    let r = store.enforce_retention(clock.now()).unwrap();
    assert_eq!(r.segments_removed, 1);
    assert!(segment_files(dir.path(), 30).is_empty());
    assert_eq!(segment_files(dir.path(), 90).len(), 1);
    assert!(store.read_session(2, "t2-s4").unwrap().is_some());

    clock.set(last_ts + 90 * DAY_MS + 1);
    assert_eq!(visible(2), 0);
    store.enforce_retention(clock.now()).unwrap();
    assert!(segment_files(dir.path(), 90).is_empty());
    assert_eq!(store.stats().unwrap().segments, 0);
}

#[test]
fn nothing_outlives_retention_by_more_than_segment_age_plus_schedule() {
    // Retention 1 day, segments roll every hour, maintenance every 10 minutes: a chunk must be
    // hidden from reads right after its arrival + 1 day and gone from every file by
    // arrival + 1 day + 1 h + 10 min (here its last timestamp is its arrival).
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = config(&clock).with_default_retention_days(1);
    let store = Store::open(dir.path(), cfg).unwrap();
    let interval = 10 * 60 * 1000;
    let bound = DAY_MS + HOUR + interval;
    let mut written: Vec<(i64, Vec<u8>, String)> = Vec::new();
    // Three hours of traffic: a chunk every 5 minutes, stamped with the clock.
    for i in 0..36 {
        let now = T0 + i * 5 * 60 * 1000;
        clock.set(now);
        let sid = format!("s{i}");
        let mut c = chunk(1, &sid, "p", i as usize, 300);
        (c.first_ts_ms, c.last_ts_ms) = (now - 1000, now);
        written.push((now, c.payload.clone(), sid));
        store.append(c).unwrap();
        store.flush().unwrap();
    }
    // Maintenance ticks until everything is gone.
    let mut now = T0 + 3 * HOUR;
    while now < T0 + 3 * HOUR + DAY_MS + 2 * HOUR {
        now += interval;
        clock.set(now);
        store.flush().unwrap(); // a round seals segments older than segment_max_age
        store.enforce_retention(now).unwrap();
        let on_disk = all_block_payloads(dir.path());
        for (last_ts, payload, sid) in &written {
            let hidden = store.read_session(1, sid).unwrap().is_none();
            assert_eq!(hidden, *last_ts < now - DAY_MS, "{sid} at {now}");
            if now > last_ts + bound {
                assert!(
                    !on_disk.iter().any(|p| contains(p, payload)),
                    "{sid} outlived the bound"
                );
            }
        }
    }
    assert!(all_block_payloads(dir.path()).is_empty());
}

#[test]
fn a_sessions_lane_is_fixed_by_its_first_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    {
        let store = Store::open(dir.path(), config(&clock)).unwrap();
        store.append(chunk(1, "old", "p", 0, 300)).unwrap();
        store.flush().unwrap();
    }
    // The team moves to 90 days: its running session stays in the 30-day lane, new ones go
    // to the 90-day lane.
    let store = Store::open(dir.path(), config(&clock).with_team_retention_days(1, 90)).unwrap();
    store.append(chunk(1, "old", "p", 1, 300)).unwrap();
    store.append(chunk(1, "new", "p", 0, 300)).unwrap();
    store.flush().unwrap();
    assert_eq!(segment_files(dir.path(), 30).len(), 1);
    assert_eq!(segment_files(dir.path(), 90).len(), 1);
    let old = std::fs::read(&segment_files(dir.path(), 30)[0]).unwrap();
    assert!(contains(&old, b"old") && !contains(&old, b"new"));
    assert_eq!(
        store.read_session(1, "old").unwrap().unwrap().chunks.len(),
        2
    );
}

#[test]
fn compaction_reclaims_expired_blocks_of_a_mostly_expired_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    // One segment: a big session that arrived 40 days ago and a small fresh one (the flush
    // that writes the fresh one into the segment then seals it by age).
    clock.set(T0 - 40 * DAY_MS);
    let mut old = chunk(1, "old", "p", 0, 50_000);
    (old.first_ts_ms, old.last_ts_ms) = (T0 - 40 * DAY_MS, T0 - 40 * DAY_MS);
    store.append(old).unwrap();
    store.flush().unwrap();
    clock.set(T0);
    store.append(chunk(1, "fresh", "p", 0, 500)).unwrap();
    store.flush().unwrap();
    assert_eq!(segment_files(dir.path(), 30).len(), 1);
    assert!(
        store.read_session(1, "old").unwrap().is_none(),
        "past retention already"
    );
    let r = store.compact().unwrap();
    assert_eq!((r.segments_rewritten, r.blocks_dropped), (1, 1));
    for p in all_block_payloads(dir.path()) {
        assert!(!contains(&p, b"\"session\":\"old\""));
    }
    assert!(store.read_session(1, "fresh").unwrap().is_some());
}
