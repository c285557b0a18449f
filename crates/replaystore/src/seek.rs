//! Planning a session read from its segments' indexes alone (no block read): which blocks
//! hold visible chunks, and, for a read from a point in time (`Store::read_session_from`),
//! the keyframe it starts at and the blocks wholly before it that it skips.
//!
//! A read from `from_ms` starts at the chunk holding the last keyframe at or before it (its
//! `ts_ms`, on the chunks' corrected clock) and returns that chunk and every chunk after it in
//! playback order (first_ts, seq, position): exactly the suffix of a whole read from that
//! chunk. A block is skipped only when its latest chunk start (`SeekTable::block_starts`, or
//! its record's `last_ts` when the record has no keyframe table) is before the keyframe
//! chunk's start, so no chunk of the suffix is ever missed.

use std::sync::Arc;

use serde::Serialize;

use crate::error::Result;
use crate::format::BlockRef;
use crate::retention::cutoff;
use crate::segment::{RemoteRead, Segment};
use crate::tombstone::Tombstones;

/// What a read cost: blocks decompressed and skipped, and object-store requests
/// (`Store::read_session_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadTrace {
    pub remote: RemoteRead,
    /// Blocks read and decompressed.
    pub blocks_read: u64,
    /// Blocks of the session skipped because they lie wholly before the keyframe.
    pub blocks_skipped: u64,
    /// Payload bytes decompressed (the blocks' raw lengths).
    pub bytes_decompressed: u64,
}

/// The keyframe a read starts at: where its chunk sits, found in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StartAt {
    pub ts_ms: i64,
    /// The keyframe chunk's `first_ts`: blocks whose chunks all start before it are skipped.
    pub chunk_first_ts: i64,
    /// Its block: index into the plan's `Wanted` list, and the block's offset in that segment.
    pub wanted: usize,
    pub offset: u64,
    /// Its position in that block.
    pub chunk: usize,
}

/// The blocks of one segment a read wants, with the deletion time of the person each was
/// written under and the latest chunk start of each.
pub(crate) struct Wanted {
    pub seg: Arc<Segment>,
    /// The segment's retention cutoff (arrival ms) at the time of the read.
    pub cut: i64,
    pub refs: Vec<BlockRef>,
    pub deleted_at: Vec<Option<i64>>,
    /// Per ref: no chunk of the block starts later than this.
    starts: Vec<i64>,
}

impl Wanted {
    /// Whether block `i` is covered by a deletion of its person: every block of the person
    /// that arrived before it, whatever its SDK timestamps say (erasure decides by the store's
    /// clock).
    pub fn deleted(&self, i: usize) -> bool {
        let r = &self.refs[i];
        self.deleted_at[i].is_some_and(|at| r.arrival.first_ms <= at)
    }

    /// Whether block `i` is hidden whole: deleted, or past retention.
    fn hidden(&self, i: usize) -> bool {
        self.deleted(i) || self.refs[i].arrival.last_ms < self.cut
    }
}

/// A read's plan: the wanted blocks, and the keyframe it starts at (none: a whole read).
pub(crate) struct Plan {
    pub wanted: Vec<Wanted>,
    pub start: Option<StartAt>,
    pub skipped: u64,
}

/// Plans a read of `session_id`: every block that may hold visible chunks and, with `from_ms`,
/// the last keyframe at or before it, the blocks wholly before it left out.
pub(crate) fn plan(
    segments: &[Arc<Segment>],
    tombstones: &Tombstones,
    key: (u64, &str),
    now: i64,
    from_ms: Option<i64>,
    remote: &mut RemoteRead,
) -> Result<Plan> {
    let (team, session_id) = key;
    let mut wanted = Vec::new();
    let mut start: Option<StartAt> = None;
    for seg in segments {
        let cut = cutoff(seg.lane_days, now);
        if seg.totals().max_arrival_ms < cut {
            continue;
        }
        let mut w = Wanted {
            seg: seg.clone(),
            cut,
            refs: Vec::new(),
            deleted_at: Vec::new(),
            starts: Vec::new(),
        };
        for entry in seg.find_traced(team, session_id, remote)? {
            if entry.arrival().last_ms < cut {
                continue;
            }
            let at = tombstones.person_deleted_at(team, &entry.person);
            let base = w.refs.len();
            let bounded = entry.seek.block_starts.len() == entry.blocks.len();
            for (i, r) in entry.blocks.iter().enumerate() {
                w.refs.push(*r);
                w.deleted_at.push(at);
                w.starts.push(match bounded {
                    true => entry.seek.block_starts[i],
                    false => entry.last_ts,
                });
            }
            for k in &entry.seek.keyframes {
                let block = base + k.block as usize;
                let candidate = StartAt {
                    ts_ms: k.ts_ms,
                    chunk_first_ts: k.chunk_first_ts,
                    wanted: wanted.len(),
                    offset: w.refs[block].offset,
                    chunk: k.chunk as usize,
                };
                let usable = from_ms.is_some_and(|f| k.ts_ms <= f) && !w.hidden(block);
                if usable && start.is_none_or(|s| later(&candidate, &s)) {
                    start = Some(candidate);
                }
            }
        }
        if !w.refs.is_empty() {
            wanted.push(w);
        }
    }
    let skipped = start.map_or(0, |s| skip_before(&mut wanted, s));
    Ok(Plan {
        wanted,
        start,
        skipped,
    })
}

/// Whether keyframe `a` is a later start than `b`: by keyframe time, then by its chunk's place.
fn later(a: &StartAt, b: &StartAt) -> bool {
    (a.ts_ms, a.chunk_first_ts) > (b.ts_ms, b.chunk_first_ts)
}

/// Drops the refs whose chunks all start before the keyframe chunk (never the keyframe's own);
/// returns how many.
fn skip_before(wanted: &mut [Wanted], start: StartAt) -> u64 {
    let mut skipped = 0;
    for (wi, w) in wanted.iter_mut().enumerate() {
        let before = w.refs.len();
        let kept: Vec<(BlockRef, Option<i64>, i64)> = (0..before)
            .map(|i| (w.refs[i], w.deleted_at[i], w.starts[i]))
            .filter(|(r, _, starts)| {
                let own = (wi, r.offset) == (start.wanted, start.offset);
                own || *starts >= start.chunk_first_ts
            })
            .collect();
        skipped += (before - kept.len()) as u64;
        w.refs = kept.iter().map(|k| k.0).collect();
        w.deleted_at = kept.iter().map(|k| k.1).collect();
        w.starts = kept.iter().map(|k| k.2).collect();
    }
    skipped
}
