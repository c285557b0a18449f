//! The seek section of a footer (format 3): per session entry, where playback can start from
//! (its keyframes) and, for an entry that has some, the latest chunk start of each of its
//! blocks, so that a read from a keyframe skips the blocks wholly before it without reading
//! their headers (docs/format.md, "Keyframes").
//!
//! ```text
//! session_count x u32 offsets into the records, then per session entry a record:
//!   keyframe_count u32 | crc32 u32 of the rest | when keyframe_count > 0:
//!   block_ref_count x block_start i64 (the entry's refs, in order: latest first_ts of the
//!   block's chunks), keyframe_count x (ts i64 | block u32 (index into the entry's refs)
//!   | chunk u32 (index in that block) | chunk_first_ts i64)
//! ```

use crate::format::{put_i64, put_u32, BlockHeader, Bytes, DecodeError, DecodeResult};

use super::SessionEntry;

/// A keyframe entry: ts, block, chunk, chunk_first_ts.
const KEYFRAME_LEN: usize = 24;

/// Where one session's record can be played from (`SessionEntry::seek`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeekTable {
    /// Per block ref of the entry, in order: the latest `first_ts` of the block's chunks.
    /// Empty when the entry has no keyframe (or its footer predates format 3): a read then
    /// bounds the entry's blocks by the entry's `last_ts`.
    pub block_starts: Vec<i64>,
    /// The entry's chunks that hold a keyframe, in block order.
    pub keyframes: Vec<Keyframe>,
}

/// A chunk a read can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyframe {
    /// The time of the chunk's (first) keyframe (SDK time after the skew correction).
    pub ts_ms: i64,
    /// Index into the entry's block refs.
    pub block: u32,
    /// Index in that block's chunk table.
    pub chunk: u32,
    /// The chunk's `first_ts`: where it sits in playback order.
    pub chunk_first_ts: i64,
}

impl SeekTable {
    /// Adds the next block of the entry (the one its refs list next).
    pub fn add_block(&mut self, h: &BlockHeader) {
        let block = self.block_starts.len() as u32;
        self.block_starts.push(h.last_chunk_start());
        for k in &h.keyframes {
            let chunk_first_ts = h
                .chunks
                .get(k.chunk as usize)
                .map_or(h.first_ts, |c| c.first_ts);
            self.keyframes.push(Keyframe {
                ts_ms: k.ts_ms,
                block,
                chunk: k.chunk,
                chunk_first_ts,
            });
        }
    }

    /// The table as a footer keeps it: nothing for an entry without keyframes.
    fn stored(&self, block_count: usize) -> Option<&SeekTable> {
        (!self.keyframes.is_empty() && self.block_starts.len() == block_count).then_some(self)
    }
}

/// The seek section of a footer: one offset per session entry, then the records.
pub(super) fn encode_seek(sessions: &[SessionEntry]) -> Vec<u8> {
    let mut records = Vec::new();
    let mut out = Vec::with_capacity(sessions.len() * 4);
    for s in sessions {
        put_u32(&mut out, records.len() as u32);
        let Some(t) = s.seek.stored(s.blocks.len()) else {
            put_u32(&mut records, 0);
            put_u32(&mut records, crc32fast::hash(&[]));
            continue;
        };
        let mut body =
            Vec::with_capacity(8 * t.block_starts.len() + KEYFRAME_LEN * t.keyframes.len());
        for b in &t.block_starts {
            put_i64(&mut body, *b);
        }
        for k in &t.keyframes {
            put_i64(&mut body, k.ts_ms);
            put_u32(&mut body, k.block);
            put_u32(&mut body, k.chunk);
            put_i64(&mut body, k.chunk_first_ts);
        }
        put_u32(&mut records, t.keyframes.len() as u32);
        put_u32(&mut records, crc32fast::hash(&body));
        records.extend_from_slice(&body);
    }
    out.extend_from_slice(&records);
    out
}

/// Verifies and decodes the record of entry `i` of `session_count` in `section`, an entry of
/// `block_count` block refs.
pub(super) fn parse_seek(
    section: &[u8],
    session_count: usize,
    i: usize,
    block_count: usize,
) -> DecodeResult<SeekTable> {
    let (offsets, records) = section
        .split_at_checked(session_count * 4)
        .ok_or_else(|| DecodeError::new("seek section shorter than its offsets"))?;
    let mut o = Bytes::new(offsets.get(i * 4..).unwrap_or(&[]));
    let off = o.u32()? as usize;
    let mut b = Bytes::new(records.get(off..).unwrap_or(&[]));
    let count = b.u32()? as usize;
    let crc = b.u32()?;
    if count == 0 {
        return Ok(SeekTable::default());
    }
    let len = count
        .checked_mul(KEYFRAME_LEN)
        .and_then(|n| n.checked_add(block_count.checked_mul(8)?))
        .ok_or_else(|| DecodeError::new("seek record out of bounds"))?;
    let body = b.take(len)?;
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::new("seek record checksum mismatch"));
    }
    let mut b = Bytes::new(body);
    let mut t = SeekTable::default();
    for _ in 0..block_count {
        t.block_starts.push(b.i64()?);
    }
    for _ in 0..count {
        let k = Keyframe {
            ts_ms: b.i64()?,
            block: b.u32()?,
            chunk: b.u32()?,
            chunk_first_ts: b.i64()?,
        };
        if k.block as usize >= block_count {
            return Err(DecodeError::new(
                "keyframe points outside its entry's blocks",
            ));
        }
        t.keyframes.push(k);
    }
    Ok(t)
}
