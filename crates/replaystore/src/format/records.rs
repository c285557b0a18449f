//! Framed records: the layout of the tombstone log (docs/format.md, "Tombstone log").
//!
//! ```text
//! record: len u32 | crc32 u32 of the body | body (len bytes, <= max_len)
//! ```
//! A reader stops at the first record whose length or checksum fails: what follows a torn or
//! damaged record cannot be trusted to start where the length says.

use super::put_u32;

/// Appends `body` to `out` as one framed record.
pub fn frame(body: &[u8], out: &mut Vec<u8>) {
    put_u32(out, body.len() as u32);
    put_u32(out, crc32fast::hash(body));
    out.extend_from_slice(body);
}

/// One record found by `records`: where it starts, and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: usize,
    pub body: &'a [u8],
}

impl Record<'_> {
    /// Where the next record starts.
    pub fn end(&self) -> usize {
        self.offset + 8 + self.body.len()
    }
}

/// The whole, valid records at the start of `bytes`, in order, up to the first record whose
/// length exceeds `max_len` or the bytes available, or whose checksum fails.
pub fn records(bytes: &[u8], max_len: usize) -> impl Iterator<Item = Record<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let head = bytes.get(pos..pos.checked_add(8)?)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > max_len {
            return None;
        }
        let body = bytes.get(pos + 8..pos + 8 + len)?;
        if crc32fast::hash(body) != crc {
            return None;
        }
        let r = Record { offset: pos, body };
        pos = r.end();
        Some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_stop_at_damage() {
        let mut log = Vec::new();
        for body in [&b"first"[..], b"", b"third record"] {
            frame(body, &mut log);
        }
        let all: Vec<&[u8]> = records(&log, 64).map(|r| r.body).collect();
        assert_eq!(all, vec![&b"first"[..], b"", b"third record"]);
        // A torn tail ends the sequence at the last whole record.
        for cut in 0..log.len() {
            let n = records(&log[..cut], 64).count();
            assert!(n < 3, "cut at {cut}");
        }
        // A damaged second record stops the sequence before it.
        let mut bad = log.clone();
        bad[17] ^= 1; // the crc of record 2 (its body is empty)
        assert_eq!(records(&bad, 64).count(), 1);
        // A length over the bound is not trusted.
        assert_eq!(records(&log, 4).count(), 0);
    }
}
