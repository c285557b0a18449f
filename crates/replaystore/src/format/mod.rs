//! The on-disk format, byte by byte as docs/format.md specifies it. Pure encode/decode: no I/O.
//! All integers are little-endian. Every length read from disk is bounded before it is used to
//! allocate or slice.

pub mod block;
mod block_encode;
pub mod bloom;
pub mod footer;
pub mod records;
pub mod segment;
pub mod session_index;
pub mod tombstone_log;

pub use block::{ArrivalRange, BlockHeader, BlockKeyframe, BlockWriter, ChunkEntry, Codec, Stamp};
pub use footer::{BlockRef, FooterFormat, FooterView, Keyframe, SeekTable, SessionEntry};
pub use segment::{blocks, blocks_end, SegmentHeader, Trailer, SEGMENT_HEADER_LEN, TRAILER_LEN};

/// Hard cap on a block's raw (uncompressed) size, and so on a payload.
pub const MAX_BLOCK_RAW: usize = 1 << 30;
/// Hard cap on an annotation (a block's, or a session record's in a footer): checked when one
/// is written and when one is read.
pub const MAX_ANNOTATION_BYTES: usize = 64 << 10;
/// Format version written in segment headers and trailers. Version 2 added arrival times
/// (chunk tables, block refs, footer totals), version 3 the footers' seek section (keyframes);
/// files of versions 1 and 2 still open (docs/format.md).
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format version this code reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;

/// An annotation as the engine holds it (`crate::annotation`: the bytes are an annotator's,
/// opaque here), with the time its part of the session starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub first_ts_ms: i64,
    pub bytes: Vec<u8>,
}

/// The facts of a session's annotation an index compares without decoding it
/// (`Annotator::facets`): the annotator says what each position of `numbers` means (its
/// crate's filters know), and what `texts` are (URLs for recordings). Kept per session in the
/// session index and its file, so small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facets {
    pub numbers: Vec<u64>,
    pub texts: Vec<String>,
}

/// Stable 64-bit hash of a (team, identifier) pair, stored on disk: xxh3-64 of the team's 8
/// little-endian bytes followed by the identifier. Must never change within a format version.
pub fn key_hash(team: u64, id: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&team.to_le_bytes());
    h.update(id.as_bytes());
    h.digest()
}

/// Why a byte range failed to decode. Callers wrap it into `Error::Corrupt` with the segment,
/// path and offset they know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl DecodeError {
    pub fn new(s: impl Into<String>) -> Self {
        DecodeError(s.into())
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

pub type DecodeResult<T> = std::result::Result<T, DecodeError>;

/// Bounds-checked little-endian reads from a byte slice.
pub(crate) struct Bytes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Bytes { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                DecodeError::new(format!(
                    "needs {n} bytes at {} of {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn str(&mut self, n: usize, what: &str) -> DecodeResult<&'a str> {
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| DecodeError::new(format!("{what} is not UTF-8")))
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}
