//! Hidden measurement commands whose figures go into docs/ and issue notes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use replaystore::{Chunk, Config, Error, Result, Store};

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        context: context.into(),
        source: e,
    }
}

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
pub fn index_cost(dir: &Path, sessions: usize) -> Result<i32> {
    let config = || {
        Config::default()
            .with_background_flush(false)
            .with_default_retention_days(3650)
    };
    let fresh = !dir.join("lanes").exists();
    if fresh {
        let store = Store::open(dir, config())?;
        let t = Instant::now();
        for i in 0..sessions {
            store.append(Chunk {
                team: 1 + (i % 4) as u64,
                session_id: format!("01{i:030x}"),
                person: format!("person-{}", i / 3),
                window_id: None,
                first_ts_ms: 1_795_000_000_000 + i as i64,
                last_ts_ms: 1_795_000_000_000 + i as i64 + 1000,
                payload: format!(
                    r#"[{{"type":4,"data":{{"href":"https://x/{i}"}},"timestamp":{i}}}]"#
                )
                .into_bytes(),
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
    Ok(0)
}

/// Stored bytes of the same chunks when every flush sees one chunk per session (a short flush
/// interval) versus one flush for all (whole sessions in one block), measured through the store.
pub fn grouping(fixtures: &[PathBuf], sessions: usize) -> Result<i32> {
    let mut sets: Vec<(String, Vec<Chunk>)> = Vec::new();
    for f in fixtures {
        let text = std::fs::read(f).map_err(io("read fixture"))?;
        let chunks: Vec<Chunk> = replaystore::posthog::parse_body(1, &text)
            .into_iter()
            .filter_map(|(_, r)| r.ok().flatten())
            .collect();
        sets.push((f.display().to_string(), chunks));
    }
    let w = replaystore::generator::Workload {
        sessions,
        ..Default::default()
    };
    sets.push((
        format!("generated ({sessions} sessions)"),
        replaystore::generator::interleaved(&w),
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
    let store = Store::open(dir.path(), Config::default().with_background_flush(false))?;
    for c in chunks {
        store.append(c.clone())?;
        if flush_each {
            store.flush()?;
        }
    }
    store.flush()?;
    Ok(store.stats()?.stored_bytes)
}
