//! `Store`: the public front. It opens a directory (recovery, remote reconciliation), builds
//! the components and starts their threads, and routes each call to the component that owns
//! the state: `FlushPipeline` (append, flush), `SegmentSet` (what readers see), `Maintenance`
//! (retention, compaction, remote sync), the tombstones (deletions). docs/design.md has the
//! component map and the lock order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::chunk::{Chunk, ClockRules, Stamped, MAX_PERSON_BYTES, MAX_SESSION_ID_BYTES};
use crate::compaction::CompactionReport;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::filter::{Page, SessionFilter};
use crate::flush::{FlushPipeline, PipelineStart};
use crate::fs::Fs;
use crate::maintenance::{Maintenance, MaintenanceParts};
use crate::read::{Reader, SeekRead, SessionData, SessionSummary, Stats};
use crate::recovery::{recover, Recovered, RecoveryReport};
use crate::remote::{RemoteStatus, RemoteTier, SyncReport};
use crate::retention::RetentionReport;
use crate::segment::RemoteRead;
use crate::segment_set::SegmentSet;
use crate::session_index::{PageQuery, SessionIndex, SessionIndexReport};
use crate::signal::Signal;
use crate::source::SourceOffsets;
use crate::tombstone::{Admission, DeletionStatus, Target, Tombstone, Tombstones};
use crate::verify::VerifyReport;

/// An embedded store. `Send + Sync`: share it between threads with an `Arc` or by reference.
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) config: Config,
    /// Every segment readers may look at, sealed and active.
    pub(crate) segments: Arc<SegmentSet>,
    /// Write buffer, group commit, retries, active writers.
    pub(crate) pipeline: Arc<FlushPipeline>,
    /// Retention, compaction, remote sync (one at a time).
    pub(crate) maintenance: Arc<Maintenance>,
    pub(crate) tombstones: Arc<RwLock<Tombstones>>,
    /// Per team, one entry per session: what listings page through.
    index: Arc<SessionIndex>,
    /// The storage layer (for the reads' file sizes).
    fs: Fs,
    /// The remote tier, when configured.
    pub(crate) remote: Option<Arc<RemoteTier>>,
    pub(crate) counters: IngestCounters,
    /// Kicked when a segment is sealed; the uploader waits on it.
    sealed: Arc<Signal>,
    recovery: RecoveryReport,
    closed: AtomicBool,
    /// The background flusher, maintenance and upload threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
    _lock: crate::storage::DirLock,
}

/// What `append` refused or corrected, exposed through `stats()`.
#[derive(Default)]
pub(crate) struct IngestCounters {
    /// Chunks refused because their session or person was deleted.
    pub chunks_refused_deleted: AtomicU64,
    /// Chunks refused for an untrustworthy SDK timestamp.
    pub chunks_refused_timestamp: AtomicU64,
    /// Chunks whose timestamps were shifted by their client's measured clock skew.
    pub chunks_clock_corrected: AtomicU64,
}

/// Opens the remote tier (on a fresh directory it fetches the tombstone log) and merges its
/// segments into what recovery found.
fn open_remote(
    dir: &Path,
    fs: &Fs,
    config: &Config,
    rec: &mut Recovered,
) -> Result<Option<RemoteTier>> {
    let Some(rc) = &config.remote else {
        return Ok(None);
    };
    let has_local = !rec.segments.is_empty();
    let r = RemoteTier::open(dir, fs, rc.clone(), has_local)?;
    let unusable = &mut rec.report.unusable_files;
    let max_id = r.reconcile(&mut rec.segments, unusable)?;
    rec.next_segment_id = rec.next_segment_id.max(max_id + 1);
    for s in &rec.segments {
        rec.next_seq = rec.next_seq.max(s.totals().max_seq + 1);
    }
    Ok(Some(r))
}

impl Store {
    /// Opens (or creates) the store in `dir`. Sealed segments are opened from their footers;
    /// only unsealed ones are scanned, and a torn tail is cut. Fails with `Error::Locked` if
    /// another process (or `Store`) has the directory open.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Fs::new(config.parts.storage.clone(), config.parts.faults.clone());
        let lock = fs.open_store_dir(&dir)?;
        let now = config.parts.clock.now_ms();
        let max_age = config.segment_max_age.as_millis() as i64;
        let annotator = config.parts.annotator.as_deref();
        let mut rec = recover(&dir, &fs, now, max_age, annotator)?;
        // The remote tier first: on a fresh directory it fetches the tombstone log.
        let remote = open_remote(&dir, &fs, &config, &mut rec)?.map(Arc::new);
        // Every lane that holds a segment has its directory, remote-only ones included (a
        // store opened from the bucket alone has none yet): compaction writes its outputs there.
        let mut lanes: Vec<u16> = rec.segments.iter().map(|s| s.lane_days).collect();
        lanes.sort_unstable();
        lanes.dedup();
        for lane in lanes {
            crate::writer::ensure_lane_dir(&fs, &dir, lane)?;
        }
        let tombstones = Arc::new(RwLock::new(Tombstones::open(&dir, &fs)?));
        let active: Vec<u64> = rec.writers.values().map(|w| w.segment.id).collect();
        let segments = Arc::new(SegmentSet::new(rec.segments, &active, rec.next_segment_id));
        let annotator = config.parts.annotator.clone();
        let index = Arc::new(SessionIndex::open(&dir, &fs, annotator, &segments)?);
        segments.observe(index.clone());
        let sealed = Arc::new(Signal::default());
        let pipeline = Arc::new(FlushPipeline::new(PipelineStart {
            dir: dir.clone(),
            config: config.clone(),
            fs: fs.clone(),
            segments: segments.clone(),
            writers: rec.writers,
            next_seq: rec.next_seq,
            sealed: sealed.clone(),
        }));
        let maintenance = Arc::new(Maintenance::new(MaintenanceParts {
            dir: dir.clone(),
            config: config.clone(),
            fs: fs.clone(),
            segments: segments.clone(),
            pipeline: pipeline.clone(),
            tombstones: tombstones.clone(),
            remote: remote.clone(),
            index: index.clone(),
        }));
        let threads = crate::background::spawn(&pipeline, &maintenance, &sealed)?;
        Ok(Store {
            dir,
            config,
            segments,
            pipeline,
            maintenance,
            tombstones,
            index,
            fs,
            remote,
            counters: IngestCounters::default(),
            sealed,
            recovery: rec.report,
            closed: AtomicBool::new(false),
            threads: Mutex::new(threads),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What open found and repaired (torn tails cut, corrupt blocks skipped...).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Validates and buffers a chunk. Not durable until a later `flush()` returns. When more
    /// than twice `max_buffer_bytes` are buffered, the caller runs a flush itself (back-pressure).
    ///
    /// The store stamps the chunk with its own clock (its arrival time, which decides retention
    /// and erasure), corrects the client's clock skew when the chunk carries its send time, and
    /// refuses SDK timestamps outside the accepted window with `Error::Timestamp`.
    pub fn append(&self, chunk: Chunk) -> Result<()> {
        self.append_stamped(chunk, None)
    }

    /// `append`, recording the chunk's position in its source (a Kafka partition's offset) in
    /// the same durable write as the chunk: after a crash, `source_offsets` says which
    /// positions the store holds, so that a consumer neither loses nor doubles a message.
    pub fn append_from_source(&self, chunk: Chunk, source_offset: u64) -> Result<()> {
        self.append_stamped(chunk, Some(source_offset))
    }

    fn append_stamped(&self, chunk: Chunk, source_offset: Option<u64>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        chunk.validate(self.config.max_payload_bytes)?;
        let arrival_ms = self.config.parts.clock.now_ms();
        let counters = &self.counters;
        let stamped = match Stamped::accept(chunk, arrival_ms, &self.clock_rules()) {
            Ok(mut s) => {
                s.stamp.source_offset = source_offset;
                s
            }
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
        let max = self.config.max_buffer_bytes;
        let held = || self.pipeline.held_bytes();
        if held() >= max.saturating_mul(2) {
            self.pipeline.flush()?;
            if held() >= max.saturating_mul(2) {
                return Err(Error::FlushFailed(
                    "write buffer full and flushes are failing".into(),
                ));
            }
        }
        if self.admit(stamped)? >= max {
            self.pipeline.signal().kick();
        }
        Ok(())
    }

    /// Returns once everything appended before the call is written and fsynced. Concurrent
    /// callers share one fsync.
    pub fn flush(&self) -> Result<()> {
        self.pipeline.flush()
    }

    /// Bytes appended and not yet flushed.
    pub fn buffered_bytes(&self) -> usize {
        self.pipeline.buffered_bytes()
    }

    /// Seals every active segment now (footer written), e.g. before copying the directory.
    pub fn seal_active(&self) -> Result<()> {
        self.pipeline.flush()?;
        self.pipeline.seal_all()
    }

    /// Flushes, stops the background flusher and releases the directory.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// Closes as a crash would: everything not yet flushed is dropped, nothing is written.
    /// For tests that model crashes inside one process (a real kill is tests/crash.rs).
    #[doc(hidden)]
    pub fn simulate_crash(self) {
        self.pipeline.drop_unflushed();
        drop(self); // shutdown's flush finds nothing to write
    }

    fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.pipeline.signal().close();
        self.maintenance.signal().close();
        self.sealed.close();
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
        self.pipeline.flush()?;
        // The index is derived data: a failed checkpoint costs the next open a refresh.
        if let Err(e) = self.index.checkpoint() {
            log::error!("session index checkpoint at close failed: {e}");
        }
        Ok(())
    }

    // Reads (`read`).

    fn reader(&self) -> Reader<'_> {
        Reader {
            segments: &self.segments,
            tombstones: &self.tombstones,
            config: &self.config,
            fs: &self.fs,
        }
    }

    /// Reads one session. `Ok(None)` if the store holds none of it that is visible: deleted
    /// data (pending deletions) and data past its lane's retention are never returned. A block
    /// that fails its checks is an `Error::Corrupt` naming segment and offset; other sessions
    /// are unaffected. The summary describes exactly the chunks returned.
    pub fn read_session(&self, team: u64, session_id: &str) -> Result<Option<SessionData>> {
        Ok(self.read_session_traced(team, session_id)?.0)
    }

    /// `read_session`, also reporting what it cost in object-store requests: the number of
    /// range GETs (a session's blocks in one remote segment are coalesced into few) and the
    /// bytes they fetched. All zero when every block was local.
    pub fn read_session_traced(
        &self,
        team: u64,
        session_id: &str,
    ) -> Result<(Option<SessionData>, RemoteRead)> {
        self.reader().read_session_traced(team, session_id)
    }

    /// Reads a session from a point in time: the chunks from the one holding the last keyframe
    /// at or before `from_ms` (as the configured `Annotator::keyframe` found them when they were
    /// written; ms on the chunks' corrected clock) to the end, in playback order: exactly the
    /// suffix of `read_session` from that chunk. Only the blocks from there on are read and
    /// decompressed (the trace says how many bytes). Without such a keyframe (none recorded,
    /// segments written before format 3, or `from_ms` before the first), the whole session.
    pub fn read_session_from(&self, team: u64, session_id: &str, from_ms: i64) -> Result<SeekRead> {
        self.reader()
            .read_session_from(team, session_id, Some(from_ms))
    }

    /// Lists the sessions of a team that match `filter` (see `list_page`).
    pub fn list_sessions(&self, team: u64, filter: &SessionFilter) -> Result<Vec<SessionSummary>> {
        Ok(self.list_page(team, filter)?.sessions)
    }

    /// One page of the sessions of a team that match `filter`, sorted, with a cursor for the
    /// next page. Walks the team's entries in the session index (one per session, with the
    /// annotator's facets), never payloads nor, for sessions fully visible, footers: a session
    /// with a record past retention or of a person being deleted is summarized again from its
    /// records. Deleted data and data past retention are left out (per segment record: a
    /// record of a deleted person that started before the deletion is hidden whole). Answers
    /// exactly what `list_page_scan` does.
    pub fn list_page(&self, team: u64, filter: &SessionFilter) -> Result<Page> {
        let version = self.segments.current();
        let tombstones = self.tombstones.read();
        self.index.page(&PageQuery {
            team,
            filter,
            tombstones: &tombstones,
            version: &version,
            now_ms: self.config.parts.clock.now_ms(),
        })
    }

    /// `list_page` by a pass over the team's session records in every segment (footers
    /// through the mmap, active indexes), without the session index: what the index is tested
    /// and measured against.
    #[doc(hidden)]
    pub fn list_page_scan(&self, team: u64, filter: &SessionFilter) -> Result<Page> {
        let all = self
            .reader()
            .list_sessions(team, filter.person.as_deref())?;
        Ok(filter.page(all))
    }

    /// What opening the session index found and did (loaded, rebuilt, brought up to date).
    pub fn session_index_report(&self) -> &SessionIndexReport {
        self.index.report()
    }

    /// Writes the session index file now if the segments changed since it was last written
    /// (the maintenance thread does this every `maintenance_interval`, and `close`).
    pub fn checkpoint_session_index(&self) -> Result<bool> {
        self.index.checkpoint()
    }

    /// Store-wide statistics. Counting distinct sessions merges the sorted session keys of all
    /// segments (a session may span several): O(total session records), no payload read.
    pub fn stats(&self) -> Result<Stats> {
        let c = &self.counters;
        let flushes = self.pipeline.counters();
        let counters = Stats {
            buffered_bytes: self.buffered_bytes() as u64,
            flush_rounds: flushes.rounds.load(Ordering::Relaxed),
            fsyncs: flushes.fsyncs.load(Ordering::Relaxed),
            segments_sealed: flushes.segments_sealed.load(Ordering::Relaxed),
            segments_expired: self.maintenance.segments_expired(),
            chunks_refused_deleted: c.chunks_refused_deleted.load(Ordering::Relaxed),
            chunks_refused_timestamp: c.chunks_refused_timestamp.load(Ordering::Relaxed),
            chunks_clock_corrected: c.chunks_clock_corrected.load(Ordering::Relaxed),
            session_index_heap_bytes: self.index.heap_bytes(),
            ..Stats::default()
        };
        self.reader().stats(counters)
    }

    // Deletion and maintenance (`deletion`, `maintenance`).

    /// Deletes every chunk of `person` in `team` that reached the store up to now (by the
    /// store's clock: arrival time, whatever the chunks' SDK timestamps say). Returns once the
    /// request is durable (fsynced): from then on those chunks are hidden from reads and
    /// listings, also after a crash. Buffered chunks are purged at once; written ones
    /// physically within `purge_within`. Chunks of the person arriving later are refused when
    /// their (validated, skew-corrected) timestamps start at or before the request: they were
    /// recorded before it (an offline queue, a retry); later recordings are kept (see
    /// docs/privacy.md). Returns the request id for `deletion_status`.
    pub fn delete_person(&self, team: u64, person: &str) -> Result<u64> {
        crate::deletion::check("person", person, MAX_PERSON_BYTES)?;
        self.delete(team, Target::Person(person.to_string()))
    }

    /// Deletes every chunk of one session, past and future (see `delete_person`).
    pub fn delete_session(&self, team: u64, session_id: &str) -> Result<u64> {
        crate::deletion::check("session_id", session_id, MAX_SESSION_ID_BYTES)?;
        self.delete(team, Target::Session(session_id.to_string()))
    }

    /// Where deletion request `id` stands.
    pub fn deletion_status(&self, id: u64) -> DeletionStatus {
        self.tombstones.read().status(id)
    }

    /// Runs one compaction pass now: physically removes the data of every pending deletion,
    /// drops expired blocks from mostly expired segments, merges small segments.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.maintenance.compact()
    }

    /// Unlinks sealed segments whose newest data is older than their lane's retention at
    /// `now_ms` (normally the clock's now; the background maintenance thread does this).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        self.maintenance.enforce_retention(now_ms)
    }

    /// Asks the maintenance thread to run a compaction pass soon, instead of batching deletions
    /// for up to half of `purge_within`.
    pub fn request_purge(&self) {
        self.maintenance.signal().kick();
    }

    /// Deletion requests not yet physically purged, oldest first.
    pub fn pending_deletions(&self) -> Vec<Tombstone> {
        self.tombstones.read().pending().to_vec()
    }

    /// Waits until deletion `id` is done, running compaction passes, for at most `timeout`.
    pub fn purge_now(&self, id: u64, timeout: Duration) -> Result<DeletionStatus> {
        let start = std::time::Instant::now();
        loop {
            let status = self.deletion_status(id);
            if !matches!(status, DeletionStatus::Pending { .. }) || start.elapsed() > timeout {
                return Ok(status);
            }
            self.compact()?;
        }
    }

    fn delete(&self, team: u64, target: Target) -> Result<u64> {
        let now = self.config.parts.clock.now_ms();
        crate::deletion::request(&self.tombstones, &self.pipeline, now, team, target)
    }

    // The remote tier (`remote`) and scrub (`verify`).

    /// Runs the remote tier now: uploads and verifies every sealed segment not yet in the
    /// bucket (resuming interrupted uploads), drops local copies past `local_retention`,
    /// deletes objects of expired or replaced segments, uploads the tombstone log. The
    /// maintenance thread does the same every `maintenance_interval`. No-op without a tier.
    ///
    /// To hand a store over to another machine: stop appending, `seal_active()`,
    /// `sync_remote()`, `close()`; then open an empty directory there with the same
    /// `RemoteConfig` (docs/scale-out.md).
    pub fn sync_remote(&self) -> Result<SyncReport> {
        self.maintenance.remote_sync()
    }

    /// The remote tier's state and request counters; `None` without a tier.
    pub fn remote_status(&self) -> Option<RemoteStatus> {
        let remote = self.remote.as_deref()?;
        Some(remote.status(&self.segments.current()))
    }

    /// Checks every segment (see `verify`). Reads everything: a scrub, not a hot path.
    pub fn verify(&self) -> Result<VerifyReport> {
        crate::verify::verify(&self.segments.current())
    }

    /// The source offsets (`append_from_source`) the store holds durably: the highest, and
    /// all those at or above `from`. A consumer resumes from the position after the last one
    /// its group committed and skips the offsets listed here, so that a crash anywhere
    /// (between a flush and its commit, or a flush torn between lanes) neither loses nor
    /// doubles a message. Reads every local block header: call it when taking a partition
    /// over, not per message.
    pub fn source_offsets(&self, from: u64) -> Result<SourceOffsets> {
        crate::source::source_offsets(&self.segments.current(), from, None)
    }

    /// `source_offsets`, also reading the remote segments (in the bucket only) that hold a
    /// chunk which arrived, by this store's clock, at or after `arrived_since_ms`: a store
    /// adopted from a bucket answers for what its previous owner uploaded after a point it
    /// recorded (the Kafka consumer's commit), downloading those segments once.
    pub fn source_offsets_since(&self, from: u64, arrived_since_ms: i64) -> Result<SourceOffsets> {
        crate::source::source_offsets(&self.segments.current(), from, Some(arrived_since_ms))
    }

    /// Checks an accepted chunk against the deletion requests and buffers it; returns the bytes
    /// now buffered. Both happen under the tombstones' read lock, so that a deletion (which
    /// takes the write lock, then purges the buffer) never misses a chunk accepted before it,
    /// and a chunk accepted after it is stamped as arriving after it.
    fn admit(&self, mut stamped: Stamped) -> Result<usize> {
        let tombstones = self.tombstones.read();
        let c = &stamped.chunk;
        let after = match tombstones.admission(c.team, &c.session_id, &c.person, c.first_ts_ms) {
            Admission::Refused(reason) => {
                let refused = &self.counters.chunks_refused_deleted;
                refused.fetch_add(1, Ordering::Relaxed);
                log::info!("chunk of team {} refused: {reason}", c.team);
                return Err(Error::Deleted { reason });
            }
            Admission::Admit { after } => after,
        };
        // Within the same millisecond as the request, "after it" needs the store's clock to
        // tick: a chunk admitted once the request exists arrives at least 1 ms later.
        if let Some(at) = after {
            let arrival = &mut stamped.stamp.arrival_ms;
            *arrival = (*arrival).max(at.saturating_add(1));
        }
        Ok(self.pipeline.push(stamped))
    }

    fn clock_rules(&self) -> ClockRules {
        ClockRules {
            max_behind: self.config.max_ts_behind,
            max_ahead: self.config.max_ts_ahead,
            skew_tolerance: self.config.clock_skew_tolerance,
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!("flush on drop failed: {e}");
        }
    }
}
