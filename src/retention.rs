//! Retention: a lane keeps data `lane_days` days. Whole sealed segments whose newest data is
//! older than the cutoff are unlinked (no rewrite); reads hide anything past the cutoff before
//! that happens.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::store::Inner;

pub const DAY_MS: i64 = 86_400_000;

/// Data of a lane older than this (ms since epoch) is past retention at `now_ms`.
pub(crate) fn cutoff(lane_days: u16, now_ms: i64) -> i64 {
    now_ms.saturating_sub(lane_days as i64 * DAY_MS)
}

/// What `enforce_retention` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub segments_removed: u64,
    pub bytes_removed: u64,
}

impl Inner {
    /// Unlinks every sealed segment whose newest data is past its lane's cutoff at `now_ms`.
    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let _one_at_a_time = self.maintenance.lock();
        let expired: Vec<_> = {
            let mut segs = self.segments.write();
            let (gone, keep) = segs
                .drain(..)
                .partition(|s| s.is_sealed() && s.totals().max_ts < cutoff(s.lane_days, now_ms));
            *segs = keep;
            gone
        };
        let mut report = RetentionReport::default();
        let mut dirs = Vec::new();
        for seg in expired {
            let len = std::fs::metadata(&seg.path).map(|m| m.len()).unwrap_or(0);
            self.fs
                .remove(&seg.path)
                .ctx(|| format!("remove expired {}", seg.path.display()))?;
            log::info!("retention: removed {} ({len} bytes)", seg.path.display());
            report.segments_removed += 1;
            report.bytes_removed += len;
            if let Some(d) = seg.path.parent() {
                if !dirs.contains(&d.to_path_buf()) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            self.fs.sync_dir_ctx(&d)?;
        }
        self.counters
            .segments_expired
            .fetch_add(report.segments_removed, Ordering::Relaxed);
        Ok(report)
    }
}
