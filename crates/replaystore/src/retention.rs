//! Retention: a lane keeps data `lane_days` days after it arrived (by the store's clock, never
//! the SDK's timestamps). Whole sealed segments whose newest chunk arrived before the cutoff
//! are unlinked (no rewrite); reads hide anything past the cutoff before that happens. With a
//! remote tier, their objects are deleted from the bucket too.

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::fs::Fs;
use crate::remote::RemoteTier;
use crate::segment_set::{Edit, SegmentSet};

pub use crate::units::DAY_MS;

/// Data of a lane that arrived before this (ms since epoch, store clock) is past retention at
/// `now_ms`.
pub(crate) fn cutoff(lane_days: u16, now_ms: i64) -> i64 {
    now_ms.saturating_sub(lane_days as i64 * DAY_MS)
}

/// What `enforce_retention` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub segments_removed: u64,
    pub bytes_removed: u64,
    /// Objects deleted from the bucket (remote tier).
    pub objects_deleted: u64,
    /// Steps that failed (an object that could not be deleted stays marked for deletion; the
    /// next sync or retention pass retries it).
    pub errors: Vec<String>,
}

/// What retention works on; maintenance builds it and holds its lock while it runs.
pub(crate) struct Retention<'a> {
    pub fs: &'a Fs,
    pub segments: &'a SegmentSet,
    pub remote: Option<&'a RemoteTier>,
}

impl Retention<'_> {
    /// Unlinks every sealed segment whose newest arrival is past its lane's cutoff at `now_ms`.
    pub(crate) fn enforce(&self, now_ms: i64) -> Result<RetentionReport> {
        let expired: Vec<_> = {
            let v = self.segments.current();
            let gone: Vec<_> = v
                .inactive()
                .filter(|s| {
                    s.is_sealed() && s.totals().max_arrival_ms < cutoff(s.lane_days, now_ms)
                })
                .cloned()
                .collect();
            let edit = gone.iter().fold(Edit::default(), |e, s| e.remove(s.id));
            self.segments.apply(edit);
            gone
        };
        let mut report = RetentionReport::default();
        // Objects in the bucket are marked for deletion before the local files go, so that a
        // crash cannot leave an object nobody deletes.
        let ids: Vec<u64> = expired.iter().map(|s| s.id).collect();
        if let Some(remote) = self.remote {
            remote.doom(&ids, None)?;
        }
        let mut dirs = Vec::new();
        for seg in expired {
            let len = seg.size();
            report.segments_removed += 1;
            report.bytes_removed += len;
            if seg.is_remote() {
                log::info!(
                    "retention: dropping remote {} ({len} bytes)",
                    seg.path.display()
                );
                continue;
            }
            self.fs
                .remove(&seg.path)
                .ctx(|| format!("remove expired {}", seg.path.display()))?;
            log::info!("retention: removed {} ({len} bytes)", seg.path.display());
            if let Some(d) = seg.path.parent() {
                if !dirs.contains(&d.to_path_buf()) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            self.fs.sync_dir_ctx(&d)?;
        }
        if let Some(remote) = self.remote {
            // A failed delete stays doomed in the manifest; the next sync retries it.
            match remote.delete_doomed(&self.segments.current()) {
                Ok(n) => report.objects_deleted = n,
                Err(e) => {
                    log::error!("retention: deleting expired objects failed: {e}");
                    report
                        .errors
                        .push(format!("deleting expired objects from the bucket: {e}"));
                }
            }
        }
        Ok(report)
    }
}
