//! `Store`: open and recovery, `append`, and `flush` with group commit.
//!
//! Write path: `append` validates and pushes into a write-buffer shard. A flush round (run by
//! whichever `flush` caller, or the background flusher, becomes leader) drains the buffer,
//! compresses one block per session on `compression_threads` threads with no lock held, writes
//! each lane's blocks with one write and one fdatasync, then publishes them to readers. Callers
//! that arrive while a round runs wait for the next one and share its fsync. Rounds overlap by
//! one stage: the next round may drain and compress while the previous one writes and fsyncs;
//! they still finish in order (see `flush.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::background::Signal;
use crate::chunk::{Chunk, ClockRules, Stamped};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::recovery::{recover, RecoveryReport};
use crate::segment::Segment;
use crate::tombstone::Tombstones;
use crate::write_buffer::WriteBuffer;
use crate::writer::ActiveWriter;

/// An embedded store. `Send + Sync`: share it between threads with an `Arc` or by reference.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    /// The background flusher and maintenance threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
pub(crate) struct GroupState {
    started: u64,
    completed: u64,
    /// A round is draining and compressing. At most one does at a time; another round may be
    /// writing and fsyncing meanwhile (compression of round N+1 overlaps the fsync of round N).
    compressing: bool,
    /// Recent failed rounds and why (bounded).
    failures: Vec<(u64, String)>,
}

/// Counters exposed through `stats()`.
#[derive(Default)]
pub(crate) struct Counters {
    pub flush_rounds: AtomicU64,
    pub fsyncs: AtomicU64,
    pub segments_sealed: AtomicU64,
    pub segments_expired: AtomicU64,
    /// Chunks refused because their session or person was deleted.
    pub chunks_refused_deleted: AtomicU64,
    /// Chunks refused for an untrustworthy SDK timestamp.
    pub chunks_refused_timestamp: AtomicU64,
    /// Chunks whose timestamps were shifted by their client's measured clock skew.
    pub chunks_clock_corrected: AtomicU64,
}

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: Config,
    /// Every write, fsync, rename and removal goes through it (fault injection in tests).
    pub fs: Fs,
    _lock: crate::storage::DirLock,
    pub buffer: WriteBuffer,
    /// Every segment readers may look at, sealed and active, by id.
    pub segments: RwLock<Vec<Arc<Segment>>>,
    /// Active writer per lane; only the flush leader (and sealing) touches it.
    pub writers: Mutex<BTreeMap<u16, ActiveWriter>>,
    /// Encoded blocks a failed flush round could not make durable, with their lane.
    pub retry: Mutex<Vec<(u16, crate::compress::Encoded)>>,
    pub retry_bytes: AtomicUsize,
    pub next_segment_id: AtomicU64,
    pub next_seq: AtomicU64,
    pub group: Mutex<GroupState>,
    group_cv: Condvar,
    /// Wakes the background flusher (buffer full, or closing).
    pub flush_signal: Signal,
    /// Wakes the maintenance thread (closing, or a deletion asked for a purge).
    pub maintenance_signal: Signal,
    /// Wakes the uploader (a segment was sealed, or closing); remote tier only.
    pub upload_signal: Signal,
    /// Held by compaction and retention: one of them at a time.
    pub maintenance: Mutex<()>,
    pub tombstones: RwLock<Tombstones>,
    pub closed: AtomicBool,
    pub counters: Counters,
    pub recovery: RecoveryReport,
    /// The remote tier, when configured.
    pub remote: Option<crate::remote::sync::Remote>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. Sealed segments are opened from their footers;
    /// only unsealed ones are scanned, and a torn tail is cut. Fails with `Error::Locked` if
    /// another process (or `Store`) has the directory open.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Fs::new(config.storage.clone(), config.faults.clone());
        let lock = fs.open_store_dir(&dir)?;
        let now = config.clock.now_ms();
        let max_age = config.segment_max_age.as_millis() as i64;
        let mut rec = recover(&dir, &fs, now, max_age)?;
        // The remote tier first: on a fresh directory it fetches the tombstone log.
        let remote = match &config.remote {
            Some(rc) => {
                let has_local = !rec.segments.is_empty();
                let r = crate::remote::sync::Remote::open(&dir, &fs, rc.clone(), has_local)?;
                let unusable = &mut rec.report.unusable_files;
                let max_id = crate::remote::sync::reconcile(&r, &mut rec.segments, unusable)?;
                rec.next_segment_id = rec.next_segment_id.max(max_id + 1);
                for s in &rec.segments {
                    rec.next_seq = rec.next_seq.max(s.totals().max_seq + 1);
                }
                Some(r)
            }
            None => None,
        };
        // Every lane that holds a segment has its directory, remote-only ones included (a
        // store opened from the bucket alone has none yet): compaction writes its outputs there.
        let mut lanes: Vec<u16> = rec.segments.iter().map(|s| s.lane_days).collect();
        lanes.sort_unstable();
        lanes.dedup();
        for lane in lanes {
            crate::writer::ensure_lane_dir(&fs, &dir, lane)?;
        }
        let tombstones = Tombstones::open(&dir, &fs)?;
        let inner = Arc::new(Inner {
            buffer: WriteBuffer::new(config.buffer_shards),
            segments: RwLock::new(rec.segments),
            writers: Mutex::new(rec.writers),
            retry: Mutex::new(Vec::new()),
            retry_bytes: AtomicUsize::new(0),
            next_segment_id: AtomicU64::new(rec.next_segment_id),
            next_seq: AtomicU64::new(rec.next_seq),
            group: Mutex::new(GroupState::default()),
            group_cv: Condvar::new(),
            flush_signal: Signal::default(),
            maintenance_signal: Signal::default(),
            upload_signal: Signal::default(),
            maintenance: Mutex::new(()),
            tombstones: RwLock::new(tombstones),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            recovery: rec.report,
            remote,
            _lock: lock,
            fs,
            dir,
            config,
        });
        let threads = crate::background::spawn(&inner)?;
        Ok(Store {
            inner,
            threads: Mutex::new(threads),
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
    ///
    /// The store stamps the chunk with its own clock (its arrival time, which decides retention
    /// and erasure), corrects the client's clock skew when the chunk carries its send time, and
    /// refuses SDK timestamps outside the accepted window with `Error::Timestamp`.
    pub fn append(&self, chunk: Chunk) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        chunk.validate(inner.config.max_payload_bytes)?;
        let arrival_ms = inner.config.clock.now_ms();
        let counters = &inner.counters;
        let stamped = match Stamped::accept(chunk, arrival_ms, &inner.clock_rules()) {
            Ok(s) => s,
            Err(e) => {
                counters
                    .chunks_refused_timestamp
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if stamped.stamp.clock_offset_ms != 0 {
            counters
                .chunks_clock_corrected
                .fetch_add(1, Ordering::Relaxed);
        }
        // Back-pressure: past twice `max_buffer_bytes` (buffered plus blocks awaiting a retry),
        // the appending thread flushes itself; if that cannot bring it down (the disk fails),
        // the chunk is refused rather than memory growing without bound.
        let max = inner.config.max_buffer_bytes;
        let held = || inner.buffer.buffered_bytes() + inner.retry_bytes.load(Ordering::Acquire);
        if held() >= max.saturating_mul(2) {
            inner.flush()?;
            if held() >= max.saturating_mul(2) {
                return Err(Error::FlushFailed(
                    "write buffer full and flushes are failing".into(),
                ));
            }
        }
        if inner.admit(stamped)? >= max {
            inner.flush_signal.kick();
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

    /// Closes as a crash would: everything not yet flushed is dropped, nothing is written.
    /// For tests that model crashes inside one process (a real kill is tests/crash.rs).
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.inner.buffer.purge(|_| true);
        self.inner.retry.lock().clear();
        self.inner.retry_bytes.store(0, Ordering::Release);
        drop(self); // shutdown's flush finds nothing to write
    }

    fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.flush_signal.kick();
        self.inner.maintenance_signal.kick();
        self.inner.upload_signal.kick();
        for h in self.threads.lock().drain(..) {
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
    /// Checks an accepted chunk against the deletion requests and buffers it; returns the bytes
    /// now buffered. Both happen under the tombstones' read lock, so that a deletion (which
    /// takes the write lock, then purges the buffer) never misses a chunk accepted before it,
    /// and a chunk accepted after it is stamped as arriving after it.
    fn admit(&self, mut stamped: Stamped) -> Result<usize> {
        let tombstones = self.tombstones.read();
        let c = &stamped.chunk;
        if let Some(reason) = tombstones.refuses(c.team, &c.session_id, &c.person, c.first_ts_ms) {
            let refused = &self.counters.chunks_refused_deleted;
            refused.fetch_add(1, Ordering::Relaxed);
            log::info!("chunk of team {} refused: {reason}", c.team);
            return Err(Error::Deleted { reason });
        }
        // Within the same millisecond as the request, "after it" needs the store's clock to
        // tick: a chunk admitted once the request exists arrives at least 1 ms later.
        if let Some(at) = tombstones.person_deleted_since(c.team, &c.person) {
            let arrival = &mut stamped.stamp.arrival_ms;
            *arrival = (*arrival).max(at.saturating_add(1));
        }
        Ok(self.buffer.push(stamped))
    }

    fn clock_rules(&self) -> ClockRules {
        ClockRules {
            max_behind: self.config.max_ts_behind,
            max_ahead: self.config.max_ts_ahead,
            skew_tolerance: self.config.clock_skew_tolerance,
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
    pub(crate) fn finish_round(&self, round: u64, result: &Result<()>) {
        let mut g = self.group.lock();
        g.completed = g.completed.max(round);
        if let Err(e) = result {
            g.failures.push((round, e.to_string()));
            let n = g.failures.len();
            if n > 64 {
                g.failures.drain(..n - 64);
            }
        }
        drop(g);
        self.group_cv.notify_all();
    }

    /// Called by a round once it holds the writers lock: the next round may start compressing.
    pub(crate) fn end_compress_stage(&self) {
        self.group.lock().compressing = false;
        self.group_cv.notify_all();
    }
}
