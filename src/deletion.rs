//! The deletion and maintenance API of `Store`: tombstones, status, compaction, retention.

use std::time::Duration;

use crate::chunk::{MAX_PERSON_BYTES, MAX_SESSION_ID_BYTES};
use crate::compaction::CompactionReport;
use crate::error::{Error, Result};
use crate::retention::RetentionReport;
use crate::store::Store;
use crate::tombstone::{DeletionStatus, Target, Tombstone};

impl Store {
    /// Deletes every chunk of `person` in `team` that reached the store up to now (by the
    /// store's clock: arrival time, whatever the chunks' SDK timestamps say). Returns once the
    /// request is durable (fsynced): from then on those chunks are hidden from reads and
    /// listings, also after a crash. Buffered chunks are purged at once; written ones
    /// physically within `purge_within`. Chunks of the person arriving later are refused when
    /// their (validated, skew-corrected) timestamps start at or before the request: they were
    /// recorded before it (an offline queue, a retry); later recordings are kept (see
    /// docs/privacy.md). Returns the request id for `deletion_status`.
    pub fn delete_person(&self, team: u64, person: &str) -> Result<u64> {
        check("person", person, MAX_PERSON_BYTES)?;
        self.delete(team, Target::Person(person.to_string()))
    }

    /// Deletes every chunk of one session, past and future (see `delete_person`).
    pub fn delete_session(&self, team: u64, session_id: &str) -> Result<u64> {
        check("session_id", session_id, MAX_SESSION_ID_BYTES)?;
        self.delete(team, Target::Session(session_id.to_string()))
    }

    fn delete(&self, team: u64, target: Target) -> Result<u64> {
        let now = self.config.clock.now_ms();
        let t = self.tombstones.write().add(team, target, now)?;
        let purged = self.pipeline.purge(|c| {
            c.team == team
                && match &t.target {
                    Target::Session(s) => &c.session_id == s,
                    // Everything buffered arrived before the request.
                    Target::Person(p) => &c.person == p,
                }
        });
        log::info!(
            "deletion {} of team {team} durable; {purged} buffered chunks purged",
            t.id
        );
        Ok(t.id)
    }

    /// Where deletion request `id` stands.
    pub fn deletion_status(&self, id: u64) -> DeletionStatus {
        self.tombstones.read().status(id)
    }

    /// Runs one compaction pass now: physically removes the data of every pending deletion,
    /// drops expired blocks from mostly expired segments, merges small segments.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.maintenance.compact()
    }

    /// Unlinks sealed segments whose newest data is older than their lane's retention at
    /// `now_ms` (normally the clock's now; the background maintenance thread does this).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        self.maintenance.enforce_retention(now_ms)
    }

    /// Asks the maintenance thread to run a compaction pass soon, instead of batching deletions
    /// for up to half of `purge_within`.
    pub fn request_purge(&self) {
        self.maintenance.signal().kick();
    }

    /// Deletion requests not yet physically purged, oldest first.
    pub fn pending_deletions(&self) -> Vec<Tombstone> {
        self.tombstones.read().pending().to_vec()
    }

    /// Waits until deletion `id` is done, running compaction passes, for at most `timeout`.
    pub fn purge_now(&self, id: u64, timeout: Duration) -> Result<DeletionStatus> {
        let start = std::time::Instant::now();
        loop {
            let status = self.deletion_status(id);
            if !matches!(status, DeletionStatus::Pending { .. }) || start.elapsed() > timeout {
                return Ok(status);
            }
            self.compact()?;
        }
    }
}

fn check(field: &'static str, id: &str, max: usize) -> Result<()> {
    if id.is_empty() || id.len() > max {
        return Err(Error::InvalidChunk {
            field,
            reason: format!("must be 1..={max} bytes, is {}", id.len()),
        });
    }
    Ok(())
}
