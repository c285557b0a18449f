//! `replaystore consume`: a member of a Kafka consumer group on PostHog's recordings topic, one
//! store per assigned partition (`replaystore_kafka`). Stops on SIGINT/SIGTERM (flushing,
//! committing and closing every store first), or with --exit-when-drained once the group has
//! consumed the whole topic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use replaystore::Result;
use replaystore_kafka::{Consumer, Options, StoreFactory};

use super::{mb, StoreArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    brokers: String,
    #[arg(long, default_value = "session_recording_snapshot_item_events")]
    topic: String,
    /// Consumer group: the members of one group share the topic's partitions.
    #[arg(long)]
    group: String,
    /// Project token -> team, as TOKEN=TEAM (repeatable).
    #[arg(long, value_parser = super::parse_token)]
    token: Vec<(String, u64)>,
    /// Serve Prometheus metrics (offsets, lag, bytes per partition) on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Oldest recording accepted, in days before the consumer's clock: a backlog as old as
    /// Kafka's retention (7 days by default) is still stored.
    #[arg(long, default_value_t = 7)]
    max_age_days: u16,
    /// Flush (then commit the group's offsets) at least this often.
    #[arg(long, default_value_t = 1000)]
    flush_interval_ms: u64,
    /// How long a member that stopped answering keeps its partitions.
    #[arg(long, default_value_t = 10)]
    session_timeout_s: u64,
    /// Exit once the group has committed every partition up to its end (a bounded backlog).
    #[arg(long)]
    exit_when_drained: bool,
    /// A librdkafka property, KEY=VALUE (repeatable; e.g. security.protocol=ssl, debug=cgrp):
    /// set after the consumer's own, so it wins.
    #[arg(long, value_parser = parse_property)]
    kafka_config: Vec<(String, String)>,
    /// The deletion topic (one partition): apply every erasure request on it to every owned
    /// partition's store, with receipts in the bucket (docs/scale-out.md).
    #[arg(long)]
    deletion_topic: Option<String>,
    /// How often each store's background maintenance runs: retention, compaction and, with
    /// --remote, uploading sealed segments (what a hand-over then has left to upload).
    #[arg(long, default_value_t = 60)]
    maintenance_interval_s: u64,
    /// With --remote: how often the stores seal, upload, and only then commit the group's
    /// offsets (an upload point: a machine lost in between loses nothing Kafka cannot resend).
    #[arg(long, default_value_t = 10)]
    upload_interval_s: u64,
}

pub(super) fn parse_property(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(args: Args) -> Result<i32> {
    let behind = Duration::from_secs(u64::from(args.max_age_days) * 86_400);
    let mut config = args.store.config();
    let remote = config.remote.take();
    let ahead = config.max_ts_ahead;
    let config = config
        .with_timestamp_window(behind, ahead)
        .with_maintenance_interval(Some(Duration::from_secs(
            args.maintenance_interval_s.max(1),
        )));
    let stores = StoreFactory {
        dir: args.store.dir()?.to_path_buf(),
        remote,
        config,
    };
    let mut opts = Options::new(&args.brokers, &args.topic, &args.group, stores);
    opts.tokens = args.token.into_iter().collect();
    opts.metrics = args.metrics;
    opts.flush_interval = Duration::from_millis(args.flush_interval_ms);
    opts.session_timeout = Duration::from_secs(args.session_timeout_s);
    opts.exit_when_drained = args.exit_when_drained;
    opts.client_config = args.kafka_config;
    opts.deletion_topic = args.deletion_topic;
    opts.upload_interval = Duration::from_secs(args.upload_interval_s.max(1));
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let report = match Consumer::new(opts).run(&STOP) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let t = report.totals;
    let secs = report.reading.as_secs_f64().max(1e-3);
    let waits = match (report.durable_p50_ms, report.durable_p99_ms) {
        (Some(p50), Some(p99)) => format!("; produce to durable p50 {p50} ms, p99 {p99} ms"),
        _ => String::new(),
    };
    println!(
        "consumed {} messages ({:.1} MB, {:.1} MB/s over {secs:.2} s of reading, {:.1} s in all): {} chunks stored, {} already held, {} other events, {} refused, {} of erased persons, {} pauses{waits}",
        t.messages,
        mb(t.bytes),
        mb(t.bytes) / secs,
        report.elapsed.as_secs_f64(),
        t.chunks,
        t.duplicates,
        t.skipped,
        t.refused,
        t.erased,
        t.pauses,
    );
    Ok(if t.refused > 0 { 1 } else { 0 })
}
