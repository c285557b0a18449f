//! Argument parsing and dispatch.

mod admin;
mod bench;
mod consume;
mod cost;
mod demo;
mod fleet;
mod ingest;
mod measure;
mod produce;
mod query;
mod remote;
mod soak;

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

/// Where the store is and the retention it applies (the same on every command that opens it).
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// Store directory (not needed by the fleet forms of `delete-person` and
    /// `deletion-status`, which talk to Kafka and the bucket).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Retention, in days, of teams without a --team-retention.
    #[arg(long, default_value_t = replaystore::config::DEFAULT_RETENTION_DAYS)]
    retention_days: u16,
    /// Retention of one team, as TEAM=DAYS (repeatable).
    #[arg(long, value_parser = parse_team_days)]
    team_retention: Vec<(u64, u16)>,
    #[command(flatten)]
    remote: remote::RemoteArgs,
    /// The store's clock for this run, in ms since the epoch (default: the system clock). It
    /// stands still at MS for the whole run, `serve` included: arrival times, sealing of old
    /// segments at open, retention, regroup idleness and deletion times all use it.
    #[arg(long, value_name = "MS")]
    now: Option<i64>,
}

fn parse_token(s: &str) -> std::result::Result<(String, u64), String> {
    let (t, team) = s.split_once('=').ok_or("expected TOKEN=TEAM")?;
    Ok((
        t.to_string(),
        team.parse().map_err(|e| format!("team: {e}"))?,
    ))
}

fn parse_team_days(s: &str) -> std::result::Result<(u64, u16), String> {
    let (t, d) = s.split_once('=').ok_or("expected TEAM=DAYS")?;
    Ok((
        t.parse().map_err(|e| format!("team: {e}"))?,
        d.parse().map_err(|e| format!("days: {e}"))?,
    ))
}

/// Maps an I/O error to the engine's typed error, naming what was being done.
pub(crate) fn io(context: &str) -> impl FnOnce(std::io::Error) -> replaystore::Error + '_ {
    move |e| replaystore::Error::Io {
        context: context.into(),
        source: e,
    }
}

/// The engine's defaults as the PostHog crate sets them for posthog-js recordings (summaries
/// `ls` filters by, normalization at regroup, the regroup level): `replaystore_posthog::configure`.
pub fn posthog_config() -> Config {
    replaystore_posthog::configure(Config::default())
}

impl StoreArgs {
    fn config(&self) -> Config {
        let mut c = posthog_config()
            .with_default_retention_days(self.retention_days)
            .with_maintenance_interval(None);
        for &(team, days) in &self.team_retention {
            c = c.with_team_retention_days(team, days);
        }
        if let Some(ms) = self.now {
            c = c.with_clock(std::sync::Arc::new(replaystore::ManualClock::new(ms)));
        }
        match self.remote.config() {
            Some(r) => c.with_remote(r),
            None => c,
        }
    }

    /// Opens the store for a command-line tool (no background maintenance: commands do their
    /// maintenance explicitly).
    fn open(&self) -> Result<Store> {
        Store::open(self.dir()?, self.config())
    }

    fn dir(&self) -> Result<&std::path::Path> {
        self.dir
            .as_deref()
            .ok_or_else(|| replaystore::Error::InvalidConfig {
                field: "dir",
                reason: "give the store directory with --dir".into(),
            })
    }
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
    ///
    /// An import of recorded bodies: their timestamps are kept as recorded (a body's send time
    /// describes its original upload, not this one, so no clock-skew correction), and accepted
    /// up to --max-age-days in the past by the store's clock.
    Ingest {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        team: u64,
        /// Oldest recording accepted, in days before the store's clock (1..=3650).
        #[arg(long, default_value_t = 3650)]
        max_age_days: u16,
        /// Decoder threads (default: the machine's available parallelism).
        #[arg(long)]
        threads: Option<usize>,
        /// Longest input line kept; a longer one is reported, skipped, and counted as an error.
        #[arg(long, hide = true, default_value_t = replaystore_posthog::posthog::MAX_DECODED_BODY)]
        max_line_bytes: usize,
        /// Input files; `-` or none reads stdin.
        files: Vec<PathBuf>,
    },
    /// Print a session's rrweb events as JSON lines, in order (what rrweb-player loads).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        team: u64,
        #[arg(long)]
        session: String,
        /// Start at this time (ms since epoch, the listing's clock): the meta + full snapshot
        /// at or before it, then every later event (the whole session without a keyframe).
        #[arg(long)]
        from_ms: Option<i64>,
    },
    /// List sessions of a team.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        team: u64,
        #[command(flatten)]
        filter: query::ListArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Store-wide statistics.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete every recording of one or more persons (GDPR erasure).
    DeletePerson {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        team: u64,
        /// Person (distinct id); repeatable.
        #[arg(long)]
        person: Vec<String>,
        /// A file of person ids, one per line (blank lines and #comments skipped).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Compact now; exit 0 only if every request is done (bytes physically gone from every
        /// file and object), 1 otherwise with the reason on stderr.
        #[arg(long)]
        wait: bool,
        /// Erase across a fleet of consumers instead: publish the requests to this topic
        /// (with --brokers); every `consume --deletion-topic` applies them to all its stores.
        #[command(flatten)]
        fleet: fleet::PublishArgs,
    },
    /// Delete one or more sessions.
    DeleteSession {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        team: u64,
        #[arg(long)]
        session: Vec<String>,
        /// As for delete-person: compact now, exit 0 only if every request is done.
        #[arg(long)]
        wait: bool,
    },
    /// Status of deletion requests (all pending ones if no --id).
    DeletionStatus {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        id: Vec<u64>,
        /// A fleet request (as `delete-person --deletion-topic` printed it): aggregate the
        /// receipts every partition wrote to --remote (or --dir); repeatable.
        #[arg(long)]
        request: Vec<String>,
        /// The recordings topic's partition count: done means a done receipt from each
        /// (default: the partitions that wrote any receipt).
        #[arg(long)]
        partitions: Option<i32>,
    },
    /// Run one compaction pass: purge deleted data, drop expired blocks, merge small segments.
    /// Exits 1 (and says why on stderr) when a job failed or a deletion request pending before
    /// the pass is still pending after it.
    Compact {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove segments past retention (at --now, default: the system clock). Exits 1 when an
    /// expired object could not be deleted from the bucket.
    Expire {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check every segment: checksums, decompression, footers against blocks. Exits 1 and
    /// lists the problems when there are any.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Serve posthog-js recordings (`/s/`) into the store, acknowledging once durable.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address to listen on (port 0 picks a free one, printed on the first line).
        #[arg(long, default_value = "127.0.0.1:8010")]
        listen: std::net::SocketAddr,
        /// Project token -> team, as TOKEN=TEAM (repeatable).
        #[arg(long, value_parser = parse_token)]
        token: Vec<(String, u64)>,
        /// Largest accepted request body.
        #[arg(long, default_value_t = 20 << 20)]
        max_body_bytes: usize,
        /// Requests processed at once; beyond, 503 with Retry-After.
        #[arg(long, default_value_t = 256)]
        max_inflight: usize,
        /// Keep payloads byte-exact at rest: regroup without the posthog-js normalization
        /// (which inflates the SDK's in-event gzip, ~2.2x fewer bytes at rest).
        #[arg(long)]
        no_normalize: bool,
        /// Turn on the recordings console (pages and JSON API), requiring this token.
        #[arg(long)]
        read_token: Option<String>,
        /// Allow deleting persons and sessions from the console with this token.
        #[arg(long, requires = "read_token")]
        admin_token: Option<String>,
        #[command(flatten)]
        limits: replaystore_server::Limits,
    },
    /// Consume PostHog's recordings topic from Kafka as a member of a consumer group, one store
    /// per assigned partition (`<dir>/p<N>`, bucket prefix `<remote>/p<N>`).
    Consume(consume::Args),
    /// Put posthog-js request bodies (JSON lines) on a Kafka topic as PostHog's capture
    /// service would: load for `consume`.
    Produce(produce::Args),
    /// The object-storage tier: sync, status, canary scan of the bucket, range-read latency.
    #[command(subcommand)]
    Remote(remote::Command),
    /// Measure this store beside the zstd-only limit and peer systems on the same data.
    Bench(bench::Args),
    /// Ingest at fixed rates with maintenance on; report the regroup backlog over time.
    Soak(soak::Args),
    /// What replay storage costs: bytes per session measured on a store (or on generated
    /// sessions), projected for a traffic and a retention.
    Cost(cost::Args),
    /// Measure open time and index RAM per session for a store of many small sessions.
    #[command(hide = true)]
    IndexCost {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        sessions: usize,
    },
    /// Append a deterministic workload with flushes, deletions and compactions, recording what
    /// was acknowledged in a side log; the crash test SIGKILLs it (see src/cli/torture.rs).
    #[command(hide = true)]
    CrashWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Start time of the generated sessions (ms since epoch).
        #[arg(long)]
        start_ms: i64,
        /// The side log of acknowledgements.
        #[arg(long)]
        log: PathBuf,
        /// With a remote tier at this URL: sync (upload, drop local copies) after every
        /// compaction and every 60 chunks.
        #[arg(long)]
        remote: Option<String>,
    },
    /// Measure what a per-site zstd dictionary would save, per chunk and per session.
    #[command(hide = true)]
    DictGain {
        #[arg(long, default_value_t = 20)]
        sessions: usize,
    },
    /// Load-test `serve` on loopback with posthog-js bodies from many connections.
    #[command(hide = true)]
    Load {
        /// Directory of gzip request bodies (default: the real posthog-js captures).
        #[arg(long, default_value = "tests/data/posthog-js/wire")]
        bodies: PathBuf,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Write the fuzz targets' seed corpus.
    #[command(hide = true)]
    FuzzSeeds {
        #[arg(long, default_value = "fuzz/corpus")]
        out: PathBuf,
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
// Long on purpose: a flat dispatch: one arm per subcommand.
#[allow(clippy::too_many_lines)]
pub fn run() -> Result<i32> {
    match Cli::parse().command {
        Command::Demo {
            dir,
            sessions,
            threads,
            seed,
        } => demo::run(dir, sessions, threads, seed),
        Command::Ingest {
            store,
            team,
            max_age_days,
            threads,
            max_line_bytes,
            files,
        } => {
            let behind = std::time::Duration::from_secs(u64::from(max_age_days) * 86_400);
            let config = store.config();
            let ahead = config.max_ts_ahead;
            let config = config.with_max_buffer_bytes(ingest::BUFFER_BYTES);
            let store = Store::open(store.dir()?, config.with_timestamp_window(behind, ahead))?;
            let defaults = ingest::Options::default();
            let opts = ingest::Options {
                threads: threads.unwrap_or(defaults.threads),
                max_line_bytes,
            };
            ingest::run(&store, team, &files, opts)
        }
        Command::Export {
            store,
            team,
            session,
            from_ms,
        } => query::export(&store.open()?, team, &session, from_ms),
        Command::Ls {
            store,
            team,
            filter,
            json,
        } => query::ls(&store.open()?, team, &filter.into_filter(), json),
        Command::Stats { store, json } => query::stats(&store.open()?, json),
        Command::DeletePerson {
            store,
            team,
            person,
            file,
            wait,
            fleet,
        } => {
            let persons = admin::persons(person, file.as_deref())?;
            if fleet.brokers.is_some() {
                return fleet::publish(&fleet, team, &persons);
            }
            admin::delete_persons(&store.open()?, team, persons, wait)
        }
        Command::DeleteSession {
            store,
            team,
            session,
            wait,
        } => admin::delete_sessions(&store.open()?, team, session, wait),
        Command::DeletionStatus {
            store,
            id,
            request,
            partitions,
        } => {
            if !request.is_empty() {
                return fleet::status(&store, &request, partitions);
            }
            admin::status(&store.open()?, &id)
        }
        Command::Compact { store } => admin::compact(&store.open()?),
        Command::Expire { store } => admin::expire(&store.open()?),
        Command::Verify { store, json } => admin::verify(&store.open()?, json),
        Command::Bench(args) => bench::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Remote(cmd) => remote::run(cmd),
        Command::Consume(args) => consume::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Cost(args) => cost::run(args),
        Command::Serve {
            store,
            listen,
            token,
            max_body_bytes,
            max_inflight,
            no_normalize,
            read_token,
            admin_token,
            limits,
        } => replaystore_server::run(replaystore_server::Args {
            dir: store.dir()?.to_path_buf(),
            listen,
            tokens: token.into_iter().collect(),
            max_body_bytes,
            max_inflight,
            normalize: !no_normalize,
            read_token,
            admin_token,
            limits,
            config: store
                .config()
                .with_maintenance_interval(Some(std::time::Duration::from_secs(600))),
        }),
        Command::IndexCost { dir, sessions } => measure::index_cost(&dir, sessions),
        Command::CrashWriter {
            dir,
            seed,
            start_ms,
            log,
            remote,
        } => replaystore_testkit::crash_writer::run(&dir, seed, start_ms, &log, remote),
        Command::FuzzSeeds { out } => measure::fuzz_seeds(&out),
        Command::Load {
            bodies,
            connections,
            rounds,
        } => replaystore_testkit::load::run(&bodies, connections, rounds),
        Command::DictGain { sessions } => measure::dict_gain(sessions),
        Command::Grouping { fixture, sessions } => measure::grouping(&fixture, sessions),
    }
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
