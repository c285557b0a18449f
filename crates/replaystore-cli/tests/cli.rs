//! The command line on real posthog-js payloads (tests/data/posthog-js, copied from the shared
//! fixtures): gzip bodies and decoded batches ingest, and `export` gives the same rrweb events.

mod common;

use common::{contains, files_under};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::value::RawValue;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_replaystore"))
}

/// Store options for every command: the fixtures' fixed timestamps must stay inside retention
/// whenever the tests run.
const KEEP: [&str; 2] = ["--retention-days", "3650"];

/// `replaystore <sub> --retention-days 3650 --dir <dir>`, to which a test adds arguments.
fn cmd(sub: &str, dir: &Path) -> Command {
    let mut c = bin();
    c.arg(sub).args(KEEP).arg("--dir").arg(dir);
    c
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/posthog-js")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run replaystore")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The session's events as the SDK sent them: per request event, its `$snapshot_data`, with
/// chunks ordered by their first timestamp (stable), as the store promises.
fn expected_events() -> (String, usize, Vec<String>) {
    let text = std::fs::read_to_string(data().join("snapshot-batches.jsonl")).unwrap();
    let mut chunks: Vec<(i64, Vec<String>)> = Vec::new();
    let mut session = String::new();
    for line in text.lines() {
        let batch: Vec<serde_json::Value> = serde_json::from_str(line).unwrap();
        let raw: Vec<&RawValue> = serde_json::from_str(line).unwrap();
        for (ev, raw_ev) in batch.iter().zip(raw) {
            session = ev["properties"]["$session_id"]
                .as_str()
                .unwrap()
                .to_string();
            #[derive(serde::Deserialize)]
            struct E<'a> {
                #[serde(borrow)]
                properties: P<'a>,
            }
            #[derive(serde::Deserialize)]
            struct P<'a> {
                #[serde(rename = "$snapshot_data", borrow)]
                data: Vec<&'a RawValue>,
            }
            let e: E = serde_json::from_str(raw_ev.get()).unwrap();
            let first = ev["properties"]["$snapshot_data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["timestamp"].as_i64().unwrap())
                .min()
                .unwrap();
            chunks.push((
                first,
                e.properties
                    .data
                    .iter()
                    .map(|r| r.get().to_string())
                    .collect(),
            ));
        }
    }
    chunks.sort_by_key(|(ts, _)| *ts);
    let n = chunks.len();
    (
        session,
        n,
        chunks.into_iter().flat_map(|(_, e)| e).collect(),
    )
}

/// Compares event lists without dumping megabytes of JSON on failure.
fn same_events(got: &[String], want: &[String], by_value: bool, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: event count");
    let canon = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = if by_value {
            canon(g) == canon(w)
        } else {
            g == w
        };
        assert!(same, "{what}: event {i} differs: {:.200} vs {:.200}", g, w);
    }
}

fn export(dir: &Path, session: &str) -> Vec<String> {
    let out = ok(cmd("export", dir).args(["--team", "1", "--session", session]));
    out.lines().map(String::from).collect()
}

#[test]
fn gzip_bodies_and_decoded_batches_ingest_and_export_the_same_events() {
    let (session, chunk_count, expected) = expected_events();
    let gz = tempfile::tempdir().unwrap();
    let mut wire: Vec<PathBuf> = std::fs::read_dir(data().join("wire"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    wire.sort();
    assert_eq!(wire.len(), 16);
    ok(cmd("ingest", gz.path()).args(["--team", "1"]).args(&wire));
    let plain = tempfile::tempdir().unwrap();
    ok(cmd("ingest", plain.path())
        .args(["--team", "1"])
        .arg(data().join("snapshot-batches.jsonl")));

    let from_gz = export(gz.path(), &session);
    let from_plain = export(plain.path(), &session);
    // The decoded batches were re-serialized by the capture tool (escapes differ from the
    // wire bytes), so: byte-exact against the file ingested, value-equal across the two.
    same_events(&from_plain, &expected, false, "decoded batches");
    same_events(&from_gz, &expected, true, "gzip bodies");

    // The same multiset of events as the fixture's per-event file (sorted by timestamp there).
    let wire_events = std::fs::read_to_string(data().join("session-wire-events.jsonl")).unwrap();
    let canon = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .unwrap()
            .to_string()
    };
    let mut a: Vec<String> = wire_events
        .lines()
        .map(|l| {
            serde_json::from_str::<(String, serde_json::Value)>(l)
                .unwrap()
                .1
                .to_string()
        })
        .collect();
    let mut b: Vec<String> = from_gz.iter().map(|e| canon(e)).collect();
    a.sort();
    b.sort();
    same_events(&b, &a, false, "session-wire-events.jsonl");

    // ls and stats see it.
    let ls = ok(cmd("ls", gz.path()).args(["--team", "1", "--json"]));
    let row: serde_json::Value = serde_json::from_str(ls.lines().next().unwrap()).unwrap();
    assert_eq!(row["session_id"], session.as_str());
    assert_eq!(row["chunk_count"], chunk_count);
    assert_eq!(row["person"], "realclient-user-1-20261126033322");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(cmd("stats", gz.path()).arg("--json"))).unwrap();
    assert_eq!(stats["sessions"], 1);
    assert_eq!(stats["chunks"], chunk_count);
}

#[test]
fn malformed_input_is_reported_with_file_and_line_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let good = r#"{"event":"$snapshot","properties":{"$session_id":"s1","distinct_id":"p","$snapshot_data":[{"type":4,"data":{},"timestamp":1795000000000}]}}"#;
    let no_session = good.replace("$session_id", "$nope");
    std::fs::write(&input, format!("{good}\n{{not json\n{no_session}\n")).unwrap();
    let bad_gzip = dir.path().join("bad.gz");
    std::fs::write(&bad_gzip, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    let store = dir.path().join("store");
    // The store's clock at the recording's time: its timestamp (no send time) is then fresh.
    let out = run(cmd("ingest", &store)
        .args(["--team", "3", "--now", "1795000001000"])
        .arg(&input)
        .arg(&bad_gzip));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input.jsonl:2: "), "{err}");
    assert!(
        err.contains("input.jsonl:3: ") && err.contains("$session_id"),
        "{err}"
    );
    assert!(err.contains("bad.gz: invalid gzip"), "{err}");
    let exported = export_team(&store, 3, "s1");
    assert_eq!(
        exported,
        vec![r#"{"type":4,"data":{},"timestamp":1795000000000}"#]
    );
}

fn export_team(dir: &Path, team: u64, session: &str) -> Vec<String> {
    let out = ok(cmd("export", dir).args(["--team", &team.to_string(), "--session", session]));
    out.lines().map(String::from).collect()
}

#[test]
fn demo_verifies_a_small_run() {
    let out = ok(bin().args(["demo", "--sessions", "12", "--threads", "3"]));
    assert!(out.contains("verified 12 sessions, 0 mismatches"), "{out}");
}

#[test]
fn delete_person_from_a_file_of_ids_with_wait_purges_them_all() {
    let (session, _, _) = expected_events();
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(
        &ids,
        "# erasure requests, ticket 123\nrealclient-user-1-20261126033322\n\nnobody-else\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    ok(cmd("ingest", &store)
        .args(["--team", "1"])
        .arg(data().join("snapshot-batches.jsonl")));
    let out = ok(cmd("delete-person", &store)
        .args(["--team", "1", "--wait", "--file"])
        .arg(&ids));
    assert!(out.contains("2 deletion requests durable"), "{out}");
    assert!(
        out.contains("compaction: 1 segments rewritten") || out.contains("1 removed"),
        "{out}"
    );
    let statuses: Vec<&str> = out.lines().filter(|l| l.contains("\"status\"")).collect();
    assert_eq!(statuses.len(), 2);
    assert!(
        statuses.iter().all(|l| l.contains("\"status\":\"done\"")),
        "{out}"
    );
    assert!(statuses[0].contains("\"sessions_removed\":1"), "{out}");
    let status = ok(cmd("deletion-status", &store).args(["--id", "1"]));
    assert!(status.contains("\"status\":\"done\""));
    let gone = run(cmd("export", &store).args(["--team", "1", "--session", &session]));
    assert_eq!(gone.status.code(), Some(2), "the session is gone");
    // Re-ingesting the same (old) payloads is refused: they predate the request.
    let again = run(cmd("ingest", &store)
        .args(["--team", "1"])
        .arg(data().join("snapshot-batches.jsonl")));
    assert!(String::from_utf8_lossy(&again.stderr).contains("dropped, its person was deleted"));
}

#[test]
fn expire_and_compact_report_what_they_did() {
    let store = tempfile::tempdir().unwrap();
    ok(cmd("ingest", store.path())
        .args(["--team", "1"])
        .arg(data().join("snapshot-batches.jsonl")));
    let out = ok(&mut cmd("compact", store.path()));
    assert!(out.contains("segments rewritten"), "{out}");
    // Seal the active segment (library call); far in the future it is past retention.
    let cfg = replaystore::Config::default().with_default_retention_days(3650);
    replaystore::Store::open(store.path(), cfg)
        .unwrap()
        .seal_active()
        .unwrap();
    let out = ok(cmd("expire", store.path()).args(["--now", "4102444800000"]));
    assert!(out.starts_with("removed 1 segments"), "{out}");
    let stats = ok(cmd("stats", store.path()).arg("--json"));
    assert!(stats.contains("\"sessions\":0"), "{stats}");
}

#[test]
fn cost_projects_storage_from_a_store_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(cmd("ingest", &store)
        .args(["--team", "1"])
        .arg(data().join("snapshot-batches.jsonl")));
    let html = dir.path().join("cost.html");
    let out = ok(bin()
        .args([
            "cost",
            "--sessions-per-day",
            "1000",
            "--retention-days",
            "90",
            "--dir",
        ])
        .arg(&store)
        .arg("--html")
        .arg(&html));
    let field = |name: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{out}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let per_session = field("stored bytes per session");
    assert!(per_session > 1000.0 && per_session < 226_629.0, "{out}");
    let per_day = field("stored GB per day");
    assert!((per_day - per_session * 1000.0 / 1e9).abs() < 0.01, "{out}");
    assert!(
        (field("stored GB at steady state") - per_session * 1000.0 * 90.0 / 1e9).abs() < 0.06,
        "{out}"
    );
    let report = std::fs::read_to_string(&html).unwrap();
    assert!(report.contains("<svg") && report.contains("<polyline"));
}

/// One clock for a dry run: a session ingested at `--now T0` on a 30-day team, then `expire`
/// and `compact` at `--now T0+40d` (the store's clock for the whole run, sealing of the old
/// active segment at open included) leave no byte of it on disk, raw or decompressed.
#[test]
fn expire_and_compact_forty_days_on_remove_every_byte_of_a_30_day_session() {
    let (session, _, _) = expected_events();
    let store = tempfile::tempdir().unwrap();
    // A minute after the fixture's last event: arrival time T0.
    let t0: i64 = 1_795_664_048_166 + 60_000;
    let day: i64 = 86_400_000;
    let at = |ms: i64| ms.to_string();
    let team30 = ["--team-retention", "1=30"];
    ok(cmd("ingest", store.path())
        .args(team30)
        .args(["--team", "1", "--now", &at(t0)])
        .arg(data().join("snapshot-batches.jsonl")));
    // Day 29: still there.
    let ls = ok(cmd("ls", store.path()).args(team30).args([
        "--team",
        "1",
        "--json",
        "--now",
        &at(t0 + 29 * day),
    ]));
    assert!(ls.contains(&session), "{ls}");
    let later = at(t0 + 40 * day);
    let out = ok(cmd("expire", store.path())
        .args(team30)
        .args(["--now", &later]));
    assert!(out.starts_with("removed 1 segments"), "{out}");
    ok(cmd("compact", store.path())
        .args(team30)
        .args(["--now", &later]));
    let ls = ok(cmd("ls", store.path())
        .args(team30)
        .args(["--team", "1", "--json", "--now", &later]));
    assert!(!ls.contains(&session), "{ls}");
    for f in files_under(store.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, session.as_bytes()) && !contains(&bytes, b"realclient"),
            "{} holds the session",
            f.display()
        );
        assert!(
            f.extension().is_none_or(|e| e != "seg"),
            "segment left: {}",
            f.display()
        );
    }
}

/// Honest exit codes: a compaction job that fails (a corrupt block in the segment to rewrite)
/// makes `delete-person --wait`, `delete-session --wait` and `compact` exit 1, with the failed
/// job and the requests not done on stderr; without --wait a request is only made durable
/// (exit 0, status pending).
#[test]
fn erasure_commands_exit_non_zero_when_compaction_fails() {
    let (session, _, _) = expected_events();
    let person = "realclient-user-1-20261126033322";
    let store = tempfile::tempdir().unwrap();
    ok(cmd("ingest", store.path())
        .args(["--team", "1"])
        .arg(data().join("snapshot-batches.jsonl")));
    let cfg = replaystore::Config::default().with_default_retention_days(3650);
    replaystore::Store::open(store.path(), cfg)
        .unwrap()
        .seal_active()
        .unwrap();
    let seg = files_under(store.path())
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 200] ^= 0x55; // inside the first block, past the 32-byte segment header
    std::fs::write(&seg, bytes).unwrap();

    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let out = run(cmd("delete-person", store.path()).args(["--team", "1", "--person", person]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"status\":\"pending\""));
    for args in [
        vec!["delete-person", "--team", "1", "--person", person, "--wait"],
        vec![
            "delete-session",
            "--team",
            "1",
            "--session",
            &session,
            "--wait",
        ],
        vec!["compact"],
    ] {
        let out = run(cmd(args[0], store.path()).args(&args[1..]));
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {t}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("compaction job failed: segments"),
            "{args:?}: {err}"
        );
        assert!(err.contains("are not done"), "{args:?}: {err}");
    }
    // `deletion-status` is a question, not a wait: pending is an answer (exit 0).
    let out = run(cmd("deletion-status", store.path()).args(["--id", "1"]));
    assert!(out.status.success() && text(&out).contains("pending"));
}
