#![allow(dead_code)]
//! Helpers shared by the integration tests.

pub mod remote;
pub mod s3;
pub mod server;

use std::path::{Path, PathBuf};

use replaystore::{Chunk, Config, Store};

/// Stores a generated 20-minute session with a keyframe every 2 minutes, one block per flush
/// (each chunk flushed alone), and closes the store; returns its workload (for `start_ms`) and
/// the session. The input of the seekable-playback tests.
pub fn stored_long_session(
    dir: &Path,
) -> (
    replaystore_testkit::generator::Workload,
    replaystore_testkit::generator::GeneratedSession,
) {
    use replaystore_testkit::generator::{long_session, recent_start_ms, Workload};
    let w = Workload {
        teams: 1,
        start_ms: recent_start_ms(),
        ..Workload::default()
    };
    let s = long_session(&w, 0, 20 * 60_000, 2 * 60_000);
    let store = Store::open(dir, config()).unwrap();
    for c in &s.chunks {
        store.append(c.clone()).unwrap();
        store.flush().unwrap();
    }
    store.close().unwrap();
    (w, s)
}

/// Whether the crash points (`REPLAYSTORE_CRASH_AT`) are compiled in (this crate's tests turn
/// the engine's `failpoints` feature on through a dev-dependency). Without them a test that
/// kills a process at a crash point says SKIPPED, loudly; under CI (`CI` set) it fails instead.
pub fn failpoints(test: &str) -> bool {
    if replaystore::FAILPOINTS {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: this test build has no crash points (replaystore's `failpoints` feature)"
    );
    // Straight to the stderr handle: the test harness captures `eprintln!` of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: crash points need replaystore's `failpoints` feature"
    );
    false
}

/// A deterministic, compressible payload for chunk `i` of a session.
pub fn payload(session: &str, i: usize, len: usize) -> Vec<u8> {
    let mut out = format!(r#"[{{"session":"{session}","i":{i},"pad":""#).into_bytes();
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(b"abcdefghij klmnop"[(x % 17) as usize]);
    }
    out.extend_from_slice(b"\"}]");
    out
}

pub fn chunk(team: u64, session: &str, person: &str, i: usize, len: usize) -> Chunk {
    Chunk {
        team,
        session_id: session.to_string(),
        person: person.to_string(),
        window_id: i.is_multiple_of(3).then(|| format!("w-{session}")),
        first_ts_ms: 1_795_000_000_000 + i as i64 * 1000,
        last_ts_ms: 1_795_000_000_000 + i as i64 * 1000 + 900,
        sent_at_ms: None,
        payload: payload(session, i, len),
    }
}

/// The lane (retention days) of teams without their own retention in `config()`.
pub const LANE: u16 = 3650;

/// A config for tests: no background threads (tests decide when to flush and compact), small
/// segments, a long retention, and a timestamp window wide enough for the fixed timestamps of
/// test data on the system clock (the tests of client clocks set their own clock and window).
pub fn config() -> Config {
    let wide = std::time::Duration::from_secs(3650 * 86_400);
    Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_segment_bytes(256 << 10)
        .with_default_retention_days(LANE)
        .with_timestamp_window(wide, wide)
        .with_regroup_idle(std::time::Duration::ZERO)
        .with_annotator(Some(std::sync::Arc::new(
            replaystore_posthog::RrwebAnnotator,
        )))
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, config()).expect("open store")
}

/// Segment files of a lane, oldest first.
pub fn segment_files(dir: &Path, lane_days: u16) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("lanes").join(format!("{lane_days}d")))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    v.sort();
    v
}

/// The repository's root (this crate is crates/replaystore-cli).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory of the shared fixtures, if present (tests that need it skip loudly without).
pub fn shared_fixtures() -> Option<PathBuf> {
    let p = repo_root().join("../shared/fixtures");
    p.is_dir().then_some(p)
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The decompressed payload bytes of every block of every segment file under `dir`, walking the
/// files with the format's own decoder (blocks from the header to the footer, or to the end of
/// an unsealed file).
pub fn all_block_payloads(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in files_under(dir) {
        if f.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        out.extend(segment_payloads(&std::fs::read(&f).unwrap()));
    }
    out
}

/// The decompressed payloads of every block of one segment's bytes (a file or an object).
pub fn segment_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    use replaystore::format::block::decode_payloads;
    use replaystore::format::{blocks, blocks_end};
    let mut out = Vec::new();
    for b in blocks(bytes, blocks_end(bytes)) {
        let (_, h, block) = b.expect("every block decodes");
        out.extend(decode_payloads(&h, block).unwrap());
    }
    out
}
