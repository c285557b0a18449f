//! `replaystore cost`: what replay storage costs. Measures bytes per session on a real store
//! (or on generated sessions ingested and compacted here) and projects it for a traffic and a
//! retention: stored bytes per day and the steady-state total.

use std::path::{Path, PathBuf};

use replaystore::{Error, Result, Store};
use replaystore_testkit::generator::{interleaved, Workload};

#[derive(clap::Args)]
pub struct Args {
    /// Measure this store (default: generate sessions, ingest and compact them).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Generated sessions to measure on (when no --dir).
    #[arg(long)]
    pub generate: Option<usize>,
    #[arg(long, default_value_t = 1_000_000.0)]
    pub sessions_per_day: f64,
    /// Share of sessions recorded.
    #[arg(long, default_value_t = 1.0)]
    pub sample_rate: f64,
    #[arg(long, default_value_t = 30)]
    pub retention_days: u32,
    /// Also write a one-page HTML report with a chart.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// What one session costs, measured.
struct Measured {
    source: String,
    sessions: u64,
    raw_per_session: f64,
    stored_per_session: f64,
}

fn measure_store(dir: &Path) -> Result<Measured> {
    let cfg = crate::cli::posthog_config()
        .with_regroup_idle(std::time::Duration::ZERO)
        .with_maintenance_interval(None)
        .with_default_retention_days(3650);
    let st = Store::open(dir, cfg)?.stats()?;
    let n = st.sessions.max(1) as f64;
    Ok(Measured {
        source: format!("store {}", dir.display()),
        sessions: st.sessions,
        raw_per_session: st.raw_bytes as f64 / n,
        stored_per_session: st.bytes_on_disk as f64 / n,
    })
}

/// Ingests generated sessions, flushing every 2 s of traffic as an ingestion server would,
/// then compacts (regrouping the idle sessions into their cold copy) and measures.
fn measure_generated(n: usize) -> Result<Measured> {
    let tmp = tempfile::tempdir().map_err(|e| Error::Io {
        context: "temp dir".into(),
        source: e,
    })?;
    let cfg = crate::cli::posthog_config()
        .with_regroup_idle(std::time::Duration::ZERO)
        .with_maintenance_interval(None)
        .with_default_retention_days(3650);
    let store = Store::open(tmp.path(), cfg)?;
    let chunks = interleaved(&Workload {
        sessions: n,
        persons: (n / 3).max(1),
        ..Workload::default()
    });
    let mut window_end = chunks.first().map_or(0, |c| c.last_ts_ms) + 2000;
    for c in chunks {
        if c.last_ts_ms > window_end {
            store.flush()?;
            window_end = c.last_ts_ms + 2000;
        }
        store.append(c)?;
    }
    store.seal_active()?;
    store.compact()?;
    let st = store.stats()?;
    let k = st.sessions.max(1) as f64;
    Ok(Measured {
        source: format!("{n} generated sessions, ingested and compacted"),
        sessions: st.sessions,
        raw_per_session: st.raw_bytes as f64 / k,
        stored_per_session: st.bytes_on_disk as f64 / k,
    })
}

pub fn run(args: Args) -> Result<i32> {
    let m = match (&args.dir, args.generate) {
        (Some(d), _) => measure_store(d)?,
        (None, Some(n)) => measure_generated(n)?,
        (None, None) => measure_generated(100)?,
    };
    let recorded_per_day = args.sessions_per_day * args.sample_rate;
    let per_day = recorded_per_day * m.stored_per_session;
    let steady = per_day * args.retention_days as f64;
    let gb = |b: f64| b / 1e9;
    println!("measured on: {} ({} sessions)", m.source, m.sessions);
    println!(
        "{:<40} {:>16.0}",
        "raw bytes per session", m.raw_per_session
    );
    println!(
        "{:<40} {:>16.0}",
        "stored bytes per session", m.stored_per_session
    );
    println!(
        "{:<40} {:>16.2}",
        "ratio",
        m.raw_per_session / m.stored_per_session.max(1.0)
    );
    println!(
        "{:<40} {:>16.0}",
        "recorded sessions per day", recorded_per_day
    );
    println!("{:<40} {:>16.2}", "stored GB per day", gb(per_day));
    println!(
        "{:<40} {:>16.1}",
        format!("stored GB at steady state ({} days)", args.retention_days),
        gb(steady)
    );
    println!(
        "{:<40} {:>16.1}",
        "raw GB at steady state (uncompressed)",
        gb(recorded_per_day * m.raw_per_session * args.retention_days as f64)
    );
    if let Some(path) = &args.html {
        std::fs::write(path, html(&m, &args, per_day, steady)).map_err(|e| Error::Io {
            context: format!("write {}", path.display()),
            source: e,
        })?;
        println!("report written to {}", path.display());
    }
    Ok(0)
}

/// A one-page report with an inline SVG chart of stored size over the retention window.
fn html(m: &Measured, a: &Args, per_day: f64, steady: f64) -> String {
    let days = (a.retention_days as f64 * 1.5).ceil().max(2.0);
    let (w, h, pad) = (640.0, 300.0, 50.0);
    let x = |d: f64| pad + d / days * (w - 2.0 * pad);
    let y = |b: f64| h - pad - b / steady.max(1.0) * (h - 2.0 * pad);
    let mut points = String::new();
    for d in 0..=days as u32 {
        let stored = per_day * (d as f64).min(a.retention_days as f64);
        points.push_str(&format!("{:.1},{:.1} ", x(d as f64), y(stored)));
    }
    let gb = |b: f64| b / 1e9;
    format!(
        r##"<!doctype html>
<html><head><meta charset="utf-8"><title>replaystore storage cost</title>
<style>body{{font-family:sans-serif;max-width:720px;margin:2em auto}} td{{padding:2px 12px}} td:last-child{{text-align:right}}</style>
</head><body>
<h1>Session replay storage cost</h1>
<p>Measured on {source} ({sessions} sessions).</p>
<table>
<tr><td>raw bytes per session</td><td>{raw:.0}</td></tr>
<tr><td>stored bytes per session</td><td>{stored:.0}</td></tr>
<tr><td>compression ratio</td><td>{ratio:.2}</td></tr>
<tr><td>sessions per day x sample rate</td><td>{spd:.0} x {rate}</td></tr>
<tr><td>stored GB per day</td><td>{day:.2}</td></tr>
<tr><td>stored GB at steady state ({ret} days)</td><td>{steady_gb:.1}</td></tr>
</table>
<h2>Stored size over time</h2>
<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">
<line x1="{pad}" y1="{base}" x2="{right}" y2="{base}" stroke="#888"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{base}" stroke="#888"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{points}"/>
<text x="{pad}" y="{label_y}" font-size="12">day 0</text>
<text x="{ret_x}" y="{label_y}" font-size="12">day {ret} (retention)</text>
<text x="4" y="{top}" font-size="12">{steady_gb:.1} GB</text>
</svg>
<p>The store grows by {day:.2} GB a day until the oldest data reaches its retention; from then on
segments expire as fast as new ones fill, and the total stays at {steady_gb:.1} GB.</p>
</body></html>
"##,
        source = m.source,
        sessions = m.sessions,
        raw = m.raw_per_session,
        stored = m.stored_per_session,
        ratio = m.raw_per_session / m.stored_per_session.max(1.0),
        spd = a.sessions_per_day,
        rate = a.sample_rate,
        day = gb(per_day),
        ret = a.retention_days,
        steady_gb = gb(steady),
        base = h - pad,
        right = w - pad,
        label_y = h - pad + 18.0,
        ret_x = x(a.retention_days as f64) - 30.0,
        top = y(steady) + 4.0,
    )
}
