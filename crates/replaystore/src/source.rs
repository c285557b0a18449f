//! Which source positions (Kafka offsets, `Store::append_from_source`) a store holds: read back
//! from the chunk tables of its blocks, the same durable bytes as the chunks themselves, so
//! that what a consumer resumes from can never disagree with what survived a crash.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::segment_set::Version;

/// The source offsets a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOffsets {
    /// The highest offset held anywhere in the local segments.
    pub max: Option<u64>,
    /// Every offset held that is at or above the `from` asked for, ascending.
    pub held: Vec<u64>,
}

/// Walks the blocks of every local segment, and of the remote segments holding a chunk that
/// arrived at or after `remote_since_ms` (each downloaded whole, once: only the newest are
/// meant to qualify; `None`: no remote segment).
pub(crate) fn source_offsets(
    current: &Version,
    from: u64,
    remote_since_ms: Option<i64>,
) -> Result<SourceOffsets> {
    let mut max: Option<u64> = None;
    let mut held = BTreeSet::new();
    let wanted = |s: &&std::sync::Arc<crate::segment::Segment>| {
        !s.is_remote() || remote_since_ms.is_some_and(|t| s.totals().max_arrival_ms >= t)
    };
    for seg in current.segments().iter().filter(wanted) {
        seg.for_each_block(&mut |_, _, h| {
            for o in h.chunks.iter().filter_map(|c| c.source_offset) {
                max = max.max(Some(o));
                if o >= from {
                    held.insert(o);
                }
            }
            Ok(())
        })?;
    }
    Ok(SourceOffsets {
        max,
        held: held.into_iter().collect(),
    })
}
