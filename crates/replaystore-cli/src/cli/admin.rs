//! Operator commands: deletions, their status, compaction, retention.

use std::path::Path;
use std::time::{Duration, Instant};

use replaystore::{CompactionReport, DeletionStatus, Error, Result, Store, Target};

use super::mb;

/// The persons named by --person and --file (one per line, blank lines and #comments skipped).
pub fn persons(mut persons: Vec<String>, file: Option<&Path>) -> Result<Vec<String>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| Error::Io {
            context: format!("read {}", f.display()),
            source: e,
        })?;
        persons.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(persons)
}

/// Requests are made durable one by one (each fsynced), then one compaction pass serves them
/// all if --wait.
pub fn delete_persons(store: &Store, team: u64, persons: Vec<String>, wait: bool) -> Result<i32> {
    let targets = persons.into_iter().map(Target::Person).collect();
    delete(store, team, targets, wait)
}

pub fn delete_sessions(store: &Store, team: u64, sessions: Vec<String>, wait: bool) -> Result<i32> {
    delete(
        store,
        team,
        sessions.into_iter().map(Target::Session).collect(),
        wait,
    )
}

fn delete(store: &Store, team: u64, targets: Vec<Target>, wait: bool) -> Result<i32> {
    if targets.is_empty() {
        eprintln!("nothing to delete: give --person, --session or --file");
        return Ok(2);
    }
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    for t in targets {
        let started = Instant::now();
        let id = match &t {
            Target::Person(p) => store.delete_person(team, p)?,
            Target::Session(s) => store.delete_session(team, s)?,
        };
        slowest = slowest.max(started.elapsed());
        ids.push(id);
    }
    println!(
        "{} deletion requests durable (ids {}..={}), slowest took {:.2} ms to fsync",
        ids.len(),
        ids[0],
        ids[ids.len() - 1],
        slowest.as_secs_f64() * 1e3
    );
    if !wait {
        return print_status(store, &ids);
    }
    let r = store.compact()?;
    println!(
        "compaction: {} segments rewritten, {} removed, {:.1} MB read, {:.1} MB written, {} blocks ({:.1} MB) dropped in {:.0} ms ({:.0} MB/s)",
        r.segments_rewritten,
        r.segments_removed,
        mb(r.bytes_read),
        mb(r.bytes_written),
        r.blocks_dropped,
        mb(r.bytes_dropped),
        r.elapsed_ms,
        r.rewrite_mb_s()
    );
    let code = print_status(store, &ids)?;
    Ok(code.max(waited_for(store, &ids, &r)))
}

/// The exit code of a command that ran a compaction pass for deletion requests `ids`: 0 when
/// every one is done and no job failed, 1 otherwise, with the reasons on stderr.
fn waited_for(store: &Store, ids: &[u64], r: &CompactionReport) -> i32 {
    for f in &r.failed_jobs {
        eprintln!("compaction job failed: {f}");
    }
    let pending: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| matches!(store.deletion_status(id), DeletionStatus::Pending { .. }))
        .collect();
    if !pending.is_empty() {
        let doomed = store.remote_status().map_or(0, |s| s.doomed);
        let why = if !r.failed_jobs.is_empty() {
            "a compaction job failed (above)".to_string()
        } else if doomed > 0 {
            format!("{doomed} replaced objects still wait for deletion from the bucket")
        } else {
            "a segment still holds their data".to_string()
        };
        eprintln!(
            "deletion requests {pending:?} are not done: {why}; their data stays hidden, and the \
             next compaction pass (or `compact`) retries"
        );
    }
    if r.failed_jobs.is_empty() && pending.is_empty() {
        0
    } else {
        1
    }
}

pub fn status(store: &Store, ids: &[u64]) -> Result<i32> {
    if ids.is_empty() {
        let pending = store.pending_deletions();
        println!("{} pending deletion requests", pending.len());
        for t in pending {
            let (id, team, target, at) = (t.id, t.team, t.target, t.at_ms);
            println!("{id}\tteam {team}\t{target:?}\trequested {at}");
        }
        return Ok(0);
    }
    print_status(store, ids)
}

/// Prints each request's status; 1 if an id is unknown.
fn print_status(store: &Store, ids: &[u64]) -> Result<i32> {
    let mut unknown = Vec::new();
    for &id in ids {
        let s = store.deletion_status(id);
        if s == DeletionStatus::Unknown {
            unknown.push(id);
        }
        let line = serde_json::to_string(&s).unwrap_or_default();
        println!("{id}\t{line}");
    }
    if !unknown.is_empty() {
        eprintln!("no deletion request with id {unknown:?}");
    }
    Ok(if unknown.is_empty() { 0 } else { 1 })
}

/// One compaction pass; exit 1 when a job failed or a request pending before it still is.
pub fn compact(store: &Store) -> Result<i32> {
    let before: Vec<u64> = store.pending_deletions().iter().map(|d| d.id).collect();
    let r = store.compact()?;
    println!(
        "{} segments rewritten into {}, {} removed; read {:.1} MB, wrote {:.1} MB, dropped {} blocks ({:.1} MB); {} deletions completed; {:.0} ms, {:.0} MB/s",
        r.segments_rewritten,
        r.segments_written,
        r.segments_removed,
        mb(r.bytes_read),
        mb(r.bytes_written),
        r.blocks_dropped,
        mb(r.bytes_dropped),
        r.deletions_completed.len(),
        r.elapsed_ms,
        r.rewrite_mb_s()
    );
    Ok(waited_for(store, &before, &r))
}

/// Retention at the store's clock (`--now`); exit 1 when an expired object could not be deleted
/// from the bucket (it stays marked for deletion and the next sync retries it).
pub fn expire(store: &Store) -> Result<i32> {
    let now = store.config().parts.clock.now_ms();
    let r = store.enforce_retention(now)?;
    println!(
        "removed {} segments ({:.1} MB) past retention",
        r.segments_removed,
        mb(r.bytes_removed)
    );
    for e in &r.errors {
        eprintln!("retention: {e}");
    }
    Ok(if r.errors.is_empty() { 0 } else { 1 })
}

/// Scrub: exit 0 when every check passes, 1 with the list of problems otherwise.
pub fn verify(store: &Store, json: bool) -> Result<i32> {
    let r = store.verify()?;
    if json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        println!(
            "checked {} segments, {} blocks ({:.1} MB), {} session records: {} problems",
            r.segments,
            r.blocks,
            mb(r.bytes),
            r.sessions,
            r.problems.len()
        );
        for p in &r.problems {
            println!("  {p}");
        }
    }
    Ok(if r.problems.is_empty() { 0 } else { 1 })
}
