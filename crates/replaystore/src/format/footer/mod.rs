//! The footer of a sealed segment: its session index, read in place through the mmap.
//!
//! ```text
//! fixed (112 B; 96 B in format 1, which ends at 88 with 8 reserved bytes):
//!   0 session_count u32 | 4 block_ref_count u32 | 8 bloom_words u32 | 12 bloom_k u32
//!   16 replaces_count u32 | 20 heap_len u32 | 24 min_ts i64 | 32 max_ts i64 | 40 chunk_count u64
//!   48 raw_bytes u64 | 56 stored_bytes u64 | 64 block_count u64 | 72 max_seq u64
//!   80 flags u32 (bit 0: every session in it was regrouped) | 84 annotations_len u32
//!   88 min_arrival_ms i64 | 96 max_arrival_ms i64 | 104 seek_len u32 (format 3; zero before)
//!   108..112 reserved (zero)
//! bloom:    bloom_words x u64           membership filter over key_hash(team, session)
//! replaces: replaces_count x u64        ids of segments this one supersedes (compaction)
//! sessions: session_count x 80 B, sorted by (team, session_hash, session bytes):
//!   0 team u64 | 8 session_hash u64 | 16 person_hash u64 | 24 first_ts i64 | 32 last_ts i64
//!   40 raw_bytes u64 | 48 stored_bytes u64 | 56 chunk_count u32 | 60 first_block_ref u32
//!   64 block_ref_count u32 | 68 heap_offset u32 | 72 session_len u8 | 73 reserved u8
//!   74 person_len u16 | 76 crc32 of (bytes 0..76, its block refs, its two strings)
//! block_refs: block_ref_count x 32 B (16 B in format 1, without the arrival times):
//!   offset u64 | len u32 | chunk_count u32 | arrival_first_ms i64 | arrival_last_ms i64
//! heap: session id and person bytes, back to back
//! annotations (annotations_len bytes): session_count x u32 offsets into the records, then
//!   per session entry a record: len u32 | crc32 u32 of the bytes | the annotator's bytes
//!   (len 0: no annotation)
//! seek (seek_len bytes, format 3): keyframes per session entry (`seek`'s comment)
//! ```
//! The trailer's footer_crc covers fixed, bloom and replaces: what open reads. Each session
//! entry carries its own crc, checked when a lookup touches it, so open never reads the table.

use super::bloom::Bloom;
use super::{
    key_hash, Annotation, ArrivalRange, Bytes, DecodeError, DecodeResult, FORMAT_VERSION,
    MAX_ANNOTATION_BYTES,
};

pub const FOOTER_FIXED_LEN: usize = 112;
const FOOTER_FIXED_LEN_V1: usize = 96;
pub const SESSION_ENTRY_LEN: usize = 80;
pub const BLOCK_REF_LEN: usize = 32;
const BLOCK_REF_LEN_V1: usize = 16;

/// What reading a footer needs besides its bytes: the layout version (the trailer's), and the
/// arrival time of blocks written before arrival times existed (the segment's `created_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterFormat {
    pub version: u16,
    pub legacy_arrival_ms: i64,
}

impl FooterFormat {
    /// The format this code writes.
    pub fn current() -> Self {
        FooterFormat {
            version: FORMAT_VERSION,
            legacy_arrival_ms: 0,
        }
    }

    fn v1(&self) -> bool {
        self.version < 2
    }

    fn fixed_len(&self) -> usize {
        if self.v1() {
            FOOTER_FIXED_LEN_V1
        } else {
            FOOTER_FIXED_LEN
        }
    }

    /// Whether the footer has a seek section (format 3).
    fn has_seek(&self) -> bool {
        self.version >= 3
    }

    fn ref_len(&self) -> usize {
        if self.v1() {
            BLOCK_REF_LEN_V1
        } else {
            BLOCK_REF_LEN
        }
    }
}

/// Where one block of a session lies in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub offset: u64,
    pub len: u32,
    pub chunks: u32,
    /// When the block's chunks arrived (store clock).
    pub arrival: ArrivalRange,
}

/// One session's record in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub team: u64,
    pub session: String,
    pub person: String,
    pub first_ts: i64,
    pub last_ts: i64,
    pub chunk_count: u32,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub blocks: Vec<BlockRef>,
    /// The annotations of these blocks, opaque: read from a footer, at most one (their merge);
    /// in an active segment's index, one per annotated block (merged when the segment is
    /// sealed, see `annotation::merge_parts`).
    pub annotations: Vec<Annotation>,
    /// Where the record's chunks can be played from (format 3; empty before).
    pub seek: SeekTable,
}

impl SessionEntry {
    /// When this record's chunks arrived: the earliest and latest arrival of its blocks.
    pub fn arrival(&self) -> ArrivalRange {
        let first = self.blocks.iter().map(|b| b.arrival.first_ms).min();
        let last = self.blocks.iter().map(|b| b.arrival.last_ms).max();
        ArrivalRange {
            first_ms: first.unwrap_or(i64::MAX),
            last_ms: last.unwrap_or(i64::MIN),
        }
    }
}

/// Segment-wide totals stored in the footer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FooterTotals {
    pub min_ts: i64,
    pub max_ts: i64,
    pub chunk_count: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub block_count: u64,
    /// Highest block seq (flush round) in the segment.
    pub max_seq: u64,
    /// Segment flags (`SEGMENT_REGROUPED`).
    pub flags: u32,
    /// Earliest and latest arrival (store clock) of any chunk in the segment: retention
    /// drops the segment once `max_arrival_ms` is past the lane's cutoff.
    pub min_arrival_ms: i64,
    pub max_arrival_ms: i64,
}

/// Footer flag: the segment was written by regrouping, its sessions are cold copies.
pub const SEGMENT_REGROUPED: u32 = 1;

mod encode;
mod seek;
pub use encode::encode_footer;
pub use seek::{Keyframe, SeekTable};

/// The totals in a footer's fixed part, and the length of its annotations section (which sits
/// between them in the layout).
fn parse_totals(b: &mut Bytes, format: FooterFormat) -> DecodeResult<(FooterTotals, usize)> {
    let mut totals = FooterTotals {
        min_ts: b.i64()?,
        max_ts: b.i64()?,
        chunk_count: b.u64()?,
        raw_bytes: b.u64()?,
        stored_bytes: b.u64()?,
        block_count: b.u64()?,
        max_seq: b.u64()?,
        flags: b.u32()?,
        min_arrival_ms: format.legacy_arrival_ms,
        max_arrival_ms: format.legacy_arrival_ms,
    };
    let annotations_len = b.u32()? as usize;
    if !format.v1() {
        totals.min_arrival_ms = b.i64()?;
        totals.max_arrival_ms = b.i64()?;
    }
    Ok((totals, annotations_len))
}

fn read_u64s(b: &mut Bytes, n: usize) -> DecodeResult<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(b.u64()?);
    }
    Ok(out)
}

/// A footer validated at open. Holds the bloom filter and the offsets (within the file) of the
/// session table, block refs and heap; entries are decoded on demand from the mapped file.
#[derive(Debug, Clone)]
pub struct FooterView {
    /// Where the footer starts: the end of the segment's blocks.
    pub offset: u64,
    pub session_count: u32,
    pub totals: FooterTotals,
    pub bloom: Bloom,
    pub replaces: Vec<u64>,
    sessions_at: usize,
    refs_at: usize,
    ref_count: u32,
    heap_at: usize,
    heap_len: usize,
    annotations_at: usize,
    annotations_len: usize,
    seek_at: usize,
    seek_len: usize,
    format: FooterFormat,
}

impl FooterView {
    /// Parses the footer at `file[offset..offset + len]`, checking `crc` over its fixed part,
    /// bloom and replaces list, and that every section fits the footer exactly.
    pub fn parse(
        file: &[u8],
        offset: u64,
        len: u32,
        crc: u32,
        format: FooterFormat,
    ) -> DecodeResult<FooterView> {
        let start = offset as usize;
        let footer = file
            .get(start..start + len as usize)
            .ok_or_else(|| DecodeError::new("footer outside the file"))?;
        Self::parse_meta(footer, offset, len, crc, format)
    }

    /// Parses a footer of `len` bytes at `offset` from its first bytes only: the fixed part,
    /// bloom and replaces list (`meta_len()` bytes; more are ignored). The entries are read
    /// later from whatever holds the whole footer at the same offset (a remote segment keeps
    /// this part in RAM and the rest in an evictable cache).
    pub fn parse_meta(
        footer: &[u8],
        offset: u64,
        len: u32,
        crc: u32,
        format: FooterFormat,
    ) -> DecodeResult<FooterView> {
        let start = offset as usize;
        let mut b = Bytes::new(footer);
        let session_count = b.u32()?;
        let ref_count = b.u32()?;
        let bloom_words = b.u32()? as usize;
        let k = b.u32()?;
        let replaces_count = b.u32()? as usize;
        let heap_len = b.u32()? as usize;
        let (totals, annotations_len) = parse_totals(&mut b, format)?;
        let seek_len = if format.has_seek() {
            b.u32()? as usize
        } else {
            0
        };
        let sizes = [
            format.fixed_len() as u64,
            bloom_words as u64 * 8,
            replaces_count as u64 * 8,
            session_count as u64 * SESSION_ENTRY_LEN as u64,
            ref_count as u64 * format.ref_len() as u64,
            heap_len as u64,
            annotations_len as u64,
            seek_len as u64,
        ];
        let offsets_len = session_count as u64 * 4;
        if sizes.iter().sum::<u64>() != len as u64
            || bloom_words == 0
            || k == 0
            || k > 32
            || (annotations_len as u64) < offsets_len
            || (format.has_seek() && (seek_len as u64) < offsets_len)
        {
            return Err(DecodeError::new("footer section sizes do not add up"));
        }
        let meta_len = (sizes[0] + sizes[1] + sizes[2]) as usize;
        let meta = footer
            .get(..meta_len)
            .ok_or_else(|| DecodeError::new("footer shorter than its fixed part and bloom"))?;
        if crc32fast::hash(meta) != crc {
            return Err(DecodeError::new("footer checksum mismatch"));
        }
        let mut b = Bytes::new(&meta[format.fixed_len()..]);
        let words = read_u64s(&mut b, bloom_words)?;
        let replaces = read_u64s(&mut b, replaces_count)?;
        let sessions_at = start + meta_len;
        let refs_at = sessions_at + sizes[3] as usize;
        let heap_at = refs_at + sizes[4] as usize;
        Ok(FooterView {
            offset,
            session_count,
            totals,
            bloom: Bloom { words, k },
            replaces,
            sessions_at,
            refs_at,
            ref_count,
            heap_at,
            heap_len,
            annotations_at: heap_at + heap_len,
            annotations_len,
            seek_at: heap_at + heap_len + annotations_len,
            seek_len,
            format,
        })
    }

    /// Length of the footer's fixed part, bloom filter and replaces list (what `parse_meta`
    /// needs).
    pub fn meta_len(&self) -> usize {
        self.format.fixed_len() + self.bloom.words.len() * 8 + self.replaces.len() * 8
    }

    /// (team, session_hash) of entry `i`, for binary search. Unchecked by crc on purpose: a
    /// corrupt key only misdirects the search; the entry found is verified by `entry`.
    pub fn key(&self, file: &[u8], i: u32) -> (u64, u64) {
        let at = self.sessions_at + i as usize * SESSION_ENTRY_LEN;
        let e = &file[at..at + 16];
        let mut b = Bytes::new(e);
        (b.u64().unwrap_or(0), b.u64().unwrap_or(0))
    }

    /// Person hash of entry `i` (unverified; for scans that then verify with `entry`).
    pub fn person_hash(&self, file: &[u8], i: u32) -> u64 {
        let at = self.sessions_at + i as usize * SESSION_ENTRY_LEN + 16;
        u64::from_le_bytes(file[at..at + 8].try_into().unwrap_or([0; 8]))
    }

    /// Decodes and verifies entry `i`.
    pub fn entry(&self, file: &[u8], i: u32) -> DecodeResult<SessionEntry> {
        if i >= self.session_count {
            return Err(DecodeError::new("session entry index out of range"));
        }
        let at = self.sessions_at + i as usize * SESSION_ENTRY_LEN;
        let raw = &file[at..at + SESSION_ENTRY_LEN];
        let mut b = Bytes::new(raw);
        let team = b.u64()?;
        let _session_hash = b.u64()?;
        let _person_hash = b.u64()?;
        let first_ts = b.i64()?;
        let last_ts = b.i64()?;
        let raw_bytes = b.u64()?;
        let stored_bytes = b.u64()?;
        let chunk_count = b.u32()?;
        let first_ref = b.u32()? as u64;
        let nrefs = b.u32()? as u64;
        let heap_offset = b.u32()? as usize;
        let session_len = b.u8()? as usize;
        let _ = b.u8()?;
        let person_len = b.u16()? as usize;
        let crc = b.u32()?;
        if first_ref + nrefs > self.ref_count as u64
            || heap_offset + session_len + person_len > self.heap_len
        {
            return Err(DecodeError::new("session entry points outside the footer"));
        }
        let ref_len = self.format.ref_len();
        let refs_start = self.refs_at + first_ref as usize * ref_len;
        let refs = &file[refs_start..refs_start + nrefs as usize * ref_len];
        let strings = &file
            [self.heap_at + heap_offset..self.heap_at + heap_offset + session_len + person_len];
        let mut h = crc32fast::Hasher::new();
        h.update(&raw[..76]);
        h.update(refs);
        h.update(strings);
        if h.finalize() != crc {
            return Err(DecodeError::new("session entry checksum mismatch"));
        }
        let mut s = Bytes::new(strings);
        let session = s.str(session_len, "session id")?.to_string();
        let person = s.str(person_len, "person")?.to_string();
        let blocks = self.block_refs(refs, nrefs as usize)?;
        let annotations = self
            .annotation(file, i)?
            .map(|bytes| Annotation {
                first_ts_ms: first_ts,
                bytes,
            })
            .into_iter()
            .collect();
        let seek = self.seek(file, i, blocks.len())?;
        Ok(SessionEntry {
            annotations,
            seek,
            team,
            session,
            person,
            first_ts,
            last_ts,
            chunk_count,
            raw_bytes,
            stored_bytes,
            blocks,
        })
    }

    /// Decodes `n` block references (already verified by their entry's checksum).
    fn block_refs(&self, refs: &[u8], n: usize) -> DecodeResult<Vec<BlockRef>> {
        let mut r = Bytes::new(refs);
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            let (offset, len, chunks) = (r.u64()?, r.u32()?, r.u32()?);
            let arrival = if self.format.v1() {
                ArrivalRange {
                    first_ms: self.format.legacy_arrival_ms,
                    last_ms: self.format.legacy_arrival_ms,
                }
            } else {
                ArrivalRange {
                    first_ms: r.i64()?,
                    last_ms: r.i64()?,
                }
            };
            blocks.push(BlockRef {
                offset,
                len,
                chunks,
                arrival,
            });
        }
        Ok(blocks)
    }

    /// Verifies the annotation record of entry `i`; `None` when it is empty.
    pub fn annotation(&self, file: &[u8], i: u32) -> DecodeResult<Option<Vec<u8>>> {
        let section = &file[self.annotations_at..self.annotations_at + self.annotations_len];
        let n = self.session_count as usize;
        let (offsets, records) = section.split_at(n * 4);
        let at = i as usize * 4;
        let off = u32::from_le_bytes(offsets[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        let mut b = Bytes::new(records.get(off..).unwrap_or(&[]));
        let len = b.u32()? as usize;
        let crc = b.u32()?;
        if len > MAX_ANNOTATION_BYTES {
            return Err(DecodeError::new("annotation record out of bounds"));
        }
        let bytes = b.take(len)?;
        if crc32fast::hash(bytes) != crc {
            return Err(DecodeError::new("annotation record checksum mismatch"));
        }
        Ok((!bytes.is_empty()).then(|| bytes.to_vec()))
    }

    /// Verifies the seek record of entry `i` (of `block_count` refs); empty before format 3.
    fn seek(&self, file: &[u8], i: u32, block_count: usize) -> DecodeResult<SeekTable> {
        if !self.format.has_seek() {
            return Ok(SeekTable::default());
        }
        let section = &file[self.seek_at..self.seek_at + self.seek_len];
        seek::parse_seek(
            section,
            self.session_count as usize,
            i as usize,
            block_count,
        )
    }

    /// Index of the first entry whose (team, hash) is >= the given key.
    pub fn lower_bound(&self, file: &[u8], team: u64, hash: u64) -> u32 {
        let (mut lo, mut hi) = (0u32, self.session_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(file, mid) < (team, hash) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Entries of one session (one per person): those with its (team, hash) whose verified
    /// id matches.
    pub fn find(&self, file: &[u8], team: u64, session: &str) -> DecodeResult<Vec<SessionEntry>> {
        let h = key_hash(team, session);
        let mut out = Vec::new();
        if !self.bloom.may_contain(h) {
            return Ok(out);
        }
        let mut i = self.lower_bound(file, team, h);
        while i < self.session_count && self.key(file, i) == (team, h) {
            let e = self.entry(file, i)?;
            if e.session == session {
                out.push(e);
            }
            i += 1;
        }
        Ok(out)
    }

    /// The half-open range of entry indexes that belong to `team`.
    pub fn team_range(&self, file: &[u8], team: u64) -> std::ops::Range<u32> {
        let lo = self.lower_bound(file, team, 0);
        let hi = match team.checked_add(1) {
            Some(next) => self.lower_bound(file, next, 0),
            None => self.session_count,
        };
        lo..hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(team: u64, s: &str, p: &str, off: u64) -> SessionEntry {
        SessionEntry {
            team,
            session: s.into(),
            person: p.into(),
            first_ts: off as i64,
            last_ts: off as i64 + 1,
            chunk_count: 1,
            raw_bytes: 10,
            stored_bytes: 5,
            blocks: vec![BlockRef {
                offset: off,
                len: 5,
                chunks: 1,
                arrival: ArrivalRange {
                    first_ms: off as i64 * 2,
                    last_ms: off as i64 * 2 + 1,
                },
            }],
            // Every other entry annotated: empty records in between.
            annotations: off
                .is_multiple_of(2)
                .then(|| Annotation {
                    first_ts_ms: off as i64,
                    bytes: vec![1, off as u8],
                })
                .into_iter()
                .collect(),
            // Every entry has a keyframe: the seek section's last record ends the footer.
            seek: SeekTable {
                block_starts: vec![off as i64],
                keyframes: vec![Keyframe {
                    ts_ms: off as i64 + 1,
                    block: 0,
                    chunk: (off % 4) as u32,
                    chunk_first_ts: off as i64,
                }],
            },
        }
    }

    #[test]
    fn lookups_and_corruption() -> Result<(), Box<dyn std::error::Error>> {
        let mut es: Vec<_> = (0..500u64)
            .map(|i| entry(i % 3, &format!("s{i}"), &format!("p{}", i % 7), i))
            .collect();
        let (bytes, crc) = encode_footer(&mut es, FooterTotals::default(), &[4, 5]);
        let mut file = vec![0u8; 10];
        file.extend_from_slice(&bytes);
        let fmt = FooterFormat::current();
        let f = FooterView::parse(&file, 10, bytes.len() as u32, crc, fmt)?;
        assert_eq!(f.replaces, vec![4, 5]);
        for i in 0..500u64 {
            let e = f.find(&file, i % 3, &format!("s{i}"))?.remove(0);
            assert_eq!(e.blocks[0].offset, i);
            assert_eq!(e.arrival().first_ms, i as i64 * 2);
            assert_eq!(e.person, format!("p{}", i % 7));
            assert_eq!(e.annotations, entry(0, "", "", i).annotations);
            assert_eq!(e.seek, entry(0, "", "", i).seek);
            assert!(f.find(&file, (i % 3) + 1, &format!("s{i}"))?.is_empty());
        }
        assert_eq!(f.team_range(&file, 1).len(), 167);
        assert!(f.find(&file, 0, "nope")?.is_empty());
        assert!(FooterView::parse(&file, 10, bytes.len() as u32, crc ^ 1, fmt).is_err());
        // A flipped bit in an entry's seek record is caught when the entry is read.
        let last = file.len() - 1;
        file[last] ^= 0x20;
        let bad = (0..500).filter(|&i| f.entry(&file, i).is_err()).count();
        assert_eq!(bad, 1);
        Ok(())
    }
}
