//! Encoding blocks (the layout is in `block`'s comment and docs/format.md).

use super::block::{
    Codec, BLOCK_ARRIVAL, BLOCK_FIXED_LEN, BLOCK_HAS_ANNOTATION, BLOCK_KEYFRAMES, BLOCK_MAGIC,
    BLOCK_SOURCE, CHUNK_ENTRY_ARRIVAL_LEN, KEYFRAME_ENTRY_LEN, NO_SOURCE, NO_WINDOW,
};
use super::{put_i64, put_u16, put_u32, put_u64, MAX_ANNOTATION_BYTES};
use crate::chunk::{Chunk, Stamp};

/// Encodes blocks; holds a reusable zstd context (one per compression thread).
pub struct BlockWriter {
    compressor: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
}

impl BlockWriter {
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(BlockWriter {
            compressor: zstd::bulk::Compressor::new(level)?,
            raw: Vec::new(),
        })
    }

    /// Encodes the chunks (all of one team and session, already validated, in append order) as
    /// one block appended to `out`, each chunk with its stamp (`stamps[i]` is `chunks[i]`'s).
    /// The caller keeps the total raw size under `MAX_BLOCK_RAW`.
    pub fn encode(
        &mut self,
        seq: u64,
        chunks: &[Chunk],
        stamps: &[Stamp],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        self.encode_full(seq, 0, None, chunks, stamps, out)
    }

    /// `encode` with block flags and the block's annotation (1 to `MAX_ANNOTATION_BYTES`
    /// bytes; the engine drops others before they get here).
    pub fn encode_full(
        &mut self,
        seq: u64,
        flags: u8,
        annotation: Option<&[u8]>,
        chunks: &[Chunk],
        stamps: &[Stamp],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        if chunks.is_empty() || stamps.len() != chunks.len() {
            return Err(std::io::Error::other(format!(
                "a block needs one stamp per chunk and at least one chunk ({} chunks, {} stamps)",
                chunks.len(),
                stamps.len()
            )));
        }
        let first = &chunks[0];
        self.raw.clear();
        let ChunkTable {
            windows,
            table,
            keyframes,
            lo,
            hi,
        } = chunk_table(chunks, stamps, &mut self.raw);
        let sourced = stamps.iter().any(|s| s.source_offset.is_some());
        let (flags, annotation) = written_flags(flags, annotation, !keyframes.is_empty(), sourced)?;
        let compressed = self.compressor.compress(&self.raw)?;
        let (codec, stored): (Codec, &[u8]) = if compressed.len() < self.raw.len() {
            (Codec::Zstd, &compressed)
        } else {
            (Codec::None, &self.raw)
        };
        let var_len = first.session_id.len()
            + first.person.len()
            + windows.iter().map(|w| 1 + w.len()).sum::<usize>()
            + table.len()
            + keyframes.len()
            + if annotation.is_empty() {
                0
            } else {
                4 + annotation.len()
            };
        let header_len = BLOCK_FIXED_LEN + var_len;
        let start = out.len();
        out.reserve(header_len + stored.len() + 4);
        out.extend_from_slice(&BLOCK_MAGIC);
        put_u32(out, header_len as u32);
        out.push(codec as u8);
        out.push(flags);
        put_u16(out, windows.len() as u16);
        put_u32(out, 0); // dictionary id: none yet
        put_u64(out, first.team);
        put_u64(out, seq);
        put_i64(out, lo);
        put_i64(out, hi);
        put_u32(out, self.raw.len() as u32);
        put_u32(out, stored.len() as u32);
        put_u32(out, chunks.len() as u32);
        out.push(first.session_id.len() as u8);
        out.push(0);
        put_u16(out, first.person.len() as u16);
        out.extend_from_slice(first.session_id.as_bytes());
        out.extend_from_slice(first.person.as_bytes());
        for w in &windows {
            out.push(w.len() as u8);
            out.extend_from_slice(w.as_bytes());
        }
        out.extend_from_slice(&table);
        out.extend_from_slice(&keyframes);
        if !annotation.is_empty() {
            put_u32(out, annotation.len() as u32);
            out.extend_from_slice(annotation);
        }
        out.extend_from_slice(stored);
        let crc = crc32fast::hash(&out[start..]);
        put_u32(out, crc);
        Ok(())
    }
}

/// The flags a block is written with (arrival times always; keyframes and an annotation when
/// there are some) and its annotation bytes (empty for none), checked against the format's
/// bounds.
fn written_flags(
    flags: u8,
    annotation: Option<&[u8]>,
    keyframes: bool,
    sourced: bool,
) -> std::io::Result<(u8, &[u8])> {
    let mut flags =
        (flags | BLOCK_ARRIVAL) & !(BLOCK_HAS_ANNOTATION | BLOCK_KEYFRAMES | BLOCK_SOURCE);
    if keyframes {
        flags |= BLOCK_KEYFRAMES;
    }
    if sourced {
        flags |= BLOCK_SOURCE;
    }
    match annotation {
        None => Ok((flags, &[])),
        Some(a) if (1..=MAX_ANNOTATION_BYTES).contains(&a.len()) => {
            Ok((flags | BLOCK_HAS_ANNOTATION, a))
        }
        Some(_) => Err(std::io::Error::other("annotation out of bounds")),
    }
}

/// The chunk table of a block being encoded, its window ids, its keyframe table and its time
/// range.
struct ChunkTable<'a> {
    windows: Vec<&'a str>,
    table: Vec<u8>,
    /// The keyframe table as written (count, then entries), empty when no chunk holds one.
    keyframes: Vec<u8>,
    lo: i64,
    hi: i64,
}

/// Builds the chunk table (with source offsets when any chunk has one) and appends the chunks'
/// payloads to `raw`.
fn chunk_table<'a>(chunks: &'a [Chunk], stamps: &[Stamp], raw: &mut Vec<u8>) -> ChunkTable<'a> {
    let mut windows: Vec<&str> = Vec::new();
    let mut table = Vec::with_capacity(chunks.len() * CHUNK_ENTRY_ARRIVAL_LEN);
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut keyframes = Vec::new();
    let sourced = stamps.iter().any(|s| s.source_offset.is_some());
    for (i, (c, stamp)) in chunks.iter().zip(stamps).enumerate() {
        if let Some(ts) = stamp.keyframe_ms {
            put_u32(&mut keyframes, i as u32);
            put_i64(&mut keyframes, ts);
        }
        raw.extend_from_slice(&c.payload);
        let w = match &c.window_id {
            None => NO_WINDOW,
            Some(w) => match windows.iter().position(|x| x == w) {
                Some(i) => i as u16,
                None => {
                    windows.push(w);
                    (windows.len() - 1) as u16
                }
            },
        };
        put_u32(&mut table, c.payload.len() as u32);
        put_u16(&mut table, w);
        put_u16(&mut table, 0);
        put_i64(&mut table, c.first_ts_ms);
        put_i64(&mut table, c.last_ts_ms);
        put_i64(&mut table, stamp.arrival_ms);
        if sourced {
            put_u64(&mut table, stamp.source_offset.unwrap_or(NO_SOURCE));
        }
        lo = lo.min(c.first_ts_ms);
        hi = hi.max(c.last_ts_ms);
    }
    if !keyframes.is_empty() {
        let count = (keyframes.len() / KEYFRAME_ENTRY_LEN) as u32;
        keyframes.splice(0..0, count.to_le_bytes());
    }
    ChunkTable {
        windows,
        table,
        keyframes,
        lo,
        hi,
    }
}
