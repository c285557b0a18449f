//! Durability under real crashes: `replaystore crash-writer` (src/cli/torture.rs) appends,
//! flushes, deletes persons and compacts, logging what the store acknowledged in a fsynced side
//! log; it is SIGKILLed at a random moment; the store is reopened and checked: every
//! acknowledged chunk is readable bit-exact, nothing of a deleted person is readable, nothing
//! is duplicated, and new writes succeed.
//!
//! 50 cycles by default; `REPLAYSTORE_CRASH_CYCLES=N` for long runs.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use replaystore::{Chunk, Config, RemoteConfig, Store};
use replaystore_testkit::generator::{interleaved, Rng, Workload};

/// What the side log says was acknowledged.
#[derive(Default)]
struct Acked {
    chunks: usize,
    deleted: HashSet<String>,
    /// Deletions requested whose outcome the log does not know (killed during the call).
    maybe_deleted: HashSet<String>,
}

fn read_side_log(path: &Path) -> Acked {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut a = Acked::default();
    // Only whole lines: the last one may be torn by the kill.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let line = line.trim_end();
        if let Some(n) = line.strip_prefix("acked ") {
            a.chunks = a.chunks.max(n.parse().unwrap());
        } else if let Some(p) = line.strip_prefix("deleting ") {
            a.maybe_deleted.insert(p.to_string());
        } else if let Some(p) = line.strip_prefix("deleted ") {
            a.maybe_deleted.remove(p);
            a.deleted.insert(p.to_string());
        }
    }
    a
}

/// Arrival times the checks have seen, per (session, index): a reopen, a compaction, a sync
/// must never change them.
type Arrivals = HashMap<(String, usize), i64>;

/// Checks the reopened store against the workload and the side log; returns chunks checked.
/// Arrival times must lie within `run` (when the writer ran, by the system clock), grow in
/// append order within a session, and equal what earlier checks saw.
fn check(
    store: &Store,
    expected: &[Chunk],
    acked: &Acked,
    cycle: usize,
    run: (i64, i64),
    seen: &mut Arrivals,
) -> usize {
    let mut sessions: HashMap<&str, Vec<&Chunk>> = HashMap::new();
    for c in expected {
        sessions.entry(&c.session_id).or_default().push(c);
    }
    let mut must: HashMap<&str, usize> = HashMap::new();
    for c in &expected[..acked.chunks] {
        *must.entry(&c.session_id).or_default() += 1;
    }
    let mut checked = 0;
    for (sid, want) in &sessions {
        let person = &want[0].person;
        let got = store
            .read_session(1, sid)
            .unwrap()
            .map(|s| s.chunks)
            .unwrap_or_default();
        if acked.deleted.contains(person) {
            assert!(
                got.is_empty(),
                "cycle {cycle}: {sid} of deleted {person} is readable"
            );
            continue;
        }
        // Bit-exact prefix of what was appended (no duplicate, no gap, no foreign chunk).
        assert!(
            got.len() <= want.len(),
            "cycle {cycle}: {sid} has duplicates"
        );
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.payload, w.payload, "cycle {cycle}: {sid} differs");
            assert!(
                (run.0..=run.1).contains(&g.arrival_ms),
                "cycle {cycle}: {sid} chunk {i} arrived at {} outside the run {run:?}",
                g.arrival_ms
            );
            let was = *seen.entry((sid.to_string(), i)).or_insert(g.arrival_ms);
            assert_eq!(
                was, g.arrival_ms,
                "cycle {cycle}: {sid} chunk {i} changed arrival"
            );
        }
        assert!(
            got.windows(2).all(|p| p[0].arrival_ms <= p[1].arrival_ms),
            "cycle {cycle}: {sid} arrivals out of append order"
        );
        checked += got.len();
        if acked.maybe_deleted.contains(person) {
            continue; // the deletion may or may not have been made durable
        }
        let n = must.get(*sid).copied().unwrap_or(0);
        assert!(
            got.len() >= n,
            "cycle {cycle}: {sid} lost acknowledged chunks ({} < {n})",
            got.len()
        );
    }
    checked
}

#[test]
fn acknowledged_chunks_survive_sigkill_during_writes_deletions_and_compactions() {
    kill_cycles(cycles(50), false);
}

/// The same, with a remote tier (local-file bucket): the writer also seals and syncs with a
/// zero `local_retention`, so kills land in uploads, verifications, local-copy drops and
/// remote rewrites too, and the checks read segments from the bucket.
#[test]
fn acknowledged_chunks_survive_sigkill_with_a_remote_tier() {
    kill_cycles(cycles(30), true);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `REPLAYSTORE_CRASH_CYCLES`, or `default`.
fn cycles(default: usize) -> usize {
    std::env::var("REPLAYSTORE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kill_cycles(cycles: usize, remote: bool) {
    // Sessions from a day ago: inside the default 30-day retention the writer runs with.
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 86_400_000;
    let expected = interleaved(&Workload::crash_test(7, start_ms));
    let mut rng = Rng::new(0xC0FFEE);
    let (mut checked, mut acked_total, mut deletions, mut remote_segments) = (0, 0, 0, 0);
    for cycle in 0..cycles {
        let dir = tempfile::tempdir().unwrap();
        let side = dir.path().join("side.log");
        let store_dir = dir.path().join("store");
        let bucket = format!("file://{}", dir.path().join("bucket").display());
        std::fs::create_dir_all(dir.path().join("bucket")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_replaystore"));
        cmd.args([
            "crash-writer",
            "--seed",
            "7",
            "--start-ms",
            &start_ms.to_string(),
            "--log",
        ])
        .arg(&side)
        .arg("--dir")
        .arg(&store_dir);
        if remote {
            cmd.args(["--remote", &bucket]);
        }
        let run_start = now_ms();
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn crash-writer");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "started");
        // Kill at a random moment of the run (which takes ~100-300 ms).
        std::thread::sleep(Duration::from_micros(rng.below(250_000)));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let run = (run_start, now_ms());
        let mut seen = Arrivals::new();

        let acked = read_side_log(&side);
        let mut config = Config::default()
            .with_background_flush(false)
            .with_maintenance_interval(None);
        if remote {
            config = config.with_remote(
                RemoteConfig::new(bucket.clone()).with_local_retention(Duration::ZERO),
            );
        }
        let store = Store::open(&store_dir, config).unwrap();
        remote_segments += store.stats().unwrap().remote_segments;
        checked += check(&store, &expected, &acked, cycle, run, &mut seen);
        acked_total += acked.chunks;
        deletions += acked.deleted.len();
        // The store takes new writes after recovery, and a compaction pass.
        let mut c = expected[0].clone();
        c.session_id = "after-recovery".into();
        c.person = "someone-new".into();
        store.append(c).unwrap();
        store.flush().unwrap();
        store.compact().unwrap();
        assert!(store.read_session(1, "after-recovery").unwrap().is_some());
        checked += check(&store, &expected, &acked, cycle, run, &mut seen);
        if remote {
            // The interrupted remote work finishes, and everything is still there.
            let r = store.sync_remote().unwrap();
            assert!(r.errors.is_empty(), "cycle {cycle}: {r:?}");
            let st = store.remote_status().unwrap();
            assert_eq!((st.uploading, st.doomed), (0, 0), "cycle {cycle}: {st:?}");
            checked += check(&store, &expected, &acked, cycle, run, &mut seen);
            let v = store.verify().unwrap();
            assert!(v.problems.is_empty(), "cycle {cycle}: {:?}", v.problems);
        }
    }
    if remote {
        assert!(remote_segments > 0, "no kill left a segment in the bucket");
    }
    println!(
        "crash test (remote tier: {remote}): {cycles} kill/reopen cycles, {acked_total} acknowledged chunks, {checked} chunk reads checked, {deletions} acknowledged deletions, {remote_segments} remote segments found at reopen"
    );
}
