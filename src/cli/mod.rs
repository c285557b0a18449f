//! Argument parsing and dispatch.

mod demo;
mod ingest;
mod measure;
mod query;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use replaystore::{Config, Result, Store};

#[derive(Parser)]
#[command(
    name = "replaystore",
    version,
    about = "Embedded storage engine for session recordings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate sessions, ingest them from several threads, reopen, read back and verify.
    Demo {
        /// Store directory (default: a temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Seed of the workload generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Ingest PostHog `$snapshot` request bodies (JSON, JSON lines, or gzip) from files or stdin.
    Ingest {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        team: u64,
        /// Input files; `-` or none reads stdin.
        files: Vec<PathBuf>,
    },
    /// Print a session's rrweb events as JSON lines, in order (what rrweb-player loads).
    Export {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        team: u64,
        #[arg(long)]
        session: String,
    },
    /// List sessions of a team.
    Ls {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        team: u64,
        #[arg(long)]
        person: Option<String>,
        /// Only sessions active at or after this time (ms since epoch).
        #[arg(long)]
        from_ms: Option<i64>,
        /// Only sessions active at or before this time (ms since epoch).
        #[arg(long)]
        to_ms: Option<i64>,
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Store-wide statistics.
    Stats {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Measure open time and index RAM per session for a store of many small sessions.
    #[command(hide = true)]
    IndexCost {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
    },
    /// Append a deterministic workload, flushing often, and print `acked N` after each flush
    /// returns; crash tests SIGKILL it and check that every acknowledged chunk survived.
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Measure stored bytes when each flush sees one chunk per session vs whole sessions.
    #[command(hide = true)]
    Grouping {
        /// A `snapshot-batches.jsonl` of real posthog-js bodies (default: generated data only).
        #[arg(long)]
        fixture: Vec<PathBuf>,
        #[arg(long, default_value_t = 40)]
        sessions: usize,
    },
}

/// Runs the command line; returns the process exit code.
pub fn run() -> Result<i32> {
    match Cli::parse().command {
        Command::Demo {
            dir,
            sessions,
            threads,
            seed,
        } => demo::run(dir, sessions, threads, seed),
        Command::Ingest { dir, team, files } => ingest::run(&dir, team, &files),
        Command::Export { dir, team, session } => query::export(&dir, team, &session),
        Command::Ls {
            dir,
            team,
            person,
            from_ms,
            to_ms,
            limit,
            json,
        } => {
            let filter = replaystore::SessionFilter {
                person,
                from_ts_ms: from_ms,
                to_ts_ms: to_ms,
                limit,
            };
            query::ls(&dir, team, &filter, json)
        }
        Command::Stats { dir, json } => query::stats(&dir, json),
        Command::IndexCost { dir, sessions } => measure::index_cost(&dir, sessions),
        Command::CrashWriter { dir, seed } => measure::crash_writer(&dir, seed),
        Command::Grouping { fixture, sessions } => measure::grouping(&fixture, sessions),
    }
}

/// Opens a store for a command-line tool (default config).
fn open(dir: &std::path::Path) -> Result<Store> {
    Store::open(dir, Config::default())
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
