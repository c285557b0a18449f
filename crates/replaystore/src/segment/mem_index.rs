//! The in-memory session index of an active segment (or of one whose footer failed its checks).

use std::collections::HashMap;

use crate::annotation::{merge_parts, Annotation, Annotator};
use crate::format::footer::FooterTotals;
use crate::format::{BlockHeader, BlockRef, SeekTable, SessionEntry};

/// The in-memory session index of an active (or footer-less) segment.
#[derive(Debug, Default)]
pub(crate) struct MemIndex {
    /// One entry per (session, person): a session whose person changes mid-way (an SDK that
    /// identifies its user late) has one entry per person, so deletion by person finds every
    /// block.
    pub sessions: HashMap<(u64, Box<str>), Vec<SessionEntry>>,
    pub totals: FooterTotals,
}

impl MemIndex {
    /// Records one block written (or found) at `offset`. `legacy_arrival_ms` (the segment's
    /// creation time) stands for the arrival of a block written before arrival times existed.
    pub fn add_block(&mut self, h: &BlockHeader, offset: u64, legacy_arrival_ms: i64) {
        let r = BlockRef {
            offset,
            len: h.total_len() as u32,
            chunks: h.chunks.len() as u32,
            arrival: h.arrival(legacy_arrival_ms),
        };
        let t = &mut self.totals;
        if t.block_count == 0 {
            t.min_ts = h.first_ts;
            t.max_ts = h.last_ts;
            t.min_arrival_ms = r.arrival.first_ms;
            t.max_arrival_ms = r.arrival.last_ms;
        }
        t.min_ts = t.min_ts.min(h.first_ts);
        t.max_ts = t.max_ts.max(h.last_ts);
        t.min_arrival_ms = t.min_arrival_ms.min(r.arrival.first_ms);
        t.max_arrival_ms = t.max_arrival_ms.max(r.arrival.last_ms);
        t.chunk_count += h.chunks.len() as u64;
        t.raw_bytes += h.raw_len as u64;
        t.stored_bytes += r.len as u64;
        t.block_count += 1;
        t.max_seq = t.max_seq.max(h.seq);
        let entries = self
            .sessions
            .entry((h.team, h.session.as_str().into()))
            .or_default();
        let at = match entries.iter().position(|e| e.person == h.person) {
            Some(i) => i,
            None => {
                entries.push(SessionEntry {
                    team: h.team,
                    session: h.session.clone(),
                    person: h.person.clone(),
                    first_ts: h.first_ts,
                    last_ts: h.last_ts,
                    chunk_count: 0,
                    raw_bytes: 0,
                    stored_bytes: 0,
                    blocks: Vec::new(),
                    annotations: Vec::new(),
                    seek: SeekTable::default(),
                });
                entries.len() - 1
            }
        };
        let e = &mut entries[at];
        if let Some(bytes) = &h.annotation {
            e.annotations.push(Annotation {
                first_ts_ms: h.first_ts,
                bytes: bytes.clone(),
            });
        }
        e.first_ts = e.first_ts.min(h.first_ts);
        e.last_ts = e.last_ts.max(h.last_ts);
        e.chunk_count += h.chunks.len() as u32;
        e.raw_bytes += h.raw_len as u64;
        e.stored_bytes += r.len as u64;
        e.blocks.push(r);
        e.seek.add_block(h);
    }

    /// The session records a footer gets: each with its blocks' annotations merged into one
    /// (none when they cannot be merged without an annotator: `merge_parts`).
    pub fn footer_entries(&self, annotator: Option<&dyn Annotator>) -> Vec<SessionEntry> {
        let mut entries: Vec<SessionEntry> = self.sessions.values().flatten().cloned().collect();
        for e in &mut entries {
            let parts = std::mem::take(&mut e.annotations);
            e.annotations.extend(merge_parts(annotator, parts));
        }
        entries
    }
}
