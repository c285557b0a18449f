//! The block-by-block scan that rebuilds a segment's index from its blocks (open-time recovery
//! of active segments and of segments whose footer failed its checks).

use crate::format::block::{self, peek_total_len, BLOCK_FIXED_LEN};
use crate::format::SEGMENT_HEADER_LEN;

use super::MemIndex;

/// What a block-by-block scan of a segment found.
pub(crate) struct Scan {
    pub index: MemIndex,
    /// End of the last good block: where a torn tail begins, and where appends resume.
    pub good_len: u64,
    /// Offsets of corrupt blocks skipped in the middle of the file (followed by good blocks).
    pub skipped: Vec<(u64, String)>,
    /// Why the scan stopped before the end of the file, if it did (a torn or corrupt tail).
    pub tail: Option<(u64, String)>,
}

/// Rebuilds the index of a segment from its blocks, from the header up to `end`; blocks of
/// format 1 take `created_ms` (the segment header's) as their arrival time.
///
/// A block that fails its checks ends the scan (a torn tail: everything after it is cut) unless
/// its length field is intact and another valid block starts right after it: then it is a
/// corrupt block in the middle of acknowledged data, and it is skipped, not cut.
pub(crate) fn scan_blocks(bytes: &[u8], end: u64, created_ms: i64) -> Scan {
    let mut scan = Scan {
        index: MemIndex::default(),
        good_len: SEGMENT_HEADER_LEN as u64,
        skipped: Vec::new(),
        tail: None,
    };
    let end = (end as usize).min(bytes.len());
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < end {
        match block::parse_block(&bytes[pos..end]) {
            Ok(h) => {
                scan.index.add_block(&h, pos as u64, created_ms);
                pos += h.total_len() as usize;
                scan.good_len = pos as u64;
            }
            Err(e) => {
                let next = peek_total_len(&bytes[pos..end.min(pos + BLOCK_FIXED_LEN)])
                    .ok()
                    .map(|n| pos as u64 + n)
                    .filter(|&n| n < end as u64);
                match next {
                    Some(n) if block::parse_block(&bytes[n as usize..end]).is_ok() => {
                        scan.skipped.push((pos as u64, e.0));
                        pos = n as usize;
                        scan.good_len = pos as u64;
                    }
                    _ => {
                        scan.tail = Some((pos as u64, e.0));
                        break;
                    }
                }
            }
        }
    }
    scan
}
