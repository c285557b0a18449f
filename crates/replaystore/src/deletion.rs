//! Deletion requests: the checks on a request's target, and recording it (tombstone, then a
//! purge of the write buffer). `Store` routes `delete_person` / `delete_session` here.

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::flush::FlushPipeline;
use crate::tombstone::{Target, Tombstones};

/// Records a deletion request durably, then purges the write buffer of what it covers.
/// The request is appended under the tombstones' write lock and the buffer purged after it is
/// released (see `Store::admit`, which holds the read lock while it buffers a chunk).
pub(crate) fn request(
    tombstones: &RwLock<Tombstones>,
    pipeline: &FlushPipeline,
    now: i64,
    team: u64,
    target: Target,
) -> Result<u64> {
    let t = tombstones.write().add(team, target, now)?;
    let purged = pipeline.purge(|c| {
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

pub(crate) fn check(field: &'static str, id: &str, max: usize) -> Result<()> {
    if id.is_empty() || id.len() > max {
        return Err(Error::InvalidChunk {
            field,
            reason: format!("must be 1..={max} bytes, is {}", id.len()),
        });
    }
    Ok(())
}
