//! `Maintenance`: retention, compaction (with regrouping) and the remote tier's sync, one at a
//! time under the maintenance lock, driven by the maintenance and upload threads and by the
//! `Store` calls that run them now.
//!
//! The lock serialises everything that removes or replaces sealed segments, so a step may plan
//! from one version of the segment set and apply its edit later: only the flush pipeline
//! changes the set meanwhile, and only its active segments. The remote tier is a component of
//! its own (`RemoteTier`, with its state and its pass lock, taken under this one); maintenance
//! only decides when it runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::compaction::{CompactionReport, Compactor};
use crate::config::Config;
use crate::error::Result;
use crate::flush::FlushPipeline;
use crate::fs::Fs;
use crate::remote::{RemoteTier, SyncReport};
use crate::retention::{Retention, RetentionReport};
use crate::segment_set::SegmentSet;
use crate::session_index::SessionIndex;
use crate::signal::Signal;
use crate::tombstone::Tombstones;

/// What maintenance works on (shared with the rest of the store).
pub(crate) struct MaintenanceParts {
    pub dir: PathBuf,
    pub config: Config,
    pub fs: Fs,
    pub segments: Arc<SegmentSet>,
    pub pipeline: Arc<FlushPipeline>,
    pub tombstones: Arc<RwLock<Tombstones>>,
    pub remote: Option<Arc<RemoteTier>>,
    pub index: Arc<SessionIndex>,
}

pub(crate) struct Maintenance {
    parts: MaintenanceParts,
    /// Held by retention, compaction and remote sync: one of them at a time.
    lock: Mutex<()>,
    /// Wakes the maintenance thread (closing, or a deletion asked for a purge).
    signal: Signal,
    segments_expired: AtomicU64,
}

impl Maintenance {
    pub fn new(parts: MaintenanceParts) -> Maintenance {
        Maintenance {
            parts,
            lock: Mutex::new(()),
            signal: Signal::default(),
            segments_expired: AtomicU64::new(0),
        }
    }

    /// The maintenance thread's signal.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }

    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    pub fn has_remote(&self) -> bool {
        self.parts.remote.is_some()
    }

    /// Sealed segments unlinked by retention since open.
    pub fn segments_expired(&self) -> u64 {
        self.segments_expired.load(Ordering::Relaxed)
    }

    /// Unlinks every sealed segment whose newest arrival is past its lane's cutoff at `now_ms`.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let _one_at_a_time = self.lock.lock();
        let p = &self.parts;
        let retention = Retention {
            fs: &p.fs,
            segments: &p.segments,
            remote: p.remote.as_deref(),
        };
        let report = retention.enforce(now_ms)?;
        let expired = &self.segments_expired;
        expired.fetch_add(report.segments_removed, Ordering::Relaxed);
        Ok(report)
    }

    /// One compaction pass (see `compaction`).
    pub fn compact(&self) -> Result<CompactionReport> {
        let _one_at_a_time = self.lock.lock();
        let report = self.compactor().compact()?;
        // The index file names persons, sessions and URLs: erased data leaves it in the same
        // pass (a failure is retried by the next checkpoint; the file is derived data).
        if let Err(e) = self.parts.index.checkpoint() {
            log::error!("session index checkpoint after compaction failed: {e}");
        }
        Ok(report)
    }

    /// Whether a compaction pass has work worth doing at `now_ms`.
    pub fn compaction_due(&self, now_ms: i64) -> bool {
        self.compactor().due(now_ms)
    }

    /// One pass of the remote tier (no-op without one), under the maintenance lock: the pass
    /// replaces sealed segments by their remote twins.
    pub fn remote_sync(&self) -> Result<SyncReport> {
        let _one_at_a_time = self.lock.lock();
        let p = &self.parts;
        match &p.remote {
            Some(remote) => remote.sync(&p.segments, p.config.parts.clock.now_ms()),
            None => Ok(SyncReport::default()),
        }
    }

    /// Writes the session index file if the segments changed since it was last written.
    pub fn checkpoint_index(&self) -> Result<bool> {
        self.parts.index.checkpoint()
    }

    fn compactor(&self) -> Compactor<'_> {
        let p = &self.parts;
        Compactor {
            dir: &p.dir,
            config: &p.config,
            fs: &p.fs,
            segments: &p.segments,
            pipeline: &p.pipeline,
            tombstones: &p.tombstones,
            remote: p.remote.as_deref(),
        }
    }
}
