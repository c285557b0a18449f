//! Operator commands: deletions, their status, compaction, retention.

use std::path::Path;
use std::time::{Duration, Instant};

use replaystore::{DeletionStatus, Error, Result, Store, Target};

use super::mb;

/// Requests are made durable one by one (each fsynced), then one compaction pass serves them
/// all if --wait.
pub fn delete_persons(
    store: &Store,
    team: u64,
    mut persons: Vec<String>,
    file: Option<&Path>,
    wait: bool,
) -> Result<i32> {
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
    if wait {
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
    }
    print_status(store, &ids)
}

pub fn status(store: &Store, ids: &[u64]) -> Result<i32> {
    if ids.is_empty() {
        let pending = store.pending_deletions();
        println!("{} pending deletion requests", pending.len());
        for (id, team, target, at) in pending {
            println!("{id}\tteam {team}\t{target:?}\trequested {at}");
        }
        return Ok(0);
    }
    print_status(store, ids)
}

fn print_status(store: &Store, ids: &[u64]) -> Result<i32> {
    let mut unknown = false;
    for &id in ids {
        let s = store.deletion_status(id);
        unknown |= s == DeletionStatus::Unknown;
        let line = serde_json::to_string(&s).unwrap_or_default();
        println!("{id}\t{line}");
    }
    Ok(if unknown { 1 } else { 0 })
}

pub fn compact(store: &Store) -> Result<i32> {
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
    Ok(0)
}

pub fn expire(store: &Store, now: Option<i64>) -> Result<i32> {
    let now = now.unwrap_or_else(|| store.config().clock.now_ms());
    let r = store.enforce_retention(now)?;
    println!(
        "removed {} segments ({:.1} MB) past retention",
        r.segments_removed,
        mb(r.bytes_removed)
    );
    Ok(0)
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
