//! Segment file header (first 32 bytes) and trailer (last 32 bytes of a sealed segment).
//!
//! ```text
//! header:  0 magic "RSEG" | 4 version u16 | 6 lane_days u16 | 8 segment_id u64
//!          16 created_ms i64 | 24 reserved u32 | 28 crc32 of bytes 0..28
//! trailer: 0 footer_offset u64 | 8 footer_len u32 | 12 footer_crc u32 | 16 version u16
//!          18 reserved u16 | 20 crc32 of bytes 0..20 | 24 magic "RSEGEND\0"
//! ```

use super::{
    put_i64, put_u16, put_u32, put_u64, Bytes, DecodeError, DecodeResult, FORMAT_VERSION,
    OLDEST_READABLE_VERSION,
};

pub const SEGMENT_MAGIC: [u8; 4] = *b"RSEG";
pub const TRAILER_MAGIC: [u8; 8] = *b"RSEGEND\0";
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const TRAILER_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub lane_days: u16,
    pub segment_id: u64,
    pub created_ms: i64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut v = Vec::with_capacity(SEGMENT_HEADER_LEN);
        v.extend_from_slice(&SEGMENT_MAGIC);
        put_u16(&mut v, FORMAT_VERSION);
        put_u16(&mut v, self.lane_days);
        put_u64(&mut v, self.segment_id);
        put_i64(&mut v, self.created_ms);
        put_u32(&mut v, 0);
        let crc = crc32fast::hash(&v);
        put_u32(&mut v, crc);
        let mut a = [0u8; SEGMENT_HEADER_LEN];
        a.copy_from_slice(&v);
        a
    }

    pub fn decode(buf: &[u8]) -> DecodeResult<SegmentHeader> {
        let mut b = Bytes::new(buf);
        if b.take(4)? != SEGMENT_MAGIC {
            return Err(DecodeError::new("bad segment magic"));
        }
        let version = b.u16()?;
        let lane_days = b.u16()?;
        let segment_id = b.u64()?;
        let created_ms = b.i64()?;
        let _ = b.u32()?;
        let crc = b.u32()?;
        if crc != crc32fast::hash(&buf[..28]) {
            return Err(DecodeError::new("segment header checksum mismatch"));
        }
        check_version(version, "segment")?;
        Ok(SegmentHeader {
            lane_days,
            segment_id,
            created_ms,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub footer_offset: u64,
    pub footer_len: u32,
    pub footer_crc: u32,
    /// Format version of the footer (its layout differs between versions 1 and 2).
    pub version: u16,
}

impl Trailer {
    /// How to read the footer this trailer points at, in a segment created at `created_ms`.
    pub fn footer_format(&self, created_ms: i64) -> super::FooterFormat {
        super::FooterFormat {
            version: self.version,
            legacy_arrival_ms: created_ms,
        }
    }
}

fn check_version(version: u16, what: &str) -> DecodeResult<()> {
    if (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Ok(());
    }
    Err(DecodeError::new(format!(
        "unsupported {what} version {version}"
    )))
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut v = Vec::with_capacity(TRAILER_LEN);
        put_u64(&mut v, self.footer_offset);
        put_u32(&mut v, self.footer_len);
        put_u32(&mut v, self.footer_crc);
        put_u16(&mut v, self.version);
        put_u16(&mut v, 0);
        let crc = crc32fast::hash(&v);
        put_u32(&mut v, crc);
        v.extend_from_slice(&TRAILER_MAGIC);
        let mut a = [0u8; TRAILER_LEN];
        a.copy_from_slice(&v);
        a
    }

    /// Decodes the last 32 bytes of a file of `file_len` bytes and checks that the footer it
    /// points at lies between the segment header and the trailer.
    pub fn decode(buf: &[u8], file_len: u64) -> DecodeResult<Trailer> {
        if buf.len() != TRAILER_LEN || buf[24..] != TRAILER_MAGIC {
            return Err(DecodeError::new("no trailer"));
        }
        let mut b = Bytes::new(buf);
        let footer_offset = b.u64()?;
        let footer_len = b.u32()?;
        let footer_crc = b.u32()?;
        let version = b.u16()?;
        let _ = b.u16()?;
        if b.u32()? != crc32fast::hash(&buf[..20]) {
            return Err(DecodeError::new("trailer checksum mismatch"));
        }
        check_version(version, "trailer")?;
        let end = footer_offset.checked_add(footer_len as u64);
        let trailer_at = file_len.checked_sub(TRAILER_LEN as u64);
        if footer_offset < SEGMENT_HEADER_LEN as u64 || end.is_none() || end != trailer_at {
            return Err(DecodeError::new("trailer points outside the file"));
        }
        Ok(Trailer {
            footer_offset,
            footer_len,
            footer_crc,
            version,
        })
    }
}

/// Where the blocks of a segment file's bytes end: at the footer when the trailer is valid,
/// else at the end of the bytes (an unsealed file).
pub fn blocks_end(segment: &[u8]) -> usize {
    segment
        .len()
        .checked_sub(TRAILER_LEN)
        .and_then(|at| Trailer::decode(&segment[at..], segment.len() as u64).ok())
        .map(|t| (t.footer_offset as usize).min(segment.len()))
        .unwrap_or(segment.len())
}

/// The blocks of a segment's bytes from its header to `end`, in file order: (offset, header,
/// the block's bytes). Stops after the first block that fails its checks (yielded as an error
/// with its offset): what follows it cannot be located.
pub fn blocks(
    segment: &[u8],
    end: usize,
) -> impl Iterator<Item = Result<(usize, super::BlockHeader, &[u8]), (usize, DecodeError)>> {
    let end = end.min(segment.len());
    let mut pos = SEGMENT_HEADER_LEN;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= end {
            return None;
        }
        let rest = &segment[pos..end];
        match super::block::parse_block(rest) {
            Ok(h) => {
                let len = h.total_len() as usize;
                let at = pos;
                pos += len;
                Some(Ok((at, h, &rest[..len])))
            }
            Err(e) => {
                failed = true;
                Some(Err((pos, e)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_trailer_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let h = SegmentHeader {
            lane_days: 90,
            segment_id: 12,
            created_ms: 1_700_000_000_000,
        };
        assert_eq!(SegmentHeader::decode(&h.encode())?, h);
        let t = Trailer {
            footer_offset: 100,
            footer_len: 50,
            footer_crc: 9,
            version: FORMAT_VERSION,
        };
        assert_eq!(Trailer::decode(&t.encode(), 182)?, t);
        assert!(Trailer::decode(&t.encode(), 183).is_err());
        let mut bad = t.encode();
        bad[3] ^= 1;
        assert!(Trailer::decode(&bad, 182).is_err());
        Ok(())
    }
}
