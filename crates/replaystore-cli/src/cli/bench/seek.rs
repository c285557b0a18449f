//! `replaystore bench --seek`: seekable playback on a generated 3-hour session with a keyframe
//! (Meta + FullSnapshot) every 5 minutes, as rrweb's `checkoutEveryNms` records. For the hot
//! copy (one block per flush), regroups cut at keyframes (`Config::keyframe_block_bytes`: the
//! default 4 MiB, 1, 2 and 8 MiB) and a regroup into one block: bytes stored, and the time to
//! the first event and the bytes decompressed of a read from 90% of the way in, against a
//! whole read.

use std::time::Instant;

use replaystore::{Config, Error, ManualClock, Result, Store};
use replaystore_posthog::posthog::payload_events;
use replaystore_posthog::rrweb::read_for_playback;
use replaystore_testkit::generator::{long_session, GeneratedSession, Workload};
use serde::Serialize;

use super::{mb, Args};

const HOUR_MS: i64 = 3_600_000;
const SESSION_MS: i64 = 3 * HOUR_MS;
const CHECKOUT_MS: i64 = 5 * 60_000;
/// Reads per figure; each from a point around 90% of the way in.
const READS: usize = 200;

/// One layout's figures.
#[derive(Debug, Serialize)]
struct SeekRow {
    layout: String,
    stored_mb: f64,
    blocks: u64,
    whole_first_event_p50_ms: f64,
    whole_first_event_p99_ms: f64,
    whole_decompressed_mb: f64,
    seek_first_event_p50_ms: f64,
    seek_first_event_p99_ms: f64,
    seek_decompressed_mb: f64,
    /// The most one of those reads decompressed.
    seek_decompressed_max_mb: f64,
    /// seek_decompressed_mb / whole_decompressed_mb.
    decompressed_ratio: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Time to the first event of a playback from `from_ms` (`None`: the whole session), and the
/// bytes it decompressed.
fn first_event(store: &Store, s: &GeneratedSession, from_ms: Option<i64>) -> Result<(f64, u64)> {
    let t = Instant::now();
    let data = read_for_playback(store, s.team, &s.session_id, from_ms)?;
    let first = data.as_ref().and_then(|d| d.chunks.first());
    let events = first.map(|c| payload_events(&c.payload).map(|e| e.len()));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    // The same read again, untimed, for its trace.
    let read = store.read_session_from(s.team, &s.session_id, from_ms.unwrap_or(i64::MIN))?;
    let bytes = read.trace.bytes_decompressed;
    match events {
        Some(Ok(n)) if n > 0 => Ok((ms, bytes)),
        _ => Err(Error::Io {
            context: "bench --seek".into(),
            source: std::io::Error::other("no first event"),
        }),
    }
}

/// Figures of one layout of the session in `store`.
fn measure(store: &Store, s: &GeneratedSession, layout: &str, start: i64) -> Result<SeekRow> {
    let mut seek_ms = Vec::new();
    let mut whole_ms = Vec::new();
    let (mut seek_bytes, mut whole_bytes, mut seek_max) = (0u64, 0u64, 0u64);
    for i in 0..READS {
        // 88% to 92% of the way in, spread over the reads.
        let at = 0.88 + 0.04 * i as f64 / READS as f64;
        let from = start + (SESSION_MS as f64 * at) as i64;
        let (ms, bytes) = first_event(store, s, Some(from))?;
        seek_ms.push(ms);
        seek_bytes += bytes;
        seek_max = seek_max.max(bytes);
        if i % 10 == 0 {
            let (ms, bytes) = first_event(store, s, None)?;
            whole_ms.push(ms);
            whole_bytes = bytes;
        }
    }
    let st = store.stats()?;
    let seek_mb = mb(seek_bytes) / READS as f64;
    Ok(SeekRow {
        layout: layout.to_string(),
        stored_mb: mb(st.stored_bytes),
        blocks: store
            .read_session_from(s.team, &s.session_id, i64::MIN)?
            .trace
            .blocks_read,
        whole_first_event_p50_ms: percentile(&mut whole_ms, 0.5),
        whole_first_event_p99_ms: percentile(&mut whole_ms, 0.99),
        whole_decompressed_mb: mb(whole_bytes),
        seek_first_event_p50_ms: percentile(&mut seek_ms, 0.5),
        seek_first_event_p99_ms: percentile(&mut seek_ms, 0.99),
        seek_decompressed_mb: seek_mb,
        seek_decompressed_max_mb: mb(seek_max),
        decompressed_ratio: seek_mb / mb(whole_bytes).max(1e-9),
    })
}

/// Ingests the session as a server would (a flush per chunk: one block per flush round),
/// then measures it hot; then regroups and measures again.
fn run_layout(args: &Args, s: &GeneratedSession, cut: Option<usize>) -> Result<Vec<SeekRow>> {
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        context: "temp dir".into(),
        source: e,
    })?;
    let start = s.chunks[0].first_ts_ms;
    let config = crate::cli::posthog_config()
        .with_clock(std::sync::Arc::new(ManualClock::new(start + SESSION_MS)))
        .with_compression_level(args.level)
        .with_regroup_level(args.regroup_level)
        .with_maintenance_interval(None)
        .with_background_flush(false)
        .with_default_retention_days(3650)
        .with_regroup_idle(std::time::Duration::ZERO)
        .with_keyframe_block_bytes(cut);
    let store = Store::open(dir.path(), config)?;
    for c in &s.chunks {
        store.append(c.clone())?;
        store.flush()?;
    }
    store.seal_active()?;
    let mut rows = Vec::new();
    if cut == Config::default().keyframe_block_bytes {
        rows.push(measure(&store, s, "hot (a block per flush)", start)?);
    }
    store.compact()?;
    let layout = match cut {
        Some(n) => format!("regrouped, cut at keyframes past {} KiB", n >> 10),
        None => "regrouped, one block".to_string(),
    };
    rows.push(measure(&store, s, &layout, start)?);
    store.close()?;
    Ok(rows)
}

pub fn run(args: &Args) -> Result<i32> {
    let w = Workload {
        start_ms: replaystore_testkit::generator::recent_start_ms() - 2 * HOUR_MS,
        ..Workload::default()
    };
    let s = long_session(&w, 0, SESSION_MS, CHECKOUT_MS);
    let raw = s.raw_bytes() as u64;
    eprintln!(
        "seek: one {} h session, {} chunks, {:.1} MB raw, a keyframe every {} min",
        SESSION_MS / HOUR_MS,
        s.chunks.len(),
        mb(raw),
        CHECKOUT_MS / 60_000
    );
    // The default cut (with the hot figures), smaller and larger ones, and none.
    let mut rows = Vec::new();
    for cut in [
        Some(4 << 20),
        Some(1 << 20),
        Some(2 << 20),
        Some(8 << 20),
        None,
    ] {
        rows.extend(run_layout(args, &s, cut)?);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&rows).unwrap_or_default();
        println!("{text}");
        return Ok(0);
    }
    println!(
        "{:<42} {:>9} {:>6} | {:>21} {:>8} | {:>21} {:>8} {:>7} {:>6}",
        "layout",
        "stored MB",
        "blocks",
        "whole: first event ms",
        "MB dec",
        "90%: first event ms",
        "MB dec",
        "max",
        "ratio"
    );
    for r in &rows {
        println!(
            "{:<42} {:>9.2} {:>6} | {:>9.1} p50 {:>6.1} p99 {:>8.1} | {:>9.1} p50 {:>6.1} p99 {:>8.2} {:>7.2} {:>6.3}",
            r.layout,
            r.stored_mb,
            r.blocks,
            r.whole_first_event_p50_ms,
            r.whole_first_event_p99_ms,
            r.whole_decompressed_mb,
            r.seek_first_event_p50_ms,
            r.seek_first_event_p99_ms,
            r.seek_decompressed_mb,
            r.seek_decompressed_max_mb,
            r.decompressed_ratio
        );
    }
    Ok(0)
}
