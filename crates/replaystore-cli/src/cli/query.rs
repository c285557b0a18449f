//! Read-side commands: export, ls, stats.

use std::io::Write;

use replaystore::{Error, Result, SessionFilter, Store};
use replaystore_posthog::posthog::payload_events;
use replaystore_posthog::rrweb::read_for_playback;
use replaystore_posthog::{ListQuery, SessionRow};

use super::mb;

fn stdout_err(e: std::io::Error) -> Error {
    Error::Io {
        context: "write to stdout".into(),
        source: e,
    }
}

/// Prints a session's events, one JSON line each; with `from_ms`, from the meta + full
/// snapshot at or before it on (a ranged read: only the blocks from there are decompressed).
pub fn export(store: &Store, team: u64, session: &str, from_ms: Option<i64>) -> Result<i32> {
    let Some(data) = read_for_playback(store, team, session, from_ms)? else {
        eprintln!("no session {session:?} in team {team}");
        return Ok(2);
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad = 0;
    for (i, chunk) in data.chunks.iter().enumerate() {
        match payload_events(&chunk.payload) {
            Ok(events) => {
                for e in events {
                    writeln!(out, "{}", e.get()).map_err(stdout_err)?;
                }
            }
            Err(e) => {
                eprintln!("chunk {i}: {e}");
                bad += 1;
            }
        }
    }
    out.flush().map_err(stdout_err)?;
    Ok(if bad > 0 { 1 } else { 0 })
}

/// The filters of `replaystore ls`.
#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    person: Option<String>,
    /// Only sessions active at or after this time (ms since epoch).
    #[arg(long)]
    from_ms: Option<i64>,
    /// Only sessions active at or before this time (ms since epoch).
    #[arg(long)]
    to_ms: Option<i64>,
    /// Sessions at least this long (seconds).
    #[arg(long)]
    min_duration_s: Option<f64>,
    #[arg(long)]
    max_duration_s: Option<f64>,
    /// At least this much active time (seconds).
    #[arg(long)]
    min_active_s: Option<f64>,
    /// Only sessions with console errors.
    #[arg(long)]
    errors: bool,
    /// Only sessions with rage clicks.
    #[arg(long)]
    rage: bool,
    #[arg(long)]
    min_clicks: Option<u32>,
    /// A visited URL contains this.
    #[arg(long)]
    url: Option<String>,
    /// Sort by `start` or `duration`.
    #[arg(long, default_value = "start")]
    sort: String,
    #[arg(long)]
    desc: bool,
    #[arg(long)]
    limit: Option<usize>,
    /// The cursor printed at the end of the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

impl ListArgs {
    pub fn into_filter(self) -> SessionFilter {
        ListQuery {
            person: self.person,
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            min_duration_s: self.min_duration_s,
            max_duration_s: self.max_duration_s,
            min_active_s: self.min_active_s,
            errors: self.errors,
            rage: self.rage,
            min_clicks: self.min_clicks,
            url: self.url,
            sort: self.sort,
            desc: self.desc,
            limit: self.limit,
            cursor: self.cursor,
        }
        .into_filter()
    }
}

pub fn ls(store: &Store, team: u64, filter: &SessionFilter, json: bool) -> Result<i32> {
    let page = store.list_page(team, filter)?;
    let sessions = page.sessions;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !json {
        writeln!(
            out,
            "{:<40} {:<32} {:>15} {:>9} {:>7} {:>10} {:>10}",
            "session", "person", "start_ms", "dur_s", "chunks", "raw_kb", "stored_kb"
        )
        .map_err(stdout_err)?;
    }
    for s in &sessions {
        if json {
            let line = serde_json::to_string(&SessionRow::new(s)).map_err(|e| Error::Io {
                context: "encode JSON".into(),
                source: e.into(),
            })?;
            writeln!(out, "{line}").map_err(stdout_err)?;
        } else {
            writeln!(
                out,
                "{:<40} {:<32} {:>15} {:>9.1} {:>7} {:>10.1} {:>10.1}",
                s.session_id,
                s.person,
                s.first_ts_ms,
                (s.last_ts_ms - s.first_ts_ms) as f64 / 1000.0,
                s.chunk_count,
                s.raw_bytes as f64 / 1e3,
                s.stored_bytes as f64 / 1e3
            )
            .map_err(stdout_err)?;
        }
    }
    out.flush().map_err(stdout_err)?;
    if let Some(c) = page.next_cursor {
        eprintln!("more: --cursor {c}");
    }
    Ok(0)
}

pub fn stats(store: &Store, json: bool) -> Result<i32> {
    let st = store.stats()?;
    if json {
        let line = serde_json::to_string(&st).map_err(|e| Error::Io {
            context: "encode JSON".into(),
            source: e.into(),
        })?;
        println!("{line}");
    } else {
        println!("sessions           {}", st.sessions);
        println!("chunks             {}", st.chunks);
        println!("raw MB             {:.1}", mb(st.raw_bytes));
        println!("stored MB          {:.1}", mb(st.stored_bytes));
        println!("ratio              {:.2}", st.ratio);
        println!("bytes per session  {:.0}", st.bytes_per_session);
        println!(
            "segments           {} ({} sealed)",
            st.segments, st.sealed_segments
        );
        println!("bytes on disk      {}", st.bytes_on_disk);
        println!(
            "hot / regrouped    {} / {} bytes",
            st.bytes_hot, st.bytes_regrouped
        );
        println!(
            "regroup backlog    {} bytes ({} due now)",
            st.regroup_backlog_bytes, st.regroup_due_bytes
        );
        if st.remote_segments > 0 {
            println!(
                "remote             {} segments, {} bytes",
                st.remote_segments, st.bytes_remote
            );
        }
        println!("index RAM bytes    {}", st.index_heap_bytes);
    }
    Ok(0)
}
