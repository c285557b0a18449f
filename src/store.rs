//! `Store`: open and recovery, `append`, and `flush` with group commit.
//!
//! Write path: `append` validates and pushes into a write-buffer shard. A flush round (run by
//! whichever `flush` caller, or the background flusher, becomes leader) drains the buffer,
//! compresses one block per session on `compression_threads` threads with no lock held, writes
//! each lane's blocks with one write and one fdatasync, then publishes them to readers. Callers
//! that arrive while a round runs wait for the next one and share its fsync.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::chunk::Chunk;
use crate::compress::{compress_all, split_groups, Encoded};
use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::format::BlockHeader;
use crate::recovery::{recover, RecoveryReport};
use crate::segment::Segment;
use crate::write_buffer::WriteBuffer;
use crate::writer::ActiveWriter;

/// An embedded store. `Send + Sync`: share it between threads with an `Arc` or by reference.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct GroupState {
    started: u64,
    completed: u64,
    running: bool,
    /// Recent failed rounds and why (bounded).
    failures: Vec<(u64, String)>,
}

/// Counters exposed through `stats()`.
#[derive(Default)]
pub(crate) struct Counters {
    pub flush_rounds: AtomicU64,
    pub fsyncs: AtomicU64,
    pub segments_sealed: AtomicU64,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: Config,
    _lock: File,
    pub buffer: WriteBuffer,
    /// Every segment readers may look at, sealed and active, by id.
    pub segments: RwLock<Vec<Arc<Segment>>>,
    /// Active writer per lane; only the flush leader touches it.
    writers: Mutex<BTreeMap<u16, ActiveWriter>>,
    next_segment_id: AtomicU64,
    next_seq: AtomicU64,
    group: Mutex<GroupState>,
    group_cv: Condvar,
    kick: Mutex<bool>,
    kick_cv: Condvar,
    closed: AtomicBool,
    pub counters: Counters,
    pub recovery: RecoveryReport,
}

impl Store {
    /// Opens (or creates) the store in `dir`. Sealed segments are opened from their footers;
    /// only unsealed ones are scanned, and a torn tail is cut. Fails with `Error::Locked` if
    /// another process (or `Store`) has the directory open.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(|| format!("open {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: dir }),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", lock_path.display()), e))
            }
        }
        let now = config.clock.now_ms();
        let max_age = config.segment_max_age.as_millis() as i64;
        let rec = recover(&dir, now, max_age)?;
        let inner = Arc::new(Inner {
            buffer: WriteBuffer::new(config.buffer_shards),
            segments: RwLock::new(rec.segments),
            writers: Mutex::new(rec.writers),
            next_segment_id: AtomicU64::new(rec.next_segment_id),
            next_seq: AtomicU64::new(rec.next_seq),
            group: Mutex::new(GroupState::default()),
            group_cv: Condvar::new(),
            kick: Mutex::new(false),
            kick_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            recovery: rec.report,
            _lock: lock,
            dir,
            config,
        });
        let flusher = if inner.config.background_flush {
            let bg = inner.clone();
            let handle = std::thread::Builder::new()
                .name("replaystore-flush".into())
                .spawn(move || bg.background_loop())
                .ctx(|| "spawn the background flusher".to_string())?;
            Some(handle)
        } else {
            None
        };
        Ok(Store {
            inner,
            flusher: Mutex::new(flusher),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// What open found and repaired (torn tails cut, corrupt blocks skipped...).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Validates and buffers a chunk. Not durable until a later `flush()` returns. When more
    /// than twice `max_buffer_bytes` are buffered, the caller runs a flush itself (back-pressure).
    pub fn append(&self, chunk: Chunk) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        chunk.validate(inner.config.max_payload_bytes)?;
        let buffered = inner.buffer.push(chunk);
        let max = inner.config.max_buffer_bytes;
        if buffered >= max.saturating_mul(2) {
            inner.flush()?;
        } else if buffered >= max {
            inner.kick_flusher();
        }
        Ok(())
    }

    /// Returns once everything appended before the call is written and fsynced. Concurrent
    /// callers share one fsync.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Bytes appended and not yet flushed.
    pub fn buffered_bytes(&self) -> usize {
        self.inner.buffer.buffered_bytes()
    }

    /// Seals every active segment now (footer written), e.g. before copying the directory.
    pub fn seal_active(&self) -> Result<()> {
        self.inner.flush()?;
        let mut writers = self.inner.writers.lock();
        let lanes: Vec<u16> = writers.keys().copied().collect();
        for lane in lanes {
            self.inner.seal_lane(&mut writers, lane)?;
        }
        Ok(())
    }

    /// Flushes, stops the background flusher and releases the directory.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.kick_flusher();
        if let Some(h) = self.flusher.lock().take() {
            let _ = h.join();
        }
        self.inner.flush()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("flush on drop failed: {e}");
        }
    }
}

impl Inner {
    fn kick_flusher(&self) {
        *self.kick.lock() = true;
        self.kick_cv.notify_one();
    }

    /// Runs a flush round on every kick (buffer over `max_buffer_bytes`) and every tick
    /// (`flush_interval`, at most 1 s): rounds with nothing buffered still seal old segments.
    fn background_loop(&self) {
        let tick = self.config.flush_interval.min(Duration::from_secs(1));
        while !self.closed.load(Ordering::Acquire) {
            {
                let mut kicked = self.kick.lock();
                if !*kicked {
                    self.kick_cv.wait_for(&mut kicked, tick);
                }
                *kicked = false;
            }
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            if let Err(e) = self.flush() {
                log::error!("background flush failed: {e}");
            }
        }
    }

    /// Group commit: see the module comment.
    pub(crate) fn flush(&self) -> Result<()> {
        let mut g = self.group.lock();
        let needed = g.started + 1;
        loop {
            if g.completed >= needed {
                return match g.failures.iter().find(|(r, _)| *r == needed) {
                    Some((_, why)) => Err(Error::FlushFailed(why.clone())),
                    None => Ok(()),
                };
            }
            if g.running {
                self.group_cv.wait(&mut g);
                continue;
            }
            g.running = true;
            g.started += 1;
            let round = g.started;
            drop(g);
            let result = self.run_round();
            g = self.group.lock();
            g.running = false;
            g.completed = round;
            if let Err(e) = &result {
                g.failures.push((round, e.to_string()));
                let n = g.failures.len();
                if n > 64 {
                    g.failures.drain(..n - 64);
                }
            }
            self.group_cv.notify_all();
            if round >= needed {
                return result;
            }
        }
    }

    /// One flush round: drain, compress in parallel, write and fsync per lane, publish, then
    /// seal segments that are too old. Groups that did not become durable are requeued.
    fn run_round(&self) -> Result<()> {
        self.counters.flush_rounds.fetch_add(1, Ordering::Relaxed);
        let groups = split_groups(self.buffer.drain_groups());
        let now = self.config.clock.now_ms();
        let mut writers = self.writers.lock();
        let mut first_err = None;
        if !groups.is_empty() {
            let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
            match compress_all(&groups, seq, &self.config) {
                Err(e) => {
                    self.buffer.requeue(groups);
                    return Err(Error::io("compress blocks", e));
                }
                Ok(blocks) => {
                    let mut by_lane: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
                    for (i, g) in groups.iter().enumerate() {
                        by_lane
                            .entry(self.config.retention_days(g[0].team))
                            .or_default()
                            .push(i);
                    }
                    let mut failed = Vec::new();
                    for (lane, idxs) in by_lane {
                        if let Err((done, e)) =
                            self.write_lane(&mut writers, lane, &idxs, &blocks, now)
                        {
                            failed.extend_from_slice(&idxs[done..]);
                            first_err.get_or_insert(e);
                        }
                    }
                    if !failed.is_empty() {
                        failed.sort_unstable();
                        let mut groups: Vec<Option<Vec<Chunk>>> =
                            groups.into_iter().map(Some).collect();
                        self.buffer
                            .requeue(failed.iter().filter_map(|&i| groups[i].take()).collect());
                    }
                }
            }
        }
        let max_age = self.config.segment_max_age.as_millis() as i64;
        let old: Vec<u16> = writers
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.segment.created_ms) >= max_age)
            .map(|(lane, _)| *lane)
            .collect();
        for lane in old {
            if let Err(e) = self.seal_lane(&mut writers, lane) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Appends the blocks of groups `idxs` to the lane's active segment, rolling to a new
    /// segment when `segment_bytes` would be exceeded. On error returns how many of `idxs`
    /// were made durable before it.
    fn write_lane(
        &self,
        writers: &mut BTreeMap<u16, ActiveWriter>,
        lane: u16,
        idxs: &[usize],
        blocks: &[Encoded],
        now: i64,
    ) -> std::result::Result<(), (usize, Error)> {
        let mut done = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut placed: Vec<(BlockHeader, u64)> = Vec::new();
        for (k, &i) in idxs.iter().enumerate() {
            let (bytes, header) = &blocks[i];
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
        let w = ActiveWriter::create(&self.dir, lane, id, now)?;
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
        Ok(())
    }
}
