//! Hidden measurement commands whose figures go into docs/ and issue notes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use replaystore::{Chunk, Clock, Error, Result, Store};

use crate::cli::io;

/// Resident and anonymous memory of this process, in bytes, from /proc/self/status.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// Builds (if empty) a store of `sessions` small sessions, then measures reopen time and memory.
// Long on purpose: a measurement script: build, reopen, measure, print, in order.
#[allow(clippy::too_many_lines)]
pub fn index_cost(dir: &Path, sessions: usize) -> Result<i32> {
    let config = || {
        crate::cli::posthog_config()
            .with_background_flush(false)
            .with_default_retention_days(3650)
    };
    let fresh = !dir.join("lanes").exists();
    if fresh {
        let store = Store::open(dir, config())?;
        let t = Instant::now();
        // An hour ago: inside the store's accepted timestamp window.
        let base = replaystore::SystemClock.now_ms() - 3_600_000;
        for i in 0..sessions {
            store.append(Chunk {
                team: 1 + (i % 4) as u64,
                session_id: format!("01{i:030x}"),
                person: format!("person-{}", i / 3),
                window_id: None,
                first_ts_ms: base + i as i64,
                last_ts_ms: base + i as i64 + 1000 * (1 + (i % 600) as i64),
                sent_at_ms: None,
                payload: varied_payload(i),
            })?;
            if i % 100_000 == 99_999 {
                store.flush()?;
            }
        }
        store.seal_active()?;
        store.close()?;
        eprintln!(
            "built {sessions} sessions in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let (rss0, anon0) = memory();
    let t = Instant::now();
    let store = Store::open(dir, config())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let (rss1, anon1) = memory();
    let st = store.stats()?;
    let n = st.sessions.max(1) as f64;
    println!("sessions                   {}", st.sessions);
    println!("segments                   {}", st.segments);
    println!("open ms                    {open_ms:.1}");
    println!(
        "index heap bytes/session   {:.2}",
        st.index_heap_bytes as f64 / n
    );
    println!(
        "RSS delta bytes/session    {:.2}",
        rss1.saturating_sub(rss0) as f64 / n
    );
    println!(
        "anon RSS delta bytes/sess  {:.2}",
        anon1.saturating_sub(anon0) as f64 / n
    );
    let probe = format!("01{:030x}", sessions / 2);
    let t = Instant::now();
    let found = store
        .read_session(1 + ((sessions / 2) % 4) as u64, &probe)?
        .is_some();
    println!(
        "point read of one session  {:.3} ms (found: {found})",
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(store);
    index_pages(dir, sessions, &config)?;
    Ok(0)
}

/// A session's payload: a page view of its own URL; every 7th has a console error, every 5th
/// two clicks (so that the filters of a listing have something to find).
fn varied_payload(i: usize) -> Vec<u8> {
    let mut events = vec![format!(
        r#"{{"type":4,"data":{{"href":"https://x/{i}","width":1280,"height":800}},"timestamp":{i}}}"#
    )];
    if i.is_multiple_of(7) {
        events.push(format!(
            r#"{{"type":6,"data":{{"plugin":"rrweb/console@1","payload":{{"level":"error","payload":["e"]}}}},"timestamp":{i}}}"#
        ));
    }
    if i.is_multiple_of(5) {
        for dx in [0, 500] {
            events.push(format!(
                r#"{{"type":3,"data":{{"source":2,"type":2,"x":{dx},"y":1}},"timestamp":{i}}}"#
            ));
        }
    }
    format!("[{}]", events.join(",")).into_bytes()
}

/// The filtered listings measured: each is paged (cursor) until 100 pages are taken in all.
// A table of filters, one per entry: longer than a screen only because rustfmt spreads it.
#[allow(clippy::too_many_lines)]
fn listing_filters(t0: i64) -> Vec<(&'static str, replaystore::SessionFilter)> {
    use replaystore::{SessionFilter, SortBy};
    use replaystore_posthog::ActivityFilter;
    let page = SessionFilter {
        limit: Some(100),
        ..Default::default()
    };
    let activity = |a: ActivityFilter, sort, descending| {
        a.apply(SessionFilter {
            sort,
            descending,
            ..page.clone()
        })
    };
    vec![
        (
            "all, newest first",
            SessionFilter {
                descending: true,
                ..page.clone()
            },
        ),
        (
            "person",
            SessionFilter {
                person: Some("person-4000".into()),
                ..page.clone()
            },
        ),
        (
            "time range",
            SessionFilter {
                from_ts_ms: Some(t0 + 400_000),
                to_ts_ms: Some(t0 + 500_000),
                ..page.clone()
            },
        ),
        (
            "min duration 9 min, longest first",
            SessionFilter {
                min_duration_ms: Some(540_000),
                sort: SortBy::Duration,
                descending: true,
                ..page.clone()
            },
        ),
        (
            "console errors",
            activity(
                ActivityFilter {
                    has_console_errors: true,
                    ..Default::default()
                },
                SortBy::StartTime,
                false,
            ),
        ),
        (
            "url contains /99",
            activity(
                ActivityFilter {
                    url_contains: Some("/99".into()),
                    ..Default::default()
                },
                SortBy::StartTime,
                false,
            ),
        ),
        (
            "min 2 clicks + errors",
            activity(
                ActivityFilter {
                    min_clicks: Some(2),
                    has_console_errors: true,
                    ..Default::default()
                },
                SortBy::Duration,
                true,
            ),
        ),
    ]
}

/// Takes 100 pages of team 1, up to 3 of each filter in turn (following the cursor): each
/// page's time in ms, and the rows returned.
fn time_pages(
    store: &Store,
    filters: &[(&'static str, replaystore::SessionFilter)],
) -> Result<(Vec<f64>, usize)> {
    let (mut times, mut pages, mut rows) = (Vec::new(), 0, 0usize);
    'all: loop {
        for (_, f) in filters {
            let mut f = f.clone();
            for _ in 0..3 {
                let t = Instant::now();
                let p = store.list_page(1, &f)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                rows += p.sessions.len();
                pages += 1;
                if pages == 100 {
                    break 'all;
                }
                match p.next_cursor {
                    Some(c) => f.cursor = Some(c),
                    None => break,
                }
            }
        }
    }
    Ok((times, rows))
}

/// Times 100 pages of team 1 (a quarter of the sessions) through the index, warm, and a few
/// through the footer scan; then the index's memory, file size, and its open and rebuild times.
fn index_pages(
    dir: &Path,
    sessions: usize,
    config: &dyn Fn() -> replaystore::Config,
) -> Result<()> {
    let store = Store::open(dir, config())?;
    let report = store.session_index_report().clone();
    println!(
        "index open ms (from file)  {:.1} ({report:?})",
        report.open_ms
    );
    let st = store.stats()?;
    let n = st.sessions.max(1) as f64;
    println!(
        "index heap bytes/session   {:.1}",
        st.session_index_heap_bytes as f64 / n
    );
    let file = std::fs::metadata(dir.join("sessions.idx"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "index file bytes           {file} ({:.1} per session)",
        file as f64 / n
    );
    // The first session's start: the time range is relative to it.
    let first = replaystore::SessionFilter {
        limit: Some(1),
        ..Default::default()
    };
    let t0 = store
        .list_page(1, &first)?
        .sessions
        .first()
        .map_or(0, |s| s.first_ts_ms);
    let filters = listing_filters(t0);
    let (mut times, rows) = time_pages(&store, &filters)?;
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |t: &[f64], p: f64| t[((t.len() - 1) as f64 * p).round() as usize];
    println!(
        "100 filtered pages of team 1 by the index ({rows} rows): p50 {:.2} ms, p99 {:.2} ms",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
    for (name, f) in &filters {
        let t = Instant::now();
        let by_index = store.list_page(1, f)?;
        let index_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let by_scan = store.list_page_scan(1, f)?;
        let scan_ms = t.elapsed().as_secs_f64() * 1e3;
        let same =
            by_index.sessions == by_scan.sessions && by_index.next_cursor == by_scan.next_cursor;
        println!(
            "  {name:<36} index {index_ms:7.2} ms, footer scan {scan_ms:7.1} ms, same page: {same}"
        );
    }
    drop(store);
    std::fs::remove_file(dir.join("sessions.idx")).map_err(io("remove sessions.idx"))?;
    let (rss0, _) = memory();
    let store = Store::open(dir, config())?;
    let (rss1, _) = memory();
    println!(
        "index rebuild at open ms   {:.0} (RSS growth {:.0} bytes/session; {} sessions)",
        store.session_index_report().open_ms,
        rss1.saturating_sub(rss0) as f64 / sessions.max(1) as f64,
        store.session_index_report().sessions_recomputed
    );
    Ok(())
}

/// Stored bytes of the same chunks when every flush sees one chunk per session (a short flush
/// interval) versus one flush for all (whole sessions in one block), measured through the store.
pub fn grouping(fixtures: &[PathBuf], sessions: usize) -> Result<i32> {
    let mut sets: Vec<(String, Vec<Chunk>)> = Vec::new();
    for f in fixtures {
        let text = std::fs::read(f).map_err(io("read fixture"))?;
        let chunks: Vec<Chunk> = replaystore_posthog::posthog::parse_body(1, &text)
            .into_iter()
            .filter_map(|(_, r)| r.ok().flatten())
            .collect();
        sets.push((f.display().to_string(), chunks));
    }
    let w = replaystore_testkit::generator::Workload {
        sessions,
        ..Default::default()
    };
    sets.push((
        format!("generated ({sessions} sessions)"),
        replaystore_testkit::generator::interleaved(&w),
    ));
    println!(
        "{:<60} {:>12} {:>14} {:>14} {:>8}",
        "data", "raw bytes", "chunk/flush", "session/flush", "gain"
    );
    for (name, chunks) in sets {
        let raw: usize = chunks.iter().map(|c| c.payload.len()).sum();
        let per_chunk = stored(&chunks, true)?;
        let whole = stored(&chunks, false)?;
        println!(
            "{name:<60} {raw:>12} {per_chunk:>14} {whole:>14} {:>7.2}x",
            per_chunk as f64 / whole as f64
        );
    }
    Ok(0)
}

fn stored(chunks: &[Chunk], flush_each: bool) -> Result<u64> {
    let dir = tempfile::tempdir().map_err(io("temp dir"))?;
    let store = Store::open(
        dir.path(),
        crate::cli::posthog_config().with_background_flush(false),
    )?;
    for c in chunks {
        store.append(c.clone())?;
        if flush_each {
            store.flush()?;
        }
    }
    store.flush()?;
    Ok(store.stats()?.stored_bytes)
}

/// Writes the fuzz targets' seed corpus: valid blocks, sealed and unsealed segment files,
/// and PostHog bodies, each a starting point the fuzzers mutate.
// Long on purpose: a flat list of the fuzz seed files it writes.
#[allow(clippy::too_many_lines)]
pub fn fuzz_seeds(out: &Path) -> Result<i32> {
    let put = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).map_err(io("create corpus dir"))?;
        std::fs::write(dir.join(name), bytes).map_err(io("write seed"))
    };
    let w = replaystore_testkit::generator::Workload {
        sessions: 3,
        median_session_bytes: 60_000,
        ..Default::default()
    };
    let chunks = replaystore_testkit::generator::interleaved(&w);
    // Blocks: one small chunk, a few chunks of one session with windows.
    let mut writer = replaystore::format::BlockWriter::new(3).map_err(io("zstd"))?;
    let busiest = chunks
        .iter()
        .max_by_key(|c| {
            chunks
                .iter()
                .filter(|d| d.session_id == c.session_id)
                .count()
        })
        .map(|c| c.session_id.clone())
        .unwrap_or_default();
    for (i, n) in [1usize, 4].iter().enumerate() {
        let group: Vec<Chunk> = chunks
            .iter()
            .filter(|c| c.session_id == busiest)
            .take(*n)
            .map(|c| Chunk {
                payload: c.payload[..c.payload.len().min(1000)].to_vec(),
                ..c.clone()
            })
            .collect();
        let mut bytes = Vec::new();
        let stamps: Vec<replaystore::format::Stamp> = group
            .iter()
            .map(|c| replaystore::format::Stamp {
                arrival_ms: c.last_ts_ms,
                ..Default::default()
            })
            .collect();
        writer
            .encode(7, &group, &stamps, &mut bytes)
            .map_err(io("encode"))?;
        put("block", &format!("block-{i}"), &bytes)?;
    }
    // Segments: a sealed one (footer target and open target) and an unsealed one.
    for sealed in [true, false] {
        let dir = tempfile::tempdir().map_err(io("temp dir"))?;
        let config = crate::cli::posthog_config()
            .with_background_flush(false)
            .with_maintenance_interval(None)
            .with_default_retention_days(3650);
        let store = Store::open(dir.path(), config)?;
        for c in chunks.iter().take(12) {
            let mut c = c.clone();
            c.payload.truncate(2000); // small seeds mutate faster
            store.append(c)?;
            store.flush()?;
        }
        if sealed {
            store.seal_active()?;
        }
        drop(store);
        let seg = dir.path().join("lanes/3650d/00000000000000000001.seg");
        let bytes = std::fs::read(&seg).map_err(io("read segment"))?;
        let name = if sealed { "sealed.seg" } else { "active.seg" };
        put("open_dir", name, &bytes)?;
        if sealed {
            put("footer", name, &bytes)?;
        }
    }
    // PostHog bodies: a gzip body and a JSON array as posthog-js sends them.
    let event = r#"[{"event":"$snapshot","properties":{"$session_id":"s1","$window_id":"w1","distinct_id":"p1","$snapshot_data":[{"type":4,"data":{"href":"https://x/"},"timestamp":1795000000000}]}}]"#;
    put("posthog", "array.json", event.as_bytes())?;
    put(
        "posthog",
        "lines.jsonl",
        format!("{event}\n{event}\n").as_bytes(),
    )?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, event.as_bytes()).map_err(io("gzip"))?;
    put("posthog", "body.gz", &gz.finish().map_err(io("gzip"))?)?;
    println!("seeds written to {}", out.display());
    Ok(0)
}

/// The dictionary lever, measured: a zstd dictionary trained on some sessions of a site, used
/// on other sessions of the same site, per chunk and per whole session.
pub fn dict_gain(sessions: usize) -> Result<i32> {
    use replaystore_testkit::generator::{session, Workload};
    let w = Workload {
        sessions: sessions * 2,
        teams: 1,
        median_session_bytes: 400_000,
        ..Default::default()
    };
    let train: Vec<Vec<u8>> = (0..sessions)
        .flat_map(|i| session(&w, i).chunks)
        .map(|c| c.payload)
        .collect();
    let test: Vec<Vec<Chunk>> = (sessions..2 * sessions)
        .map(|i| session(&w, i).chunks)
        .collect();
    let z = |e: std::io::Error| Error::Io {
        context: "zstd".into(),
        source: e,
    };
    println!(
        "{:<10} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "dict KiB", "raw", "chunk", "chunk+dict", "session", "session+dict"
    );
    for kib in [64usize, 110] {
        let dict = zstd::dict::from_samples(&train, kib << 10).map_err(z)?;
        let mut plain = zstd::bulk::Compressor::new(3).map_err(z)?;
        let mut with = zstd::bulk::Compressor::with_dictionary(3, &dict).map_err(z)?;
        let (mut raw, mut c0, mut c1, mut s0, mut s1) = (0, 0, 0, 0, 0);
        for s in &test {
            let whole: Vec<u8> = s.iter().flat_map(|c| c.payload.clone()).collect();
            raw += whole.len();
            s0 += plain.compress(&whole).map_err(z)?.len();
            s1 += with.compress(&whole).map_err(z)?.len();
            for c in s {
                c0 += plain.compress(&c.payload).map_err(z)?.len();
                c1 += with.compress(&c.payload).map_err(z)?.len();
            }
        }
        println!("{kib:<10} {raw:>14} {c0:>14} {c1:>14} {s0:>14} {s1:>14}");
    }
    Ok(0)
}
