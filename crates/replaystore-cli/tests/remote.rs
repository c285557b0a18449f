//! The remote tier against the in-memory object store (fast; the same scenarios run against a
//! real S3 API server in tests/remote_s3.rs).

mod common;

use std::sync::Arc;

use object_store::memory::InMemory;
use replaystore::RemoteConfig;

fn bucket() -> RemoteConfig {
    RemoteConfig::in_memory(Arc::new(InMemory::new()), "partition-0")
}

#[test]
fn upload_drop_read_reopen() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::remote::upload_drop_read_reopen(bucket(), a.path(), b.path());
}

/// The local-file backend (`file://`): no resumable multipart, one PUT per segment.
#[test]
fn upload_drop_read_reopen_on_local_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bucket_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket_dir.path().display());
    common::remote::upload_drop_read_reopen(RemoteConfig::new(url), a.path(), b.path());
    let objects = common::files_under(bucket_dir.path());
    assert!(objects
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "seg")));
}

#[test]
fn retention_deletes_objects() {
    let dir = tempfile::tempdir().unwrap();
    common::remote::retention_deletes_objects(bucket(), dir.path());
}

#[test]
fn handover_then_erase() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::remote::handover_then_erase(bucket(), a.path(), b.path());
}

/// The documented hand-over through the command line, on the local-file backend (the same
/// scenario runs against moto in tests/remote_s3.rs).
#[test]
fn handover_through_the_cli() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bucket_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket_dir.path().display());
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_replaystore"));
        c.args(args).args(["--remote", &url]);
        c
    };
    // Keys of the file backend are paths from the file system's root.
    let remove = |key: &str| std::fs::remove_file(std::path::Path::new("/").join(key)).unwrap();
    common::remote::handover_through_the_cli(
        &RemoteConfig::new(url.clone()),
        &cli,
        a.path(),
        b.path(),
        &remove,
    );
}

#[test]
fn deletion_rewrites_remote() {
    let dir = tempfile::tempdir().unwrap();
    common::remote::deletion_rewrites_remote(bucket(), dir.path());
}

mod damage {
    use super::*;
    use object_store::path::Path as ObjPath;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use replaystore::{Error, ManualClock, Store};
    use std::time::Duration;

    /// A store whose sealed segments are all remote-only, on a bucket the test can tamper with.
    fn remote_only(dir: &std::path::Path, mem: &Arc<InMemory>) -> (Store, RemoteConfig) {
        let cfg = RemoteConfig::in_memory(mem.clone(), "p").with_local_retention(Duration::ZERO);
        let clock = Arc::new(ManualClock::new(1_795_000_000_000 + 3_600_000));
        let store = Store::open(dir, common::remote::store_config(cfg.clone(), &clock)).unwrap();
        common::remote::fill(&store, 1, 6, 4);
        store.seal_active().unwrap();
        let r = store.sync_remote().unwrap();
        assert!(r.local_copies_dropped >= 2 && r.errors.is_empty(), "{r:?}");
        (store, cfg)
    }

    fn segment_keys(mem: &InMemory) -> Vec<ObjPath> {
        let mut keys: Vec<ObjPath> = futures::executor::block_on(async {
            use futures::TryStreamExt;
            mem.list(None).try_collect::<Vec<_>>().await
        })
        .unwrap()
        .into_iter()
        .map(|m| m.location)
        .filter(|k| k.as_ref().ends_with(".seg"))
        .collect();
        keys.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        keys
    }

    #[test]
    fn bit_rot_in_an_object_fails_only_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(InMemory::new());
        let (store, _) = remote_only(dir.path(), &mem);
        let keys = segment_keys(&mem);
        assert!(keys.len() >= 2);
        // Flip a byte inside the first block of the first object (past its 32-byte header).
        futures::executor::block_on(async {
            let mut bytes = mem.get(&keys[0]).await?.bytes().await?.to_vec();
            bytes[32 + 60] ^= 0x40;
            mem.put(&keys[0], PutPayload::from(bytes)).await.map(|_| ())
        })
        .unwrap();
        let mut corrupt = 0;
        for s in 0..6 {
            match store.read_session(1, &format!("t1-s{s}")) {
                Ok(Some(_)) => {}
                Err(Error::Corrupt { segment, .. }) => {
                    corrupt += 1;
                    assert!(keys[0].as_ref().contains(&format!("{segment:020}")));
                }
                other => panic!("session {s}: {other:?}"),
            }
        }
        assert_eq!(corrupt, 1, "exactly the session whose block rotted fails");
        // The scrub names that object (the block, and what no longer adds up around it).
        let v = store.verify().unwrap();
        assert!(!v.problems.is_empty());
        assert!(
            v.problems.iter().all(|p| p.contains(keys[0].as_ref())),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_missing_object_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(InMemory::new());
        let (store, _) = remote_only(dir.path(), &mem);
        for k in segment_keys(&mem) {
            futures::executor::block_on(mem.delete(&k)).unwrap();
        }
        match store.read_session(1, "t1-s0") {
            Err(Error::Remote { context, .. }) => assert!(context.contains(".seg"), "{context}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_damaged_footer_cache_is_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(InMemory::new());
        let (store, cfg) = remote_only(dir.path(), &mem);
        let segments = store.remote_status().unwrap().remote_only;
        let expected = store.read_session(1, "t1-s3").unwrap().unwrap();
        store.close().unwrap();
        let clock = Arc::new(ManualClock::new(1_795_000_000_000 + 3_600_000));
        let config = common::remote::store_config(cfg, &clock);
        let footers = dir.path().join("remote/footers");
        let damage = |ext: &str, at: usize| {
            let files: Vec<_> = common::files_under(&footers)
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect();
            assert_eq!(files.len() as u64, segments, "{ext} files");
            for f in files {
                let mut b = std::fs::read(&f).unwrap();
                b[at] ^= 0xff;
                std::fs::write(&f, b).unwrap();
            }
        };
        // The whole footers (header, then the footer's fixed part): refused when loaded, and
        // fetched again with one GET each when a read needs them.
        damage("ftr", 32 + 10);
        let store = Store::open(dir.path(), config.clone()).unwrap();
        assert_eq!(store.remote_status().unwrap().requests.gets, 0);
        let got = store.read_session(1, "t1-s3").unwrap().unwrap();
        assert_eq!(got.chunks.len(), expected.chunks.len());
        let st = store.remote_status().unwrap();
        assert_eq!(st.requests.footer_fetches, segments, "{st:?}");
        store.close().unwrap();
        // The `.meta` files (header, trailer, then the fixed part): refused at open, fetched
        // again (two GETs each: the tail of the object and its header).
        damage("meta", 64 + 10);
        let store = Store::open(dir.path(), config).unwrap();
        let st = store.remote_status().unwrap();
        assert_eq!(st.requests.footer_fetches, segments, "{st:?}");
        assert!(st.requests.gets >= 2 * segments, "{st:?}");
        let got = store.read_session(1, "t1-s3").unwrap().unwrap();
        assert_eq!(got.chunks.len(), expected.chunks.len());
        assert!(store.verify().unwrap().problems.is_empty());
    }

    /// A footer cache far smaller than the footers: every lookup still finds its session
    /// (fetching footers again as they are evicted), and the cache never holds more than one.
    #[test]
    fn a_tiny_footer_cache_bounds_disk_and_still_serves_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(InMemory::new());
        let cfg = RemoteConfig::in_memory(mem.clone(), "p")
            .with_local_retention(Duration::ZERO)
            .with_footer_cache_bytes(1);
        let clock = Arc::new(ManualClock::new(1_795_000_000_000 + 3_600_000));
        let store = Store::open(dir.path(), common::remote::store_config(cfg, &clock)).unwrap();
        let ids = common::remote::fill(&store, 1, 8, 6);
        store.seal_active().unwrap();
        let expected = common::remote::read_all(&store, 1, &ids);
        let r = store.sync_remote().unwrap();
        assert!(r.local_copies_dropped >= 3, "{r:?}");
        let footers = dir.path().join("remote/footers");
        let whole = |d: &std::path::Path| {
            common::files_under(d)
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "ftr"))
                .count()
        };
        assert!(whole(&footers) <= 1);
        for _ in 0..2 {
            assert_eq!(common::remote::read_all(&store, 1, &ids), expected);
            assert!(
                whole(&footers) <= 1,
                "{} whole footers cached",
                whole(&footers)
            );
        }
        let st = store.remote_status().unwrap();
        assert!(
            st.requests.footer_fetches >= r.local_copies_dropped,
            "{st:?}"
        );
        let listed = store.list_sessions(1, &Default::default()).unwrap();
        assert_eq!(listed.len(), ids.len());
    }

    #[test]
    fn bad_remote_urls_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["not a url", "s3://", "nosuchscheme://bucket/x"] {
            let cfg = common::config().with_remote(RemoteConfig::new(url));
            match Store::open(dir.path(), cfg) {
                Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "remote.url"),
                Err(e) => panic!("{url}: {e}"),
                Ok(_) => panic!("{url}: accepted"),
            }
        }
    }
}

/// With background threads on, a sealed segment reaches the bucket without any call: the seal
/// wakes the uploader (not the next maintenance tick, an hour away here).
#[test]
fn the_uploader_runs_when_a_segment_is_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config()
        .with_maintenance_interval(Some(std::time::Duration::from_secs(3600)))
        .with_remote(bucket());
    let store = replaystore::Store::open(dir.path(), cfg).unwrap();
    common::remote::fill(&store, 1, 4, 1);
    store.seal_active().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.remote_status().unwrap().verified == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not uploaded after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    store.close().unwrap();
}

/// A bucket that does not answer (nothing listens on the port): the store opens, ingests,
/// flushes, reads; syncs report the failure and keep every local copy; a deletion stays pending
/// (an upload that failed may still have left an object) until the bucket answers.
#[test]
fn an_unreachable_bucket_never_stops_ingestion() {
    use replaystore::Store;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), common::config()).unwrap();
    let ids = common::remote::fill(&store, 1, 5, 2);
    store.close().unwrap();
    let dead = RemoteConfig::new("s3://nowhere/p")
        .with_option("endpoint", "http://127.0.0.1:1")
        .with_option("allow_http", "true")
        .with_option("region", "us-east-1")
        .with_option("access_key_id", "x")
        .with_option("secret_access_key", "x")
        .with_retries(0, Duration::from_secs(1));
    let store = Store::open(dir.path(), common::config().with_remote(dead)).unwrap();
    let more = common::remote::fill(&store, 2, 3, 2);
    store.seal_active().unwrap();
    let files = common::segment_files(dir.path(), common::LANE);
    let r = store.sync_remote().unwrap();
    assert!(!r.errors.is_empty() && r.uploaded == 0, "{r:?}");
    assert_eq!(common::segment_files(dir.path(), common::LANE), files);
    for (team, list) in [(1, &ids), (2, &more)] {
        let all = common::remote::read_all(&store, team, list);
        assert_eq!(all.len(), list.len());
    }
    let id = store.delete_person(1, "person-1").unwrap();
    let rep = store.compact().unwrap();
    assert!(
        rep.failed_jobs.iter().any(|f| f.starts_with("remote")),
        "{rep:?}"
    );
    assert!(store.pending_deletions().iter().any(|d| d.id == id));
    assert!(store.read_session(1, "t1-s1").unwrap().is_none());
    store.close().unwrap();
}

/// The adoption of a bucket by a fresh directory, killed (a real process aborted at a crash
/// point) after installing the bucket's `KEY` and after installing its tombstone log, before
/// the manifest that records adoption complete. The next open adopts again, and the deletion
/// made on the old machine is still in force: the person's session is hidden, then erased by
/// compaction from the bucket and the new directory. Also with the adopted log torn or emptied
/// after the kill (what an unsynced write can leave after a power loss): fetched again.
#[test]
fn adoption_killed_midway_finishes_at_next_open() {
    if !common::failpoints("adoption_killed_midway_finishes_at_next_open") {
        return;
    }
    use common::remote::{canary_hits, fill, read_all, CANARY_BYTES, CANARY_PERSON};
    use replaystore::{DeletionStatus, Store};
    use std::process::Command;
    for (point, damage) in [
        ("adopt:after_key", ""),
        ("adopt:before_manifest", ""),
        ("adopt:before_manifest", "torn"),
        ("adopt:before_manifest", "empty"),
    ] {
        let what = format!("{point} {damage}");
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let bucket_dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", bucket_dir.path().display());
        let cfg = RemoteConfig::new(url.clone()).with_local_retention(std::time::Duration::ZERO);
        let config = common::config().with_remote(cfg.clone());
        // The old owner: data, a deletion still pending, the hand-over sync.
        let old = replaystore::Store::open(a.path(), config.clone()).unwrap();
        // A finished request first: the log then holds a retired record too.
        old.append(common::chunk(1, "gone-session", "p-gone", 0, 500))
            .unwrap();
        old.flush().unwrap();
        let done = old.delete_session(1, "gone-session").unwrap();
        assert!(old.compact().unwrap().deletions_completed.contains(&done));
        let mut canary = common::chunk(1, "canary-session", CANARY_PERSON, 0, 2000);
        canary.payload.extend_from_slice(CANARY_BYTES);
        old.append(canary).unwrap();
        let ids = fill(&old, 1, 6, 2);
        let expected = read_all(&old, 1, &ids);
        let id = old.delete_person(1, CANARY_PERSON).unwrap();
        old.seal_active().unwrap();
        let r = old.sync_remote().unwrap();
        assert!(r.errors.is_empty(), "{r:?}");
        assert!(matches!(
            old.deletion_status(id),
            DeletionStatus::Pending { .. }
        ));
        old.close().unwrap();

        // The new owner's first open, killed midway through the adoption.
        let out = Command::new(env!("CARGO_BIN_EXE_replaystore"))
            .args(["remote", "status", "--remote", &url])
            .args(["--retention-days", &common::LANE.to_string(), "--dir"])
            .arg(b.path())
            .env("REPLAYSTORE_CRASH_AT", point)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: not interrupted: {err}");
        assert!(err.contains(&format!("crash point {point}")), "{err}");
        assert!(!b.path().join("REMOTE").exists(), "{what}");
        assert!(b.path().join("KEY").exists(), "{what}");
        let log = b.path().join("tombstones.log");
        assert_eq!(log.exists(), point == "adopt:before_manifest", "{what}");
        match damage {
            "torn" => {
                let bytes = std::fs::read(&log).unwrap();
                std::fs::write(&log, &bytes[..bytes.len() / 2]).unwrap();
            }
            "empty" => std::fs::write(&log, b"").unwrap(),
            _ => {}
        }

        let store = Store::open(b.path(), config.clone()).unwrap();
        assert!(b.path().join("REMOTE").exists(), "{what}");
        assert!(
            store.read_session(1, "canary-session").unwrap().is_none(),
            "{what}: the deleted person's session is readable"
        );
        assert!(store
            .list_sessions(1, &Default::default())
            .unwrap()
            .iter()
            .all(|s| s.person != CANARY_PERSON));
        assert!(
            store.pending_deletions().iter().any(|d| d.id == id),
            "{what}: the pending deletion was forgotten"
        );
        assert!(matches!(
            store.deletion_status(done),
            DeletionStatus::Done { .. }
        ));
        // Late chunks of both requests are still refused.
        let late = common::chunk(1, "canary-session-2", CANARY_PERSON, 0, 100);
        assert!(store.append(late).is_err(), "{what}");
        let late = common::chunk(1, "gone-session", "p-gone", 5, 100);
        assert!(store.append(late).is_err(), "{what}");
        let rep = store.compact().unwrap();
        assert!(rep.failed_jobs.is_empty(), "{what}: {rep:?}");
        assert!(rep.deletions_completed.contains(&id), "{what}: {rep:?}");
        for needle in [CANARY_BYTES, CANARY_PERSON.as_bytes()] {
            assert_eq!(
                canary_hits(&cfg, b.path(), needle),
                Vec::<String>::new(),
                "{what}"
            );
        }
        assert_eq!(read_all(&store, 1, &ids), expected, "{what}");
        store.close().unwrap();
    }
}

/// An unfinished adoption never overwrites a deletion made in the directory meanwhile (opened
/// without the remote): the next open with the remote refuses and says why.
#[test]
fn adoption_refuses_to_overwrite_a_local_deletion() {
    if !common::failpoints("adoption_refuses_to_overwrite_a_local_deletion") {
        return;
    }
    use replaystore::{Error, Store};
    use std::process::Command;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bucket_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", bucket_dir.path().display());
    let config = common::config().with_remote(RemoteConfig::new(url.clone()));
    let old = Store::open(a.path(), config.clone()).unwrap();
    common::remote::fill(&old, 1, 3, 2);
    old.delete_person(1, "person-1").unwrap();
    old.seal_active().unwrap();
    assert!(old.sync_remote().unwrap().errors.is_empty());
    old.close().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_replaystore"))
        .args(["remote", "status", "--remote", &url, "--dir"])
        .arg(b.path())
        .env("REPLAYSTORE_CRASH_AT", "adopt:before_manifest")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Opened without the remote, a deletion is made there.
    let local = Store::open(b.path(), common::config()).unwrap();
    let mine = local.delete_person(1, "person-2").unwrap();
    local.close().unwrap();
    let before = std::fs::read(b.path().join("tombstones.log")).unwrap();
    match Store::open(b.path(), config) {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "remote");
            assert!(reason.contains(&format!("[{mine}]")), "{reason}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("adopted over a local deletion"),
    }
    assert_eq!(
        std::fs::read(b.path().join("tombstones.log")).unwrap(),
        before
    );
}
