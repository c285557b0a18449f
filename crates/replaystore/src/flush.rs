//! One flush round (the leader's work in group commit): drain the write buffer, compress, write
//! and fsync each lane's blocks, publish them, roll and seal segments.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::chunk::Group;
use crate::compress::{compress_all, split_groups, Encoded};
use crate::error::{Error, Result};
use crate::format::BlockHeader;
use crate::segment::Segment;
use crate::store::Inner;
use crate::writer::ActiveWriter;

impl Inner {
    /// One flush round: drain, compress in parallel, write and fsync per lane, publish, then
    /// seal segments that are too old.
    ///
    /// Blocks that a failed round could not make durable are retried first by the next round,
    /// byte for byte as encoded (same seq and checksum): if a copy did reach the suspect file
    /// after all, readers recognise it as the same block and return it once.
    pub(crate) fn run_round(&self, round: u64) -> Result<()> {
        self.counters.flush_rounds.fetch_add(1, Ordering::Relaxed);
        let now = self.config.clock.now_ms();
        // Stage 1, compress: no lock held but the group's "compressing" flag.
        let groups = split_groups(self.buffer.drain_groups());
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let encoded = match groups.is_empty() {
            true => Ok(Vec::new()),
            false => compress_all(&groups, seq, &self.config),
        };
        // Stage 2, write: in round order. Taking the writers lock before letting the next round
        // compress keeps rounds in order, so a round that succeeds has also written every block
        // an earlier failed round left in the retry queue.
        let mut writers = self.writers.lock();
        let blocks = match encoded {
            Ok(blocks) => blocks,
            Err(e) => {
                self.buffer.requeue(groups);
                self.end_compress_stage();
                let result = Err(Error::io("compress blocks", e));
                self.finish_round(round, &result);
                return result;
            }
        };
        self.end_compress_stage();
        let mut by_lane: BTreeMap<u16, Vec<Encoded>> = BTreeMap::new();
        for (lane, block) in self.take_retries() {
            by_lane.entry(lane).or_default().push(block);
        }
        if !groups.is_empty() {
            let segments = self.segments.read().clone();
            for (g, block) in groups.iter().zip(blocks) {
                let lane = lane_for(&self.config, &segments, g);
                by_lane.entry(lane).or_default().push(block);
            }
        }
        let mut first_err = None;
        for (lane, blocks) in by_lane {
            if let Err((done, e)) = self.write_lane(&mut writers, lane, &blocks, now) {
                self.add_retries(blocks.into_iter().skip(done).map(|b| (lane, b)));
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.seal_aged(&mut writers, now) {
            first_err.get_or_insert(e);
        }
        let result = match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        };
        self.finish_round(round, &result);
        drop(writers);
        result
    }

    /// Seals every active segment created `segment_max_age` or more before `now` (store
    /// clock), so that retention can drop whole files; the first error is returned after
    /// trying them all.
    pub(crate) fn seal_aged(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        now: i64,
    ) -> Result<()> {
        let max_age = self.config.segment_max_age.as_millis() as i64;
        let old: Vec<u16> = writers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.segment.created_ms) >= max_age)
            .map(|(lane, _)| *lane)
            .collect();
        let mut first_err = None;
        for lane in old {
            if let Err(e) = self.seal_lane(writers, lane) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn take_retries(&self) -> Vec<(u16, Encoded)> {
        let blocks = std::mem::take(&mut *self.retry.lock());
        self.retry_bytes.store(0, Ordering::Release);
        blocks
    }

    fn add_retries(&self, blocks: impl Iterator<Item = (u16, Encoded)>) {
        let mut retry = self.retry.lock();
        for (lane, b) in blocks {
            self.retry_bytes.fetch_add(b.0.len(), Ordering::AcqRel);
            retry.push((lane, b));
        }
    }

    /// Appends blocks to the lane's active segment, rolling to a new segment when
    /// `segment_bytes` would be exceeded. On error returns how many of them were made durable.
    fn write_lane(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        lane: u16,
        blocks: &[Encoded],
        now: i64,
    ) -> std::result::Result<(), (usize, Error)> {
        let mut done = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut placed: Vec<(BlockHeader, u64)> = Vec::new();
        for (k, (bytes, header)) in blocks.iter().enumerate() {
            let len = match writers.get(&lane) {
                Some(w) if !w.is_empty() || !pending.is_empty() => w.len,
                Some(_) => 0, // an empty segment takes any block, however large
                None => {
                    self.new_writer(writers, lane, now).map_err(|e| (done, e))?;
                    0
                }
            };
            if len + (pending.len() + bytes.len()) as u64 > self.config.segment_bytes {
                self.commit(writers, lane, &mut pending, &mut placed)
                    .map_err(|e| (done, e))?;
                done = k;
                self.seal_lane(writers, lane).map_err(|e| (done, e))?;
                self.new_writer(writers, lane, now).map_err(|e| (done, e))?;
            }
            placed.push((header.clone(), pending.len() as u64));
            pending.extend_from_slice(bytes);
        }
        self.commit(writers, lane, &mut pending, &mut placed)
            .map_err(|e| (done, e))
    }

    fn new_writer(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        lane: u16,
        now: i64,
    ) -> Result<()> {
        let id = self.next_segment_id.fetch_add(1, Ordering::AcqRel);
        let w = ActiveWriter::create(&self.fs, &self.dir, lane, id, now)?;
        self.segments.write().push(w.segment.clone());
        writers.insert(lane, w);
        Ok(())
    }

    /// Writes and fsyncs `pending` to the lane's active segment, then makes its blocks
    /// visible. A failed write or fsync leaves the file suspect: the writer is dropped, so the
    /// next round appends to a new segment and never reports the suspect bytes as durable.
    fn commit(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        lane: u16,
        pending: &mut Vec<u8>,
        placed: &mut Vec<(BlockHeader, u64)>,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let Some(writer) = writers.get_mut(&lane) else {
            return Err(Error::FlushFailed(format!(
                "no active segment in lane {lane}"
            )));
        };
        if let Err(e) = writer.write_durable(pending) {
            log::error!(
                "segment {} is suspect after a failed write; appends move to a new segment",
                writer.segment.path.display()
            );
            writers.remove(&lane);
            return Err(e);
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        writer.publish(placed, pending.len() as u64);
        pending.clear();
        placed.clear();
        Ok(())
    }

    /// Seals the lane's active segment and swaps the sealed version in for readers.
    pub(crate) fn seal_lane(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        lane: u16,
    ) -> Result<()> {
        let Some(w) = writers.remove(&lane) else {
            return Ok(());
        };
        let id = w.segment.id;
        let sealed = Arc::new(w.seal()?);
        self.counters
            .segments_sealed
            .fetch_add(1, Ordering::Relaxed);
        let mut segs = self.segments.write();
        if let Some(slot) = segs.iter_mut().find(|s| s.id == id) {
            *slot = sealed;
        }
        // The uploader (remote tier) copies it to the bucket now, not at the next tick.
        self.upload_signal.kick();
        Ok(())
    }
}

/// Sessions are assumed to last at most this long (posthog-js caps a session at 24 h): only
/// segments with data this recent can hold the start of a session that is still sending.
const SESSION_MAX_SPAN_MS: i64 = 24 * 3600 * 1000;

/// The lane of a session is fixed by its first chunk: the team's retention when the session
/// started. If the team's retention changed since, the session's earlier blocks sit in another
/// lane's recent segments (by arrival time), and its new blocks follow them there.
fn lane_for(config: &crate::config::Config, segments: &[Arc<Segment>], g: &Group) -> u16 {
    let (c, arrival) = (&g.chunks[0], g.stamps[0].arrival_ms);
    let configured = config.retention_days(c.team);
    let since = arrival.saturating_sub(SESSION_MAX_SPAN_MS);
    segments
        .iter()
        .filter(|s| s.lane_days != configured && s.totals().max_arrival_ms >= since)
        .find(|s| s.contains(c.team, &c.session_id).unwrap_or(false))
        .map_or(configured, |s| s.lane_days)
}
