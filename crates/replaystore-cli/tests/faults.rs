//! Injected I/O faults (through the store's file-operation layer): the failing call returns an
//! error, nothing is claimed durable that is not, acknowledged data is never lost, and once the
//! fault clears the store works again.

mod common;

use std::sync::Arc;

use common::{chunk, config, files_under, segment_files};
use replaystore::fs::{Fault, FaultPlan, OpKind};
use replaystore::{DeletionStatus, Error, Store};

fn open_with(dir: &std::path::Path, plan: &Arc<FaultPlan>) -> Store {
    Store::open(dir, config().with_faults(plan.clone())).unwrap()
}

/// Every session must read back with exactly `n` chunks, bit-exact.
fn assert_sessions(store: &Store, sessions: &[&str], n: usize) {
    for s in sessions {
        let got = store
            .read_session(1, s)
            .unwrap()
            .unwrap_or_else(|| panic!("{s} missing"));
        assert_eq!(got.chunks.len(), n, "{s}: lost or duplicated chunks");
        for (i, c) in got.chunks.iter().enumerate() {
            assert_eq!(c.payload, chunk(1, s, "p", i, 700).payload);
        }
    }
}

#[test]
fn enospc_and_short_writes_fail_the_flush_and_lose_nothing() {
    for fault in [
        Fault::Errno(libc::ENOSPC),
        Fault::Errno(libc::EIO),
        Fault::ShortWrite(100),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let store = open_with(dir.path(), &plan);
        store.append(chunk(1, "a", "p", 0, 700)).unwrap();
        store.flush().unwrap(); // acknowledged

        plan.fail(OpKind::Write, ".seg", fault, 0, 1);
        store.append(chunk(1, "b", "p", 0, 700)).unwrap();
        assert!(store.flush().is_err(), "{fault:?}: the flush must fail");
        assert!(
            store.read_session(1, "b").unwrap().is_none(),
            "not claimed durable"
        );
        assert_sessions(&store, &["a"], 1);

        plan.clear();
        store.flush().unwrap(); // the failed round's block is retried
        assert_sessions(&store, &["a", "b"], 1);
        store.append(chunk(1, "a", "p", 1, 700)).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = open_with(dir.path(), &plan);
        assert!(
            store.recovery_report().tails_cut.is_empty(),
            "{fault:?}: cut back at once"
        );
        assert_sessions(&store, &["a"], 2);
        assert_sessions(&store, &["b"], 1);
    }
}

#[test]
fn a_failed_fsync_retires_the_file_and_never_reports_success_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = open_with(dir.path(), &plan);
    store.append(chunk(1, "a", "p", 0, 700)).unwrap();
    store.flush().unwrap();
    let first = segment_files(dir.path(), common::LANE)[0].clone();
    // Every fsync of the first segment fails from now on: the block written before the failed
    // fsync cannot even be cut back, so it stays in that file.
    let name = first.file_name().unwrap().to_string_lossy().to_string();
    plan.fail(OpKind::Sync, &name, Fault::Errno(libc::EIO), 0, usize::MAX);
    plan.fail(
        OpKind::Truncate,
        &name,
        Fault::Errno(libc::EIO),
        0,
        usize::MAX,
    );
    store.append(chunk(1, "b", "p", 0, 700)).unwrap();
    assert!(store.flush().is_err());
    let suspect_len = std::fs::metadata(&first).unwrap().len();

    store.flush().unwrap(); // the retry goes to a new segment, and succeeds there
    assert_eq!(segment_files(dir.path(), common::LANE).len(), 2);
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        suspect_len,
        "never written again"
    );
    assert_sessions(&store, &["a", "b"], 1);
    drop(store);
    plan.clear();
    // The suspect file may hold a full copy of b's block: read once, nonetheless.
    let store = open_with(dir.path(), &plan);
    assert_sessions(&store, &["a", "b"], 1);
    assert_eq!(
        store.stats().unwrap().chunks,
        3,
        "b's block is in both files"
    );
    store.seal_active().unwrap();
    let r = store.compact().unwrap();
    assert!(r.segments_rewritten >= 2, "{r:?}");
    assert_sessions(&store, &["a", "b"], 1);
    assert_eq!(store.stats().unwrap().chunks, 2, "compaction kept one copy");
}

#[test]
fn a_failed_deletion_request_is_not_in_force_and_the_log_stays_readable() {
    for fault in [Fault::Errno(libc::ENOSPC), Fault::ShortWrite(5)] {
        let dir = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        let store = open_with(dir.path(), &plan);
        store.append(chunk(1, "a", "victim", 0, 700)).unwrap();
        store.append(chunk(1, "b", "other", 0, 700)).unwrap();
        store.flush().unwrap();
        let first = store.delete_person(1, "other").unwrap();

        plan.fail(OpKind::Write, "tombstones", fault, 0, 1);
        assert!(store.delete_person(1, "victim").is_err());
        assert!(
            store.read_session(1, "a").unwrap().is_some(),
            "a failed request hides nothing"
        );
        plan.clear();
        let id = store.delete_person(1, "victim").unwrap();
        assert!(store.read_session(1, "a").unwrap().is_none());
        drop(store);
        let store = open_with(dir.path(), &plan);
        assert!(
            store.read_session(1, "a").unwrap().is_none(),
            "{fault:?}: request lost"
        );
        assert!(
            store.read_session(1, "b").unwrap().is_none(),
            "{fault:?}: earlier request lost"
        );
        assert!(matches!(
            store.deletion_status(first),
            DeletionStatus::Pending { .. }
        ));
        assert!(matches!(
            store.deletion_status(id),
            DeletionStatus::Pending { .. }
        ));
    }
}

#[test]
fn a_failed_rename_leaves_compaction_undone_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = open_with(dir.path(), &plan);
    for s in ["a", "b"] {
        store
            .append(chunk(1, s, if s == "a" { "victim" } else { "p" }, 0, 700))
            .unwrap();
    }
    store.flush().unwrap();
    let id = store.delete_person(1, "victim").unwrap();
    plan.fail(
        OpKind::Rename,
        ".seg.tmp",
        Fault::Errno(libc::EIO),
        0,
        usize::MAX,
    );
    let r = store.compact().unwrap();
    assert!(!r.failed_jobs.is_empty(), "{r:?}");
    assert!(matches!(
        store.deletion_status(id),
        DeletionStatus::Pending { .. }
    ));
    assert!(!files_under(dir.path())
        .iter()
        .any(|f| f.to_string_lossy().ends_with(".tmp")));
    assert!(store.read_session(1, "a").unwrap().is_none());
    assert!(store.read_session(1, "b").unwrap().is_some());
    plan.clear();
    let r = store.compact().unwrap();
    assert!(r.failed_jobs.is_empty());
    assert!(matches!(
        store.deletion_status(id),
        DeletionStatus::Done { .. }
    ));
    assert!(store.read_session(1, "b").unwrap().is_some());
}

#[test]
fn appends_are_refused_not_buffered_without_bound_while_the_disk_fails() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = Store::open(
        dir.path(),
        config()
            .with_faults(plan.clone())
            .with_max_buffer_bytes(8 << 10),
    )
    .unwrap();
    plan.fail(
        OpKind::Write,
        ".seg",
        Fault::Errno(libc::ENOSPC),
        0,
        usize::MAX,
    );
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        match store.append(chunk(1, &format!("s{i}"), "p", 0, 700)) {
            Ok(()) => accepted.push(format!("s{i}")),
            Err(Error::FlushFailed(_)) | Err(Error::Io { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "back-pressure must refuse");
    assert!(
        store.buffered_bytes() <= 3 * (8 << 10),
        "bounded: {}",
        store.buffered_bytes()
    );
    plan.clear();
    store.flush().unwrap();
    for s in &accepted {
        assert!(
            store.read_session(1, s).unwrap().is_some(),
            "{s} accepted, then lost"
        );
    }
}
