//! `replaystore crash-writer` (hidden): the process the crash test kills. It appends a
//! deterministic workload with frequent flushes, deletes persons and compacts now and then, and
//! records in a side log (fsynced) what the store acknowledged (with `--remote`, it also syncs
//! to the bucket with a zero `local_retention`, so segments move there and reads go remote):
//!
//! ```text
//! acked N               chunks 0..N of the workload are durable (flush() returned)
//! deleting PERSON       about to request the deletion (the outcome is unknown until...)
//! deleted PERSON        ...delete_person() returned: the request is durable
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::generator::{interleaved, Workload};
use replaystore::{Error, RemoteConfig, Result, Store};

/// Every this many chunks a flush; every `DELETE_EVERY` a deletion; every `COMPACT_EVERY` a
/// compaction pass.
const FLUSH_EVERY: usize = 5;
const DELETE_EVERY: usize = 90;
const COMPACT_EVERY: usize = 130;
const SYNC_EVERY: usize = 60;

pub fn run(
    dir: &Path,
    seed: u64,
    start_ms: i64,
    log: &Path,
    remote: Option<String>,
) -> Result<i32> {
    let io = |e: std::io::Error| Error::Io {
        context: format!("side log {}", log.display()),
        source: e,
    };
    let mut side = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let mut record = |line: String| -> Result<()> {
        side.write_all(line.as_bytes())
            .and_then(|_| side.sync_data())
            .map_err(io)
    };
    // Small segments, so that sealing, rolling and compaction happen within a short run.
    let mut config = replaystore_posthog::configure(replaystore::Config::default())
        .with_segment_bytes(256 << 10)
        .with_maintenance_interval(None);
    let with_remote = remote.is_some();
    if let Some(url) = remote {
        config = config
            .with_remote(RemoteConfig::new(url).with_local_retention(std::time::Duration::ZERO));
    }
    let store = Store::open(dir, config)?;
    println!("started");
    let chunks = interleaved(&Workload::crash_test(seed, start_ms));
    let mut next_victim = 0;
    for (i, c) in chunks.into_iter().enumerate() {
        match store.append(c) {
            Ok(()) | Err(Error::Deleted { .. }) => {}
            Err(e) => return Err(e),
        }
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            store.flush()?;
            record(format!("acked {}\n", i + 1))?;
        }
        if i % DELETE_EVERY == DELETE_EVERY - 1 {
            let person = format!("person-{next_victim}");
            next_victim += 1;
            record(format!("deleting {person}\n"))?;
            store.delete_person(1, &person)?;
            record(format!("deleted {person}\n"))?;
        }
        if i % COMPACT_EVERY == COMPACT_EVERY - 1 {
            store.compact()?;
        }
        if with_remote && (i % SYNC_EVERY == SYNC_EVERY - 1) {
            store.seal_active()?;
            let r = store.sync_remote()?;
            if let Some(e) = r.errors.first() {
                return Err(Error::FlushFailed(format!("remote sync: {e}")));
            }
        }
    }
    store.flush()?;
    println!("done");
    Ok(0)
}
