//! Remote-tier scenarios, run against the in-memory backend (tests/remote.rs) and a real S3 API
//! server on loopback (tests/remote_s3.rs). Each takes a function that gives a `RemoteConfig`
//! for a fresh prefix of the bucket.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use replaystore::{Config, ManualClock, RemoteConfig, Store, DAY_MS};

use super::{chunk, config, contains, files_under, segment_files, segment_payloads, LANE};

/// Timestamps of `common::chunk` start here; the clock starts an hour later.
const T0: i64 = 1_795_000_000_000 + 3_600_000;
pub const CANARY_PERSON: &str = "canary-person-4471";
pub const CANARY_BYTES: &[u8] = b"CANARY-PAYLOAD-9f3a";

pub fn store_config(remote: RemoteConfig, clock: &Arc<ManualClock>) -> Config {
    config()
        .with_clock(clock.clone())
        .with_team_retention_days(7, 30)
        .with_remote(remote)
}

/// Appends `sessions` sessions of team `team`, `flushes` blocks each (one per flush, every
/// other flush sealing the segment, so sessions span segments) and returns their ids.
pub fn fill(store: &Store, team: u64, sessions: usize, flushes: usize) -> Vec<String> {
    let ids: Vec<String> = (0..sessions).map(|s| format!("t{team}-s{s}")).collect();
    for f in 0..flushes {
        for (s, id) in ids.iter().enumerate() {
            let person = format!("person-{}", s % 5);
            store.append(chunk(team, id, &person, f, 3000)).unwrap();
        }
        store.flush().unwrap();
        if f % 2 == 1 {
            store.seal_active().unwrap();
        }
    }
    ids
}

pub fn read_all(store: &Store, team: u64, ids: &[String]) -> BTreeMap<String, Vec<Vec<u8>>> {
    ids.iter()
        .map(|id| {
            let s = store
                .read_session(team, id)
                .unwrap()
                .expect("session readable");
            (
                id.clone(),
                s.chunks.into_iter().map(|c| c.payload).collect(),
            )
        })
        .collect()
}

/// Upload, verification, local copies dropped after `local_retention`, range reads with
/// coalescing and their GET counts, reopen (footers from the local cache, no GET), and
/// reopening from the bucket alone on a fresh directory.
pub fn upload_drop_read_reopen(remote: RemoteConfig, dir: &Path, dir2: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = store_config(remote.clone(), &clock);
    let store = Store::open(dir, cfg.clone()).unwrap();
    let ids = fill(&store, 1, 24, 4);
    store.seal_active().unwrap();
    let expected = read_all(&store, 1, &ids);
    let sealed = segment_files(dir, LANE).len() as u64;
    assert!(sealed >= 2, "want several segments, got {sealed}");

    let r = store.sync_remote().unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.uploaded, sealed);
    assert_eq!(
        r.local_copies_dropped, 0,
        "data is younger than local_retention"
    );
    let st = store.remote_status().unwrap();
    assert_eq!((st.verified, st.remote_only), (sealed, 0));
    // Verification read every object back.
    assert!(st.requests.get_bytes >= r.bytes_uploaded);
    // A second sync has nothing to do.
    let again = store.sync_remote().unwrap();
    assert_eq!((again.uploaded, again.local_copies_dropped), (0, 0));

    clock.advance(Duration::from_millis(2 * DAY_MS as u64));
    let r = store.sync_remote().unwrap();
    assert_eq!(r.local_copies_dropped, sealed);
    assert!(
        segment_files(dir, LANE).is_empty(),
        "local copies still there"
    );
    let stats = store.stats().unwrap();
    assert_eq!((stats.remote_segments, stats.bytes_on_disk), (sealed, 0));

    let before = store.remote_status().unwrap().requests;
    for id in &ids {
        let (data, trace) = store.read_session_traced(1, id).unwrap();
        let data = data.expect("remote session readable");
        let got: Vec<Vec<u8>> = data.chunks.into_iter().map(|c| c.payload).collect();
        assert_eq!(&got, &expected[id], "session {id}");
        assert!(trace.remote_segments >= 1);
        // A session's blocks in one segment are a few KB apart: one GET per segment (the
        // footers are in the local cache).
        assert_eq!(trace.gets, trace.remote_segments, "{id}: {trace:?}");
        assert_eq!(trace.footer_fetches, 0, "{id}: {trace:?}");
        assert!(trace.bytes >= data.summary.stored_bytes, "{id}: {trace:?}");
    }
    let after = store.remote_status().unwrap().requests;
    assert!(after.gets > before.gets);
    // The scrub reads remote segments whole (one GET each) and finds nothing wrong.
    let v = store.verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!((v.segments, v.blocks), (sealed, 4 * ids.len() as u64));
    store.close().unwrap();

    // Reopen: footers come from the local cache, no request until a block is read.
    let store = Store::open(dir, cfg.clone()).unwrap();
    assert_eq!(store.remote_status().unwrap().requests.gets, 0);
    assert_eq!(store.remote_status().unwrap().remote_only, sealed);
    assert_eq!(read_all(&store, 1, &ids), expected);
    let summaries = store.list_sessions(1, &Default::default()).unwrap();
    assert_eq!(summaries.len(), ids.len());
    // A deletion, then the hand-over: seal, sync (uploads the tombstone log), close.
    let gone = store.delete_person(1, "person-0").unwrap();
    store.seal_active().unwrap();
    let r = store.sync_remote().unwrap();
    assert!(r.meta_files_uploaded >= 1, "{r:?}");
    store.close().unwrap();

    // Another machine: an empty directory and the same bucket.
    let other = Store::open(dir2, cfg).unwrap();
    assert_eq!(other.remote_status().unwrap().remote_only, sealed);
    for id in &ids {
        let s = other.read_session(1, id).unwrap();
        let deleted = id
            .strip_prefix("t1-s")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 5 == 0);
        match s {
            Some(s) => {
                assert!(!deleted, "{id} of a deleted person came back");
                let got: Vec<Vec<u8>> = s.chunks.into_iter().map(|c| c.payload).collect();
                assert_eq!(&got, &expected[id]);
            }
            None => assert!(deleted, "{id} lost in the move"),
        }
    }
    assert!(other.pending_deletions().iter().any(|d| d.id == gone));
    other.close().unwrap();
}

/// Retention drops remote segments and deletes their objects.
pub fn retention_deletes_objects(remote: RemoteConfig, dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir, store_config(remote.clone(), &clock)).unwrap();
    let ids = fill(&store, 7, 10, 2);
    fill(&store, 1, 4, 2);
    store.seal_active().unwrap();
    clock.advance(Duration::from_millis(2 * DAY_MS as u64));
    let r = store.sync_remote().unwrap();
    assert!(r.local_copies_dropped >= 2, "{r:?}");
    let lane30 = |objs: &[replaystore::remote::BucketObject]| {
        objs.iter()
            .filter(|o| o.key.contains("/segments/30d/"))
            .count()
    };
    let objs = replaystore::remote::bucket_objects(&remote, false).unwrap();
    assert!(lane30(&objs) >= 1);

    clock.advance(Duration::from_millis(31 * DAY_MS as u64));
    assert!(store.read_session(7, &ids[0]).unwrap().is_none());
    let ret = store.enforce_retention(clock.now()).unwrap();
    assert_eq!(ret.objects_deleted, lane30(&objs) as u64, "{ret:?}");
    let objs = replaystore::remote::bucket_objects(&remote, false).unwrap();
    assert_eq!(lane30(&objs), 0, "expired objects left: {objs:?}");
    // The other team's data (3650-day lane) is still there and readable.
    assert!(objs
        .iter()
        .any(|o| o.key.contains(&format!("/segments/{LANE}d/"))));
    assert!(store.read_session(1, "t1-s0").unwrap().is_some());
    assert_eq!(store.remote_status().unwrap().doomed, 0);
    store.close().unwrap();
}

/// A person deleted while their blocks are only in the bucket: compaction downloads, rewrites
/// and replaces the objects; no object left in the bucket (nor file on disk) holds their bytes.
pub fn deletion_rewrites_remote(remote: RemoteConfig, dir: &Path) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::open(dir, store_config(remote.clone(), &clock)).unwrap();
    let ids = fill(&store, 1, 12, 3);
    let mut canary = chunk(1, "canary-session", CANARY_PERSON, 0, 2000);
    canary.payload.extend_from_slice(CANARY_BYTES);
    store.append(canary).unwrap();
    store.flush().unwrap();
    fill(&store, 1, 12, 1);
    store.seal_active().unwrap();
    clock.advance(Duration::from_millis(2 * DAY_MS as u64));
    let r = store.sync_remote().unwrap();
    assert!(r.local_copies_dropped >= 2 && r.errors.is_empty(), "{r:?}");
    let scan = |needle: &[u8]| canary_hits(&remote, dir, needle);
    assert!(
        !scan(CANARY_BYTES).is_empty(),
        "the canary scan must see the canary first"
    );
    let others = read_all(&store, 1, &ids);

    let id = store.delete_person(1, CANARY_PERSON).unwrap();
    assert!(store.read_session(1, "canary-session").unwrap().is_none());
    let rep = store.compact().unwrap();
    assert!(rep.failed_jobs.is_empty(), "{:?}", rep.failed_jobs);
    assert!(rep.deletions_completed.contains(&id), "{rep:?}");
    match store.deletion_status(id) {
        replaystore::DeletionStatus::Done { purged, .. } => {
            assert_eq!(purged.sessions_removed, 1, "{purged:?}");
            assert!(purged.segments_rewritten >= 1, "{purged:?}");
        }
        other => panic!("deletion not done: {other:?}"),
    }
    assert_eq!(scan(CANARY_BYTES), Vec::<String>::new());
    assert_eq!(scan(CANARY_PERSON.as_bytes()), Vec::<String>::new());
    assert_eq!(store.remote_status().unwrap().doomed, 0);
    // Everyone else is intact, read back from the rewritten objects.
    assert_eq!(read_all(&store, 1, &ids), others);
    store.close().unwrap();
}

/// Where `needle` is in the bucket (every object, raw and decompressed) or in the store's
/// directory (every file, raw and decompressed).
pub fn canary_hits(remote: &RemoteConfig, dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for o in replaystore::remote::bucket_objects(remote, true).unwrap() {
        let (key, bytes) = (o.key, o.bytes.expect("object bytes"));
        if contains(&bytes, needle) {
            hits.push(format!("{key} (raw)"));
        }
        if key.ends_with(".seg") && segment_payloads(&bytes).iter().any(|p| contains(p, needle)) {
            hits.push(format!("{key} (decompressed)"));
        }
    }
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        if contains(&bytes, needle) {
            hits.push(format!("{} (local)", f.display()));
        }
        if f.extension().is_some_and(|e| e == "seg")
            && segment_payloads(&bytes).iter().any(|p| contains(p, needle))
        {
            hits.push(format!("{} (local, decompressed)", f.display()));
        }
    }
    hits
}

/// The documented hand-over (docs/scale-out.md, "Moving a partition"): the old owner seals and
/// syncs with no local retention, a new owner opens the prefix on an empty directory, erases a
/// person there, and nothing in the bucket or the new directory holds the person's bytes. The
/// new directory starts with no lane directory at all: compaction must create what it needs.
pub fn handover_then_erase(remote: RemoteConfig, dir: &Path, dir2: &Path) {
    let remote = remote.with_local_retention(Duration::ZERO);
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = store_config(remote.clone(), &clock);
    let store = Store::open(dir, cfg.clone()).unwrap();
    let ids = fill(&store, 1, 10, 2);
    // Team 7 keeps 30 days: a second lane in the bucket.
    let more = fill(&store, 7, 4, 2);
    let mut canary = chunk(7, "canary-session", CANARY_PERSON, 0, 2000);
    canary.payload.extend_from_slice(CANARY_BYTES);
    store.append(canary).unwrap();
    store.flush().unwrap();
    store.seal_active().unwrap();
    let expected = read_all(&store, 1, &ids);
    let expected7 = read_all(&store, 7, &more);
    let r = store.sync_remote().unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(segment_files(dir, LANE).is_empty() && segment_files(dir, 30).is_empty());
    store.close().unwrap();
    assert!(
        !canary_hits(&remote, dir2, CANARY_BYTES).is_empty(),
        "the canary scan must see the canary first"
    );

    let other = Store::open(dir2, cfg).unwrap();
    let id = other.delete_person(7, CANARY_PERSON).unwrap();
    let rep = other.compact().unwrap();
    assert!(rep.failed_jobs.is_empty(), "{:?}", rep.failed_jobs);
    assert!(rep.deletions_completed.contains(&id), "{rep:?}");
    assert!(matches!(
        other.deletion_status(id),
        replaystore::DeletionStatus::Done { .. }
    ));
    assert_eq!(
        canary_hits(&remote, dir2, CANARY_BYTES),
        Vec::<String>::new()
    );
    assert_eq!(
        canary_hits(&remote, dir2, CANARY_PERSON.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(other.remote_status().unwrap().doomed, 0);
    assert_eq!(read_all(&other, 1, &ids), expected);
    assert_eq!(read_all(&other, 7, &more), expected7);
    other.close().unwrap();
}

/// The hand-over of docs/scale-out.md through the real command line, as an operator runs it:
/// `ingest` two persons on machine A, `remote sync --seal --local-retention-hours 0`, then on
/// machine B (an empty directory) `delete-person --wait` of one of them, which must exit 0
/// only once done, and `remote scan` finds the person's bytes in no object. Then the failure
/// path: an object lost behind the store's back (`remove_object`) makes the next erasure's
/// compaction fail, and `delete-person --wait` and `compact` exit 1 and say why. `cli` gives the
/// binary with the bucket's options (`--remote ...`); every command runs at a fixed `--now`.
pub fn handover_through_the_cli(
    remote: &RemoteConfig,
    cli: &dyn Fn(&[&str]) -> std::process::Command,
    a: &Path,
    b: &Path,
    remove_object: &dyn Fn(&str),
) {
    use std::process::Output;
    let t0: i64 = 1_795_000_000_000 + 7 * 3_600_000;
    let (alice, bob) = ("alice-canary-7731", "bob-keeps-his-data");
    let input = a.join("input.jsonl");
    let mut lines = String::new();
    for (person, session, text) in [
        (alice, "s-alice", std::str::from_utf8(CANARY_BYTES).unwrap()),
        (bob, "s-bob", "bob's page text"),
    ] {
        for i in 0..3 {
            let ts = t0 - 120_000 + i * 10_000;
            lines.push_str(&format!(
                r#"{{"event":"$snapshot","properties":{{"$session_id":"{session}","distinct_id":"{person}","$snapshot_data":[{{"type":3,"data":{{"source":5,"text":"{text} {i}"}},"timestamp":{ts}}}]}}}}"#
            ));
            lines.push('\n');
        }
    }
    std::fs::write(&input, lines).unwrap();
    let store = a.join("store");
    let run = |dir: &Path, now: i64, args: &[&str]| -> Output {
        let mut cmd = cli(args);
        cmd.args(["--local-retention-hours", "0", "--now", &now.to_string()]);
        cmd.arg("--dir").arg(dir);
        cmd.output().unwrap()
    };
    let text = |o: &Output| {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let input_s = input.to_str().unwrap();
    let o = run(&store, t0, &["ingest", "--team", "1", input_s]);
    assert!(o.status.success(), "ingest: {}", text(&o));
    let o = run(&store, t0, &["remote", "sync", "--seal"]);
    assert!(o.status.success(), "sync: {}", text(&o));
    assert!(
        files_under(&store)
            .iter()
            .all(|f| f.extension().is_none_or(|e| e != "seg")),
        "local copies left after the hand-over sync"
    );
    let scan = |needle: &str| -> Output {
        let mut cmd = cli(&["remote", "scan", "--needle", needle]);
        cmd.output().unwrap()
    };
    let o = scan(std::str::from_utf8(CANARY_BYTES).unwrap());
    assert_eq!(
        o.status.code(),
        Some(1),
        "the scan must see the canary first: {}",
        text(&o)
    );

    // Machine B: the bucket alone.
    let b_store = b.join("store");
    let later = t0 + 3_600_000;
    let o = run(
        &b_store,
        later,
        &["delete-person", "--team", "1", "--person", alice, "--wait"],
    );
    let out = text(&o);
    assert!(o.status.success(), "delete-person --wait on B: {out}");
    assert!(out.contains("\"status\":\"done\""), "{out}");
    assert!(out.contains("\"sessions_removed\":1"), "{out}");
    for needle in [std::str::from_utf8(CANARY_BYTES).unwrap(), alice] {
        let o = scan(needle);
        let t = text(&o);
        assert!(o.status.success(), "scan for {needle}: {t}");
        assert!(t.contains(" 0 hits"), "{t}");
        assert_eq!(
            canary_hits(remote, &b_store, needle.as_bytes()),
            Vec::<String>::new()
        );
    }
    let o = run(
        &b_store,
        later,
        &["export", "--team", "1", "--session", "s-bob"],
    );
    let t = text(&o);
    assert!(o.status.success() && t.contains("bob's page text 2"), "{t}");
    let o = run(
        &b_store,
        later,
        &["export", "--team", "1", "--session", "s-alice"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // An object lost behind the store's back: erasing bob needs it, and cannot finish.
    let objects = replaystore::remote::bucket_objects(remote, false).unwrap();
    let segs: Vec<&str> = objects
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.ends_with(".seg"))
        .collect();
    assert!(!segs.is_empty());
    for k in segs {
        remove_object(k);
    }
    let o = run(
        &b_store,
        later,
        &["delete-person", "--team", "1", "--person", bob, "--wait"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("compaction job failed"), "{t}");
    assert!(t.contains("are not done"), "{t}");
    assert!(t.contains("\"status\":\"pending\""), "{t}");
    let o = run(&b_store, later, &["compact"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("compaction job failed") && t.contains("are not done"),
        "{t}"
    );
    // Still hidden from listings meanwhile.
    let o = run(&b_store, later, &["ls", "--team", "1", "--json"]);
    let t = text(&o);
    assert!(o.status.success() && !t.contains(bob), "{t}");
}
