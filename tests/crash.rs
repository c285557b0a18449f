//! Durability under a real crash: a `replaystore crash-writer` process is SIGKILLed at varying
//! moments; every chunk it acknowledged (printed after `flush()` returned) must be readable,
//! bit-exact, after reopen, with nothing duplicated.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use replaystore::generator::{interleaved, Workload};
use replaystore::{Chunk, Config, Store};

fn workload(seed: u64, start_ms: i64) -> Vec<Chunk> {
    // Must match `crash_workload` in src/cli/measure.rs.
    interleaved(&Workload {
        seed,
        start_ms,
        sessions: 40,
        persons: 10,
        median_session_bytes: 150_000,
        ..Default::default()
    })
}

#[test]
fn acknowledged_chunks_survive_sigkill() {
    let cycles: usize = std::env::var("REPLAYSTORE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    // Sessions from a day ago: inside the default 30-day retention the writer runs with.
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 86_400_000;
    let expected = workload(7, start_ms);
    let mut checked = 0usize;
    for cycle in 0..cycles {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_replaystore"))
            .args([
                "crash-writer",
                "--seed",
                "7",
                "--start-ms",
                &start_ms.to_string(),
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn crash-writer");
        // Kill after a different number of acknowledgements each cycle.
        let kill_after = 3 + cycle * 11;
        let mut acked = 0usize;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().unwrap();
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let store =
            Store::open(dir.path(), Config::default().with_background_flush(false)).unwrap();
        // Per session: the stored chunks must be exactly a prefix of what was appended, at
        // least as long as what was acknowledged (later chunks may or may not have made it).
        let mut sessions: Vec<(u64, String)> = expected
            .iter()
            .map(|c| (c.team, c.session_id.clone()))
            .collect();
        sessions.sort();
        sessions.dedup();
        let mut total = 0;
        for (team, sid) in sessions {
            let want: Vec<&Chunk> = expected
                .iter()
                .filter(|c| c.team == team && c.session_id == sid)
                .collect();
            let must = expected[..acked]
                .iter()
                .filter(|c| c.team == team && c.session_id == sid)
                .count();
            let got = store
                .read_session(team, &sid)
                .unwrap()
                .map(|s| s.chunks)
                .unwrap_or_default();
            assert!(
                got.len() >= must,
                "cycle {cycle}: {sid} lost acknowledged chunks ({} < {must})",
                got.len()
            );
            assert!(
                got.len() <= want.len(),
                "cycle {cycle}: {sid} has duplicates"
            );
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.payload, w.payload, "cycle {cycle}: {sid}");
            }
            total += got.len();
        }
        assert!(total >= acked);
        checked += acked;
        // New writes succeed after recovery.
        store.append(expected[0].clone()).unwrap();
        store.flush().unwrap();
    }
    println!("crash test: {cycles} kill/reopen cycles, {checked} acknowledged chunks checked");
}
