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
    assert_eq!(
        segments.len(),
        2,
        "the sealed and active segments regrouped into one"
    );
    let ls = cli(dir.path(), REGROUP_AT_MS, &["ls", "--team", "1", "--json"]);
    // Regrouping rewrites blocks (so their stored size) and, with the posthog-js
    // normalization the command line applies, inflates the SDK's in-event gzip (so the payload
    // bytes, `raw_bytes` and `size`); the summaries stay.
    let without_size = |mut rows: Vec<Value>| {
        for r in &mut rows {
            for field in ["stored_bytes", "raw_bytes", "size"] {
                r.as_object_mut().unwrap().remove(field);
            }
        }
        rows
    };
    assert_eq!(without_size(rows(&ls)), without_size(rows(&expected())));
}

fn library_config(annotator: bool, now_ms: i64) -> replaystore::Config {
    let clock = std::sync::Arc::new(replaystore::ManualClock::new(now_ms));
    let c = replaystore::Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_clock(clock);
    if annotator {
        c.with_annotator(Some(std::sync::Arc::new(
            replaystore_posthog::RrwebAnnotator,
        )))
    } else {
        c
    }
}

/// The rows `ls --json` printed, by session id.
fn expected_rows() -> std::collections::BTreeMap<String, Value> {
    rows(&expected())
        .into_iter()
        .map(|r| (r["session_id"].as_str().unwrap().to_string(), r))
        .collect()
}

#[test]
fn without_an_annotator_parts_are_never_merged_nor_lost() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let want = expected_rows();
    let store = replaystore::Store::open(dir.path(), library_config(false, LISTED_AT_MS)).unwrap();
    let listed = store.list_sessions(1, &Default::default()).unwrap();
    for s in &listed {
        let row = serde_json::to_value(replaystore_posthog::SessionRow::new(s)).unwrap();
        match s.session_id.as_str() {
            // One part (one block in the active segment): passed through unchanged.
            "0192f000-0000-7000-8000-0000000050e0" => assert_eq!(row, want[&s.session_id]),
            // Parts in two segments: no annotation rather than a part of one.
            _ => assert_eq!(s.annotation, None, "{}", s.session_id),
        }
    }
    assert_eq!(listed.len(), 3);
    // Regrouping cannot merge them either: the session of several annotated blocks keeps its
    // blocks apart, each with its own annotation.
    store.close().unwrap();
    let store = replaystore::Store::open(dir.path(), library_config(false, REGROUP_AT_MS)).unwrap();
    store.seal_active().unwrap();
    let report = store.compact().unwrap();
    assert!(report.sessions_kept_apart >= 1, "{report:?}");
    store.close().unwrap();
    // With the annotator again, a read merges what every block kept: nothing was lost.
    let store = replaystore::Store::open(dir.path(), library_config(true, REGROUP_AT_MS)).unwrap();
    for (id, want) in &want {
        let read = store.read_session(1, id).unwrap().unwrap().summary;
        let mut row = serde_json::to_value(replaystore_posthog::SessionRow::new(&read)).unwrap();
        let mut want = want.clone();
        for r in [&mut row, &mut want] {
            r.as_object_mut().unwrap().remove("stored_bytes");
        }
        assert_eq!(row, want, "{id}");
    }
}

#[test]
fn segments_written_before_keyframes_are_read_whole_from_any_time() {
    // Through the library, and one store open throughout: a child process another test of this
    // file spawns while this store closes could hold its LOCK until it execs.
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let ids: Vec<String> = expected_rows().into_keys().collect();
    let store = replaystore::Store::open(dir.path(), library_config(true, REGROUP_AT_MS)).unwrap();
    let late = Some(LISTED_AT_MS + 60_000);
    let playback = |store: &replaystore::Store, id: &str, from| {
        replaystore_posthog::rrweb::read_for_playback(store, 1, id, from)
            .unwrap()
            .unwrap()
            .chunks
    };
    for id in &ids {
        assert_eq!(
            playback(&store, id, late),
            playback(&store, id, None),
            "{id}"
        );
    }
    // Regrouped, the blocks still have no keyframes: none is invented, reads stay whole.
    store.seal_active().unwrap();
    let report = store.compact().unwrap();
    assert!(report.segments_written >= 1, "{report:?}");
    for id in &ids {
        let whole = store.read_session(1, id).unwrap().unwrap();
        let read = store.read_session_from(1, id, REGROUP_AT_MS).unwrap();
        assert_eq!(read.keyframe_ms, None, "{id}");
        assert_eq!(read.data.unwrap().chunks, whole.chunks, "{id}");
        assert!(whole.chunks.iter().all(|c| c.keyframe_ms.is_none()));
    }
}
