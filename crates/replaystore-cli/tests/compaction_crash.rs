//! Compaction killed at each step (a real process aborted at a crash point): the next open
//! finds no duplicate block, nothing lost for other persons, and the deleted data stays hidden;
//! a later pass finishes the job.

mod common;

use std::process::Command;

use common::{all_block_payloads, chunk, contains, open};
use replaystore::DeletionStatus;

const VICTIM: &str = "victim-42";

fn expected_sessions() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for p in ["a", "b", VICTIM] {
        for s in 0..3 {
            v.push((format!("{p}-s{s}"), p.to_string()));
        }
    }
    v
}

#[test]
fn a_compaction_crash_at_any_step_loses_and_duplicates_nothing() {
    if !common::failpoints("a_compaction_crash_at_any_step_loses_and_duplicates_nothing") {
        return;
    }
    for point in [
        "compact:after_write",
        "compact:after_rename",
        "compact:before_remove",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = open(dir.path());
            for round in 0..4 {
                for (sid, p) in expected_sessions() {
                    store.append(chunk(3, &sid, &p, round, 900)).unwrap();
                }
                store.flush().unwrap();
                store.seal_active().unwrap();
            }
            store.delete_person(3, VICTIM).unwrap()
        };
        let out = Command::new(env!("CARGO_BIN_EXE_replaystore"))
            .args(["compact", "--retention-days", "3650", "--dir"])
            .arg(dir.path())
            .env("REPLAYSTORE_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the process must have crashed"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains(point));

        let store = open(dir.path());
        let report = store.recovery_report().clone();
        match point {
            "compact:after_write" => assert_eq!(report.temp_files_removed, 1, "{point}"),
            _ => assert!(report.superseded_removed > 0, "{point}: {report:?}"),
        }
        let check = |store: &replaystore::Store| {
            for (sid, p) in expected_sessions() {
                let got = store.read_session(3, &sid).unwrap();
                if p == VICTIM {
                    assert!(got.is_none(), "{point}: {sid} readable again");
                    continue;
                }
                let got = got.unwrap_or_else(|| panic!("{point}: {sid} lost"));
                assert_eq!(
                    got.chunks.len(),
                    4,
                    "{point}: {sid} lost or duplicated chunks"
                );
                for (i, c) in got.chunks.iter().enumerate() {
                    assert_eq!(c.payload, chunk(3, &sid, &p, i, 900).payload);
                }
            }
            assert_eq!(
                store.stats().unwrap().sessions as usize,
                6 + 3 * (point == "compact:after_write") as usize
            );
        };
        check(&store);
        // The next pass completes the deletion.
        store.compact().unwrap();
        assert!(
            matches!(store.deletion_status(id), DeletionStatus::Done { .. }),
            "{point}"
        );
        check_after_purge(&store, point);
        drop(store);
        for p in all_block_payloads(dir.path()) {
            assert!(!contains(&p, VICTIM.as_bytes()), "{point}");
        }
    }
}

fn check_after_purge(store: &replaystore::Store, point: &str) {
    let st = store.stats().unwrap();
    assert_eq!(st.sessions, 6, "{point}");
    assert_eq!(st.chunks, 24, "{point}");
}
