//! The remote tier against a real S3 API server on loopback (moto), started by `.ci/run`,
//! which exports its address as `REPLAYSTORE_S3_ENDPOINT`. Without it the tests skip, loudly;
//! under CI (`CI` set) they fail instead.
//!
//! By hand: `python3 -m venv /tmp/moto && /tmp/moto/bin/pip install 'moto[server]'`,
//! `/tmp/moto/bin/moto_server -H 127.0.0.1 -p 5055 &`, then
//! `REPLAYSTORE_S3_ENDPOINT=http://127.0.0.1:5055 cargo test --release --test remote_s3`.

mod common;

use replaystore::{Chunk, Store};

use common::s3::{bucket, endpoint, prefix, replaystore_cli, BUCKET};

#[test]
fn upload_drop_read_reopen() {
    let Some(ep) = endpoint("upload_drop_read_reopen") else {
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = bucket(&ep, &prefix("reopen"));
    common::remote::upload_drop_read_reopen(cfg, a.path(), b.path());
}

#[test]
fn retention_deletes_objects() {
    let Some(ep) = endpoint("retention_deletes_objects") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    common::remote::retention_deletes_objects(bucket(&ep, &prefix("retention")), dir.path());
}

#[test]
fn deletion_rewrites_remote_with_canary_scan() {
    let Some(ep) = endpoint("deletion_rewrites_remote_with_canary_scan") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = bucket(&ep, &prefix("deletion"));
    common::remote::deletion_rewrites_remote(cfg.clone(), dir.path());
    // The operator's tool agrees: `remote scan` finds no canary in any object.
    let needle = format!(
        "--needle={}",
        std::str::from_utf8(common::remote::CANARY_BYTES).unwrap()
    );
    let mut cmd = replaystore_cli(&ep, &["remote", "scan", "--remote", &cfg.url, &needle]);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 hits"), "{text}");
}

/// Deletes one object behind the store's back (moto refuses unsigned requests for objects).
fn delete_object(ep: &str, key: &str) {
    use object_store::ObjectStoreExt;
    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(ep)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap();
    let path = object_store::path::Path::from(key);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { s3.delete(&path).await })
        .unwrap();
}

/// The documented hand-over through the real binary: ingest two persons, `remote sync --seal
/// --local-retention-hours 0`, open the prefix from a fresh directory, `delete-person --wait`
/// (exit 0 only when done), `remote scan` finds the person in no object; then an object lost
/// from the bucket makes the next erasure's compaction fail: exit 1, and why, on stderr.
#[test]
fn handover_through_the_cli() {
    let Some(ep) = endpoint("handover_through_the_cli") else {
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = bucket(&ep, &prefix("handover-cli"));
    let cli = |args: &[&str]| {
        let mut c = replaystore_cli(&ep, args);
        c.args(["--remote", &cfg.url]);
        c
    };
    let remove = |key: &str| delete_object(&ep, key);
    common::remote::handover_through_the_cli(&cfg, &cli, a.path(), b.path(), &remove);
}

/// The same hand-over through the library, with a second lane (a 30-day team).
#[test]
fn handover_then_erase() {
    let Some(ep) = endpoint("handover_then_erase") else {
        return;
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::remote::handover_then_erase(bucket(&ep, &prefix("handover")), a.path(), b.path());
}

/// Incompressible payload bytes (so a segment is big enough for several upload parts).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A real process is killed (abort at a crash point) after uploading the first part of a
/// multipart upload; the next sync resumes with the second part, and the object that results
/// is byte for byte the segment file. Also killed after the upload completed and before its
/// verification: the recorded upload id is stale then, and the next sync starts over.
#[test]
fn crash_during_upload_resumes() {
    if !common::failpoints("crash_during_upload_resumes") {
        return;
    }
    let Some(ep) = endpoint("crash_during_upload_resumes") else {
        return;
    };
    for point in ["upload:after_part", "upload:before_verify"] {
        let dir = tempfile::tempdir().unwrap();
        // Local copies go as soon as verified: the data just arrived (store clock).
        let cfg = bucket(&ep, &prefix("crash"))
            .with_part_bytes(5 << 20)
            .with_local_retention(std::time::Duration::ZERO);
        let config = common::config()
            .with_segment_bytes(64 << 20)
            .with_remote(cfg.clone());
        let open = || Store::open(dir.path(), config.clone()).unwrap();
        let store = open();
        for i in 0..13 {
            let mut c: Chunk = common::chunk(1, "big-session", "p", i, 10);
            c.payload = noise(i as u64, 1 << 20);
            store.append(c).unwrap();
        }
        store.flush().unwrap();
        store.seal_active().unwrap();
        let expected = store.read_session(1, "big-session").unwrap().unwrap();
        store.close().unwrap();
        let files = common::segment_files(dir.path(), common::LANE);
        assert_eq!(files.len(), 1);
        let local = std::fs::read(&files[0]).unwrap();
        let parts = local.len().div_ceil(5 << 20) as u64;
        assert!(parts >= 3, "{} bytes", local.len());

        let lane = common::LANE.to_string();
        let mut cmd = replaystore_cli(&ep, &["remote", "sync", "--remote", &cfg.url]);
        cmd.args(["--part-mib", "5", "--retention-days", &lane, "--dir"])
            .arg(dir.path());
        let out = cmd.env("REPLAYSTORE_CRASH_AT", point).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: not interrupted: {err}");
        assert!(err.contains(&format!("crash point {point}")), "{err}");

        let store = open();
        assert_eq!(store.remote_status().unwrap().uploading, 1, "{point}");
        let r = store.sync_remote().unwrap();
        assert!(r.errors.is_empty(), "{point}: {r:?}");
        assert_eq!((r.uploaded, r.uploads_resumed), (1, 1), "{point}: {r:?}");
        let st = store.remote_status().unwrap();
        let parts_now = st.requests.parts_uploaded;
        eprintln!("{point}: {parts_now} of {parts} parts uploaded after the restart");
        match point {
            "upload:after_part" => assert_eq!(parts_now, parts - 1, "resumed, not restarted"),
            // The recorded upload was already completed: a server that refuses a second
            // completion gets the whole object again; moto accepts it (no part re-sent).
            _ => assert!(
                parts_now == parts || parts_now == 0,
                "{parts_now} of {parts}"
            ),
        }
        assert_eq!(st.verified, 1);
        let objects = replaystore::remote::bucket_objects(&cfg, true).unwrap();
        let seg = objects
            .iter()
            .find(|o| o.key.ends_with(".seg"))
            .expect("segment object");
        assert!(
            seg.bytes.as_deref() == Some(&local[..]),
            "{point}: object differs from the file"
        );
        // Data from the bucket equals data from the file.
        assert!(common::segment_files(dir.path(), common::LANE).is_empty());
        let got = store.read_session(1, "big-session").unwrap().unwrap();
        assert_eq!(got.chunks.len(), expected.chunks.len());
        assert!(got
            .chunks
            .iter()
            .zip(&expected.chunks)
            .all(|(a, b)| a.payload == b.payload));
        store.close().unwrap();
    }
}

/// A deletion's compaction of remote segments is killed (a real process, aborted at each step
/// of the commit sequence); the next open and pass finish it: the person's bytes leave every
/// object and file, everyone else's data is intact, no object is left waiting for deletion.
#[test]
fn crash_during_remote_compaction() {
    if !common::failpoints("crash_during_remote_compaction") {
        return;
    }
    let Some(ep) = endpoint("crash_during_remote_compaction") else {
        return;
    };
    use common::remote::{canary_hits, fill, read_all, CANARY_BYTES, CANARY_PERSON};
    for point in [
        "compact:after_write",
        "compact:after_rename",
        "compact:before_remove",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            bucket(&ep, &prefix("compact-crash")).with_local_retention(std::time::Duration::ZERO);
        let open = || Store::open(dir.path(), common::config().with_remote(cfg.clone())).unwrap();
        let store = open();
        let mut canary = common::chunk(1, "canary-session", CANARY_PERSON, 0, 2000);
        canary.payload.extend_from_slice(CANARY_BYTES);
        store.append(canary).unwrap();
        // Flushed with the first blocks of the others: the rewrite has survivors to copy.
        let ids = fill(&store, 1, 10, 2);
        store.seal_active().unwrap();
        let r = store.sync_remote().unwrap();
        assert!(
            r.local_copies_dropped >= 1 && r.errors.is_empty(),
            "{point}: {r:?}"
        );
        let others = read_all(&store, 1, &ids);
        store.close().unwrap();

        let lane = common::LANE.to_string();
        let mut cmd = replaystore_cli(&ep, &["delete-person", "--remote", &cfg.url]);
        cmd.args(["--local-retention-hours", "0", "--retention-days", &lane]);
        cmd.args(["--team", "1", "--person", CANARY_PERSON, "--wait", "--dir"])
            .arg(dir.path());
        let out = cmd.env("REPLAYSTORE_CRASH_AT", point).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{point}: not interrupted: {err} {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(err.contains(&format!("crash point {point}")), "{err}");

        let store = open();
        assert!(store.read_session(1, "canary-session").unwrap().is_none());
        let rep = store.compact().unwrap();
        assert!(rep.failed_jobs.is_empty(), "{point}: {rep:?}");
        let pending = store.pending_deletions();
        assert!(
            pending.is_empty(),
            "{point}: still pending {pending:?} after {rep:?}, remote {:?}",
            store.remote_status()
        );
        assert_eq!(
            canary_hits(&cfg, dir.path(), CANARY_BYTES),
            Vec::<String>::new()
        );
        assert_eq!(
            canary_hits(&cfg, dir.path(), CANARY_PERSON.as_bytes()),
            Vec::<String>::new()
        );
        assert_eq!(read_all(&store, 1, &ids), others, "{point}");
        assert_eq!(store.remote_status().unwrap().doomed, 0, "{point}");
        store.close().unwrap();
    }
}

/// The remote sync killed (a real process) at its other steps: after an upload and before its
/// verification, after a local copy's swap and before its unlink, after an expired object's
/// delete and before its manifest entry goes. The next open and sync finish the work: the
/// bucket holds exactly the live segments, nothing is left doomed, every session reads back.
#[test]
fn crash_during_sync_steps() {
    if !common::failpoints("crash_during_sync_steps") {
        return;
    }
    let Some(ep) = endpoint("crash_during_sync_steps") else {
        return;
    };
    use common::remote::{fill, read_all};
    use replaystore::DAY_MS;
    let lane = common::LANE.to_string();
    // The data arrives now (the store's clock decides retention); team 7 keeps it 30 days.
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for point in [
        "upload:before_verify",
        "sync:before_unlink",
        "sync:after_delete",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            bucket(&ep, &prefix("sync-crash")).with_local_retention(std::time::Duration::ZERO);
        let config = common::config()
            .with_team_retention_days(7, 30)
            .with_remote(cfg.clone());
        let open = || Store::open(dir.path(), config.clone()).unwrap();
        let store = open();
        let ids = fill(&store, 1, 6, 4);
        let expiring = fill(&store, 7, 3, 2);
        store.seal_active().unwrap();
        let expected = read_all(&store, 1, &ids);
        if point == "sync:after_delete" {
            let r = store.sync_remote().unwrap();
            assert!(r.errors.is_empty(), "{r:?}");
        }
        store.close().unwrap();

        let now = (t0 + 40 * DAY_MS).to_string();
        let mut cmd = if point == "sync:after_delete" {
            replaystore_cli(&ep, &["expire", "--now", &now, "--remote", &cfg.url])
        } else {
            replaystore_cli(&ep, &["remote", "sync", "--remote", &cfg.url])
        };
        cmd.args(["--local-retention-hours", "0", "--retention-days", &lane]);
        cmd.args(["--team-retention", "7=30", "--dir"])
            .arg(dir.path());
        let out = cmd.env("REPLAYSTORE_CRASH_AT", point).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("crash point {point}")),
            "{point}: {err}"
        );

        let store = open();
        if point == "sync:after_delete" {
            assert!(store.remote_status().unwrap().doomed >= 1, "{point}");
        }
        let r = store.sync_remote().unwrap();
        assert!(r.errors.is_empty(), "{point}: {r:?}");
        let st = store.remote_status().unwrap();
        assert_eq!((st.doomed, st.uploading), (0, 0), "{point}: {st:?}");
        assert!(common::segment_files(dir.path(), common::LANE).is_empty());
        // The bucket holds exactly the segments the store has.
        let live = store.stats().unwrap().remote_segments;
        let objects = replaystore::remote::bucket_objects(&cfg, false).unwrap();
        let segs = objects.iter().filter(|o| o.key.ends_with(".seg")).count() as u64;
        assert_eq!(segs, live, "{point}: {objects:?}");
        assert_eq!(st.verified, live, "{point}");
        assert_eq!(read_all(&store, 1, &ids), expected, "{point}");
        let team7 = store.read_session(7, &expiring[0]).unwrap();
        assert_eq!(team7.is_none(), point == "sync:after_delete", "{point}");
        store.close().unwrap();
    }
}
