//! `replaystore produce`: posthog-js request bodies (JSON lines, as `ingest` reads them) put on
//! a Kafka topic as PostHog's capture service would: one message per `$snapshot` event, keyed
//! by session id, in capture's envelope. Load for `consume` measurements (docs/scale-out.md).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

use replaystore::{Error, Result};
use replaystore_kafka::produce::{capture_message, Publisher};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{io, mb};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// The project token the messages carry.
    #[arg(long)]
    token: String,
    /// Put each file's sessions on the topic this many times, under new session ids
    /// (`<id>-c<copy>` from the second copy on).
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// A librdkafka property for the producer, KEY=VALUE (repeatable; `batch.num.messages=1`
    /// for brokers that cannot fetch from inside a batch, such as tansu 0.6).
    #[arg(long = "kafka-config", value_parser = super::consume::parse_property)]
    kafka_config: Vec<(String, String)>,
    /// Produce at most this many MB per second (default: as fast as the broker takes them):
    /// a steady load, for the latency from produce to durable.
    #[arg(long)]
    rate_mb_s: Option<f64>,
    /// JSON-lines files: each line a posthog-js batch (an array of events).
    files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    sent_at: Option<&'a str>,
    #[serde(borrow)]
    properties: Props<'a>,
}

#[derive(Deserialize)]
struct Props<'a> {
    #[serde(rename = "$session_id", borrow)]
    session: &'a str,
    #[serde(borrow, default)]
    distinct_id: Option<&'a str>,
}

fn kafka(e: replaystore_kafka::Error) -> Error {
    Error::Io {
        context: "produce".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

pub fn run(args: Args) -> Result<i32> {
    let publisher =
        Publisher::new(&args.brokers, &args.topic, &args.kafka_config).map_err(kafka)?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    for copy in 0..args.copies.max(1) {
        for path in &args.files {
            let file = std::fs::File::open(path).map_err(io("open input"))?;
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(io("read input"))?;
                if line.trim().is_empty() {
                    continue;
                }
                let events: Vec<&RawValue> =
                    serde_json::from_str(&line).map_err(|e| Error::InvalidChunk {
                        field: "body",
                        reason: format!("{}: not a JSON array: {e}", path.display()),
                    })?;
                for ev in events {
                    let Ok(e) = serde_json::from_str::<Event>(ev.get()) else {
                        continue; // not a recording event
                    };
                    let (session, text) = renamed(e.properties.session, ev.get(), copy);
                    let person = e.properties.distinct_id.unwrap_or("");
                    let msg = capture_message(&text, person, &args.token, e.sent_at, e.sent_at);
                    publisher.send(session.as_bytes(), &msg).map_err(kafka)?;
                    messages += 1;
                    bytes += msg.len() as u64;
                    pace(started, bytes, args.rate_mb_s);
                }
            }
        }
    }
    publisher.flush().map_err(kafka)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {messages} messages ({:.1} MB) to {} in {secs:.1} s ({:.1} MB/s)",
        mb(bytes),
        args.topic,
        mb(bytes) / secs.max(1e-3)
    );
    Ok(0)
}

/// Sleeps while `bytes` sent since `started` are ahead of `rate_mb_s`.
fn pace(started: Instant, bytes: u64, rate_mb_s: Option<f64>) {
    let Some(rate) = rate_mb_s.filter(|r| *r > 0.0) else {
        return;
    };
    let due = std::time::Duration::from_secs_f64(mb(bytes) / rate);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(ahead);
    }
}

/// The session id and event text of copy `copy` (the first keeps the original id).
fn renamed(session: &str, event: &str, copy: usize) -> (String, String) {
    if copy == 0 {
        return (session.to_string(), event.to_string());
    }
    let new = format!("{session}-c{copy}");
    let text = event.replace(&format!("\"{session}\""), &format!("\"{new}\""));
    (new, text)
}
