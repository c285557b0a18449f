//! Scrub: `Store::verify` reads every byte of every segment and checks it against everything
//! that describes it: block checksums and decompression, the footer's session table against
//! the blocks (every reference lands on a block of that session and person, every block is
//! referenced once, totals add up, the table is sorted, the bloom filter holds every session).

use serde::Serialize;
use std::collections::HashMap;

use crate::error::Result;
use crate::format::block::{decode_payloads, parse_block, peek_total_len};
use crate::format::footer::FooterTotals;
use crate::format::{key_hash, SEGMENT_HEADER_LEN};
use crate::segment::Segment;
use crate::store::Store;

/// What `verify` checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub segments: u64,
    pub blocks: u64,
    pub bytes: u64,
    pub sessions: u64,
    /// One line per problem: segment path, offset, what is wrong. Empty when all is well.
    pub problems: Vec<String>,
}

/// A good block found by walking a segment.
struct Found {
    team: u64,
    session: String,
    person: String,
    len: u32,
    chunks: u32,
    referenced: u32,
}

impl Store {
    /// Checks every segment (see the module comment). Reads everything: a scrub, not a hot path.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let segments = self.inner.segments.read().clone();
        for seg in &segments {
            verify_segment(seg, &mut report)?;
        }
        report.segments = segments.len() as u64;
        Ok(report)
    }
}

fn verify_segment(seg: &Segment, report: &mut VerifyReport) -> Result<()> {
    let name = seg.path.display().to_string();
    // A remote segment is downloaded whole (one GET) into a scratch file.
    let whole = seg.whole_bytes()?;
    let map = &whole.map;
    let entries = seg.all_entries();
    let end = match seg.footer() {
        Some(f) => f.offset as usize,
        None => entries
            .iter()
            .flatten()
            .flat_map(|e| e.blocks.iter().map(|r| (r.offset + r.len as u64) as usize))
            .max()
            .unwrap_or(SEGMENT_HEADER_LEN),
    };
    let mut problem = |at: u64, what: String| report.problems.push(format!("{name} @{at}: {what}"));
    if end > map.len() {
        problem(
            0,
            format!(
                "index points to {end}, past the end of the file ({})",
                map.len()
            ),
        );
        return Ok(());
    }

    // Walk the blocks.
    let mut blocks: HashMap<u64, Found> = HashMap::new();
    let mut totals = FooterTotals::default();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < end {
        let bytes = &map[pos..end];
        match parse_block(bytes) {
            Ok(h) => {
                let len = h.total_len() as usize;
                if let Err(e) = decode_payloads(&h, &bytes[..len]) {
                    problem(pos as u64, format!("block does not decompress: {}", e.0));
                }
                let arrival = h.arrival(seg.created_ms);
                if totals.block_count == 0 {
                    (totals.min_ts, totals.max_ts) = (h.first_ts, h.last_ts);
                    totals.min_arrival_ms = arrival.first_ms;
                    totals.max_arrival_ms = arrival.last_ms;
                }
                totals.min_ts = totals.min_ts.min(h.first_ts);
                totals.max_ts = totals.max_ts.max(h.last_ts);
                totals.min_arrival_ms = totals.min_arrival_ms.min(arrival.first_ms);
                totals.max_arrival_ms = totals.max_arrival_ms.max(arrival.last_ms);
                totals.block_count += 1;
                totals.chunk_count += h.chunks.len() as u64;
                totals.raw_bytes += h.raw_len as u64;
                totals.stored_bytes += len as u64;
                report.blocks += 1;
                report.bytes += len as u64;
                blocks.insert(
                    pos as u64,
                    Found {
                        team: h.team,
                        session: h.session,
                        person: h.person,
                        len: len as u32,
                        chunks: h.chunks.len() as u32,
                        referenced: 0,
                    },
                );
                pos += len;
            }
            Err(e) => {
                problem(pos as u64, format!("bad block: {}", e.0));
                match peek_total_len(bytes) {
                    Ok(n) if n > 0 => pos += n as usize,
                    _ => break,
                }
            }
        }
    }

    // The session table against the blocks.
    let mut last_key = None;
    for entry in entries {
        let e = match entry {
            Ok(e) => e,
            Err(why) => {
                problem(0, why);
                continue;
            }
        };
        report.sessions += 1;
        let key = (e.team, key_hash(e.team, &e.session));
        if let Some(f) = seg.footer() {
            if last_key.is_some_and(|k| k > key) {
                problem(0, format!("session table out of order at {}", e.session));
            }
            if !f.bloom.may_contain(key.1) {
                problem(0, format!("bloom filter misses session {}", e.session));
            }
        }
        last_key = Some(key);
        let mut chunks = 0;
        for r in &e.blocks {
            match blocks.get_mut(&r.offset) {
                None => problem(
                    r.offset,
                    format!("session {} points to no valid block", e.session),
                ),
                Some(b) => {
                    b.referenced += 1;
                    chunks += b.chunks;
                    if (b.team, b.session.as_str(), b.person.as_str())
                        != (e.team, e.session.as_str(), e.person.as_str())
                        || b.len != r.len
                    {
                        problem(
                            r.offset,
                            format!(
                                "block does not belong to session {} / {}",
                                e.session, e.person
                            ),
                        );
                    }
                }
            }
        }
        if chunks != e.chunk_count {
            problem(
                0,
                format!(
                    "session {}: {} chunks indexed, {chunks} in its blocks",
                    e.session, e.chunk_count
                ),
            );
        }
    }
    for (off, b) in &blocks {
        if b.referenced != 1 {
            problem(
                *off,
                format!(
                    "block of session {} referenced {} times",
                    b.session, b.referenced
                ),
            );
        }
    }
    if let Some(f) = seg.footer() {
        let t = f.totals;
        let same = (
            (t.min_ts, t.max_ts, t.min_arrival_ms, t.max_arrival_ms),
            t.block_count,
            t.chunk_count,
            t.raw_bytes,
            t.stored_bytes,
        ) == (
            (
                totals.min_ts,
                totals.max_ts,
                totals.min_arrival_ms,
                totals.max_arrival_ms,
            ),
            totals.block_count,
            totals.chunk_count,
            totals.raw_bytes,
            totals.stored_bytes,
        );
        if !same {
            problem(
                f.offset,
                format!("footer totals {t:?} differ from the blocks' {totals:?}"),
            );
        }
    }
    Ok(())
}
