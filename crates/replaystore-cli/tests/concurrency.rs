//! Many threads appending and flushing at once share fsyncs and lose nothing.

mod common;

use std::collections::HashMap;

use common::{chunk, open};

#[test]
fn eight_threads_append_and_flush_then_reopen_nothing_lost_nothing_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 8;
    let sessions_per_thread = 6;
    let chunks_per_session = 25;
    {
        let store = open(dir.path());
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                s.spawn(move || {
                    for i in 0..chunks_per_session {
                        for k in 0..sessions_per_thread {
                            let sess = format!("t{t}-s{k}");
                            store
                                .append(chunk(
                                    1 + t as u64 % 2,
                                    &sess,
                                    &format!("p{t}"),
                                    i,
                                    200 + 50 * k,
                                ))
                                .unwrap();
                        }
                        if i % 2 == 1 {
                            store.flush().unwrap();
                        }
                    }
                    store.flush().unwrap();
                });
            }
        });
        let st = store.stats().unwrap();
        // Group commit: far fewer fsyncs than flush() calls (8 threads x 13 calls each).
        assert!(
            st.fsyncs < (threads * (chunks_per_session / 2 + 1)) as u64,
            "fsyncs {}",
            st.fsyncs
        );
    }
    let store = open(dir.path());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in 0..threads {
        for k in 0..sessions_per_thread {
            let sess = format!("t{t}-s{k}");
            let got = store
                .read_session(1 + t as u64 % 2, &sess)
                .unwrap()
                .expect("session present");
            assert_eq!(got.chunks.len(), chunks_per_session, "{sess}");
            for (i, c) in got.chunks.iter().enumerate() {
                assert_eq!(
                    c.payload,
                    chunk(1, &sess, "", i, 200 + 50 * k).payload,
                    "{sess} chunk {i}"
                );
            }
            *seen.entry(sess).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), threads * sessions_per_thread);
    assert_eq!(
        store.stats().unwrap().chunks,
        (threads * sessions_per_thread * chunks_per_session) as u64
    );
}

#[test]
fn background_flusher_makes_data_durable_without_flush_calls() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config()
        .with_background_flush(true)
        .with_flush_interval(std::time::Duration::from_millis(20));
    let store = replaystore::Store::open(dir.path(), cfg).unwrap();
    store.append(chunk(1, "bg", "p", 0, 500)).unwrap();
    // Wait (bounded) for the flusher; no timing is asserted, only the outcome.
    for _ in 0..500 {
        if store.buffered_bytes() == 0 && store.read_session(1, "bg").unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Readers only see blocks after their fsync, so visible here means durable.
    assert!(
        store.read_session(1, "bg").unwrap().is_some(),
        "flushed by the background thread"
    );
    assert!(store.stats().unwrap().fsyncs >= 1);
}

#[test]
fn a_store_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<replaystore::Store>();
    shareable::<std::sync::Arc<replaystore::Store>>();
}
