//! `FlushPipeline`: the write buffer, group commit, the retry queue and the active writers.
//!
//! `append` pushes validated chunks into the buffer. A flush round (run by whichever `flush`
//! caller, or the background flusher, becomes leader) drains the buffer, compresses one block
//! per session on `compression_threads` threads with no lock held, writes each lane's blocks
//! with one write and one fdatasync, then publishes them to readers (through the segment set).
//! Callers that arrive while a round runs wait for the next one and share its fsync. Rounds
//! overlap by one stage: the next round may drain and compress while the previous one writes
//! and fsyncs; they still finish in order.
//!
//! Locks, in the order they are taken: `writers`, then `group` or `retry` (never both); the
//! segment set's lock and the signals are taken under them and hold nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::chunk::{Chunk, Group, Stamped};
use crate::compress::{compress_all, split_groups, Encoded};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::BlockHeader;
use crate::fs::Fs;
use crate::segment::Segment;
use crate::segment_set::{Edit, SegmentSet, Version};
use crate::signal::Signal;
use crate::write_buffer::WriteBuffer;
use crate::writer::ActiveWriter;

/// Failed rounds remembered for the callers that wait on them.
const FAILURES_KEPT: usize = 64;

#[derive(Default)]
struct GroupState {
    started: u64,
    completed: u64,
    /// A round is draining and compressing. At most one does at a time; another round may be
    /// writing and fsyncing meanwhile (compression of round N+1 overlaps the fsync of round N).
    compressing: bool,
    /// Recent failed rounds (at most `FAILURES_KEPT`).
    failures: Vec<FailedRound>,
}

struct FailedRound {
    round: u64,
    why: String,
}

/// An encoded block a failed round could not make durable, and the lane it goes to.
struct Retry {
    lane: u16,
    block: Encoded,
}

/// Blocks waiting for the next round, and their bytes (read by back-pressure without the lock).
#[derive(Default)]
struct RetryQueue {
    blocks: Mutex<Vec<Retry>>,
    bytes: AtomicUsize,
}

/// Counters of the pipeline, exposed through `Store::stats`.
#[derive(Default)]
pub(crate) struct FlushCounters {
    pub rounds: AtomicU64,
    pub fsyncs: AtomicU64,
    pub segments_sealed: AtomicU64,
}

/// What a flush pipeline starts from (the state `Store::open` recovered).
pub(crate) struct PipelineStart {
    pub dir: PathBuf,
    pub config: Config,
    pub fs: Fs,
    pub segments: Arc<SegmentSet>,
    pub writers: BTreeMap<u16, ActiveWriter>,
    pub next_seq: u64,
    /// Kicked whenever a segment is sealed (the remote tier's uploader waits on it).
    pub sealed: Arc<Signal>,
}

pub(crate) struct FlushPipeline {
    dir: PathBuf,
    config: Config,
    fs: Fs,
    segments: Arc<SegmentSet>,
    buffer: WriteBuffer,
    /// Active writer per lane; only the flush leader (and sealing) touches it.
    writers: Mutex<BTreeMap<u16, ActiveWriter>>,
    retry: RetryQueue,
    next_seq: AtomicU64,
    group: Mutex<GroupState>,
    group_cv: Condvar,
    /// Wakes the background flusher (buffer full, or closing).
    signal: Signal,
    sealed: Arc<Signal>,
    counters: FlushCounters,
}

impl FlushPipeline {
    pub fn new(start: PipelineStart) -> FlushPipeline {
        let v = start.segments.current();
        for (lane, w) in &start.writers {
            assert!(v.is_active(w.segment.id), "writer of lane {lane} is active");
            debug_assert_eq!(w.segment.lane_days, *lane);
        }
        FlushPipeline {
            buffer: WriteBuffer::new(start.config.buffer_shards),
            writers: Mutex::new(start.writers),
            retry: RetryQueue::default(),
            next_seq: AtomicU64::new(start.next_seq),
            group: Mutex::new(GroupState::default()),
            group_cv: Condvar::new(),
            signal: Signal::default(),
            sealed: start.sealed,
            counters: FlushCounters::default(),
            segments: start.segments,
            dir: start.dir,
            config: start.config,
            fs: start.fs,
        }
    }

    /// Buffers an accepted chunk; returns the bytes now buffered.
    pub fn push(&self, chunk: Stamped) -> usize {
        self.buffer.push(chunk)
    }

    /// Drops buffered chunks matching `pred` (a deletion); returns how many.
    pub fn purge(&self, pred: impl Fn(&Chunk) -> bool) -> usize {
        self.buffer.purge(pred)
    }

    /// Bytes appended and not yet flushed.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.buffered_bytes()
    }

    /// Memory held for writing: buffered chunks plus blocks awaiting a retry.
    pub fn held_bytes(&self) -> usize {
        self.buffer.buffered_bytes() + self.retry.bytes.load(Ordering::Acquire)
    }

    /// The background flusher's signal.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }

    pub fn flush_interval(&self) -> std::time::Duration {
        self.config.flush_interval
    }

    pub fn counters(&self) -> &FlushCounters {
        &self.counters
    }

    /// Forgets everything not yet durable, as a crash would (`Store::simulate_crash`).
    pub fn drop_unflushed(&self) {
        self.buffer.purge(|_| true);
        self.take_retries();
    }

    /// Seals every active segment now.
    pub fn seal_all(&self) -> Result<()> {
        let mut writers = self.writers.lock();
        let lanes: Vec<u16> = writers.keys().copied().collect();
        for lane in lanes {
            self.seal_lane(&mut writers, lane)?;
        }
        Ok(())
    }

    /// Seals the active segments for which `pred` holds (compaction: those holding blocks of
    /// a pending deletion).
    pub fn seal_where(&self, mut pred: impl FnMut(&Segment) -> Result<bool>) -> Result<()> {
        let mut writers = self.writers.lock();
        let mut lanes = Vec::new();
        for (lane, w) in writers.iter() {
            if pred(&w.segment)? {
                lanes.push(*lane);
            }
        }
        for lane in lanes {
            self.seal_lane(&mut writers, lane)?;
        }
        Ok(())
    }

    /// Seals the active segments due at `now` (store clock): old (see `seal_aged`), or idle
    /// for regrouping (their newest chunk arrived before `Config::regroup_due_before`), so that
    /// a compaction pass at `now` finds every due byte sealed. Flush rounds seal only old
    /// segments: sealing idle ones is for the pass that regroups them right after.
    pub fn seal_due_at(&self, now: i64) -> Result<()> {
        let idle_before = self.config.regroup_due_before(now);
        let idle = |w: &ActiveWriter| {
            idle_before.is_some_and(|t| !w.is_empty() && w.segment.totals().max_arrival_ms <= t)
        };
        let mut writers = self.writers.lock();
        self.seal_matching(&mut writers, |w| self.is_aged(w, now) || idle(w))
    }

    /// Group commit: returns once a round that started after the call has finished (see the
    /// module comment). Concurrent callers share one round.
    pub fn flush(&self) -> Result<()> {
        let mut g = self.group.lock();
        let needed = g.started + 1;
        loop {
            if g.completed >= needed {
                return match g.failures.iter().find(|f| f.round == needed) {
                    Some(f) => Err(Error::FlushFailed(f.why.clone())),
                    None => Ok(()),
                };
            }
            if g.compressing || g.started >= needed {
                self.group_cv.wait(&mut g);
                continue;
            }
            g.compressing = true;
            g.started += 1;
            let round = g.started;
            drop(g);
            // The round records its own completion (`finish_round`) while it still holds the
            // writers lock, so completions are recorded in round order.
            let result = self.run_round(round);
            g = self.group.lock();
            if round >= needed {
                return result;
            }
        }
    }

    /// Records that `round` finished, and how. Called with the writers lock held, so that a
    /// waiter never sees round N+1 complete before N's outcome is known.
    fn finish_round(&self, round: u64, result: &Result<()>) {
        let mut g = self.group.lock();
        debug_assert!(round > g.completed, "rounds complete in order");
        g.completed = g.completed.max(round);
        if let Err(e) = result {
            let why = e.to_string();
            g.failures.push(FailedRound { round, why });
            let n = g.failures.len();
            if n > FAILURES_KEPT {
                g.failures.drain(..n - FAILURES_KEPT);
            }
        }
        drop(g);
        self.group_cv.notify_all();
    }

    /// Called by a round once it holds the writers lock: the next round may start compressing.
    fn end_compress_stage(&self) {
        let mut g = self.group.lock();
        debug_assert!(g.compressing, "only the compressing round ends the stage");
        g.compressing = false;
        drop(g);
        self.group_cv.notify_all();
    }
}

impl FlushPipeline {
    /// One flush round: drain, compress in parallel, write and fsync per lane, publish, then
    /// seal segments that are too old.
    ///
    /// Blocks that a failed round could not make durable are retried first by the next round,
    /// byte for byte as encoded (same seq and checksum): if a copy did reach the suspect file
    /// after all, readers recognise it as the same block and return it once.
    fn run_round(&self, round: u64) -> Result<()> {
        self.counters.rounds.fetch_add(1, Ordering::Relaxed);
        let now = self.config.parts.clock.now_ms();
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
        for r in self.take_retries() {
            by_lane.entry(r.lane).or_default().push(r.block);
        }
        if !groups.is_empty() {
            let segments = self.segments.current();
            for (g, block) in groups.iter().zip(blocks) {
                let lane = lane_for(&self.config, &segments, g);
                by_lane.entry(lane).or_default().push(block);
            }
        }
        let mut first_err = None;
        for (lane, blocks) in by_lane {
            if let Err((done, e)) = self.write_lane(&mut writers, lane, &blocks, now) {
                let left = blocks.into_iter().skip(done);
                self.add_retries(left.map(|block| Retry { lane, block }));
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
    fn seal_aged(&self, writers: &mut BTreeMap<u16, ActiveWriter>, now: i64) -> Result<()> {
        self.seal_matching(writers, |w| self.is_aged(w, now))
    }

    /// Whether the active segment was created `segment_max_age` or more before `now`.
    fn is_aged(&self, w: &ActiveWriter, now: i64) -> bool {
        let max_age = self.config.segment_max_age.as_millis() as i64;
        now.saturating_sub(w.segment.created_ms) >= max_age
    }

    /// Seals the active segments `pred` picks; the first error is returned after trying them
    /// all.
    fn seal_matching(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        pred: impl Fn(&ActiveWriter) -> bool,
    ) -> Result<()> {
        let picked: Vec<u16> = writers
            .iter()
            .filter(|(_, w)| pred(w))
            .map(|(lane, _)| *lane)
            .collect();
        let mut first_err = None;
        for lane in picked {
            if let Err(e) = self.seal_lane(writers, lane) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn take_retries(&self) -> Vec<Retry> {
        let mut queue = self.retry.blocks.lock();
        self.retry.bytes.store(0, Ordering::Release);
        std::mem::take(&mut *queue)
    }

    fn add_retries(&self, blocks: impl Iterator<Item = Retry>) {
        let mut queue = self.retry.blocks.lock();
        for r in blocks {
            self.retry
                .bytes
                .fetch_add(r.block.0.len(), Ordering::AcqRel);
            queue.push(r);
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
        debug_assert!(!writers.contains_key(&lane), "one active segment per lane");
        let id = self.segments.allocate_id();
        let w = ActiveWriter::create(&self.fs, &self.dir, lane, id, now)?;
        self.segments
            .apply(Edit::default().add_active(w.segment.clone()));
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
            let id = writer.segment.id;
            writers.remove(&lane);
            // Its durable blocks stay readable; appends go elsewhere from now on.
            self.segments.apply(Edit::default().retire_writer(id));
            return Err(e);
        }
        // Durable, not yet acknowledged: a process killed here leaves blocks that its caller
        // never heard of (a Kafka consumer has not committed their offsets).
        crate::failpoint::crash_point("flush:after_sync");
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        writer.publish(placed, pending.len() as u64);
        let sessions: Vec<(u64, &str)> = placed
            .iter()
            .map(|(h, _)| (h.team, h.session.as_str()))
            .collect();
        self.segments.published(writer.segment.id, &sessions);
        pending.clear();
        placed.clear();
        Ok(())
    }

    /// Seals the lane's active segment and swaps the sealed version in for readers.
    fn seal_lane(&self, writers: &mut BTreeMap<u16, ActiveWriter>, lane: u16) -> Result<()> {
        let Some(w) = writers.remove(&lane) else {
            return Ok(());
        };
        let id = w.segment.id;
        let sealed = match w.seal(self.config.parts.annotator.as_deref()) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                // Unsealed but without a writer: readable, and sealed again at the next open.
                self.segments.apply(Edit::default().retire_writer(id));
                return Err(e);
            }
        };
        self.counters
            .segments_sealed
            .fetch_add(1, Ordering::Relaxed);
        self.segments.apply(Edit::default().seal(sealed));
        // The uploader (remote tier) copies it to the bucket now, not at the next tick.
        self.sealed.kick();
        Ok(())
    }
}

/// Sessions are assumed to last at most this long (recording SDKs cap a session at 24 h): only
/// segments with data this recent can hold the start of a session that is still sending.
const SESSION_MAX_SPAN_MS: i64 = 24 * 3600 * 1000;

/// The lane of a session is fixed by its first chunk: the team's retention when the session
/// started. If the team's retention changed since, the session's earlier blocks sit in another
/// lane's recent segments (by arrival time), and its new blocks follow them there.
fn lane_for(config: &Config, segments: &Version, g: &Group) -> u16 {
    let (c, arrival) = (&g.chunks[0], g.stamps[0].arrival_ms);
    let configured = config.retention_days(c.team);
    let since = arrival.saturating_sub(SESSION_MAX_SPAN_MS);
    segments
        .segments()
        .iter()
        .filter(|s| s.lane_days != configured && s.totals().max_arrival_ms >= since)
        .find(|s| s.contains(c.team, &c.session_id).unwrap_or(false))
        .map_or(configured, |s| s.lane_days)
}
