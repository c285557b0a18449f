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

#[test]
fn retention_deletes_objects() {
    let dir = tempfile::tempdir().unwrap();
    common::remote::retention_deletes_objects(bucket(), dir.path());
}

#[test]
fn deletion_rewrites_remote() {
    let dir = tempfile::tempdir().unwrap();
    common::remote::deletion_rewrites_remote(bucket(), dir.path());
}
