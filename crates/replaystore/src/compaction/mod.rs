//! Compaction: rewrites segments without the blocks of pending deletions and without expired
//! blocks, and merges small segments, by copying surviving compressed blocks verbatim.
//!
//! One job turns some sealed segments of one lane into one new segment whose footer lists them
//! in `replaces`. Crash safety, step by step:
//! 1. write `<id>.seg.tmp` and fsync it (a crash here leaves a temp file; open deletes it),
//! 2. rename it to `<id>.seg`, fsync the directory (a crash after the rename leaves both the new
//!    segment and its sources; open sees `replaces` and removes the sources),
//! 3. swap the new segment in for readers (a reader inside an old one finishes on its mapping),
//! 4. unlink the sources and fsync the directory.
//!
//! A pending deletion is retired once no segment holds a block it covers.

mod output;
mod regroup;

use output::Output;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::flush::FlushPipeline;
use crate::fs::Fs;
use crate::remote::RemoteTier;
use crate::retention::cutoff;
use crate::segment::Segment;
use crate::segment_set::SegmentSet;
use crate::tombstone::{Purged, Target, Tombstone, Tombstones};

/// A segment smaller than `segment_bytes / SMALL_FRACTION` is merged with its neighbours.
const SMALL_FRACTION: u64 = 4;
/// A segment with more than this share of its bytes expired is rewritten without them.
const EXPIRED_SHARE: f64 = 0.5;

/// What a compaction pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionReport {
    /// Source segments replaced by a rewritten one.
    pub segments_rewritten: u64,
    /// Source segments removed outright (nothing in them survived).
    pub segments_removed: u64,
    /// New segments written.
    pub segments_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub blocks_dropped: u64,
    pub bytes_dropped: u64,
    /// Sessions a regroup left as separate blocks because they carry several annotations and
    /// no annotator is configured to merge them (docs/design.md, "Annotations").
    pub sessions_kept_apart: u64,
    /// Deletion requests whose data is now physically gone.
    pub deletions_completed: Vec<u64>,
    /// Jobs that failed, and why (their sources are untouched).
    pub failed_jobs: Vec<String>,
    pub elapsed_ms: f64,
}

impl CompactionReport {
    fn absorb(&mut self, job: &CompactionReport) {
        self.segments_rewritten += job.segments_rewritten;
        self.segments_removed += job.segments_removed;
        self.segments_written += job.segments_written;
        self.bytes_read += job.bytes_read;
        self.bytes_written += job.bytes_written;
        self.blocks_dropped += job.blocks_dropped;
        self.bytes_dropped += job.bytes_dropped;
        self.sessions_kept_apart += job.sessions_kept_apart;
    }

    /// Rewrite throughput: MB of new segments written (and fsynced) per second of the pass.
    pub fn rewrite_mb_s(&self) -> f64 {
        self.bytes_written as f64 / 1e6 / (self.elapsed_ms / 1e3).max(1e-9)
    }
}

/// The pending deletions of a pass, keyed for block-level decisions.
struct Doomed {
    sessions: HashMap<(u64, String), u64>,
    persons: HashMap<(u64, String), Vec<(u64, i64)>>,
    /// Person hashes per team, to find their records in one pass over a segment's team range.
    person_hashes: HashMap<u64, HashSet<u64>>,
}

impl Doomed {
    fn new(pending: &[Tombstone]) -> Doomed {
        let mut d = Doomed {
            sessions: HashMap::new(),
            persons: HashMap::new(),
            person_hashes: HashMap::new(),
        };
        for t in pending {
            match &t.target {
                Target::Session(s) => {
                    d.sessions.insert((t.team, s.clone()), t.id);
                }
                Target::Person(p) => {
                    d.persons
                        .entry((t.team, p.clone()))
                        .or_default()
                        .push((t.id, t.at_ms));
                    d.person_hashes
                        .entry(t.team)
                        .or_default()
                        .insert(crate::format::key_hash(t.team, p));
                }
            }
        }
        d
    }

    /// The requests with blocks still in `seg` (index only, no block read): a bloom-filtered
    /// lookup per deleted session, and one pass per team over the segment's records for the
    /// deleted persons, however many there are.
    fn hits(&self, seg: &Segment) -> Result<HashSet<u64>> {
        let mut ids = HashSet::new();
        for ((team, session), id) in &self.sessions {
            if seg.contains(*team, session)? {
                ids.insert(*id);
            }
        }
        for (team, hashes) in &self.person_hashes {
            seg.for_each_session_of(*team, hashes, &mut |e| {
                if let Some(reqs) = self.persons.get(&(e.team, e.person.clone())) {
                    ids.extend(
                        reqs.iter()
                            .filter(|(_, at)| e.arrival().first_ms <= *at)
                            .map(|(id, _)| *id),
                    );
                }
            })?;
        }
        Ok(ids)
    }

    /// The request ids that cover a block: its session's, and its person's made after the
    /// block's first chunk arrived (store clock; SDK timestamps do not count).
    fn covering(&self, team: u64, session: &str, person: &str, arrival_ms: i64) -> Vec<u64> {
        let mut ids = Vec::new();
        if let Some(&id) = self.sessions.get(&(team, session.to_string())) {
            ids.push(id);
        }
        if let Some(reqs) = self.persons.get(&(team, person.to_string())) {
            ids.extend(
                reqs.iter()
                    .filter(|(_, at)| arrival_ms <= *at)
                    .map(|(id, _)| *id),
            );
        }
        ids
    }
}

/// Decides, block by block, what a rewrite keeps: not covered by a pending deletion, not past
/// retention, not a second copy of a block retried after a failed flush. Counts what it drops.
pub(super) struct Sieve<'a> {
    doomed: &'a Doomed,
    now: i64,
    seen: HashSet<(u64, String, u64, u32)>,
    pub progress: HashMap<u64, Progress>,
}

impl<'a> Sieve<'a> {
    fn new(doomed: &'a Doomed, now: i64) -> Self {
        Sieve {
            doomed,
            now,
            seen: HashSet::new(),
            progress: HashMap::new(),
        }
    }

    /// Whether to keep the block; a dropped one is counted in `report` and in the progress of
    /// the requests that cover it.
    pub fn keep(
        &mut self,
        src: &Segment,
        bytes: &[u8],
        h: &crate::format::BlockHeader,
        report: &mut CompactionReport,
    ) -> bool {
        report.bytes_read += bytes.len() as u64;
        let arrival = h.arrival(src.created_ms);
        let covering = self
            .doomed
            .covering(h.team, &h.session, &h.person, arrival.first_ms);
        let duplicate = !self.seen.insert((h.team, h.session.clone(), h.seq, h.crc));
        let expired = arrival.last_ms < cutoff(src.lane_days, self.now);
        if covering.is_empty() && !expired && !duplicate {
            return true;
        }
        report.blocks_dropped += 1;
        report.bytes_dropped += bytes.len() as u64;
        for rid in covering {
            let p = self.progress.entry(rid).or_default();
            p.sessions.insert((h.team, h.session.clone()));
            p.bytes += bytes.len() as u64;
            p.segments.insert(src.id);
        }
        false
    }
}

/// Progress of one request during a pass.
#[derive(Default)]
pub(super) struct Progress {
    sessions: HashSet<(u64, String)>,
    bytes: u64,
    segments: HashSet<u64>,
}

impl Progress {
    fn absorb(&mut self, other: Progress) {
        self.sessions.extend(other.sessions);
        self.bytes += other.bytes;
        self.segments.extend(other.segments);
    }
}

/// What compaction works on; maintenance builds it and holds its lock while it runs.
pub(crate) struct Compactor<'a> {
    pub dir: &'a Path,
    pub config: &'a Config,
    pub fs: &'a Fs,
    pub segments: &'a SegmentSet,
    pub pipeline: &'a FlushPipeline,
    pub tombstones: &'a RwLock<Tombstones>,
    pub remote: Option<&'a RemoteTier>,
}

/// What a job does with its sources.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobKind {
    /// Idle data: one block per session at `regroup_level` (also drops what the sieve drops).
    Regroup,
    /// Copy the surviving blocks verbatim.
    Rewrite,
}

/// Some sealed segments of one lane that become one new segment.
struct Job {
    kind: JobKind,
    sources: Vec<Arc<Segment>>,
}

/// One pass, planned: the deletions it serves and its jobs.
struct Pass {
    now: i64,
    pending: Vec<Tombstone>,
    doomed: Doomed,
    jobs: Vec<Job>,
}

impl Compactor<'_> {
    /// Is a compaction pass worth running now? Yes when a deletion waited half of
    /// `purge_within`, or when there are small or mostly expired segments.
    pub(crate) fn due(&self, now_ms: i64) -> bool {
        let half = (self.config.purge_within.as_millis() / 2) as i64;
        let overdue = self
            .tombstones
            .read()
            .pending()
            .iter()
            .any(|t| now_ms - t.at_ms >= half);
        overdue
            || !self.regroup_jobs(now_ms).is_empty()
            || self
                .rewrite_jobs(&Doomed::new(&[]), now_ms)
                .map(|jobs| !jobs.is_empty())
                .unwrap_or(false)
    }

    /// One compaction pass; serves every deletion pending when it starts: plan, execute the
    /// jobs, sync the remote tier, retire the deletions whose data is gone.
    pub(crate) fn compact(&self) -> Result<CompactionReport> {
        let started = Instant::now();
        let pass = self.plan()?;
        let mut report = CompactionReport::default();
        let progress = self.execute(&pass, &mut report);
        // With a remote tier: upload the rewritten segments and delete the objects they
        // replace now, so that a deletion completes within this pass.
        if let Some(remote) = self.remote {
            match remote.sync(self.segments, self.config.parts.clock.now_ms()) {
                Ok(r) if !r.errors.is_empty() => report
                    .failed_jobs
                    .extend(r.errors.iter().map(|e| format!("remote: {e}"))),
                Ok(_) => {}
                Err(e) => report.failed_jobs.push(format!("remote: {e}")),
            }
        }
        self.retire(&pass, progress, &mut report)?;
        report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(report)
    }

    /// Flushes and seals what the pass must see, then lists its jobs: regrouping of idle data
    /// first (it also drops deleted and expired blocks), then rewrites and merges.
    fn plan(&self) -> Result<Pass> {
        // Whatever a flush round is writing right now lands before we look.
        self.pipeline.flush()?;
        let now = self.config.parts.clock.now_ms();
        let pending: Vec<Tombstone> = self.tombstones.read().pending().to_vec();
        let doomed = Doomed::new(&pending);
        // Active segments holding blocks of pending deletions are sealed, so compaction can
        // rewrite them like any sealed segment.
        self.pipeline
            .seal_where(|seg| Ok(!doomed.hits(seg)?.is_empty()))?;
        // Active segments past their age or idle (by the store's clock, which a CLI `--now`
        // sets) are sealed, so that retention and regrouping see every due byte.
        self.pipeline.seal_due_at(now)?;
        let regroups = self.regroup_jobs(now).into_iter().map(|sources| Job {
            kind: JobKind::Regroup,
            sources,
        });
        let rewrites = self
            .rewrite_jobs(&doomed, now)?
            .into_iter()
            .map(|sources| Job {
                kind: JobKind::Rewrite,
                sources,
            });
        let jobs = regroups.chain(rewrites).collect();
        Ok(Pass {
            now,
            pending,
            doomed,
            jobs,
        })
    }

    /// Runs the jobs; returns, per deletion request, what the committed jobs removed. Each
    /// job has its own sieve (duplicates are found within a job); its counts join the pass's
    /// only if the job commits, and its byte figures only then join the report.
    fn execute(&self, pass: &Pass, report: &mut CompactionReport) -> HashMap<u64, Progress> {
        let mut progress: HashMap<u64, Progress> = HashMap::new();
        for job in &pass.jobs {
            // A job's sources may be gone already (regrouped earlier in this pass).
            let v = self.segments.current();
            if !job.sources.iter().all(|s| v.contains(s.id)) {
                continue;
            }
            debug_assert!(job.sources.iter().all(|s| !v.is_active(s.id)));
            let mut sieve = Sieve::new(&pass.doomed, pass.now);
            let mut job_report = CompactionReport::default();
            let result = match job.kind {
                JobKind::Regroup => self.regroup(&job.sources, &mut sieve, &mut job_report),
                JobKind::Rewrite => self.rewrite(&job.sources, &mut sieve, &mut job_report),
            };
            match result {
                Ok(()) => {
                    report.absorb(&job_report);
                    for (id, p) in sieve.progress {
                        progress.entry(id).or_default().absorb(p);
                    }
                }
                // A job that fails (a corrupt block, a full disk) leaves its sources as they
                // were; the others go on, and the deletions it covers stay pending.
                Err(e) => {
                    let ids: Vec<u64> = job.sources.iter().map(|s| s.id).collect();
                    log::error!("compaction of segments {ids:?} failed: {e}");
                    report.failed_jobs.push(format!("segments {ids:?}: {e}"));
                }
            }
        }
        progress
    }

    /// Retires the pass's deletions that no segment holds any more (and no object waiting
    /// for deletion may hold), then uploads the tombstone log, which must lose their plain ids
    /// in the bucket too.
    fn retire(
        &self,
        pass: &Pass,
        mut progress: HashMap<u64, Progress>,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let objects_pending = self.remote.is_some_and(|r| r.deletes_pending());
        let mut still: HashSet<u64> = HashSet::new();
        for s in self.segments.current().segments() {
            still.extend(pass.doomed.hits(s)?);
        }
        let mut done = Vec::new();
        for t in &pass.pending {
            if !still.contains(&t.id) && !objects_pending {
                let p = progress.remove(&t.id).unwrap_or_default();
                let purged = Purged {
                    sessions_removed: p.sessions.len() as u64,
                    bytes_removed: p.bytes,
                    segments_rewritten: p.segments.len() as u64,
                };
                done.push((t.id, purged));
            }
        }
        if !done.is_empty() {
            self.tombstones
                .write()
                .retire(&done, self.config.parts.clock.now_ms())?;
        }
        if let (Some(remote), false) = (self.remote, done.is_empty()) {
            if let Err(e) = remote.upload_meta() {
                report
                    .failed_jobs
                    .push(format!("remote: tombstone log: {e}"));
            }
        }
        report.deletions_completed = done.iter().map(|(id, _)| *id).collect();
        Ok(())
    }

    /// Marks `ids` for deletion from the bucket (no-op without a remote tier).
    fn doom_remote(&self, ids: &[u64], replaced_by: Option<u64>) -> Result<()> {
        match self.remote {
            Some(remote) => remote.doom(ids, replaced_by),
            None => Ok(()),
        }
    }

    /// Jobs: per lane, in id order, runs of sealed segments that need a rewrite (deleted or
    /// mostly expired data) or are small, packed up to `segment_bytes`. A job of one segment
    /// runs only if that segment needs a rewrite.
    fn rewrite_jobs(&self, doomed: &Doomed, now: i64) -> Result<Vec<Vec<Arc<Segment>>>> {
        // Everything but the active segments (sealed ones, and read-only ones whose footer failed
        // its checks: rewriting those gives them a good footer again).
        let mut segs: Vec<Arc<Segment>> = self.segments.current().inactive().cloned().collect();
        segs.sort_by_key(|s| (s.lane_days, s.id));
        let mut jobs = Vec::new();
        let (mut cur, mut cur_bytes, mut cur_needed) = (Vec::<Arc<Segment>>::new(), 0u64, false);
        for s in segs {
            let size = s.size();
            let needed = self.needs_rewrite(&s, doomed, now)?;
            // Remote segments are downloaded only when they must be rewritten, never to merge.
            let small = size < self.config.segment_bytes / SMALL_FRACTION && !s.is_remote();
            if !needed && !small {
                continue;
            }
            let fits = cur.first().is_none_or(|f| f.lane_days == s.lane_days)
                && cur_bytes + size <= self.config.segment_bytes;
            if !fits {
                if cur.len() >= 2 || cur_needed {
                    jobs.push(std::mem::take(&mut cur));
                }
                cur.clear();
                (cur_bytes, cur_needed) = (0, false);
            }
            cur_bytes += size;
            cur_needed |= needed;
            cur.push(s);
        }
        if cur.len() >= 2 || cur_needed {
            jobs.push(cur);
        }
        Ok(jobs)
    }

    fn needs_rewrite(&self, s: &Segment, doomed: &Doomed, now: i64) -> Result<bool> {
        if !doomed.hits(s)?.is_empty() {
            return Ok(true);
        }
        let t = s.totals();
        let cut = cutoff(s.lane_days, now);
        if t.min_arrival_ms >= cut || t.stored_bytes == 0 {
            return Ok(false);
        }
        // Share of block bytes past retention, from the session table (no block read).
        let mut expired = 0u64;
        let mut teams = Vec::new();
        for (team, _) in s.sorted_keys() {
            if teams.last() != Some(&team) {
                teams.push(team);
            }
        }
        for team in teams {
            s.for_each_session(team, None, &mut |e| {
                if e.arrival().last_ms < cut {
                    expired += e.stored_bytes;
                }
            })?;
        }
        Ok(expired as f64 / t.stored_bytes as f64 > EXPIRED_SHARE)
    }

    /// Rewrites one job's sources into one new segment, copying surviving blocks verbatim.
    fn rewrite(
        &self,
        sources: &[Arc<Segment>],
        sieve: &mut Sieve,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let created = sources.iter().map(|s| s.created_ms).min().unwrap_or(0);
        let mut out = Output::create(self, sources[0].lane_days, created)?;
        for src in sources {
            src.for_each_block(&mut |_, bytes, h| {
                if sieve.keep(src, bytes, h, report) {
                    out.push(bytes, h)?;
                }
                Ok(())
            })?;
        }
        // Still regrouped only if every source was.
        let flags = sources
            .iter()
            .map(|s| s.totals().flags)
            .fold(u32::MAX, |a, b| a & b);
        out.commit(sources, flags, report)
    }
}
