//! `replaystore remote ...` and the `--remote` options every store command takes.

use std::time::{Duration, Instant};

use replaystore::remote::bucket_objects;
use replaystore::{Error, RemoteConfig, Result};

use super::StoreArgs;

/// Object storage for sealed segments (docs/scale-out.md). S3 credentials, region and endpoint
/// come from the `AWS_*` environment variables unless given as --remote-option.
#[derive(clap::Args, Clone, Default)]
pub struct RemoteArgs {
    /// Bucket and prefix: `s3://bucket/prefix`, `file:///path`, `memory:///` (tests).
    #[arg(long = "remote")]
    url: Option<String>,
    /// Backend option as KEY=VALUE (`endpoint`, `region`, `allow_http`...); repeatable.
    #[arg(long = "remote-option", value_parser = parse_kv)]
    options: Vec<(String, String)>,
    /// Keep local copies of uploaded segments whose newest data is younger than this.
    #[arg(long, default_value_t = 24.0)]
    local_retention_hours: f64,
    /// Multipart upload part size.
    #[arg(long, default_value_t = 16)]
    part_mib: usize,
    /// Bound on the whole footers of remote segments cached on local disk.
    #[arg(long, default_value_t = 512)]
    footer_cache_mib: u64,
}

fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((k.to_string(), v.to_string()))
}

impl RemoteArgs {
    pub fn config(&self) -> Option<RemoteConfig> {
        let mut c = RemoteConfig::new(self.url.clone()?)
            .with_local_retention(Duration::from_secs_f64(
                self.local_retention_hours.max(0.0) * 3600.0,
            ))
            .with_part_bytes(self.part_mib.max(5) << 20)
            .with_footer_cache_bytes(self.footer_cache_mib << 20);
        for (k, v) in &self.options {
            c = c.with_option(k, v);
        }
        Some(c)
    }

    fn required(&self) -> Result<RemoteConfig> {
        self.config().ok_or_else(|| Error::InvalidConfig {
            field: "remote",
            reason: "give the bucket with --remote s3://bucket/prefix".into(),
        })
    }
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Upload sealed segments (resuming interrupted uploads), drop local copies past
    /// --local-retention-hours, delete expired and replaced objects. With --seal, seal the
    /// active segments first (hand-over to another machine).
    Sync {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        seal: bool,
    },
    /// What is uploaded, local, waiting.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List every object of the prefix and search each (raw and decompressed blocks) for a
    /// byte string: the bucket half of a deletion's canary check. Exits 1 on a hit.
    Scan {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        needle: String,
    },
    /// Measure range-read latency: reads every block of a store's remote segments one GET
    /// at a time, then session by session (coalesced), and prints percentiles.
    Latency {
        #[command(flatten)]
        store: StoreArgs,
        /// Sessions to read (of team --team).
        #[arg(long, default_value_t = 200)]
        sessions: usize,
        #[arg(long, default_value_t = 1)]
        team: u64,
    },
}

pub fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Sync { store, seal } => {
            store.remote.required()?;
            let s = store.open()?;
            if seal {
                s.seal_active()?;
            }
            let r = s.sync_remote()?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            s.close()?;
            Ok(if r.errors.is_empty() { 0 } else { 1 })
        }
        Command::Status { store } => {
            store.remote.required()?;
            let s = store.open()?;
            let st = s.remote_status();
            println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            Ok(0)
        }
        Command::Scan { remote, needle } => scan(&remote.required()?, needle.as_bytes()),
        Command::Latency {
            store,
            sessions,
            team,
        } => latency(&store, team, sessions),
    }
}

fn scan(config: &RemoteConfig, needle: &[u8]) -> Result<i32> {
    use replaystore::format::block::decode_payloads;
    use replaystore::format::{blocks, blocks_end};
    let find = |hay: &[u8]| memchr::memmem::find(hay, needle).is_some();
    let (mut objects, mut bytes, mut hits) = (0u64, 0u64, 0u64);
    for o in bucket_objects(config, true)? {
        let data = o.bytes.unwrap_or_default();
        objects += 1;
        bytes += data.len() as u64;
        if find(&data) {
            println!("HIT {} (raw bytes)", o.key);
            hits += 1;
        }
        if !o.key.ends_with(".seg") {
            continue;
        }
        for b in blocks(&data, blocks_end(&data)) {
            match b {
                Ok((at, h, block)) => {
                    let payloads = decode_payloads(&h, block).unwrap_or_default();
                    if payloads.iter().any(|p| find(p)) {
                        println!("HIT {} (block at {at}, decompressed)", o.key);
                        hits += 1;
                    }
                }
                Err((at, _)) => {
                    println!("CORRUPT {} at {at}: cannot scan further", o.key);
                    hits += 1;
                }
            }
        }
    }
    println!(
        "scanned {objects} objects, {:.1} MB: {hits} hits",
        super::mb(bytes)
    );
    Ok(if hits == 0 { 0 } else { 1 })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn latency(store: &StoreArgs, team: u64, sessions: usize) -> Result<i32> {
    store.remote.required()?;
    let s = store.open()?;
    let filter = replaystore::SessionFilter {
        limit: Some(sessions),
        ..Default::default()
    };
    // Sessions read with and without remote blocks, measured apart: (ms, GETs, bytes).
    type Reads = Vec<(f64, u64, u64)>;
    let (mut remote, mut local): (Reads, Reads) = (vec![], vec![]);
    for summary in s.list_sessions(team, &filter)? {
        let t = Instant::now();
        let (data, trace) = s.read_session_traced(team, &summary.session_id)?;
        let took = t.elapsed().as_secs_f64() * 1e3;
        let raw = data.map(|d| d.summary.raw_bytes).unwrap_or(0);
        match trace.gets {
            0 => local.push((took, 0, raw)),
            n => remote.push((took, n, trace.bytes)),
        }
    }
    let url = s.remote_status().map(|r| r.url).unwrap_or_default();
    for (what, v) in [("remote", &remote), ("local", &local)] {
        if v.is_empty() {
            continue;
        }
        let n = v.len() as f64;
        let mut ms: Vec<f64> = v.iter().map(|x| x.0).collect();
        let gets: u64 = v.iter().map(|x| x.1).sum();
        let bytes: u64 = v.iter().map(|x| x.2).sum();
        let per = if what == "remote" {
            format!(
                "{:.2} GETs and {:.1} KB fetched per session",
                gets as f64 / n,
                bytes as f64 / 1e3 / n
            )
        } else {
            format!("{:.0} KB raw per session", bytes as f64 / 1e3 / n)
        };
        println!(
            "{} sessions read, blocks {what} ({url}): {per}; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            v.len(),
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.9),
            pct(&mut ms, 0.99),
            pct(&mut ms, 1.0),
        );
    }
    Ok(0)
}
