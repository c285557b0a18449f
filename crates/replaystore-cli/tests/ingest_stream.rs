//! `ingest` streams: many sessions' JSON lines (plain and gzip) decoded on several threads
//! export exactly what went in; a line over the length limit is reported and the rest stored;
//! `compact` at a later `--now` seals and regroups what is due, and `stats` shows it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::value::RawValue;

/// The real posthog-js batches of one session (tests/data/posthog-js, from the shared fixtures).
fn batches() -> String {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/posthog-js/snapshot-batches.jsonl");
    std::fs::read_to_string(p).unwrap()
}

/// `replaystore <sub> --retention-days 3650 --dir <dir>` (the fixture is days old).
fn cmd(sub: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_replaystore"));
    c.arg(sub)
        .args(["--retention-days", "3650", "--dir"])
        .arg(dir);
    c
}

fn ok(c: &mut Command) -> Output {
    let out = c.output().expect("run replaystore");
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn export(dir: &Path, session: &str) -> Vec<String> {
    let out = ok(cmd("export", dir).args(["--team", "1", "--session", session]));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Each event with the SDK's in-event gzip inflated (as the normalizing regroup stores it).
fn normalized(events: &[String]) -> Vec<String> {
    use replaystore::PayloadTransform;
    events
        .iter()
        .map(
            |e| match replaystore_posthog::Normalize.transform(format!("[{e}]").as_bytes()) {
                Some(out) => String::from_utf8(out[1..out.len() - 1].to_vec()).unwrap(),
                None => e.clone(),
            },
        )
        .collect()
}

fn stats(dir: &Path, now: i64) -> serde_json::Value {
    let out = ok(cmd("stats", dir).args(["--json", "--now", &now.to_string()]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The session id of the fixture and its rrweb events as the store must play them back:
/// per request event its `$snapshot_data` elements byte for byte, chunks in the order of their
/// first timestamp (file order for ties).
fn expected(text: &str) -> (String, Vec<String>) {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        properties: Props<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Props<'a> {
        #[serde(rename = "$session_id")]
        session: String,
        #[serde(rename = "$snapshot_data", borrow)]
        data: Vec<&'a RawValue>,
    }
    let mut session = String::new();
    let mut chunks: Vec<(i64, Vec<String>)> = Vec::new();
    for line in text.lines() {
        for ev in serde_json::from_str::<Vec<Event>>(line).unwrap() {
            session = ev.properties.session;
            let first = ev
                .properties
                .data
                .iter()
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(e.get()).unwrap()["timestamp"]
                        .as_i64()
                        .unwrap()
                })
                .min()
                .unwrap();
            chunks.push((
                first,
                ev.properties
                    .data
                    .iter()
                    .map(|e| e.get().to_string())
                    .collect(),
            ));
        }
    }
    chunks.sort_by_key(|(ts, _)| *ts);
    (session, chunks.into_iter().flat_map(|(_, e)| e).collect())
}

/// `copies` sessions, each the fixture under its own session id, their lines interleaved
/// (line i of every copy, then line i + 1...).
fn interleaved(text: &str, session: &str, copies: std::ops::Range<usize>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        for k in copies.clone() {
            out.push_str(&line.replace(session, &format!("{session}-{k}")));
            out.push('\n');
        }
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn many_sessions_decoded_on_several_threads_export_exactly_what_went_in() {
    let text = batches();
    let (session, want) = expected(&text);
    assert!(want.len() > 100, "the fixture has {} events", want.len());
    let dir = tempfile::tempdir().unwrap();
    // ~2.4 MB of lines (several batches for the decoders), and ~1 MB gzipped.
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(&plain, interleaved(&text, &session, 0..10)).unwrap();
    let gz = dir.path().join("more.jsonl.gz");
    std::fs::write(&gz, gzip(interleaved(&text, &session, 10..14).as_bytes())).unwrap();
    let store = dir.path().join("store");
    let out = ok(cmd("ingest", &store)
        .args(["--team", "1", "--threads", "3"])
        .arg(&plain)
        .arg(&gz));
    let err = String::from_utf8_lossy(&out.stderr);
    let chunks = text
        .lines()
        .map(|l| serde_json::from_str::<Vec<&RawValue>>(l).unwrap().len())
        .sum::<usize>();
    assert!(
        err.contains(&format!("ingested {} chunks", chunks * 14)),
        "{err}"
    );
    for k in 0..14 {
        let got = export(&store, &format!("{session}-{k}"));
        assert_eq!(got.len(), want.len(), "session {k}: event count");
        assert!(got == want, "session {k}: events differ from the input");
    }
    assert_eq!(stats(&store, now_ms())["sessions"], 14);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One small `$snapshot` event line of session `s`, padded to at least `pad` bytes.
fn event_line(s: &str, pad: usize) -> String {
    format!(
        r#"{{"event":"$snapshot","properties":{{"$session_id":"{s}","distinct_id":"p","$snapshot_data":[{{"type":4,"data":{{"pad":"{}"}},"timestamp":1795000000000}}]}}}}"#,
        "x".repeat(pad)
    )
}

#[test]
fn a_line_over_the_limit_is_reported_and_skipped_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let now = "1795000001000";
    // Stored first: an earlier import must survive a later bad one.
    let before = dir.path().join("before.jsonl");
    std::fs::write(&before, event_line("s0", 10) + "\n").unwrap();
    ok(cmd("ingest", &store)
        .args(["--team", "1", "--now", now])
        .arg(&before));

    let input = dir.path().join("input.jsonl");
    let lines = [
        event_line("s1", 10),
        event_line("s2", 5000),
        event_line("s3", 10),
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = cmd("ingest", &store)
        .args([
            "--team",
            "1",
            "--now",
            now,
            "--threads",
            "2",
            "--max-line-bytes",
            "4096",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an input error exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "input.jsonl:2: line of {} bytes is longer than 4096",
            lines[1].len()
        )),
        "{err}"
    );
    assert!(
        err.contains("ingested 2 chunks") && err.contains("(1 lines too long)"),
        "{err}"
    );
    for s in ["s0", "s1", "s3"] {
        let got = export(&store, s);
        assert_eq!(got.len(), 1, "{s}");
        assert!(
            got[0].contains(r#""timestamp":1795000000000"#),
            "{s}: {got:?}"
        );
    }
    let gone = cmd("export", &store)
        .args(["--team", "1", "--session", "s2"])
        .output()
        .unwrap();
    assert!(gone.stdout.is_empty(), "the long line was not stored");
}

/// Ingests the fixture at `t0`, then compacts at `t0 + later_ms`: the store must regroup it.
fn ingest_then_compact(later_ms: i64) -> (serde_json::Value, serde_json::Value, Vec<String>) {
    let text = batches();
    let dir = tempfile::tempdir().unwrap();
    let input: PathBuf = dir.path().join("in.jsonl");
    std::fs::write(&input, &text).unwrap();
    let store = dir.path().join("store");
    let t0 = now_ms();
    ok(cmd("ingest", &store)
        .args(["--team", "1", "--now", &t0.to_string()])
        .arg(&input));
    let hot = stats(&store, t0);
    let later = (t0 + later_ms).to_string();
    ok(cmd("compact", &store).args(["--now", &later]));
    let cold = stats(&store, t0 + later_ms);
    let (session, _) = expected(&text);
    (hot, cold, export(&store, &session))
}

#[test]
fn compact_at_a_later_now_seals_and_regroups_what_ingest_wrote() {
    let (_, want) = expected(&batches());
    // An hour on the active segment is past `segment_max_age`; 31 minutes on, it is only idle
    // (`regroup_idle` is 30 min): either way compact seals it and regroups it.
    for later_ms in [3_600_000, 31 * 60_000] {
        let (hot, cold, events) = ingest_then_compact(later_ms);
        assert!(hot["bytes_hot"].as_u64().unwrap() > 0, "{hot}");
        assert_eq!(hot["bytes_regrouped"], 0, "{hot}");
        assert_eq!(hot["regroup_backlog_bytes"], hot["bytes_hot"], "{hot}");
        assert_eq!(hot["regroup_due_bytes"], 0, "nothing idle yet: {hot}");

        assert!(
            cold["bytes_regrouped"].as_u64().unwrap() > 0,
            "+{later_ms} ms: {cold}"
        );
        assert_eq!(cold["bytes_hot"], 0, "+{later_ms} ms: {cold}");
        assert_eq!(cold["regroup_backlog_bytes"], 0, "+{later_ms} ms: {cold}");
        assert_eq!(cold["sealed_segments"], cold["segments"], "{cold}");
        assert!(
            cold["bytes_on_disk"].as_u64() < hot["bytes_on_disk"].as_u64(),
            "regrouped at rest is smaller: {hot} vs {cold}"
        );
        // The command line regroups with the posthog-js normalization (the SDK's in-event
        // gzip inflated): the same events, in their plain form.
        assert!(
            events != want,
            "+{later_ms} ms: the regroup normalized nothing"
        );
        assert!(
            events == normalized(&want),
            "+{later_ms} ms: the regrouped session plays the same"
        );
    }
    // Ten minutes on, nothing is due: compact leaves the hot copy as it is.
    let (hot, cold, _) = ingest_then_compact(10 * 60_000);
    assert_eq!(cold["bytes_regrouped"], 0, "{cold}");
    assert_eq!(
        cold["regroup_backlog_bytes"], hot["regroup_backlog_bytes"],
        "{cold}"
    );
}
