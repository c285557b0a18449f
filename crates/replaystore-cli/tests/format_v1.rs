//! A store written in format 1 (before arrival times, tests/data/format-v1, made by the code of
//! that time from the real posthog-js captures) opens and reads with today's code: its blocks
//! take their segment's creation time as arrival time, its deletion stays in force, and new
//! data, compaction and retention work on the mixed store.

mod common;

use std::path::Path;
use std::sync::Arc;

use replaystore::{Config, ManualClock, Store, DAY_MS};

const SESSION: &str = "01a215ea-4015-7844-a2b3-93b01f143027";
/// Creation times of the two segment files, from their headers (see the README there).
const SEALED_CREATED_MS: i64 = 1_796_037_110_343;
const ACTIVE_CREATED_MS: i64 = 1_796_037_112_204;

fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1");
    for f in common::files_under(&from) {
        let rel = f.strip_prefix(&from).unwrap();
        let name = rel.to_string_lossy();
        if name.ends_with(".md") || name.ends_with(".json") || name.ends_with(".jsonl") {
            continue;
        }
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

fn config(clock: &Arc<ManualClock>) -> Config {
    Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_default_retention_days(30)
        .with_clock(clock.clone())
}

#[test]
fn a_format_1_store_opens_reads_and_erases_with_arrival_times() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let clock = Arc::new(ManualClock::new(ACTIVE_CREATED_MS + 60_000));
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    assert!(store.verify().unwrap().problems.is_empty());
    let s = store
        .read_session(1, SESSION)
        .unwrap()
        .expect("format 1 data");
    assert_eq!(s.chunks.len(), 24);
    assert_eq!(s.summary.raw_bytes, 178_846);
    // Chunks of format 1 arrive when their segment was created.
    let sealed = s
        .chunks
        .iter()
        .filter(|c| c.arrival_ms == SEALED_CREATED_MS);
    let active = s
        .chunks
        .iter()
        .filter(|c| c.arrival_ms == ACTIVE_CREATED_MS);
    assert_eq!((sealed.count(), active.count()), (12, 12));
    // The finished deletion of format 1 (team 2's copy of the session) still refuses chunks.
    let late = replaystore::Chunk {
        team: 2,
        session_id: SESSION.into(),
        person: "p".into(),
        window_id: None,
        first_ts_ms: clock.now(),
        last_ts_ms: clock.now(),
        sent_at_ms: None,
        payload: b"[]".to_vec(),
    };
    assert!(matches!(
        store.append(late),
        Err(replaystore::Error::Deleted { .. })
    ));

    // New data (format 2) beside it, sealed, then compaction merges both formats.
    let mut c = common::chunk(1, "new-session", "someone", 0, 500);
    (c.first_ts_ms, c.last_ts_ms) = (clock.now(), clock.now() + 10);
    store.append(c).unwrap();
    store.flush().unwrap();
    store.seal_active().unwrap();
    let report = store.compact().unwrap();
    assert!(report.segments_rewritten >= 2, "{report:?}");
    assert!(store.verify().unwrap().problems.is_empty());
    let merged = store.read_session(1, SESSION).unwrap().unwrap();
    assert_eq!(merged.chunks.len(), 24);
    let payloads = |d: &replaystore::SessionData| {
        d.chunks
            .iter()
            .map(|c| c.payload.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(payloads(&merged), payloads(&s));
    // Copied into a new segment, a format-1 block keeps an arrival no later than its own.
    assert!(merged
        .chunks
        .iter()
        .all(|c| c.arrival_ms <= ACTIVE_CREATED_MS));
    store.close().unwrap();

    // Retention by arrival: 30 days and a bit after the files were written, all of it goes.
    clock.set(ACTIVE_CREATED_MS + 31 * DAY_MS);
    let store = Store::open(dir.path(), config(&clock)).unwrap();
    assert!(store.read_session(1, SESSION).unwrap().is_none());
    store.enforce_retention(clock.now()).unwrap();
    assert!(store.read_session(1, "new-session").unwrap().is_none());
    let left = common::files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .count();
    assert_eq!(left, 0);
    drop(store);
}

#[test]
fn the_cli_exports_a_format_1_store_as_the_old_code_did() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let expected = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v1/export.jsonl"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replaystore"))
        .args(["export", "--retention-days", "3650", "--team", "1"])
        .args(["--session", SESSION, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == expected, "export differs from format 1's");
}
