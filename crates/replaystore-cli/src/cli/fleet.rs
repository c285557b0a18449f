//! The fleet forms of `delete-person` (publish to the deletion topic) and `deletion-status`
//! (aggregate the receipts every partition's store wrote to the bucket): erasure across the
//! consumers of `replaystore consume` (`replaystore_kafka::erasure`).

use std::collections::BTreeMap;

use replaystore::{Error, RemoteConfig, Result};
use replaystore_kafka::erasure::{publish as publish_requests, Receipt, Receipts, Request};

use super::StoreArgs;

#[derive(clap::Args, Clone, Default)]
pub struct PublishArgs {
    /// Bootstrap brokers, HOST:PORT[,...]: publish instead of deleting from one store.
    #[arg(long, requires = "deletion_topic")]
    pub brokers: Option<String>,
    /// The deletion topic the consumers read (`consume --deletion-topic`).
    #[arg(long)]
    pub deletion_topic: Option<String>,
    /// A librdkafka property for the producer, KEY=VALUE (repeatable).
    #[arg(long = "kafka-config", value_parser = super::consume::parse_property)]
    pub kafka_config: Vec<(String, String)>,
}

fn kafka_err(e: replaystore_kafka::Error) -> Error {
    Error::Io {
        context: "publish deletion requests".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Publishes one request per person and prints their ids (what `deletion-status --request`
/// takes).
pub fn publish(args: &PublishArgs, team: u64, persons: &[String]) -> Result<i32> {
    let (Some(brokers), Some(topic)) = (&args.brokers, &args.deletion_topic) else {
        return Ok(2);
    };
    if persons.is_empty() {
        eprintln!("nothing to delete: give --person or --file");
        return Ok(2);
    }
    let now = replaystore::Clock::now_ms(&replaystore::SystemClock);
    let requests: Vec<Request> = persons.iter().map(|p| Request::new(team, p, now)).collect();
    publish_requests(brokers, topic, &args.kafka_config, &requests).map_err(kafka_err)?;
    for r in &requests {
        println!("{}\tteam {}\tpublished to {topic}", r.id, r.team);
    }
    Ok(0)
}

/// Where the receipts are: the bucket's prefix, or the consumers' shared directory.
fn location(store: &StoreArgs) -> Result<RemoteConfig> {
    if let Some(r) = store.remote.config() {
        return Ok(r);
    }
    let dir = store
        .dir()?
        .canonicalize()
        .map_err(super::io("open --dir"))?;
    Ok(RemoteConfig::new(format!("file://{}", dir.display())))
}

/// Prints each request's state per partition; exit 0 only when every one is done on every
/// partition (`partitions` of them, or every partition that wrote a receipt).
pub fn status(store: &StoreArgs, requests: &[String], partitions: Option<i32>) -> Result<i32> {
    let receipts = Receipts::open(&location(store)?).map_err(kafka_err)?;
    let mut all_done = true;
    for request in requests {
        let got = receipts.read(Some(request)).map_err(kafka_err)?;
        let by: BTreeMap<i32, &Receipt> = got.iter().map(|r| (r.partition, r)).collect();
        let wanted: Vec<i32> = match partitions {
            Some(n) => (0..n).collect(),
            None => by.keys().copied().collect(),
        };
        let done: Vec<i32> = wanted
            .iter()
            .copied()
            .filter(|p| by.get(p).is_some_and(|r| r.is_done()))
            .collect();
        let pending: Vec<i32> = wanted
            .iter()
            .copied()
            .filter(|p| by.get(p).is_some_and(|r| !r.is_done()))
            .collect();
        let silent: Vec<i32> = wanted
            .iter()
            .copied()
            .filter(|p| !by.contains_key(p))
            .collect();
        let finished = !wanted.is_empty() && done.len() == wanted.len();
        all_done &= finished;
        let removed: u64 = got.iter().map(|r| r.bytes_removed).sum();
        let sessions: u64 = got.iter().map(|r| r.sessions_removed).sum();
        let last = got.iter().filter_map(|r| r.completed_ms).max();
        println!(
            "{request}\t{}\tdone on {}/{} partitions{}{}\t{sessions} sessions, {removed} bytes removed{}",
            if finished { "done" } else { "pending" },
            done.len(),
            wanted.len(),
            list(" pending on", &pending),
            list(" no receipt from", &silent),
            last.map(|ms| format!(", last at {ms}")).unwrap_or_default(),
        );
    }
    Ok(if all_done { 0 } else { 1 })
}

fn list(what: &str, ps: &[i32]) -> String {
    if ps.is_empty() {
        return String::new();
    }
    let names: Vec<String> = ps.iter().map(|p| format!("p{p}")).collect();
    format!(";{what} {}", names.join(", "))
}
