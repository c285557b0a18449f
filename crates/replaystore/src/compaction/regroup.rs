//! Regrouping: the cold copy of idle data. Within a job (sealed segments of one lane whose data
//! is older than `regroup_idle`), all surviving blocks of a session become one block (more if
//! past 64 MiB, or cut at a keyframe past `keyframe_block_bytes` so that a read from a point
//! in the session decompresses from about there) compressed at `regroup_level`, optionally
//! after the configured payload transform. The hot path stays at a fast level with one block
//! per session per flush; this is where the bytes per session drop.
//!
//! Chunks keep their boundaries, windows and timestamps, and their order: they are sorted by
//! (first_ts, seq, position) as reads sort them, and the new block takes the highest seq of the
//! blocks it replaces.

use std::collections::HashMap;
use std::sync::Arc;

use crate::annotation::{merge_parts, Annotation};
use crate::chunk::{Chunk, Group, Stamped};
use crate::compress::{
    cut_at_keyframes, encode, parallel_map, split_groups, transform_chunks, Encoded,
};
use crate::error::Result;
use crate::format::block::{BLOCK_REGROUPED, BLOCK_TRANSFORMED};
use crate::format::footer::SEGMENT_REGROUPED;
use crate::format::{BlockHeader, BlockRef, BlockWriter, Stamp};
use crate::segment::Segment;

use super::output::Output;
use super::{CompactionReport, Compactor, Sieve};

/// Sessions encoded in parallel at a time (bounds the memory of decoded payloads).
const BATCH: usize = 32;

type SessionKey = (u64, String, String);

/// A chunk read back for regrouping, with its sort key: (first_ts, block seq, index in
/// block), the order reads return chunks in.
struct SortedChunk {
    key: (i64, u64, usize),
    chunk: Stamped,
}

impl Compactor<'_> {
    /// Jobs: per lane, in id order, sealed segments not yet regrouped whose newest chunk
    /// arrived more than `regroup_idle` ago (store clock), packed up to `regroup_job_bytes`.
    pub(super) fn regroup_jobs(&self, now: i64) -> Vec<Vec<Arc<Segment>>> {
        let Some(idle_since) = self.config.regroup_due_before(now) else {
            return Vec::new();
        };
        let mut segs: Vec<Arc<Segment>> = self
            .segments
            .current()
            .inactive()
            .filter(|s| s.is_sealed() && !s.is_remote())
            .filter(|s| {
                let t = s.totals();
                t.flags & SEGMENT_REGROUPED == 0 && t.max_arrival_ms <= idle_since
            })
            .cloned()
            .collect();
        segs.sort_by_key(|s| (s.lane_days, s.id));
        let mut jobs: Vec<Vec<Arc<Segment>>> = Vec::new();
        let mut bytes = 0;
        for s in segs {
            let size = s.size();
            let fits = jobs.last().is_some_and(|j| {
                j[0].lane_days == s.lane_days && bytes + size <= self.config.regroup_job_bytes
            });
            if fits {
                bytes += size;
                if let Some(j) = jobs.last_mut() {
                    j.push(s);
                }
            } else {
                bytes = size;
                jobs.push(vec![s]);
            }
        }
        jobs
    }

    /// Regroups one job's sources into one new segment.
    pub(super) fn regroup(
        &self,
        sources: &[Arc<Segment>],
        sieve: &mut Sieve,
        report: &mut CompactionReport,
    ) -> Result<()> {
        // 1. The surviving blocks of each session, in order of first appearance.
        let mut order: Vec<SessionKey> = Vec::new();
        let mut blocks: HashMap<SessionKey, Vec<(usize, BlockRef)>> = HashMap::new();
        for (i, src) in sources.iter().enumerate() {
            src.for_each_block(&mut |offset, bytes, h| {
                if sieve.keep(src, bytes, h, report) {
                    let key = (h.team, h.session.clone(), h.person.clone());
                    let r = BlockRef {
                        offset,
                        len: bytes.len() as u32,
                        chunks: h.chunks.len() as u32,
                        arrival: h.arrival(src.created_ms),
                    };
                    let list = blocks.entry(key.clone()).or_insert_with(|| {
                        order.push(key);
                        Vec::new()
                    });
                    list.push((i, r));
                }
                Ok(())
            })?;
        }
        // 2. One block per session, encoded in parallel batches, written in order.
        let created = sources.iter().map(|s| s.created_ms).min().unwrap_or(0);
        let mut out = Output::create(self, sources[0].lane_days, created)?;
        let level = self.config.regroup_level;
        for batch in order.chunks(BATCH) {
            let encoded = parallel_map(
                batch,
                self.config.compression_threads,
                || BlockWriter::new(level),
                |w, key| {
                    self.regroup_session(w, sources, &blocks[key])
                        .map_err(|e| std::io::Error::other(e.to_string()))
                },
            )
            .map_err(|e| crate::error::Error::io("regroup sessions", e))?;
            for session in &encoded {
                report.sessions_kept_apart += session.kept_apart as u64;
                for (bytes, h) in &session.encoded {
                    out.push(bytes, h)?;
                }
            }
        }
        out.commit(sources, SEGMENT_REGROUPED, report)
    }

    /// Reads a session's blocks and encodes its chunks anew as one block (or a few). Without
    /// an annotator, a session with several annotated blocks cannot have them merged: each of
    /// its blocks is re-encoded alone, keeping its own annotation.
    fn regroup_session(
        &self,
        w: &mut BlockWriter,
        sources: &[Arc<Segment>],
        refs: &[(usize, BlockRef)],
    ) -> Result<Regrouped> {
        let blocks = refs
            .iter()
            .map(|&(i, r)| {
                let (header, payloads) = sources[i].read_block(r)?;
                let created_ms = sources[i].created_ms;
                Ok(SourceBlock {
                    header,
                    payloads,
                    created_ms,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let annotated = blocks.iter().filter(|b| b.header.annotation.is_some());
        if annotated.count() > 1 && self.config.parts.annotator.is_none() {
            let mut encoded = Vec::new();
            for b in blocks {
                encoded.extend(self.encode_session(w, vec![b])?);
            }
            return Ok(Regrouped {
                encoded,
                kept_apart: true,
            });
        }
        Ok(Regrouped {
            encoded: self.encode_session(w, blocks)?,
            kept_apart: false,
        })
    }

    /// Encodes the chunks of some blocks of one session as one block (more if past 64 MiB),
    /// in read order, with their annotations merged.
    fn encode_session(
        &self,
        w: &mut BlockWriter,
        blocks: Vec<SourceBlock>,
    ) -> Result<Vec<Encoded>> {
        let mut chunks: Vec<SortedChunk> = Vec::new();
        let mut notes: Vec<Annotation> = Vec::new();
        let mut max_seq = 0;
        let mut transformed = false;
        for SourceBlock {
            header: h,
            payloads,
            created_ms,
        } in blocks
        {
            max_seq = max_seq.max(h.seq);
            transformed |= h.flags & BLOCK_TRANSFORMED != 0;
            for (k, (c, payload)) in h.chunks.iter().zip(payloads).enumerate() {
                let chunk = Chunk {
                    team: h.team,
                    session_id: h.session.clone(),
                    person: h.person.clone(),
                    window_id: c.window.and_then(|x| h.windows.get(x as usize).cloned()),
                    first_ts_ms: c.first_ts,
                    last_ts_ms: c.last_ts,
                    sent_at_ms: None,
                    payload,
                };
                let stamp = Stamp {
                    arrival_ms: c.arrival_ms.unwrap_or(created_ms),
                    clock_offset_ms: 0, // recorded by the annotation, if at all
                    // Kept, not computed again: the annotator saw the chunks as sent, and
                    // payloads may have been transformed since.
                    keyframe_ms: h.keyframe_of(k),
                    source_offset: c.source_offset,
                };
                chunks.push(SortedChunk {
                    key: (c.first_ts, h.seq, k),
                    chunk: Stamped { chunk, stamp },
                });
            }
            if let Some(bytes) = h.annotation {
                let first_ts_ms = h.first_ts;
                notes.push(Annotation { first_ts_ms, bytes });
            }
        }
        chunks.sort_by_key(|c| c.key);
        let mut group = Group::default();
        for c in chunks {
            group.push(c.chunk);
        }
        let Group { mut chunks, stamps } = group;
        if let Some(t) = self
            .config
            .parts
            .transform
            .as_ref()
            .filter(|_| !self.config.transform_at_ingest)
        {
            let changed;
            (chunks, changed) = transform_chunks(t.as_ref(), chunks);
            transformed |= changed;
        }
        let flags = BLOCK_REGROUPED | if transformed { BLOCK_TRANSFORMED } else { 0 };
        // The regrouped block's annotation is its parts' merged in time order.
        let note = merge_parts(self.config.parts.annotator.as_deref(), notes);
        let cut = cut_at_keyframes(Group { chunks, stamps }, self.config.keyframe_block_bytes);
        split_groups(cut)
            .iter()
            .enumerate()
            // A session in several blocks: the first carries the annotation of all.
            .map(|(k, g)| {
                let note = note.as_ref().filter(|_| k == 0).map(|n| n.bytes.as_slice());
                encode(w, max_seq, flags, note, &g.chunks, &g.stamps)
                    .map_err(|e| crate::error::Error::io("encode regrouped block", e))
            })
            .collect()
    }
}

/// A block read back for regrouping.
struct SourceBlock {
    header: BlockHeader,
    payloads: Vec<Vec<u8>>,
    /// Its segment's creation time: the arrival of chunks of format 1.
    created_ms: i64,
}

/// A session regrouped: its new blocks, and whether they were kept apart (see
/// `regroup_session`).
struct Regrouped {
    encoded: Vec<Encoded>,
    kept_apart: bool,
}
