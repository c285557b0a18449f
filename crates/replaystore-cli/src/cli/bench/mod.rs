//! `replaystore bench`: one process, one run, the same bytes for every system. Generates (or
//! loads) the workload once, ingests it into this store and each peer from the same threads
//! with the same durability points, reads every session back, and prints a table (or JSON).

mod cost;

pub use cost::{process_cpu_s, quantile};
mod seek;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use replaystore::{Chunk, Config, Error, Result, Store};
use replaystore_testkit::generator::{interleaved, Workload};
use serde::Serialize;

use cost::{phase, NormalizeAt};
use replaystore_testkit::peers::{io_err, ReplayStore, System, V1Gzip, V2Snappy, ZstdOnly};

#[derive(clap::Args)]
pub struct Args {
    /// Generated sessions (ignored with --fixture).
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
    /// zstd level (this store and the limit).
    #[arg(long, default_value_t = Config::default().compression_level)]
    pub level: i32,
    /// Real posthog-js batches (snapshot-batches.jsonl), copied to about --target-mb.
    #[arg(long)]
    pub fixture: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    pub target_mb: usize,
    /// Where the systems write (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Each thread makes its appends durable every this many MiB.
    #[arg(long, default_value_t = 8)]
    pub flush_mb: usize,
    /// Skip the slow PostHog v1 layout (a gzip file per session flush).
    #[arg(long = "no-v1")]
    pub skip_v1: bool,
    /// Where the posthog-js normalization (inflating the SDK's in-event gzip) runs.
    #[arg(long, value_enum, default_value_t = NormalizeAt::Regroup)]
    pub normalize: NormalizeAt,
    /// zstd level of regrouped blocks.
    #[arg(long, default_value_t = Config::default().regroup_level)]
    pub regroup_level: i32,
    /// Regrouped sessions start a new block at a keyframe past this many KiB
    /// (`Config::keyframe_block_bytes`); 0: one block per session.
    #[arg(long, default_value_t = Config::default().keyframe_block_bytes.unwrap_or(0) >> 10)]
    pub keyframe_kib: usize,
    /// No session summaries on the flush path (measures what the rrweb annotator costs).
    #[arg(long)]
    pub no_analyzer: bool,
    /// Only seekable playback: a generated 3-hour session read from 90% of the way in, hot,
    /// regrouped cut at keyframes and regrouped whole (time to first event, bytes
    /// decompressed, bytes stored).
    #[arg(long)]
    pub seek: bool,
}

/// One system's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub name: String,
    pub ingest_mb_s: f64,
    pub chunks_s: f64,
    pub bytes_per_session: f64,
    pub read_p50_ms: Option<f64>,
    pub read_p99_ms: Option<f64>,
    pub read_mb_s: Option<f64>,
    /// CPU-seconds (all threads) per GB of raw input spent ingesting.
    pub ingest_cpu_s_per_gb: f64,
    /// This system's figure divided by this store's.
    pub ingest_ratio: f64,
    pub bytes_ratio: f64,
    pub read_p99_ratio: Option<f64>,
    pub note: String,
}

#[derive(Debug, Serialize)]
struct Report {
    workload: String,
    sessions: usize,
    chunks: usize,
    raw_bytes: u64,
    threads: usize,
    flush_every_bytes: usize,
    level: i32,
    regroup_level: i32,
    normalize: NormalizeAt,
    systems: Vec<Row>,
    store_extra: StoreExtra,
}

#[derive(Debug, Default, Serialize)]
struct StoreExtra {
    compaction_mb_s: f64,
    compaction_bytes_written: u64,
    seq_write_fsync_mb_s: f64,
    bytes_per_session_after_compaction: f64,
    regroup_mb_s: f64,
    /// CPU-seconds per GB of raw input: the deletion compaction, the regroup, and this
    /// store's ingest + regroup (a byte's whole life without deletions).
    compaction_cpu_s_per_gb: f64,
    regroup_cpu_s_per_gb: f64,
    total_cpu_s_per_gb: f64,
    bytes_per_session_after_regroup: f64,
    regrouped_read_p50_ms: f64,
    regrouped_read_p99_ms: f64,
    cold_read_p50_ms: Option<f64>,
    cold_read_p99_ms: Option<f64>,
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn workload(args: &Args) -> Result<(String, Vec<Chunk>)> {
    let Some(path) = &args.fixture else {
        let w = Workload {
            sessions: args.sessions,
            persons: (args.sessions / 3).max(1),
            ..Workload::default()
        };
        return Ok((
            format!("generated, {} sessions", args.sessions),
            interleaved(&w),
        ));
    };
    let one = fixture_chunks(path)?;
    let raw: usize = one.iter().map(|c| c.payload.len()).sum::<usize>().max(1);
    let copies = (args.target_mb * 1_000_000 / raw).max(1);
    // Re-timed so that the last copy ends a minute ago: a store on the system clock accepts
    // the capture's timestamps whatever its age (an import, so no send-time skew correction).
    let now = replaystore::Clock::now_ms(&replaystore::SystemClock);
    let newest = one.iter().map(|c| c.last_ts_ms).max().unwrap_or(now);
    let shift = now - 60_000 - newest - copies as i64 * 1000;
    // Copies of the real session, each its own session and person, starting 1 s apart.
    let mut all = Vec::with_capacity(one.len() * copies);
    for k in 0..copies {
        for c in &one {
            let mut c = c.clone();
            c.session_id = format!("{}-{k}", c.session_id);
            c.person = format!("{}-{k}", c.person);
            c.sent_at_ms = None;
            c.first_ts_ms += shift + k as i64 * 1000;
            c.last_ts_ms += shift + k as i64 * 1000;
            all.push(c);
        }
    }
    all.sort_by_key(|c| c.last_ts_ms);
    Ok((format!("{} x{copies}", path.display()), all))
}

/// The chunks of a posthog-js capture (snapshot-batches.jsonl), as team 1's.
pub fn fixture_chunks(path: &std::path::Path) -> Result<Vec<Chunk>> {
    let text = std::fs::read(path).map_err(|e| Error::Io {
        context: format!("read {}", path.display()),
        source: e,
    })?;
    let chunks: Vec<Chunk> = replaystore_posthog::posthog::parse_body(1, &text)
        .into_iter()
        .filter_map(|(_, r)| r.ok().flatten())
        .collect();
    if chunks.is_empty() {
        return Err(Error::Io {
            context: format!("{}: no $snapshot event", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    }
    Ok(chunks)
}

/// Ingests with `threads` threads, each flushing every `flush_every` bytes; returns the time.
fn ingest(
    sys: &dyn System,
    parts: &[Vec<&Chunk>],
    flush_every: usize,
) -> std::io::Result<Duration> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(t, part)| {
                s.spawn(move || -> std::io::Result<()> {
                    let mut since = 0;
                    for c in part {
                        sys.append(t, c)?;
                        since += c.payload.len();
                        if since >= flush_every {
                            sys.flush(t)?;
                            since = 0;
                        }
                    }
                    sys.flush(t)
                })
            })
            .collect();
        hs.into_iter()
            .try_for_each(|h| h.join().map_err(|_| io_err("ingest thread panicked"))?)
    })?;
    Ok(start.elapsed())
}

/// Reads every session once; returns (p50 ms, p99 ms, MB/s) or None if the system cannot read.
fn read_all(
    sys: &dyn System,
    sessions: &[(u64, String)],
) -> std::io::Result<Option<(f64, f64, f64)>> {
    let mut lat = Vec::with_capacity(sessions.len());
    let mut bytes = 0usize;
    let start = Instant::now();
    for (team, sid) in sessions {
        let t = Instant::now();
        match sys.read(*team, sid)? {
            Some(n) => bytes += n,
            None => return Ok(None),
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    Ok(Some((
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.99),
        bytes as f64 / 1e6 / total,
    )))
}

/// The `q` quantile (0..=1) of `v` (sorted in place); 0 when empty.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    cost::quantile(v, q).unwrap_or(0.0)
}

fn measure(
    sys: &dyn System,
    parts: &[Vec<&Chunk>],
    sessions: &[(u64, String)],
    raw: u64,
    chunks: usize,
    flush_every: usize,
) -> std::io::Result<Row> {
    let (took, cpu) = phase(|| ingest(sys, parts, flush_every));
    let took = took?.as_secs_f64();
    let read = read_all(sys, sessions)?;
    Ok(Row {
        name: sys.name(),
        ingest_mb_s: mb(raw) / took,
        chunks_s: chunks as f64 / took,
        bytes_per_session: sys.disk_bytes() as f64 / sessions.len() as f64,
        read_p50_ms: read.map(|r| r.0),
        read_p99_ms: read.map(|r| r.1),
        read_mb_s: read.map(|r| r.2),
        ingest_cpu_s_per_gb: cpu.cpu_s_per_gb(raw),
        ..Row::default()
    })
}

/// Drops the page cache's copy of every file under `dir` (no root needed).
fn evict(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            evict(&p);
        } else if let Ok(f) = std::fs::File::open(&p) {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open descriptor; advice only.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
    }
}

// Long on purpose: a benchmark script: its steps and printed results, in order.
#[allow(clippy::too_many_lines)]
pub fn run(args: Args) -> Result<i32> {
    if args.seek {
        return seek::run(&args);
    }
    let tmp;
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().map_err(|e| Error::Io {
                context: "temp dir".into(),
                source: e,
            })?;
            tmp.path().to_path_buf()
        }
    };
    let io = |e: std::io::Error| Error::Io {
        context: "bench".into(),
        source: e,
    };
    let (name, chunks) = workload(&args)?;
    let threads = args.threads.max(1);
    let flush_every = args.flush_mb << 20;
    let raw: u64 = chunks.iter().map(|c| c.payload.len() as u64).sum();
    let mut parts: Vec<Vec<&Chunk>> = vec![Vec::new(); threads];
    for c in &chunks {
        parts[(replaystore::format::key_hash(c.team, &c.session_id) % threads as u64) as usize]
            .push(c);
    }
    let mut sessions: Vec<(u64, String)> = chunks
        .iter()
        .map(|c| (c.team, c.session_id.clone()))
        .collect();
    sessions.sort();
    sessions.dedup();
    eprintln!("workload: {name}: {} sessions, {} chunks, {:.1} MB raw, {threads} threads, durable every {} MiB per thread", sessions.len(), chunks.len(), mb(raw), args.flush_mb);

    // This store.
    let store_dir = root.join("replaystore");
    // Regrouping is measured on its own after the deletion compaction (which copies verbatim).
    let config = |regroup: bool| {
        let c = Config::default()
            .with_compression_level(args.level)
            .with_maintenance_interval(None)
            .with_default_retention_days(3650)
            .with_regroup(regroup)
            .with_regroup_idle(std::time::Duration::ZERO)
            .with_annotator(if args.no_analyzer {
                None
            } else {
                crate::cli::posthog_config().parts.annotator
            })
            .with_regroup_level(args.regroup_level)
            .with_keyframe_block_bytes((args.keyframe_kib > 0).then_some(args.keyframe_kib << 10));
        let normalize = std::sync::Arc::new(replaystore_posthog::posthog::Normalize);
        match args.normalize {
            NormalizeAt::None => c,
            NormalizeAt::Ingest => c.with_transform(normalize, true),
            NormalizeAt::Regroup => c.with_transform(normalize, false),
        }
    };
    let sys = ReplayStore {
        store: Store::open(&store_dir, config(false))?,
    };
    let mut rows =
        vec![measure(&sys, &parts, &sessions, raw, chunks.len(), flush_every).map_err(io)?];
    let mut extra = StoreExtra::default();
    // Cold reads: evict the files from the page cache, reopen, read again.
    sys.store.seal_active()?;
    drop(sys);
    evict(&store_dir);
    let sys = ReplayStore {
        store: Store::open(&store_dir, config(false))?,
    };
    if let Some((p50, p99, _)) = read_all(&sys, &sessions).map_err(io)? {
        (extra.cold_read_p50_ms, extra.cold_read_p99_ms) = (Some(p50), Some(p99));
    }
    // Delete 10% of persons, then compact.
    let mut persons: Vec<(u64, String)> =
        chunks.iter().map(|c| (c.team, c.person.clone())).collect();
    persons.sort();
    persons.dedup();
    for (team, p) in persons.iter().step_by(10) {
        sys.store.delete_person(*team, p)?;
    }
    let (r, cpu) = phase(|| sys.store.compact());
    let r = r?;
    extra.compaction_cpu_s_per_gb = cpu.cpu_s_per_gb(raw);
    extra.compaction_mb_s = r.rewrite_mb_s();
    extra.compaction_bytes_written = r.bytes_written;
    let kept_stats = sys.store.stats()?;
    let kept = kept_stats.sessions.max(1) as f64;
    extra.bytes_per_session_after_compaction = sys.disk_bytes() as f64 / kept;
    let store_disk = sys.disk_bytes();
    drop(sys);
    // The cold copy: regroup every (idle) session into one block at the regroup level.
    let sys = ReplayStore {
        store: Store::open(&store_dir, config(true))?,
    };
    let (r, cpu) = phase(|| sys.store.compact());
    let r = r?;
    // Per GB of what the regroup had to process: the raw bytes left after the deletions.
    extra.regroup_cpu_s_per_gb = cpu.cpu_s_per_gb(kept_stats.raw_bytes);
    extra.total_cpu_s_per_gb = rows[0].ingest_cpu_s_per_gb + extra.regroup_cpu_s_per_gb;
    extra.regroup_mb_s = mb(r.bytes_read) / (r.elapsed_ms / 1e3).max(1e-9);
    extra.bytes_per_session_after_regroup = sys.disk_bytes() as f64 / kept;
    if let Some((p50, p99, _)) = read_all(&sys, &sessions).map_err(io)? {
        (extra.regrouped_read_p50_ms, extra.regrouped_read_p99_ms) = (p50, p99);
    }
    drop(sys);

    // The limit, and the disk's sequential write + fsync of as many bytes.
    let limit = ZstdOnly::new(args.level, threads);
    rows.push(measure(&limit, &parts, &sessions, raw, chunks.len(), flush_every).map_err(io)?);
    extra.seq_write_fsync_mb_s =
        seq_write(&root.join("seq"), store_disk, flush_every).map_err(io)?;

    // Peers.
    let v2 = V2Snappy::new(&root.join("v2"), threads).map_err(io)?;
    rows.push(measure(&v2, &parts, &sessions, raw, chunks.len(), flush_every).map_err(io)?);
    drop(v2);
    #[cfg(feature = "fjall")]
    {
        let f = replaystore_testkit::peers::kv::fjall_peer::Fjall::new(&root.join("fjall"))
            .map_err(io)?;
        rows.push(measure(&f, &parts, &sessions, raw, chunks.len(), flush_every).map_err(io)?);
    }
    #[cfg(feature = "rocksdb")]
    {
        let r = replaystore_testkit::peers::kv::rocksdb_peer::Rocks::new(&root.join("rocksdb"))
            .map_err(io)?;
        rows.push(measure(&r, &parts, &sessions, raw, chunks.len(), flush_every).map_err(io)?);
    }
    if !args.skip_v1 {
        let v1 = V1Gzip::new(&root.join("v1"), threads).map_err(io)?;
        rows.push(measure(&v1, &parts, &sessions, raw, chunks.len(), flush_every).map_err(io)?);
    }
    let base = rows[0].clone();
    for r in rows.iter_mut() {
        r.ingest_ratio = r.ingest_mb_s / base.ingest_mb_s;
        r.bytes_ratio = r.bytes_per_session / base.bytes_per_session;
        r.read_p99_ratio = r.read_p99_ms.zip(base.read_p99_ms).map(|(a, b)| a / b);
    }
    rows[1].note = "no I/O; bytes = compressed size".into();

    let report = Report {
        workload: name,
        sessions: sessions.len(),
        chunks: chunks.len(),
        raw_bytes: raw,
        threads,
        flush_every_bytes: flush_every,
        level: args.level,
        regroup_level: args.regroup_level,
        normalize: args.normalize,
        systems: rows,
        store_extra: extra,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print_table(&report);
    }
    Ok(0)
}

/// Sequential write of `bytes` bytes with an fdatasync every `every` bytes: the disk's side of
/// the limit. Returns MB/s.
fn seq_write(path: &std::path::Path, bytes: u64, every: usize) -> std::io::Result<f64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let buf: Vec<u8> = (0..every.min(bytes as usize).max(1))
        .map(|i| (i * 2654435761) as u8)
        .collect();
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        f.write_all(&buf[..n])?;
        f.sync_data()?;
        left -= n as u64;
    }
    let s = start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    Ok(mb(bytes) / s)
}

fn print_table(r: &Report) {
    println!("workload: {} ({} sessions, {} chunks, {:.1} MB raw), {} threads, level {}, durable every {:.0} MiB per thread", r.workload, r.sessions, r.chunks, mb(r.raw_bytes), r.threads, r.level, r.flush_every_bytes as f64 / 1048576.0);
    println!(
        "{:<48} {:>10} {:>8} {:>9} {:>12} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "system",
        "ingest MB/s",
        "CPU s/GB",
        "x store",
        "bytes/sess",
        "x store",
        "read p50",
        "read p99",
        "read MB/s",
        ""
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for s in &r.systems {
        println!(
            "{:<48} {:>10.1} {:>8.2} {:>9.2} {:>12.0} {:>9.2} {:>9} {:>9} {:>9}",
            s.name,
            s.ingest_mb_s,
            s.ingest_cpu_s_per_gb,
            s.ingest_ratio,
            s.bytes_per_session,
            s.bytes_ratio,
            f(s.read_p50_ms),
            f(s.read_p99_ms),
            f(s.read_mb_s)
        );
    }
    let x = &r.store_extra;
    print_life_cost(r);
    println!("replaystore: cold read p50 {} ms, p99 {} ms; bytes/session after deleting 10% of persons and compacting {:.0}", f(x.cold_read_p50_ms), f(x.cold_read_p99_ms), x.bytes_per_session_after_compaction);
    println!("regroup (cold copy, level {}{}): {:.0} MB/s read; bytes/session {:.0} ({:.2}x the v2-style batch); read p50 {:.2} ms, p99 {:.2} ms", r.regroup_level, if r.normalize == NormalizeAt::None { "" } else { ", normalized" }, x.regroup_mb_s, x.bytes_per_session_after_regroup, x.bytes_per_session_after_regroup / r.systems.iter().find(|s| s.name.contains("v2")).map_or(f64::NAN, |s| s.bytes_per_session), x.regrouped_read_p50_ms, x.regrouped_read_p99_ms);
    println!("compaction rewrite {:.0} MB/s ({:.1} MB written) vs sequential write + fdatasync {:.0} MB/s: {:.2}x", x.compaction_mb_s, mb(x.compaction_bytes_written), x.seq_write_fsync_mb_s, x.compaction_mb_s / x.seq_write_fsync_mb_s.max(1e-9));
}

/// The end-to-end line: what a GB costs over its life here (ingest + regroup) and in the v2
/// layout (ingest only: it never compacts), in CPU and in bytes at rest.
fn print_life_cost(r: &Report) {
    let x = &r.store_extra;
    let Some(v2) = r.systems.iter().find(|s| s.name.contains("v2")) else {
        return;
    };
    let store_ingest = r
        .systems
        .first()
        .map_or(f64::NAN, |s| s.ingest_cpu_s_per_gb);
    println!(
        "end to end (normalize at {:?}, hot level {}, regroup level {}): CPU s/GB ingest {:.2} + regroup {:.2} = {:.2} vs v2-style {:.2}: {:.2}x; bytes/session at rest {:.0} vs {:.0}: {:.2}x",
        r.normalize,
        r.level,
        r.regroup_level,
        store_ingest,
        x.regroup_cpu_s_per_gb,
        x.total_cpu_s_per_gb,
        v2.ingest_cpu_s_per_gb,
        x.total_cpu_s_per_gb / v2.ingest_cpu_s_per_gb,
        x.bytes_per_session_after_regroup,
        v2.bytes_per_session,
        x.bytes_per_session_after_regroup / v2.bytes_per_session,
    );
}
