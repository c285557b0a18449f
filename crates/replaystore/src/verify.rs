//! Scrub: `Store::verify` reads every byte of every segment and checks it against everything
//! that describes it: block checksums and decompression, the footer's session table against
//! the blocks (every reference lands on a block of that session and person, every block is
//! referenced once, totals add up, the table is sorted, the bloom filter holds every session).

use serde::Serialize;
use std::collections::HashMap;

use crate::error::Result;
use crate::format::block::{decode_payloads, parse_block, peek_total_len};
use crate::format::footer::FooterTotals;
use crate::format::{key_hash, BlockHeader, SessionEntry, SEGMENT_HEADER_LEN};
use crate::segment::Segment;
use crate::segment_set::Version;

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

/// Checks every segment of `current` (see the module comment).
pub(crate) fn verify(current: &Version) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    for seg in current.segments() {
        verify_segment(seg, &mut report)?;
    }
    report.segments = current.segments().len() as u64;
    Ok(report)
}

fn verify_segment(seg: &Segment, report: &mut VerifyReport) -> Result<()> {
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
    let mut check = SegmentCheck {
        seg,
        name: seg.path.display().to_string(),
        report,
        blocks: HashMap::new(),
        totals: FooterTotals::default(),
    };
    if end > map.len() {
        let why = format!(
            "index points to {end}, past the end of the file ({})",
            map.len()
        );
        check.problem(0, why);
        return Ok(());
    }
    check.walk_blocks(&map[..end]);
    let mut last_key = None;
    for entry in entries {
        match entry {
            Ok(e) => check.entry(&e, &mut last_key),
            Err(why) => check.problem(0, why),
        }
    }
    check.references();
    check.footer_totals();
    Ok(())
}

/// The checks of one segment, and what they found so far.
struct SegmentCheck<'a> {
    seg: &'a Segment,
    name: String,
    report: &'a mut VerifyReport,
    /// Good blocks by offset.
    blocks: HashMap<u64, Found>,
    /// Totals of the good blocks, to compare with the footer's.
    totals: FooterTotals,
}

impl SegmentCheck<'_> {
    fn problem(&mut self, at: u64, what: String) {
        let line = format!("{} @{at}: {what}", self.name);
        self.report.problems.push(line);
    }

    /// Walks the blocks of `bytes` (the segment up to its footer); a bad block whose length is
    /// readable is skipped, any other ends the walk.
    fn walk_blocks(&mut self, bytes: &[u8]) {
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            match parse_block(rest) {
                Ok(h) => {
                    let len = h.total_len() as usize;
                    if let Err(e) = decode_payloads(&h, &rest[..len]) {
                        self.problem(pos as u64, format!("block does not decompress: {}", e.0));
                    }
                    self.add_block(pos as u64, h, len);
                    pos += len;
                }
                Err(e) => {
                    self.problem(pos as u64, format!("bad block: {}", e.0));
                    match peek_total_len(rest) {
                        Ok(n) if n > 0 => pos += n as usize,
                        _ => break,
                    }
                }
            }
        }
    }

    fn add_block(&mut self, pos: u64, h: BlockHeader, len: usize) {
        let arrival = h.arrival(self.seg.created_ms);
        let totals = &mut self.totals;
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
        self.report.blocks += 1;
        self.report.bytes += len as u64;
        let found = Found {
            team: h.team,
            session: h.session,
            person: h.person,
            len: len as u32,
            chunks: h.chunks.len() as u32,
            referenced: 0,
        };
        self.blocks.insert(pos, found);
    }

    /// One record of the session table against the blocks (and, for a footer, its order and
    /// the bloom filter).
    fn entry(&mut self, e: &SessionEntry, last_key: &mut Option<(u64, u64)>) {
        self.report.sessions += 1;
        let key = (e.team, key_hash(e.team, &e.session));
        if let Some(f) = self.seg.footer() {
            if last_key.is_some_and(|k| k > key) {
                self.problem(0, format!("session table out of order at {}", e.session));
            }
            if !f.bloom.may_contain(key.1) {
                self.problem(0, format!("bloom filter misses session {}", e.session));
            }
        }
        *last_key = Some(key);
        let mut chunks = 0;
        for r in &e.blocks {
            let Some(b) = self.blocks.get_mut(&r.offset) else {
                let why = format!("session {} points to no valid block", e.session);
                self.problem(r.offset, why);
                continue;
            };
            b.referenced += 1;
            chunks += b.chunks;
            let owner = (b.team, b.session.as_str(), b.person.as_str());
            if owner != (e.team, e.session.as_str(), e.person.as_str()) || b.len != r.len {
                let why = format!(
                    "block does not belong to session {} / {}",
                    e.session, e.person
                );
                self.problem(r.offset, why);
            }
        }
        if chunks != e.chunk_count {
            let why = format!(
                "session {}: {} chunks indexed, {chunks} in its blocks",
                e.session, e.chunk_count
            );
            self.problem(0, why);
        }
    }

    /// Every good block is referenced exactly once.
    fn references(&mut self) {
        let wrong: Vec<(u64, String)> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.referenced != 1)
            .map(|(off, b)| {
                let why = format!(
                    "block of session {} referenced {} times",
                    b.session, b.referenced
                );
                (*off, why)
            })
            .collect();
        for (off, why) in wrong {
            self.problem(off, why);
        }
    }

    /// The footer's totals are the blocks' totals.
    fn footer_totals(&mut self) {
        let Some(f) = self.seg.footer() else {
            return;
        };
        let (t, b) = (f.totals, self.totals);
        let key = |t: &FooterTotals| {
            (
                (t.min_ts, t.max_ts, t.min_arrival_ms, t.max_arrival_ms),
                (t.block_count, t.chunk_count, t.raw_bytes, t.stored_bytes),
            )
        };
        if key(&t) != key(&b) {
            let why = format!("footer totals {t:?} differ from the blocks' {b:?}");
            self.problem(f.offset, why);
        }
    }
}
