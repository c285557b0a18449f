//! `replaystore soak`: does the store keep up with itself? Ingests real posthog-js traffic at a
//! fixed rate for a while with the maintenance thread on (regroup idle shortened), samples the
//! regroup backlog (hot bytes not regrouped yet) and the durable-ack latency, and says whether
//! the backlog stayed bounded. The highest bounded rate is the store's sustainable throughput.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use replaystore::{Chunk, Result, Store};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Real posthog-js batches (snapshot-batches.jsonl): one session, replayed as many.
    #[arg(long)]
    pub fixture: PathBuf,
    /// Ingest rates to try, in MB/s of raw input (comma-separated); each gets a fresh store.
    #[arg(long, value_delimiter = ',', default_value = "50,100")]
    pub rate_mb_s: Vec<f64>,
    /// How long each rate runs.
    #[arg(long, default_value_t = 180)]
    pub seconds: u64,
    /// A session is regrouped this long after its last chunk arrived.
    #[arg(long, default_value_t = 10)]
    pub regroup_idle_s: u64,
    /// Appending threads (each makes its appends durable every --flush-mb).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, default_value_t = 8)]
    pub flush_mb: usize,
    /// Sessions each thread keeps open at once (their chunks interleave).
    #[arg(long, default_value_t = 16)]
    pub open_sessions: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5)]
    pub sample_s: u64,
    /// Where the stores go (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Nice steps of the background threads (`Config::background_nice`; 0: same priority as
    /// the appends, to see what yielding buys).
    #[arg(long, default_value_t = replaystore::Config::default().background_nice)]
    pub background_nice: i32,
    #[arg(long)]
    pub json: bool,
}

/// One sample of a run.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    at_s: f64,
    ingested_mb: f64,
    backlog_mb: f64,
    regrouped_mb: f64,
    flush_p99_ms: f64,
}

/// One rate's outcome.
#[derive(Debug, Serialize)]
struct RunReport {
    target_mb_s: f64,
    achieved_mb_s: f64,
    /// Growth of the backlog over the second half of the run, MB/s (least squares).
    backlog_slope_mb_s: f64,
    /// The backlog grew by under 5% of the ingest rate over the second half.
    bounded: bool,
    flush_p50_ms: f64,
    flush_p99_ms: f64,
    cpu_s_per_gb: f64,
    samples: Vec<Sample>,
}

pub fn run(args: Args) -> Result<i32> {
    let template = crate::cli::bench::fixture_chunks(&args.fixture)?;
    let tmp = tempfile::tempdir().map_err(crate::cli::io("temp dir"))?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut reports = Vec::new();
    for (i, &rate) in args.rate_mb_s.iter().enumerate() {
        let dir = root.join(format!("soak-{i}"));
        let report = run_rate(&args, &template, &dir, rate)?;
        if !args.json {
            print_run(&report);
        }
        reports.push(report);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if args.json {
        println!("{}", serde_json::to_string(&reports).unwrap_or_default());
    }
    let best = reports
        .iter()
        .filter(|r| r.bounded)
        .map(|r| r.achieved_mb_s)
        .fold(0.0, f64::max);
    eprintln!("sustainable: {best:.1} MB/s (highest rate whose regroup backlog stayed bounded)");
    Ok(0)
}

/// The product's configuration, with maintenance every second and a short regroup idle.
fn soak_config(args: &Args) -> replaystore::Config {
    crate::cli::posthog_config()
        .with_default_retention_days(3650)
        .with_maintenance_interval(Some(Duration::from_secs(1)))
        .with_regroup_idle(Duration::from_secs(args.regroup_idle_s))
        // Segments seal (and become regroupable) within the run.
        .with_segment_max_age(Duration::from_secs(args.regroup_idle_s.max(5)))
        .with_background_nice(args.background_nice)
}

/// What the appending threads share with the sampler.
#[derive(Default)]
struct Shared {
    ingested: AtomicU64,
    stop: AtomicBool,
    /// Durable-ack latencies (ms) since the last sample.
    flush_ms: Mutex<Vec<f64>>,
}

fn run_rate(args: &Args, template: &[Chunk], dir: &Path, rate_mb_s: f64) -> Result<RunReport> {
    let store = Store::open(dir, soak_config(args))?;
    let shared = Shared::default();
    let threads = args.threads.max(1);
    let per_thread_bytes_s = rate_mb_s * 1e6 / threads as f64;
    let cpu_start = crate::cli::bench::process_cpu_s();
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut all_flush_ms = Vec::new();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (store, shared) = (&store, &shared);
                s.spawn(move || append_loop(store, shared, template, args, t, per_thread_bytes_s))
            })
            .collect();
        let deadline = start + Duration::from_secs(args.seconds);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(args.sample_s));
            let mut window = std::mem::take(&mut *shared.flush_ms.lock());
            let stats = store.stats()?;
            samples.push(Sample {
                at_s: start.elapsed().as_secs_f64(),
                ingested_mb: shared.ingested.load(Ordering::Relaxed) as f64 / 1e6,
                backlog_mb: stats.regroup_backlog_bytes as f64 / 1e6,
                regrouped_mb: stats.bytes_regrouped as f64 / 1e6,
                flush_p99_ms: percentile(&mut window, 0.99),
            });
            all_flush_ms.extend(window);
        }
        shared.stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join()
                .map_err(|_| std::io::Error::other("append thread panicked"))
                .map_err(crate::cli::io("soak"))??;
        }
        Ok(())
    })?;
    let took_s = start.elapsed().as_secs_f64();
    let cpu_s = crate::cli::bench::process_cpu_s() - cpu_start;
    let ingested = shared.ingested.load(Ordering::Relaxed) as f64;
    store.close()?;
    let achieved = ingested / 1e6 / took_s;
    let slope = backlog_slope(&samples);
    Ok(RunReport {
        target_mb_s: rate_mb_s,
        achieved_mb_s: achieved,
        backlog_slope_mb_s: slope,
        bounded: slope < 0.05 * achieved,
        flush_p50_ms: percentile(&mut all_flush_ms, 0.5),
        flush_p99_ms: percentile(&mut all_flush_ms, 0.99),
        cpu_s_per_gb: cpu_s / (ingested / 1e9).max(1e-12),
        samples,
    })
}

/// One thread's appends: `open` sessions interleaved, each a fresh copy of the fixture session
/// stamped with the current time, paced to `bytes_s`, durable every `flush_mb`.
fn append_loop(
    store: &Store,
    shared: &Shared,
    template: &[Chunk],
    args: &Args,
    thread: usize,
    bytes_s: f64,
) -> Result<()> {
    let open = args.open_sessions.max(1);
    // (copy number, next chunk) of each open session.
    let mut sessions: Vec<(u64, usize)> = (0..open as u64).map(|k| (k, 0)).collect();
    let mut next_copy = open as u64;
    let (start, mut sent, mut since_flush) = (Instant::now(), 0f64, 0usize);
    let mut turn = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let ahead_s = sent / bytes_s - start.elapsed().as_secs_f64();
        if ahead_s > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(ahead_s.min(0.05)));
            continue;
        }
        turn = (turn + 1) % open;
        let (copy, at) = sessions[turn];
        let chunk = restamp(&template[at], thread, copy);
        let len = chunk.payload.len();
        store.append(chunk)?;
        (sent, since_flush) = (sent + len as f64, since_flush + len);
        shared.ingested.fetch_add(len as u64, Ordering::Relaxed);
        sessions[turn] = if at + 1 == template.len() {
            next_copy += 1;
            (next_copy - 1, 0)
        } else {
            (copy, at + 1)
        };
        if since_flush >= args.flush_mb << 20 {
            let t = Instant::now();
            store.flush()?;
            shared.flush_ms.lock().push(t.elapsed().as_secs_f64() * 1e3);
            since_flush = 0;
        }
    }
    store.flush()
}

/// A copy of a fixture chunk as session `copy` of `thread`, timed now (the store's clock).
fn restamp(c: &Chunk, thread: usize, copy: u64) -> Chunk {
    let now_ms = replaystore::Clock::now_ms(&replaystore::SystemClock);
    Chunk {
        session_id: format!("{}-t{thread}-{copy}", c.session_id),
        person: format!("{}-t{thread}-{copy}", c.person),
        first_ts_ms: now_ms - (c.last_ts_ms - c.first_ts_ms),
        last_ts_ms: now_ms,
        sent_at_ms: None,
        ..c.clone()
    }
}

/// Least-squares slope (MB/s) of the backlog over the second half of the samples.
fn backlog_slope(samples: &[Sample]) -> f64 {
    let half = &samples[samples.len() / 2..];
    let n = half.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean_t = half.iter().map(|s| s.at_s).sum::<f64>() / n;
    let mean_b = half.iter().map(|s| s.backlog_mb).sum::<f64>() / n;
    let cov: f64 = half
        .iter()
        .map(|s| (s.at_s - mean_t) * (s.backlog_mb - mean_b))
        .sum();
    let var: f64 = half.iter().map(|s| (s.at_s - mean_t).powi(2)).sum();
    cov / var.max(1e-12)
}

/// The `q` quantile of `v`; NaN for an empty sample window.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    crate::cli::bench::quantile(v, q).unwrap_or(f64::NAN)
}

fn print_run(r: &RunReport) {
    println!(
        "rate {:.0} MB/s (achieved {:.1}): backlog slope {:+.2} MB/s over the second half -> {}; durable ack p50 {:.1} ms, p99 {:.1} ms; {:.2} CPU s/GB",
        r.target_mb_s,
        r.achieved_mb_s,
        r.backlog_slope_mb_s,
        if r.bounded { "bounded" } else { "GROWING" },
        r.flush_p50_ms,
        r.flush_p99_ms,
        r.cpu_s_per_gb
    );
    println!(
        "  {:>6} {:>10} {:>10} {:>12} {:>12}",
        "t s", "ingested MB", "backlog MB", "regrouped MB", "ack p99 ms"
    );
    for s in &r.samples {
        println!(
            "  {:>6.0} {:>10.0} {:>10.1} {:>12.1} {:>12.1}",
            s.at_s, s.ingested_mb, s.backlog_mb, s.regrouped_mb, s.flush_p99_ms
        );
    }
}
