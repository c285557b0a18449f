//! Concurrency stress: 8 appending threads, readers, a deleter, compaction and retention all
//! running together for a bounded time; every invariant of the model holds at the end, and
//! after a reopen.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{config, payload};
use replaystore::{Chunk, Error, Store};

const THREADS: usize = 8;
const SESSIONS_PER_THREAD: usize = 4;
const VICTIM: usize = 7; // thread whose person gets deleted mid-run

fn sid(t: usize, k: usize) -> String {
    format!("t{t}-s{k}")
}

fn chunk_of(t: usize, k: usize, j: usize) -> Chunk {
    Chunk {
        team: 1,
        session_id: sid(t, k),
        person: format!("p{t}"),
        window_id: None,
        first_ts_ms: 1_795_000_000_000 + j as i64,
        last_ts_ms: 1_795_000_000_000 + j as i64,
        sent_at_ms: None,
        payload: payload(&sid(t, k), j, 200 + (j * 37) % 1500),
    }
}

/// The chunks of a session must be exactly its first `n` chunks, for some n.
fn assert_prefix(store: &Store, t: usize, k: usize, at_least: usize, exactly: bool) {
    let got = store
        .read_session(1, &sid(t, k))
        .unwrap()
        .map(|s| s.chunks)
        .unwrap_or_default();
    for (j, c) in got.iter().enumerate() {
        assert_eq!(
            c.payload,
            chunk_of(t, k, j).payload,
            "{} chunk {j}",
            sid(t, k)
        );
    }
    if exactly {
        assert_eq!(got.len(), at_least, "{}", sid(t, k));
    } else {
        assert!(
            got.len() >= at_least,
            "{}: {} < {at_least}",
            sid(t, k),
            got.len()
        );
    }
}

#[test]
fn writers_readers_deletion_compaction_and_retention_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let stop = AtomicBool::new(false);
    let deleted = AtomicBool::new(false);
    let run_for = Duration::from_secs(2);
    let started = Instant::now();
    let appended: Vec<HashMap<usize, usize>> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, stop) = (&store, &stop);
                s.spawn(move || {
                    let mut count: HashMap<usize, usize> = HashMap::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let k = i % SESSIONS_PER_THREAD;
                        let j = *count.get(&k).unwrap_or(&0);
                        match store.append(chunk_of(t, k, j)) {
                            Ok(()) => *count.entry(k).or_default() += 1,
                            Err(Error::Deleted { .. }) => {
                                assert_eq!(t, VICTIM);
                                break;
                            }
                            Err(e) => panic!("append: {e}"),
                        }
                        if i % 5 == 4 {
                            store.flush().unwrap();
                        }
                        i += 1;
                    }
                    store.flush().unwrap();
                    count
                })
            })
            .collect();
        // Readers: what they see is always a bit-exact prefix.
        for r in 0..2 {
            let (store, stop) = (&store, &stop);
            s.spawn(move || {
                let mut n = r;
                while !stop.load(Ordering::Relaxed) {
                    let (t, k) = (n % (THREADS - 1), n % SESSIONS_PER_THREAD);
                    assert_prefix(store, t, k, 0, false);
                    n += 1;
                }
            });
        }
        // Deleter, compactor, retention.
        {
            let (store, stop, deleted) = (&store, &stop, &deleted);
            s.spawn(move || {
                std::thread::sleep(run_for / 4);
                store.delete_person(1, &format!("p{VICTIM}")).unwrap();
                deleted.store(true, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    let r = store.compact().unwrap();
                    assert!(r.failed_jobs.is_empty(), "{r:?}");
                    store
                        .enforce_retention(store.config().parts.clock.now_ms())
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(10));
            if deleted.load(Ordering::Acquire) {
                for k in 0..SESSIONS_PER_THREAD {
                    assert!(store.read_session(1, &sid(VICTIM, k)).unwrap().is_none());
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    let check = |store: &Store| {
        for (t, counts) in appended.iter().enumerate() {
            for k in 0..SESSIONS_PER_THREAD {
                if t == VICTIM {
                    assert!(store.read_session(1, &sid(t, k)).unwrap().is_none());
                } else {
                    assert_prefix(store, t, k, counts.get(&k).copied().unwrap_or(0), true);
                }
            }
        }
        let v = store.verify().unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    };
    check(&store);
    let total: usize = appended.iter().flat_map(|c| c.values()).sum();
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    check(&store);
    store.compact().unwrap();
    check(&store);
    println!("stress: {total} chunks appended by {THREADS} threads in {run_for:?}");
}
