//! `verify` (scrub) and team isolation.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{chunk, files_under, open, segment_files};
use replaystore::SessionFilter;

fn store_with_data(dir: &std::path::Path) {
    let store = open(dir);
    for i in 0..3 {
        for s in 0..8 {
            store
                .append(chunk(1, &format!("s{s}"), &format!("p{}", s % 3), i, 900))
                .unwrap();
        }
        store.flush().unwrap();
    }
    store.seal_active().unwrap();
    store.append(chunk(1, "active", "p", 0, 900)).unwrap();
    store.flush().unwrap();
}

fn verify_cli(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_replaystore"))
        .args(["verify", "--retention-days", "3650", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn verify_passes_a_healthy_store_and_names_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    store_with_data(dir.path());
    let r = open(dir.path()).verify().unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!((r.segments, r.blocks, r.sessions), (2, 25, 9));
    assert_eq!(verify_cli(dir.path()).0, 0);

    // A flipped bit inside a block's payload.
    let sealed = segment_files(dir.path(), common::LANE)[0].clone();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sealed)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 600).unwrap();
    f.write_all_at(&[b[0] ^ 4], 600).unwrap();
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&sealed.display().to_string()) && out.contains("bad block"),
        "{out}"
    );
    f.write_all_at(&b, 600).unwrap(); // repaired
    assert_eq!(verify_cli(dir.path()).0, 0);

    // A flipped bit in the footer's session table (past the fixed part, bloom, replaces).
    let len = f.metadata().unwrap().len();
    let mut t = [0u8; 8];
    f.read_exact_at(&mut t, len - 32).unwrap();
    let footer_at = u64::from_le_bytes(t);
    let mut fixed = [0u8; 12];
    f.read_exact_at(&mut fixed, footer_at).unwrap();
    let bloom_words = u32::from_le_bytes(fixed[8..12].try_into().unwrap()) as u64;
    let first_entry = footer_at + 96 + bloom_words * 8;
    f.read_exact_at(&mut b, first_entry + 40).unwrap();
    f.write_all_at(&[b[0] ^ 1], first_entry + 40).unwrap();
    let (code, out) = verify_cli(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("session entry 0"), "{out}");
}

#[test]
fn teams_never_see_each_other_and_identifiers_never_become_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let nasty = [
        "../../etc/passwd",
        "a/b",
        "/abs",
        "..",
        "con\0nul",
        "ünïcødé",
    ];
    for team in [1, 2] {
        for (i, id) in nasty.iter().enumerate() {
            let mut c = chunk(team, id, id, i, 300);
            c.payload = format!("team {team} data").into_bytes();
            store.append(c).unwrap();
        }
    }
    store.flush().unwrap();
    for team in [1u64, 2] {
        for id in nasty {
            let s = store.read_session(team, id).unwrap().unwrap();
            assert_eq!(
                s.chunks[0].payload,
                format!("team {team} data").into_bytes()
            );
        }
        let listed = store
            .list_sessions(team, &SessionFilter::default())
            .unwrap();
        assert_eq!(listed.len(), nasty.len());
        assert!(listed.iter().all(|s| s.team == team));
    }
    assert!(store.read_session(3, "a/b").unwrap().is_none());
    // Deleting in team 1 leaves team 2 alone.
    store.delete_person(1, "a/b").unwrap();
    store.compact().unwrap();
    assert!(store.read_session(1, "a/b").unwrap().is_none());
    assert!(store.read_session(2, "a/b").unwrap().is_some());
    // The directory holds only the store's own names.
    for f in files_under(dir.path()) {
        let rel = f
            .strip_prefix(dir.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let ok = ["LOCK", "KEY", "tombstones.log", "sessions.idx"].contains(&rel.as_str())
            || (rel.starts_with("lanes/") && rel.ends_with(".seg"));
        assert!(ok, "unexpected file {rel}");
    }
}
