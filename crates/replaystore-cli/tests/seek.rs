//! Seekable playback (`Store::read_session_from`, `export --from-ms`): a read from a time
//! returns exactly the suffix of a whole read from the chunk holding the last keyframe at or
//! before it, across flush blocks, segments and regrouped blocks; regrouping keeps keyframes
//! and cuts blocks at them; the rrweb layer starts the output at the meta + full snapshot.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use replaystore::{AnnotationPart, Annotator, BlockContext, Chunk, Config, Store, StoredChunk};

/// Says a chunk whose payload starts with `K` holds a keyframe at its first timestamp.
#[derive(Debug)]
struct KeyframeMarks;

impl Annotator for KeyframeMarks {
    fn name(&self) -> &'static str {
        "keyframe-marks"
    }
    fn analyze(&self, _: &[Chunk], _: &BlockContext) -> Option<Vec<u8>> {
        None
    }
    fn merge(&self, _: &[AnnotationPart<'_>]) -> Vec<u8> {
        vec![1]
    }
    fn keyframe(&self, chunk: &Chunk) -> Option<i64> {
        (chunk.payload.first() == Some(&b'K')).then_some(chunk.first_ts_ms)
    }
}

const BASE_MS: i64 = 1_795_000_000_000;

fn config(cut: Option<usize>) -> Config {
    common::config()
        .with_annotator(Some(Arc::new(KeyframeMarks)))
        .with_segment_bytes(4 << 10)
        .with_keyframe_block_bytes(cut)
}

/// What a client would do with a whole read: start at the chunk holding the last keyframe at
/// or before `from_ms` (keyframe times are distinct here).
fn client_side_suffix(whole: &[StoredChunk], from_ms: i64) -> (&[StoredChunk], Option<i64>) {
    let start = whole
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.keyframe_ms.filter(|&k| k <= from_ms).map(|k| (k, i)))
        .max();
    match start {
        Some((k, i)) => (&whole[i..], Some(k)),
        None => (whole, None),
    }
}

/// One generated chunk: (distinct start offset, length, holds a keyframe, flush after it).
type Spec = (i64, usize, bool, bool);

fn session_chunks(specs: &[Spec]) -> Vec<Chunk> {
    specs
        .iter()
        .enumerate()
        .map(|(i, &(start, len, key, _))| {
            let mut c = common::chunk(1, "seek-me", "p", i, len.max(1));
            c.first_ts_ms = BASE_MS + start;
            c.last_ts_ms = c.first_ts_ms + (i as i64 % 7) * 300;
            c.payload[0] = if key { b'K' } else { b'x' };
            c
        })
        .collect()
}

fn check_every_point(store: &Store, froms: &[i64]) -> Result<(), TestCaseError> {
    let whole = store.read_session(1, "seek-me").unwrap().unwrap();
    for &f in froms {
        let from_ms = BASE_MS + f;
        let read = store.read_session_from(1, "seek-me", from_ms).unwrap();
        let (want, key) = client_side_suffix(&whole.chunks, from_ms);
        let got = read.data.unwrap();
        prop_assert_eq!(&got.chunks[..], want, "from {}", f);
        prop_assert_eq!(read.keyframe_ms, key);
        prop_assert_eq!(got.summary.chunk_count as usize, want.len());
        let whole_trace = store
            .read_session_from(1, "seek-me", i64::MIN)
            .unwrap()
            .trace;
        prop_assert!(read.trace.bytes_decompressed <= whole_trace.bytes_decompressed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_read_from_a_time_is_the_suffix_of_a_whole_read_from_its_keyframe(
        specs in prop::collection::vec((0i64..5_000, 1usize..700, prop::bool::weighted(0.25), prop::bool::weighted(0.3)), 1..40),
        froms in prop::collection::vec(-100i64..200_000, 1..6),
        regroup in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), config(Some(600))).unwrap();
        // Distinct starts (so keyframe times are), appended in the generated (unsorted) order.
        let mut specs = specs;
        for (i, s) in specs.iter_mut().enumerate() {
            s.0 = s.0 * 40 + i as i64;
        }
        for (c, spec) in session_chunks(&specs).into_iter().zip(&specs) {
            store.append(c).unwrap();
            store.append(common::chunk(1, "other", "q", 3, 50)).unwrap();
            if spec.3 {
                store.flush().unwrap();
            }
        }
        store.flush().unwrap();
        let mut froms = froms;
        froms.extend(specs.iter().map(|s| s.0));
        check_every_point(&store, &froms)?;
        if regroup {
            store.seal_active().unwrap();
            store.compact().unwrap();
            check_every_point(&store, &froms)?;
        }
    }
}

/// Sixty 1-second chunks of "seek-me", a keyframe every ten, each flushed alone, then sealed.
fn store_sixty_chunks(store: &Store) {
    let specs: Vec<Spec> = (0..60)
        .map(|i| (i * 1000, 400, i % 10 == 0, true))
        .collect();
    for c in session_chunks(&specs) {
        store.append(c).unwrap();
        store.flush().unwrap();
    }
    store.seal_active().unwrap();
}

#[test]
fn regrouping_keeps_keyframes_and_cuts_blocks_at_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config(Some(2_000))).unwrap();
    store_sixty_chunks(&store);
    let before = store.read_session(1, "seek-me").unwrap().unwrap();
    let report = store.compact().unwrap();
    assert!(report.segments_written >= 1, "{report:?}");
    let after = store.read_session(1, "seek-me").unwrap().unwrap();
    assert_eq!(after.chunks, before.chunks, "keyframes and chunks kept");
    let keyframes = after
        .chunks
        .iter()
        .filter(|c| c.keyframe_ms.is_some())
        .count();
    assert_eq!(keyframes, 6);
    // A new block at every keyframe past 2,000 bytes: 6 blocks of 10 chunks (~4,000 bytes).
    let whole = store.read_session_from(1, "seek-me", i64::MIN).unwrap();
    assert_eq!(whole.trace.blocks_read, 6, "{:?}", whole.trace);
    let late = store
        .read_session_from(1, "seek-me", BASE_MS + 55_500)
        .unwrap();
    assert_eq!(late.keyframe_ms, Some(BASE_MS + 50_000));
    assert_eq!(late.trace.blocks_read, 1, "{:?}", late.trace);
    assert_eq!(late.trace.blocks_skipped, 5);
    let last_block: usize = after.chunks[50..].iter().map(|c| c.payload.len()).sum();
    assert_eq!(late.trace.bytes_decompressed, last_block as u64);
    assert_eq!(late.data.unwrap().chunks[..], after.chunks[50..]);
}

/// The lines `export` prints.
fn export(dir: &std::path::Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replaystore"))
        .args(["export", "--team", "1", "--session"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn export_from_ms_starts_at_the_meta_and_full_snapshot_at_or_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (w, s) = common::stored_long_session(dir.path());
    let id = s.session_id.as_str();
    let whole = export(dir.path(), &[id]);
    let ts = |e: &serde_json::Value| e["timestamp"].as_i64().unwrap();
    for minute in [0.5, 3.0, 9.9, 19.0] {
        let from_ms = w.start_ms + (minute * 60_000.0) as i64;
        let seek = export(dir.path(), &[id, "--from-ms", &from_ms.to_string()]);
        // Expected: from the last meta directly followed by a full snapshot at or before MS.
        let at = (0..whole.len() - 1)
            .filter(|&i| whole[i]["type"] == 4 && whole[i + 1]["type"] == 2)
            .filter(|&i| ts(&whole[i]) <= from_ms)
            .max()
            .unwrap();
        assert_eq!(seek[..], whole[at..], "from minute {minute}");
        assert_eq!(
            (seek[0]["type"].as_i64(), seek[1]["type"].as_i64()),
            (Some(4), Some(2))
        );
    }
    // Before the first keyframe: the whole session.
    let early = export(
        dir.path(),
        &[id, "--from-ms", &(w.start_ms - 1).to_string()],
    );
    assert_eq!(early, whole);
}

#[test]
fn a_read_from_a_keyframe_fetches_only_its_blocks_from_object_storage() {
    use replaystore::{ManualClock, RemoteConfig};
    let dir = tempfile::tempdir().unwrap();
    let bucket = Arc::new(object_store::memory::InMemory::new());
    let clock = Arc::new(ManualClock::new(BASE_MS + 3_600_000));
    let remote = RemoteConfig::in_memory(bucket, "seek");
    let cfg = config(Some(2_000))
        .with_clock(clock.clone())
        .with_remote(remote);
    let store = Store::open(dir.path(), cfg).unwrap();
    store_sixty_chunks(&store);
    store.compact().unwrap();
    let whole = store.read_session(1, "seek-me").unwrap().unwrap();
    store.sync_remote().unwrap();
    // Past the tier's local retention: the local copies go, reads fetch ranges.
    clock.advance(std::time::Duration::from_millis(
        2 * replaystore::DAY_MS as u64,
    ));
    let r = store.sync_remote().unwrap();
    assert!(r.local_copies_dropped >= 1, "{r:?}");
    let all = store.read_session_from(1, "seek-me", i64::MIN).unwrap();
    let late = store
        .read_session_from(1, "seek-me", BASE_MS + 55_500)
        .unwrap();
    assert_eq!(late.data.unwrap().chunks[..], whole.chunks[50..]);
    assert!(all.trace.remote.bytes > 0, "{:?}", all.trace);
    assert_eq!((late.trace.blocks_read, late.trace.blocks_skipped), (1, 5));
    assert!(
        late.trace.remote.bytes * 4 < all.trace.remote.bytes,
        "ranged read fetched {:?}, whole {:?}",
        late.trace,
        all.trace
    );
}
