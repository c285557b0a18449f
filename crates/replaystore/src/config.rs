//! Store configuration with documented defaults. Build it with `Config::default()` and the
//! `with_*` methods; `Store::open` validates it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// Source of wall-clock time in milliseconds since the epoch. Segment ages (and, later, retention)
/// are decided by it, so tests can move time without sleeping.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock tests set by hand.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }
    pub fn now(&self) -> i64 {
        self.now_ms()
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance(&self, d: Duration) {
        self.0
            .fetch_add(d.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Rewrites chunk payloads into a better-compressing but equivalent form; must be idempotent
/// (blocks it rewrote are flagged, and it may run on them again). An example:
/// `replaystore_posthog::posthog::Normalize`. `None` from `transform` keeps the payload as it is.
pub trait PayloadTransform: Send + Sync + std::fmt::Debug {
    fn transform(&self, payload: &[u8]) -> Option<Vec<u8>>;
}

/// Default retention, in days, of a team with no entry in `team_retention_days`.
pub const DEFAULT_RETENTION_DAYS: u16 = 30;

#[derive(Debug, Clone)]
pub struct Config {
    /// Largest accepted chunk payload. Default 16 MiB.
    pub max_payload_bytes: usize,
    /// The background flusher starts a flush when this many bytes are buffered; `append` itself
    /// flushes (back-pressure) when twice this many are. Default 64 MiB.
    pub max_buffer_bytes: usize,
    /// The background flusher flushes at least this often (and also checks segment ages, at
    /// least every second). Default 1 s: the longest an unflushed chunk waits, and what an
    /// ingestion server that never calls `flush()` risks in a crash.
    pub flush_interval: Duration,
    /// A segment is sealed once it reaches this size. Default 256 MiB.
    pub segment_bytes: u64,
    /// A segment is sealed once it is this old (so retention can drop whole files). Default 1 h.
    pub segment_max_age: Duration,
    /// zstd level of the blocks a flush writes (the hot copy). Default 1 (~630 MB/s per core on
    /// recordings' JSON): idle sessions are regrouped at `regroup_level` later, so the hot copy is
    /// short-lived and the ingest path stays as fast as possible.
    pub compression_level: i32,
    /// Threads that compress a flush's blocks. Default: the machine's available parallelism.
    pub compression_threads: usize,
    /// Write buffer shards (appends to different shards never contend). Default 32.
    pub buffer_shards: usize,
    /// Run the background flusher thread. Default true.
    pub background_flush: bool,
    /// How often the maintenance thread enforces retention and considers compaction; `None`
    /// runs no maintenance thread (call `enforce_retention` and `compact` yourself). Default
    /// 10 min.
    pub maintenance_interval: Option<Duration>,
    /// Tombstoned bytes are physically removed within this time of the deletion request.
    /// Default 24 h. Compaction batches requests for up to half of it.
    pub purge_within: Duration,
    /// Retention, in days, of teams not in `team_retention_days`. Default 30.
    pub default_retention_days: u16,
    /// Retention of each team, in days (1..=3650). A team's retention picks the lane (directory)
    /// its new sessions are written to.
    pub team_retention_days: HashMap<u64, u16>,
    /// A chunk whose (skew-corrected) SDK timestamps start more than this before its arrival is
    /// refused with `Error::Timestamp`. Default 48 h (an SDK's offline queue, a retry).
    pub max_ts_behind: Duration,
    /// A chunk whose (skew-corrected) SDK timestamps end more than this after its arrival is
    /// refused with `Error::Timestamp`. Default 1 h.
    pub max_ts_ahead: Duration,
    /// When a chunk carries its send time (`Chunk::sent_at_ms`) and the client's clock differs
    /// from the store's by more than this, the chunk's timestamps are shifted by the difference
    /// Smaller differences are network latency and are left alone.
    /// Default 10 s.
    pub clock_skew_tolerance: Duration,
    /// Regroup idle data during compaction: all blocks of a session within a job become one
    /// block compressed at `regroup_level` (the cold copy). Default true.
    pub regroup: bool,
    /// A sealed segment is regrouped once its newest data is this old. Default 30 min.
    pub regroup_idle: Duration,
    /// zstd level of regrouped blocks. Default 3: on recordings, levels 2-4 keep within 1% of
    /// each other, and level 9 saves ~10-20% more bytes for 2-3x the regroup CPU
    /// (docs/benchmarks.md, the Pareto table).
    pub regroup_level: i32,
    /// A regrouped session starts a new block at a keyframe (`Annotator::keyframe`) once the
    /// block so far holds this many payload bytes, so that a read from a point in the session
    /// (`Store::read_session_from`) decompresses from about its keyframe, not from the start.
    /// Smaller blocks compress worse (docs/benchmarks.md, "Seekable playback": +0.9% bytes on
    /// the generated workload at 4 MiB, +15% at 1 MiB). `None`: one block per session (up to
    /// 64 MiB). Default 4 MiB.
    pub keyframe_block_bytes: Option<usize>,
    /// Nice value (Linux; ignored elsewhere) of the maintenance and upload threads and of the
    /// workers they start: retention, compaction and regrouping take the CPU that appends and
    /// flushes leave, so background work never starves ingestion. 0 keeps the opener's
    /// priority. Default 10.
    pub background_nice: i32,
    /// Input bytes one regroup job takes at most (sessions within a job become one block).
    /// Default 512 MiB.
    pub regroup_job_bytes: u64,
    /// Apply `transform` on the flush path instead of when regrouping. Default false: the hot
    /// path stays fast and only the cold copy pays for it.
    pub transform_at_ingest: bool,
    /// The remote tier: sealed segments copied to object storage. Default none.
    pub remote: Option<crate::remote::RemoteConfig>,
    /// The swappable parts (clock, storage, annotator, payload transform, fault injector),
    /// apart from the tuning values above. Set them with the `with_*` methods.
    pub parts: Parts,
}

/// The parts of a store that are code rather than values: what a test or an embedder swaps
/// (a manual clock, a simulated disk, an annotator), kept apart from the tuning values
/// of `Config`.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The store's clock: it stamps each chunk's arrival time when `append` accepts it, and
    /// decides everything time-based (segment roll by age, retention, regroup idleness, purge
    /// deadlines, deletion coverage). SDK timestamps never do. Default: the system clock.
    pub clock: Arc<dyn Clock>,
    /// Annotates each block on the flush path and merges annotations per session (sealing,
    /// regrouping, listing: see `annotation`). Default `None`: no annotations; for rrweb
    /// recordings, `replaystore_posthog::RrwebAnnotator` (the command line and server set it).
    /// Without one, the clock-skew correction applied to a block is not recorded either (it
    /// is the annotator's to keep: `BlockContext`).
    pub annotator: Option<Arc<dyn crate::annotation::Annotator>>,
    /// Payload transform applied when regrouping (or at ingest, see `transform_at_ingest`).
    /// Default none: payloads are stored as sent.
    pub transform: Option<Arc<dyn PayloadTransform>>,
    /// Where the store's files live: every file operation goes through it. Default: the
    /// operating system's (`OsStorage`); tests use `SimStorage`, a disk that loses what was
    /// not synced on a simulated power failure.
    pub storage: Arc<dyn crate::storage::Storage>,
    /// Makes chosen file operations fail, for tests of I/O errors. Default: none.
    pub faults: Option<Arc<dyn crate::fs::FaultInjector>>,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            clock: Arc::new(SystemClock),
            annotator: None,
            transform: None,
            storage: crate::storage::default_storage(),
            faults: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_payload_bytes: 16 << 20,
            max_buffer_bytes: 64 << 20,
            flush_interval: Duration::from_secs(1),
            segment_bytes: 256 << 20,
            segment_max_age: Duration::from_secs(3600),
            compression_level: 1,
            compression_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            buffer_shards: 32,
            background_flush: true,
            maintenance_interval: Some(Duration::from_secs(600)),
            purge_within: Duration::from_secs(24 * 3600),
            default_retention_days: DEFAULT_RETENTION_DAYS,
            team_retention_days: HashMap::new(),
            max_ts_behind: Duration::from_secs(48 * 3600),
            max_ts_ahead: Duration::from_secs(3600),
            clock_skew_tolerance: Duration::from_secs(10),
            remote: None,
            parts: Parts::default(),
            regroup: true,
            regroup_idle: Duration::from_secs(30 * 60),
            regroup_level: 3,
            keyframe_block_bytes: Some(4 << 20),
            background_nice: 10,
            regroup_job_bytes: 512 << 20,
            transform_at_ingest: false,
        }
    }
}

impl Config {
    pub fn with_max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }
    pub fn with_max_buffer_bytes(mut self, n: usize) -> Self {
        self.max_buffer_bytes = n;
        self
    }
    pub fn with_flush_interval(mut self, d: Duration) -> Self {
        self.flush_interval = d;
        self
    }
    pub fn with_segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n;
        self
    }
    pub fn with_segment_max_age(mut self, d: Duration) -> Self {
        self.segment_max_age = d;
        self
    }
    pub fn with_compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }
    pub fn with_compression_threads(mut self, n: usize) -> Self {
        self.compression_threads = n;
        self
    }
    pub fn with_background_flush(mut self, on: bool) -> Self {
        self.background_flush = on;
        self
    }
    pub fn with_maintenance_interval(mut self, every: Option<Duration>) -> Self {
        self.maintenance_interval = every;
        self
    }
    pub fn with_purge_within(mut self, d: Duration) -> Self {
        self.purge_within = d;
        self
    }
    pub fn with_default_retention_days(mut self, days: u16) -> Self {
        self.default_retention_days = days;
        self
    }
    pub fn with_team_retention_days(mut self, team: u64, days: u16) -> Self {
        self.team_retention_days.insert(team, days);
        self
    }
    pub fn with_regroup(mut self, on: bool) -> Self {
        self.regroup = on;
        self
    }
    pub fn with_regroup_idle(mut self, d: Duration) -> Self {
        self.regroup_idle = d;
        self
    }
    pub fn with_background_nice(mut self, nice: i32) -> Self {
        self.background_nice = nice;
        self
    }
    pub fn with_regroup_level(mut self, level: i32) -> Self {
        self.regroup_level = level;
        self
    }
    pub fn with_keyframe_block_bytes(mut self, bytes: Option<usize>) -> Self {
        self.keyframe_block_bytes = bytes;
        self
    }
    pub fn with_transform(mut self, t: Arc<dyn PayloadTransform>, at_ingest: bool) -> Self {
        self.parts.transform = Some(t);
        self.transform_at_ingest = at_ingest;
        self
    }
    pub fn with_annotator(mut self, a: Option<Arc<dyn crate::annotation::Annotator>>) -> Self {
        self.parts.annotator = a;
        self
    }
    /// Puts the store's files on `storage` instead of the operating system's file system.
    pub fn with_storage(mut self, storage: Arc<dyn crate::storage::Storage>) -> Self {
        self.parts.storage = storage;
        self
    }
    pub fn with_faults(mut self, faults: Arc<dyn crate::fs::FaultInjector>) -> Self {
        self.parts.faults = Some(faults);
        self
    }
    /// Copies sealed segments to object storage (see `RemoteConfig`, docs/scale-out.md).
    pub fn with_remote(mut self, remote: crate::remote::RemoteConfig) -> Self {
        self.remote = Some(remote);
        self
    }
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.parts.clock = clock;
        self
    }
    /// The window of SDK timestamps accepted around a chunk's arrival (see `max_ts_behind`).
    pub fn with_timestamp_window(mut self, behind: Duration, ahead: Duration) -> Self {
        self.max_ts_behind = behind;
        self.max_ts_ahead = ahead;
        self
    }
    pub fn with_clock_skew_tolerance(mut self, d: Duration) -> Self {
        self.clock_skew_tolerance = d;
        self
    }

    /// Retention (and so lane) of a team.
    pub fn retention_days(&self, team: u64) -> u16 {
        self.team_retention_days
            .get(&team)
            .copied()
            .unwrap_or(self.default_retention_days)
    }

    /// Data whose newest chunk arrived at or before this time is due for regrouping at `now`
    /// (store clock): `regroup_idle` before it. `None` when regrouping is off.
    pub fn regroup_due_before(&self, now: i64) -> Option<i64> {
        let idle = self.regroup_idle.as_millis() as i64;
        self.regroup.then(|| now.saturating_sub(idle))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        fn bad(field: &'static str, reason: &str) -> Result<()> {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > crate::format::MAX_BLOCK_RAW {
            return bad("max_payload_bytes", "must be in 1..=1 GiB");
        }
        if self.max_buffer_bytes == 0 {
            return bad("max_buffer_bytes", "must be > 0");
        }
        if self.segment_bytes < 4096 {
            return bad("segment_bytes", "must be at least 4096");
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval", "must be > 0");
        }
        if self.maintenance_interval.is_some_and(|d| d.is_zero()) {
            return bad("maintenance_interval", "must be > 0");
        }
        if self.purge_within.is_zero() {
            return bad("purge_within", "must be > 0");
        }
        if self
            .maintenance_interval
            .is_some_and(|d| d > self.purge_within / 2)
        {
            return bad(
                "maintenance_interval",
                "must be at most half of purge_within",
            );
        }
        // 3650 days: the longest retention; a wider window would let data outlive it.
        let ten_years = Duration::from_secs(3650 * 86_400);
        if self.max_ts_behind > ten_years || self.max_ts_ahead > ten_years {
            return bad(
                "max_ts_behind",
                "the timestamp window is at most 3650 days each way",
            );
        }
        if self.segment_max_age.is_zero() {
            return bad("segment_max_age", "must be > 0");
        }
        if !(zstd::compression_level_range()).contains(&self.compression_level) {
            return bad("compression_level", "is outside zstd's level range");
        }
        if !(zstd::compression_level_range()).contains(&self.regroup_level) {
            return bad("regroup_level", "is outside zstd's level range");
        }
        if self.compression_threads == 0 || self.compression_threads > 256 {
            return bad("compression_threads", "must be in 1..=256");
        }
        if !(0..=19).contains(&self.background_nice) {
            return bad("background_nice", "must be in 0..=19 (lower priority only)");
        }
        if self.buffer_shards == 0 || self.buffer_shards > 4096 {
            return bad("buffer_shards", "must be in 1..=4096");
        }
        if !(1..=3650).contains(&self.default_retention_days) {
            return bad("default_retention_days", "must be in 1..=3650");
        }
        for (&team, &days) in &self.team_retention_days {
            if days == 0 || days > 3650 {
                return Err(Error::InvalidConfig {
                    field: "team_retention_days",
                    reason: format!("team {team}: {days} days is outside 1..=3650"),
                });
            }
        }
        Ok(())
    }
}
