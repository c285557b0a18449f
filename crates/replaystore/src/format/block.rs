//! Blocks: the chunks of one session from one flush, compressed together.
//!
//! ```text
//! 0  magic u32 "RBLK"        4  header_len u32 (payload starts here)
//! 8  codec u8                9  flags u8 (0)          10 window_count u16
//! 12 dict_id u32 (0 = none)  16 team u64              24 seq u64 (flush round)
//! 32 first_ts i64            40 last_ts i64           48 raw_len u32
//! 52 stored_len u32          56 chunk_count u32       60 session_len u8
//! 61 reserved u8             62 person_len u16
//! 64 session bytes | person bytes | window_count x (len u8, bytes)
//!    | chunk_count x (raw_len u32, window u16 (0xFFFF = none), reserved u16, first_ts i64, last_ts i64
//!                     [, arrival_ms i64 when flags has BLOCK_ARRIVAL]
//!                     [, source_offset u64 (u64::MAX = none) when flags has BLOCK_SOURCE])
//!    [| keyframe_count u32, keyframe_count x (chunk u32, ts i64) when flags has BLOCK_KEYFRAMES]
//!    [| annotation_len u32, annotation bytes when flags has BLOCK_HAS_ANNOTATION]
//! header_len: payload (stored_len bytes) | crc32 u32 over everything before it
//! ```
//!
//! `first_ts`/`last_ts` are the SDK's timestamps (after the store's skew correction): data for
//! ordering and playback. `arrival_ms` is the store's clock when `append` accepted the chunk:
//! what retention and erasure decide by. Blocks written before format 2 have no arrival times;
//! they take their segment's `created_ms` (docs/format.md, "Arrival time").

pub use super::block_encode::BlockWriter;
use super::{Bytes, DecodeError, DecodeResult, MAX_ANNOTATION_BYTES, MAX_BLOCK_RAW};
pub use crate::chunk::Stamp;

pub const BLOCK_MAGIC: [u8; 4] = *b"RBLK";
/// Block flag: a regrouped block (a whole session, or its idle part, compressed as one).
pub const BLOCK_REGROUPED: u8 = 1;
/// Block flag: its payloads were rewritten by the store's configured payload transform
/// (`Config::with_transform`, idempotent: applying it again changes nothing).
pub const BLOCK_TRANSFORMED: u8 = 2;
/// Block flag: the header ends with the block's annotation (u32 length, then the annotator's
/// opaque bytes: docs/format.md, "Annotations").
pub const BLOCK_HAS_ANNOTATION: u8 = 4;
/// Block flag: each chunk-table entry ends with the chunk's arrival time (format 2).
pub const BLOCK_ARRIVAL: u8 = 8;
/// Block flag: after the chunk table, the block's keyframes (format 3): the chunks playback can
/// start from, each with the time of its first keyframe (docs/format.md, "Keyframes").
pub const BLOCK_KEYFRAMES: u8 = 16;
/// Block flag: each chunk-table entry ends with the chunk's position in its source (a Kafka
/// offset; `Stamp::source_offset`), after its arrival time.
pub const BLOCK_SOURCE: u8 = 32;
/// A chunk's source offset in the table when it has none (other chunks of its block have).
pub(super) const NO_SOURCE: u64 = u64::MAX;
pub const BLOCK_FIXED_LEN: usize = 64;
/// Upper bound on header_len (identifiers, windows and the chunk table).
pub const MAX_HEADER_LEN: usize = 16 << 20;
const CHUNK_ENTRY_LEN: usize = 24;
/// A chunk-table entry with its arrival time (`BLOCK_ARRIVAL`).
pub(super) const CHUNK_ENTRY_ARRIVAL_LEN: usize = 32;
pub(super) const NO_WINDOW: u16 = u16::MAX;
/// A keyframe-table entry: chunk index u32, ts i64.
pub(super) const KEYFRAME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None = 0,
    Zstd = 1,
}

impl Codec {
    fn from_u8(v: u8) -> DecodeResult<Codec> {
        match v {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Zstd),
            _ => Err(DecodeError::new(format!("unknown codec {v}"))),
        }
    }
}

/// One chunk's entry in a block's chunk table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    pub raw_len: u32,
    pub window: Option<u16>,
    pub first_ts: i64,
    pub last_ts: i64,
    /// The store's clock when the chunk was accepted; `None` in blocks of format 1.
    pub arrival_ms: Option<i64>,
    /// Its position in its source (`BLOCK_SOURCE`), when it was appended with one.
    pub source_offset: Option<u64>,
}

/// A chunk of a block that holds a keyframe, and the time of its (first) keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockKeyframe {
    /// Index in the block's chunk table.
    pub chunk: u32,
    /// SDK time (after the skew correction), as the chunks' `first_ts`.
    pub ts_ms: i64,
}

/// When the chunks of a block arrived, by the store's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrivalRange {
    pub first_ms: i64,
    pub last_ms: i64,
}

/// A decoded block header: everything needed to index the block without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    pub codec: Codec,
    /// `BLOCK_REGROUPED`, `BLOCK_TRANSFORMED`, `BLOCK_HAS_ANNOTATION`, `BLOCK_ARRIVAL`,
    /// `BLOCK_KEYFRAMES`.
    pub flags: u8,
    pub dict_id: u32,
    pub team: u64,
    pub seq: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub session: String,
    pub person: String,
    pub windows: Vec<String>,
    pub chunks: Vec<ChunkEntry>,
    /// The chunks holding a keyframe, by chunk index (`BLOCK_KEYFRAMES`; empty without).
    pub keyframes: Vec<BlockKeyframe>,
    pub header_len: u32,
    /// The block's checksum: with `seq`, what identifies a block rewritten after a failed
    /// flush (the same bytes may then sit in two files).
    pub crc: u32,
    /// The annotator's bytes for the block's chunks (`BLOCK_HAS_ANNOTATION`), opaque here.
    pub annotation: Option<Vec<u8>>,
}

impl BlockHeader {
    /// Bytes the whole block occupies: header, payload, crc.
    pub fn total_len(&self) -> u64 {
        self.header_len as u64 + self.stored_len as u64 + 4
    }

    /// The keyframe time of chunk `index`, if it holds one.
    pub fn keyframe_of(&self, index: usize) -> Option<i64> {
        self.keyframes
            .iter()
            .find(|k| k.chunk as usize == index)
            .map(|k| k.ts_ms)
    }

    /// The latest start (`first_ts`) of the block's chunks: a read from a later point in
    /// playback order needs nothing of this block.
    pub fn last_chunk_start(&self) -> i64 {
        self.chunks
            .iter()
            .map(|c| c.first_ts)
            .max()
            .unwrap_or(self.first_ts)
    }

    /// When the block's chunks arrived; a block of format 1 takes `legacy_ms` (its segment's
    /// creation time).
    pub fn arrival(&self, legacy_ms: i64) -> ArrivalRange {
        let mut it = self
            .chunks
            .iter()
            .map(|c| c.arrival_ms.unwrap_or(legacy_ms));
        let first = it.next().unwrap_or(legacy_ms);
        let (lo, hi) = it.fold((first, first), |(lo, hi), a| (lo.min(a), hi.max(a)));
        ArrivalRange {
            first_ms: lo,
            last_ms: hi,
        }
    }
}

/// Total length of the block starting at `prefix`, from its first 64 bytes, checked against the
/// format's bounds. The scanner uses it to know how many bytes to read.
pub fn peek_total_len(prefix: &[u8]) -> DecodeResult<u64> {
    let mut b = Bytes::new(prefix);
    if b.take(4)? != BLOCK_MAGIC {
        return Err(DecodeError::new("bad block magic"));
    }
    let header_len = b.u32()? as usize;
    if !(BLOCK_FIXED_LEN..=MAX_HEADER_LEN).contains(&header_len) {
        return Err(DecodeError::new(format!(
            "header_len {header_len} out of bounds"
        )));
    }
    let mut b = Bytes::new(
        prefix
            .get(52..56)
            .ok_or_else(|| DecodeError::new("short header"))?,
    );
    let stored_len = b.u32()? as usize;
    if stored_len > MAX_BLOCK_RAW + MAX_BLOCK_RAW / 8 {
        return Err(DecodeError::new(format!(
            "stored_len {stored_len} out of bounds"
        )));
    }
    Ok(header_len as u64 + stored_len as u64 + 4)
}

/// Parses and verifies the block at the start of `buf` (which may hold more after it): magic,
/// bounds, crc. Returns the header; the payload is `buf[header_len..header_len + stored_len]`.
pub fn parse_block(buf: &[u8]) -> DecodeResult<BlockHeader> {
    let total = peek_total_len(buf)?;
    if total > buf.len() as u64 {
        return Err(DecodeError::new(format!(
            "block of {total} bytes extends past the {} available",
            buf.len()
        )));
    }
    let total = total as usize;
    let body = &buf[..total - 4];
    let stored_crc = u32::from_le_bytes([
        buf[total - 4],
        buf[total - 3],
        buf[total - 2],
        buf[total - 1],
    ]);
    if crc32fast::hash(body) != stored_crc {
        return Err(DecodeError::new("block checksum mismatch"));
    }
    let mut h = parse_header(body)?;
    h.crc = stored_crc;
    Ok(h)
}

/// The window ids of a block header.
fn parse_windows(b: &mut Bytes, count: usize) -> DecodeResult<Vec<String>> {
    let mut windows = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        let n = b.u8()? as usize;
        windows.push(b.str(n, "window id")?.to_string());
    }
    Ok(windows)
}

/// The chunk table of a block header; also returns the sum of the chunks' raw lengths.
fn parse_chunk_entries(
    b: &mut Bytes,
    chunk_count: usize,
    window_count: usize,
    flags: u8,
) -> DecodeResult<(Vec<ChunkEntry>, u64)> {
    let has_arrival = flags & BLOCK_ARRIVAL != 0;
    let mut chunks = Vec::with_capacity(chunk_count);
    let mut sum: u64 = 0;
    for _ in 0..chunk_count {
        let raw = b.u32()?;
        let w = b.u16()?;
        let _ = b.u16()?;
        let c_first = b.i64()?;
        let c_last = b.i64()?;
        let arrival_ms = if has_arrival { Some(b.i64()?) } else { None };
        let source_offset = match flags & BLOCK_SOURCE {
            0 => None,
            _ => Some(b.u64()?).filter(|&o| o != NO_SOURCE),
        };
        let window = if w == NO_WINDOW { None } else { Some(w) };
        if let Some(w) = window {
            if w as usize >= window_count {
                return Err(DecodeError::new(format!(
                    "chunk window index {w} out of bounds"
                )));
            }
        }
        sum += raw as u64;
        chunks.push(ChunkEntry {
            raw_len: raw,
            window,
            first_ts: c_first,
            last_ts: c_last,
            arrival_ms,
            source_offset,
        });
    }
    Ok((chunks, sum))
}

/// The block's keyframe table, when its flags say it has one: chunk indexes strictly growing
/// and within the chunk table.
fn parse_keyframes(
    b: &mut Bytes,
    flags: u8,
    chunk_count: usize,
) -> DecodeResult<Vec<BlockKeyframe>> {
    if flags & BLOCK_KEYFRAMES == 0 {
        return Ok(Vec::new());
    }
    let n = b.u32()? as usize;
    if n == 0 || n > chunk_count {
        return Err(DecodeError::new(format!(
            "keyframe count {n} out of bounds"
        )));
    }
    let mut out: Vec<BlockKeyframe> = Vec::with_capacity(n);
    for _ in 0..n {
        let k = BlockKeyframe {
            chunk: b.u32()?,
            ts_ms: b.i64()?,
        };
        let after_last = out.last().is_none_or(|p| p.chunk < k.chunk);
        if k.chunk as usize >= chunk_count || !after_last {
            return Err(DecodeError::new(format!(
                "keyframe chunk {} out of order",
                k.chunk
            )));
        }
        out.push(k);
    }
    Ok(out)
}

/// The block's annotation, when its flags say it has one.
fn parse_annotation(b: &mut Bytes, flags: u8) -> DecodeResult<Option<Vec<u8>>> {
    if flags & BLOCK_HAS_ANNOTATION == 0 {
        return Ok(None);
    }
    let n = b.u32()? as usize;
    if !(1..=MAX_ANNOTATION_BYTES).contains(&n) {
        return Err(DecodeError::new(format!(
            "annotation of {n} bytes out of bounds"
        )));
    }
    Ok(Some(b.take(n)?.to_vec()))
}

fn parse_header(body: &[u8]) -> DecodeResult<BlockHeader> {
    let mut b = Bytes::new(body);
    b.take(4)?; // magic, checked by peek_total_len
    let header_len = b.u32()?;
    let codec = Codec::from_u8(b.u8()?)?;
    let flags = b.u8()?;
    let window_count = b.u16()? as usize;
    let dict_id = b.u32()?;
    let team = b.u64()?;
    let seq = b.u64()?;
    let first_ts = b.i64()?;
    let last_ts = b.i64()?;
    let raw_len = b.u32()?;
    let stored_len = b.u32()?;
    let chunk_count = b.u32()? as usize;
    let session_len = b.u8()? as usize;
    let _reserved = b.u8()?;
    let person_len = b.u16()? as usize;
    if raw_len as usize > MAX_BLOCK_RAW {
        return Err(DecodeError::new(format!("raw_len {raw_len} out of bounds")));
    }
    let entry_len = CHUNK_ENTRY_LEN
        + usize::from(flags & BLOCK_ARRIVAL != 0) * (CHUNK_ENTRY_ARRIVAL_LEN - CHUNK_ENTRY_LEN)
        + usize::from(flags & BLOCK_SOURCE != 0) * 8;
    if chunk_count == 0 || chunk_count * entry_len > header_len as usize {
        return Err(DecodeError::new(format!(
            "chunk_count {chunk_count} out of bounds"
        )));
    }
    if first_ts > last_ts {
        return Err(DecodeError::new("first_ts after last_ts"));
    }
    // The variable part may not read past header_len into the payload.
    let mut b = Bytes::new(&body[..header_len as usize]);
    b.take(BLOCK_FIXED_LEN)?;
    let session = b.str(session_len, "session id")?.to_string();
    let person = b.str(person_len, "person")?.to_string();
    let windows = parse_windows(&mut b, window_count)?;
    let (chunks, sum) = parse_chunk_entries(&mut b, chunk_count, window_count, flags)?;
    let keyframes = parse_keyframes(&mut b, flags, chunk_count)?;
    let annotation = parse_annotation(&mut b, flags)?;
    if b.pos() != header_len as usize {
        return Err(DecodeError::new(
            "header_len does not match header contents",
        ));
    }
    if sum != raw_len as u64 {
        return Err(DecodeError::new("chunk lengths do not add up to raw_len"));
    }
    Ok(BlockHeader {
        codec,
        flags,
        dict_id,
        team,
        seq,
        first_ts,
        last_ts,
        raw_len,
        stored_len,
        session,
        person,
        windows,
        chunks,
        keyframes,
        header_len,
        crc: 0,
        annotation,
    })
}

/// Decompresses a verified block's payload and splits it into its chunks' payloads.
pub fn decode_payloads(header: &BlockHeader, block: &[u8]) -> DecodeResult<Vec<Vec<u8>>> {
    let start = header.header_len as usize;
    let stored = block
        .get(start..start + header.stored_len as usize)
        .ok_or_else(|| DecodeError::new("payload out of bounds"))?;
    if header.dict_id != 0 {
        return Err(DecodeError::new(format!(
            "dictionary {} is not supported by this version",
            header.dict_id
        )));
    }
    let raw = match header.codec {
        Codec::None => stored.to_vec(),
        Codec::Zstd => decompress(stored, header.raw_len as usize)?,
    };
    if raw.len() != header.raw_len as usize {
        return Err(DecodeError::new("payload shorter than raw_len"));
    }
    let mut out = Vec::with_capacity(header.chunks.len());
    let mut pos = 0usize;
    for c in &header.chunks {
        let end = pos + c.raw_len as usize;
        out.push(raw[pos..end].to_vec());
        pos = end;
    }
    Ok(out)
}

/// Real blocks never compress more than this; a header claiming more is not trusted with an
/// allocation of its claimed size up front.
const MAX_TRUSTED_RATIO: usize = 256;

/// Decompresses a zstd frame of exactly `raw_len` bytes. The output buffer is allocated at
/// once only when `raw_len` is plausible for the stored size; otherwise it grows with the data
/// actually produced, so a forged length cannot make the reader allocate a gigabyte.
fn decompress(stored: &[u8], raw_len: usize) -> DecodeResult<Vec<u8>> {
    let zerr = |e: std::io::Error| DecodeError::new(format!("zstd: {e}"));
    if raw_len <= stored.len().saturating_mul(MAX_TRUSTED_RATIO) {
        return zstd::bulk::decompress(stored, raw_len).map_err(zerr);
    }
    use std::io::Read;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(stored)
        .map_err(zerr)?
        .take(raw_len as u64)
        .read_to_end(&mut out)
        .map_err(zerr)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Chunk;

    fn chunk(payload: &[u8], w: Option<&str>, ts: i64) -> Chunk {
        Chunk {
            team: 7,
            session_id: "sess".into(),
            person: "alice".into(),
            window_id: w.map(String::from),
            first_ts_ms: ts,
            last_ts_ms: ts + 5,
            sent_at_ms: None,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn round_trip_and_bit_flips() -> Result<(), Box<dyn std::error::Error>> {
        let chunks = vec![
            chunk(&b"hello ".repeat(100), Some("w1"), 10),
            chunk(b"", None, 20),
            chunk(b"x", Some("w2"), 5),
            chunk(b"y", Some("w1"), 30),
        ];
        let mut out = Vec::new();
        let stamps: Vec<Stamp> = (0..chunks.len() as i64)
            .map(|i| Stamp {
                arrival_ms: 1000 + i,
                keyframe_ms: (i == 2).then_some(7),
                ..Default::default()
            })
            .collect();
        let note: &[u8] = b"\x01opaque";
        BlockWriter::new(3)?.encode_full(
            42,
            BLOCK_TRANSFORMED,
            Some(note),
            &chunks,
            &stamps,
            &mut out,
        )?;
        let h = parse_block(&out)?;
        assert_eq!(h.annotation.as_deref(), Some(note));
        assert_eq!(
            h.flags,
            BLOCK_TRANSFORMED | BLOCK_HAS_ANNOTATION | BLOCK_ARRIVAL | BLOCK_KEYFRAMES
        );
        let kf = BlockKeyframe { chunk: 2, ts_ms: 7 };
        assert_eq!(h.keyframes, vec![kf]);
        assert_eq!((h.keyframe_of(2), h.keyframe_of(1)), (Some(7), None));
        assert_eq!(
            h.arrival(0),
            ArrivalRange {
                first_ms: 1000,
                last_ms: 1003
            }
        );
        assert_eq!(h.chunks[2].arrival_ms, Some(1002));
        assert_eq!(h.total_len() as usize, out.len());
        assert_eq!((h.team, h.seq, h.first_ts, h.last_ts), (7, 42, 5, 35));
        assert_eq!(h.codec, Codec::Zstd);
        assert_eq!(h.windows, vec!["w1", "w2"]);
        let payloads = decode_payloads(&h, &out)?;
        for (c, p) in chunks.iter().zip(&payloads) {
            assert_eq!(&c.payload, p);
        }
        for i in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(parse_block(&bad).is_err(), "flip of bit {i} not detected");
        }
        for n in 0..out.len() {
            assert!(parse_block(&out[..n]).is_err());
        }
        Ok(())
    }

    #[test]
    fn source_offsets_round_trip_only_when_given() -> Result<(), Box<dyn std::error::Error>> {
        let chunks = vec![
            chunk(b"a", None, 1),
            chunk(b"b", None, 2),
            chunk(b"c", None, 3),
        ];
        let stamp = |o: Option<u64>| Stamp {
            arrival_ms: 9,
            source_offset: o,
            ..Default::default()
        };
        let stamps = [stamp(Some(7)), stamp(None), stamp(Some(u64::MAX - 1))];
        let mut out = Vec::new();
        BlockWriter::new(1)?.encode(1, &chunks, &stamps, &mut out)?;
        let h = parse_block(&out)?;
        assert_eq!(h.flags & BLOCK_SOURCE, BLOCK_SOURCE);
        let got: Vec<_> = h.chunks.iter().map(|c| c.source_offset).collect();
        assert_eq!(got, vec![Some(7), None, Some(u64::MAX - 1)]);
        // Without any, the block is written as before.
        let mut plain = Vec::new();
        BlockWriter::new(1)?.encode(1, &chunks, &[stamp(None); 3], &mut plain)?;
        let h = parse_block(&plain)?;
        assert_eq!(h.flags & BLOCK_SOURCE, 0);
        assert_eq!(plain.len() + 3 * 8, out.len());
        Ok(())
    }
}
