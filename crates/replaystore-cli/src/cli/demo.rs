//! `replaystore demo`: the main job end to end on generated data.

use std::path::PathBuf;
use std::time::Instant;

use replaystore::{Chunk, Config, Error, Result, Store};
use replaystore_testkit::generator::{self, GeneratedSession, Workload};

use super::mb;

/// Each ingest thread makes its appends durable every this many raw bytes (an ingestion
/// server's Kafka commit point).
const FLUSH_EVERY: usize = 8 << 20;

// Long on purpose: a demo script: its steps and printed results, in order.
#[allow(clippy::too_many_lines)]
pub fn run(dir: Option<PathBuf>, sessions: usize, threads: usize, seed: u64) -> Result<i32> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().map_err(|e| Error::Io {
                context: "create temp dir".into(),
                source: e,
            })?;
            tmp.path().to_path_buf()
        }
    };
    let threads = threads.max(1);
    let workload = Workload {
        seed,
        sessions,
        persons: (sessions / 3).max(1),
        ..Workload::default()
    };

    let t = Instant::now();
    let generated = generate(&workload, threads);
    let gen_s = t.elapsed().as_secs_f64();
    let raw: usize = generated.iter().map(GeneratedSession::raw_bytes).sum();
    let chunk_count: usize = generated.iter().map(|s| s.chunks.len()).sum();
    eprintln!(
        "generated {sessions} sessions, {chunk_count} chunks, {:.1} MB raw in {gen_s:.1} s",
        mb(raw as u64)
    );

    // Interleave in time, then partition by session like Kafka partitions feeding threads.
    let mut stream: Vec<&Chunk> = generated.iter().flat_map(|s| &s.chunks).collect();
    stream.sort_by_key(|c| c.last_ts_ms);
    let mut parts: Vec<Vec<&Chunk>> = vec![Vec::new(); threads];
    for c in stream {
        parts[(replaystore::format::key_hash(c.team, &c.session_id) % threads as u64) as usize]
            .push(c);
    }

    let store = Store::open(&dir, demo_config())?;
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| {
                let store = &store;
                s.spawn(move || -> Result<()> {
                    let mut since = 0;
                    for c in part {
                        since += c.payload.len();
                        store.append((*c).clone())?;
                        if since >= FLUSH_EVERY {
                            store.flush()?;
                            since = 0;
                        }
                    }
                    store.flush()
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| Error::FlushFailed("ingest thread panicked".into()))??;
        }
        Ok(())
    })?;
    let ingest_s = t.elapsed().as_secs_f64();
    let ingest_stats = store.stats()?;
    store.close()?;

    let t = Instant::now();
    let store = Store::open(&dir, demo_config())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut mismatches = 0;
    for g in &generated {
        if !matches(&store, g)? {
            eprintln!("MISMATCH: team {} session {}", g.team, g.session_id);
            mismatches += 1;
        }
    }
    let read_s = t.elapsed().as_secs_f64();
    let st = store.stats()?;

    println!("{:<28} {:>14}", "sessions", st.sessions);
    println!("{:<28} {:>14}", "chunks", st.chunks);
    println!("{:<28} {:>14.1}", "raw MB", mb(st.raw_bytes));
    println!(
        "{:<28} {:>14.1}",
        "stored MB (on disk)",
        mb(st.bytes_on_disk)
    );
    println!(
        "{:<28} {:>14.2}",
        "ratio (raw / on disk)",
        st.raw_bytes as f64 / st.bytes_on_disk.max(1) as f64
    );
    println!("{:<28} {:>14.0}", "bytes per session", st.bytes_per_session);
    println!(
        "{:<28} {:>14.1}",
        "ingest MB/s (raw, durable)",
        mb(raw as u64) / ingest_s
    );
    println!("{:<28} {:>14}", "ingest threads", threads);
    println!(
        "{:<28} {:>14}",
        "flush rounds / fsyncs",
        format!("{} / {}", ingest_stats.flush_rounds, ingest_stats.fsyncs)
    );
    println!("{:<28} {:>14.1}", "reopen ms", open_ms);
    println!("{:<28} {:>14.1}", "read back MB/s", mb(raw as u64) / read_s);
    // The cold copy: compaction regroups each idle session into one block at a higher level;
    // the sessions are read back and compared again.
    store.seal_active()?;
    let t = Instant::now();
    store.compact()?;
    let compact_s = t.elapsed().as_secs_f64();
    let cold = store.stats()?;
    for g in &generated {
        if !matches(&store, g)? {
            eprintln!(
                "MISMATCH after compaction: team {} session {}",
                g.team, g.session_id
            );
            mismatches += 1;
        }
    }
    println!(
        "{:<28} {:>14.0}",
        "bytes/session, regrouped", cold.bytes_per_session
    );
    println!(
        "{:<28} {:>14.2}",
        "ratio, regrouped",
        cold.raw_bytes as f64 / cold.bytes_on_disk.max(1) as f64
    );
    println!("{:<28} {:>14.1}", "regroup seconds", compact_s);
    println!(
        "verified {} sessions, {mismatches} mismatches",
        generated.len()
    );
    store.close()?;
    Ok(if mismatches == 0 { 0 } else { 1 })
}

fn generate(w: &Workload, threads: usize) -> Vec<GeneratedSession> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, GeneratedSession)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= w.sessions {
                            return mine;
                        }
                        mine.push((i, generator::session(w, i)));
                    }
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

fn matches(store: &Store, g: &GeneratedSession) -> Result<bool> {
    let Some(data) = store.read_session(g.team, &g.session_id)? else {
        return Ok(false);
    };
    Ok(data.summary.person == g.person
        && data.chunks.len() == g.chunks.len()
        && data.chunks.iter().zip(&g.chunks).all(|(a, b)| {
            a.payload == b.payload
                && a.first_ts_ms == b.first_ts_ms
                && a.last_ts_ms == b.last_ts_ms
                && a.window_id == b.window_id
        }))
}

/// The default configuration, except that compaction regroups sealed data at once (the demo
/// shows the at-rest size right after ingesting, instead of after `regroup_idle`).
fn demo_config() -> Config {
    super::posthog_config().with_regroup_idle(std::time::Duration::ZERO)
}
