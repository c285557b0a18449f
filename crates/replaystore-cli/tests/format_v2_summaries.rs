//! A store written while session summaries were the engine's own type (tests/data/
//! format-v2-summaries, made by the code of that time) lists the same sessions with the same
//! summaries today: its block and footer bytes are the PostHog crate's annotations now, read
//! back unchanged, merged by its annotator across a regrouped segment, a sealed one and an
//! active one; and again after a compaction regroups them.

mod common;

use std::path::Path;

use serde_json::Value;

/// The store times the fixture was listed at (see make.sh there).
const LISTED_AT_MS: i64 = 1_796_040_000_000 + 183 * 60_000;
/// Two hours later: every segment is idle and old enough to be sealed and regrouped.
const REGROUP_AT_MS: i64 = LISTED_AT_MS + 120 * 60_000;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/format-v2-summaries")
}

fn copy_fixture(to: &Path) {
    let from = fixture();
    for f in common::files_under(&from) {
        let rel = f.strip_prefix(&from).unwrap();
        let name = rel.to_string_lossy();
        if name.ends_with(".md") || name.ends_with(".json") || name.ends_with(".sh") {
            continue;
        }
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

fn cli(dir: &Path, now_ms: i64, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_replaystore"))
        .args(args)
        .args(["--now", &now_ms.to_string(), "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rows(jsonl: &str) -> Vec<Value> {
    jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn expected() -> String {
    std::fs::read_to_string(fixture().join("ls.json")).unwrap()
}

#[test]
fn the_cli_lists_a_store_written_before_annotations_as_the_old_code_did() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let ls = cli(dir.path(), LISTED_AT_MS, &["ls", "--team", "1", "--json"]);
    assert_eq!(ls, expected(), "ls --json differs from the old code's");
    let skewed = &rows(&ls)[1];
    assert_eq!(skewed["clock_offset_ms"], 10_801_000, "{skewed}");
    assert_eq!(skewed["rage_click_count"], 1, "{skewed}");
}

#[test]
fn regrouping_a_store_written_before_annotations_keeps_its_summaries() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    cli(dir.path(), REGROUP_AT_MS, &["compact"]);
    let segments: Vec<_> = common::files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 2, "the sealed and active segments regrouped into one");
    let ls = cli(dir.path(), REGROUP_AT_MS, &["ls", "--team", "1", "--json"]);
    // Regrouping rewrites blocks (so their stored size); the summaries stay.
    let without_size = |mut rows: Vec<Value>| {
        for r in &mut rows {
            r.as_object_mut().unwrap().remove("stored_bytes");
        }
        rows
    };
    assert_eq!(without_size(rows(&ls)), without_size(rows(&expected())));
}
