//! Deletion: hidden at once and durably, refused afterwards, physically purged by compaction,
//! with proof that neither payload nor identifier is left in any file of the store.

mod common;

use common::{all_block_payloads, chunk, config, contains, files_under, open};
use replaystore::{DeletionStatus, Error, SessionFilter, Store};

const VICTIM: &str = "victim@example.com";
const CANARY: &[u8] = b"CANARY-5f1d-erase-me";

/// Chunk `i` of a session, with the canary inside the payload for the victim.
fn person_chunk(session: &str, person: &str, i: usize) -> replaystore::Chunk {
    let mut c = chunk(7, session, person, i, 1500);
    if person == VICTIM {
        let at = c.payload.len() / 2;
        c.payload.splice(at..at, CANARY.iter().copied());
    }
    c
}

fn persons() -> Vec<String> {
    vec!["alice".into(), "bob".into(), VICTIM.into(), "carol".into()]
}

/// Writes 3 sessions x 6 chunks per person, half in a sealed segment and half in the active
/// one, plus one chunk of the victim still in the write buffer. Returns the expected chunks per session.
fn populate(store: &Store) -> Vec<(String, Vec<replaystore::Chunk>)> {
    let mut sessions = Vec::new();
    for p in persons() {
        for k in 0..3 {
            sessions.push((format!("{p}-s{k}"), p.clone(), Vec::new()));
        }
    }
    for i in 0..6 {
        for (sid, p, chunks) in sessions.iter_mut() {
            let c = person_chunk(sid, p, i);
            chunks.push(c.clone());
            store.append(c).unwrap();
        }
        if i == 2 {
            store.flush().unwrap();
            store.seal_active().unwrap();
        }
    }
    store.flush().unwrap();
    // One more victim chunk stays in the write buffer.
    store
        .append(person_chunk("victim@example.com-s9", VICTIM, 0))
        .unwrap();
    sessions.into_iter().map(|(s, _, c)| (s, c)).collect()
}

fn check_others(store: &Store, expected: &[(String, Vec<replaystore::Chunk>)]) {
    check(store, expected, VICTIM)
}

/// Sessions of `deleted` are gone; every other one reads back bit-exact.
fn check(store: &Store, expected: &[(String, Vec<replaystore::Chunk>)], deleted: &str) {
    for (sid, chunks) in expected {
        let got = store.read_session(7, sid).unwrap();
        if chunks[0].person == deleted {
            assert!(got.is_none(), "{sid} must be gone");
            continue;
        }
        let got = got.expect("other persons' sessions stay");
        assert_eq!(got.chunks.len(), chunks.len(), "{sid}");
        for (a, b) in got.chunks.iter().zip(chunks) {
            assert_eq!(a.payload, b.payload, "{sid}");
        }
    }
}

#[test]
fn deleted_person_is_hidden_at_once_and_purged_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let expected = populate(&store);
    let id = store.delete_person(7, VICTIM).unwrap();

    // Logically gone at once, from reads and listings.
    check_others(&store, &expected);
    let mine = SessionFilter {
        person: Some(VICTIM.into()),
        ..Default::default()
    };
    assert!(store.list_sessions(7, &mine).unwrap().is_empty());
    assert_eq!(
        store
            .list_sessions(7, &SessionFilter::default())
            .unwrap()
            .len(),
        9
    );
    assert!(matches!(
        store.deletion_status(id),
        DeletionStatus::Pending { .. }
    ));
    // A late chunk of the victim (recorded before the request) is refused and counted.
    match store.append(person_chunk("victim@example.com-s0", VICTIM, 9)) {
        Err(Error::Deleted { .. }) => {}
        other => panic!("expected Deleted, got {other:?}"),
    }
    store.flush().unwrap();

    // Still gone after a crash-like reopen (drop without compaction).
    drop(store);
    let store = open(dir.path());
    check_others(&store, &expected);
    assert!(matches!(
        store.deletion_status(id),
        DeletionStatus::Pending { .. }
    ));

    // The scans below can see the canary: before the purge, they do.
    assert!(all_block_payloads(dir.path())
        .iter()
        .any(|p| contains(p, CANARY)));
    let segs: Vec<_> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert!(segs
        .iter()
        .any(|f| contains(&std::fs::read(f).unwrap(), VICTIM.as_bytes())));

    let report = store.compact().unwrap();
    assert_eq!(report.deletions_completed, vec![id]);
    match store.deletion_status(id) {
        DeletionStatus::Done {
            purged,
            completed_ms,
            requested_ms,
        } => {
            assert_eq!(purged.sessions_removed, 3);
            assert!(purged.bytes_removed > 0 && purged.segments_rewritten >= 1);
            assert!(completed_ms >= requested_ms);
        }
        other => panic!("expected Done, got {other:?}"),
    }
    check_others(&store, &expected);
    drop(store);

    // Proof (a): no byte of any file holds the canary or the identifier.
    let files = files_under(dir.path());
    assert!(files.iter().any(|f| f.ends_with("tombstones.log")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!contains(&bytes, CANARY), "canary in {}", f.display());
        assert!(
            !contains(&bytes, VICTIM.as_bytes()),
            "identifier in {}",
            f.display()
        );
    }
    // Proof (b): nor does any decompressed block.
    let payloads = all_block_payloads(dir.path());
    assert!(!payloads.is_empty());
    for p in &payloads {
        assert!(!contains(p, CANARY));
        assert!(!contains(p, VICTIM.as_bytes()));
    }
    // Others still bit-exact after reopen; the victim's late chunks are still refused.
    let store = open(dir.path());
    check_others(&store, &expected);
    assert!(matches!(
        store.append(person_chunk("x", VICTIM, 1)),
        Err(Error::Deleted { .. })
    ));
}

#[test]
fn deleted_session_refuses_every_later_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let expected = populate(&store);
    let id = store.delete_session(7, "alice-s1").unwrap();
    assert!(store.read_session(7, "alice-s1").unwrap().is_none());
    assert!(store.read_session(7, "alice-s0").unwrap().is_some());
    let mut late = person_chunk("alice-s1", "alice", 99);
    // Recorded long after the request (by its timestamps): still refused, the whole session
    // is deleted.
    late.first_ts_ms += 365 * replaystore::DAY_MS;
    late.last_ts_ms = late.first_ts_ms;
    assert!(matches!(store.append(late), Err(Error::Deleted { .. })));
    store.compact().unwrap();
    assert!(matches!(
        store.deletion_status(id),
        DeletionStatus::Done { .. }
    ));
    assert!(store.read_session(7, "alice-s1").unwrap().is_none());
    let expected: Vec<_> = expected
        .into_iter()
        .filter(|(s, _)| s != "alice-s1")
        .collect();
    check(&store, &expected, "nobody");
    for p in all_block_payloads(dir.path()) {
        assert!(!contains(&p, b"\"session\":\"alice-s1\""));
    }
}

#[test]
fn a_deletion_purges_the_write_buffer_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(person_chunk("keep", "bob", 0)).unwrap();
    store.append(person_chunk("gone", VICTIM, 0)).unwrap();
    store.delete_person(7, VICTIM).unwrap();
    store.flush().unwrap();
    for f in files_under(dir.path()) {
        if f.extension().is_some_and(|e| e == "seg") {
            let bytes = std::fs::read(&f).unwrap();
            assert!(!contains(&bytes, VICTIM.as_bytes()), "never written");
        }
    }
    assert!(store.read_session(7, "keep").unwrap().is_some());
}

#[test]
fn one_compaction_pass_serves_a_queue_of_requests_and_readers_keep_reading() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), config()).unwrap());
    let expected = populate(&store);
    store.seal_active().unwrap();
    let ids: Vec<u64> = ["alice", "bob"]
        .iter()
        .map(|p| store.delete_person(7, p).unwrap())
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // Readers of carol's sessions run through the whole compaction.
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut reads = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                        for (sid, chunks) in expected.iter().filter(|(s, _)| s.starts_with("carol"))
                        {
                            let got = store.read_session(7, sid).unwrap().unwrap();
                            assert_eq!(got.chunks.len(), chunks.len());
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        let report = store.compact().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(report.deletions_completed, ids);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    for id in ids {
        assert!(matches!(
            store.deletion_status(id),
            DeletionStatus::Done { .. }
        ));
    }
}

#[test]
fn compaction_merges_small_segments_and_keeps_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut n = 0;
    for seg in 0..8 {
        for s in 0..5 {
            store
                .append(chunk(1, &format!("s{s}"), "p", seg, 800))
                .unwrap();
            n += 1;
        }
        store.flush().unwrap();
        store.seal_active().unwrap();
    }
    assert_eq!(store.stats().unwrap().segments, 8);
    let r = store.compact().unwrap();
    assert_eq!(r.segments_rewritten, 8);
    assert_eq!(r.segments_written, 1);
    let st = store.stats().unwrap();
    assert_eq!((st.segments, st.chunks), (1, n));
    for s in 0..5 {
        let got = store.read_session(1, &format!("s{s}")).unwrap().unwrap();
        assert_eq!(got.chunks.len(), 8);
        for (i, c) in got.chunks.iter().enumerate() {
            assert_eq!(c.payload, chunk(1, &format!("s{s}"), "p", i, 800).payload);
        }
    }
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.stats().unwrap().chunks, n);
}

#[test]
fn background_maintenance_purges_within_purge_within() {
    // Maintenance ticks every 20 ms of real time; deletions batch until half of purge_within
    // (30 min of the injected clock) has passed, or until request_purge().
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(replaystore::ManualClock::new(1_795_000_000_000));
    let cfg = config()
        .with_clock(clock.clone())
        .with_maintenance_interval(Some(std::time::Duration::from_millis(20)))
        .with_purge_within(std::time::Duration::from_secs(3600))
        // Nothing is idle yet by this clock: only the deletions make compaction due.
        .with_regroup_idle(std::time::Duration::from_secs(3600));
    let store = Store::open(dir.path(), cfg).unwrap();
    populate(&store);
    let wait_done = |id: u64| {
        for _ in 0..1000 {
            if matches!(store.deletion_status(id), DeletionStatus::Done { .. }) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    };
    let a = store.delete_person(7, "alice").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        matches!(store.deletion_status(a), DeletionStatus::Pending { .. }),
        "batched"
    );
    clock.advance(std::time::Duration::from_secs(31 * 60));
    assert!(wait_done(a), "purged once half of purge_within passed");
    let b = store.delete_person(7, "bob").unwrap();
    store.request_purge();
    assert!(wait_done(b), "purged on request");
}
