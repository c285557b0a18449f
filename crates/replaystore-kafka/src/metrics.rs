//! `/metrics` in Prometheus text for `--metrics`: per-partition offsets, lag, bytes, counts.
//! A plain listener thread (one scrape at a time is all Prometheus does), so that the consumer
//! needs no HTTP stack.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::partition::{Partition, Partitions};

pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Listener {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

pub fn serve(addr: SocketAddr, parts: Arc<Mutex<Partitions>>) -> crate::Result<Listener> {
    let listener = TcpListener::bind(addr).map_err(crate::Error::Metrics)?;
    listener
        .set_nonblocking(true)
        .map_err(crate::Error::Metrics)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("replaystore-metrics".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut req = [0u8; 4096];
                        let _ = conn.read(&mut req);
                        let body = render(&parts.lock().unwrap_or_else(|e| e.into_inner()));
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(crate::Error::Metrics)?;
    Ok(Listener { stop, thread })
}

/// One metric family: name, help, type, and a value per owned partition.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&Partition) -> Option<i64>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "replaystore_kafka_messages_total",
        help: "Messages read, by partition.",
        kind: "counter",
        value: |p| Some(p.counts.messages as i64),
    },
    Family {
        name: "replaystore_kafka_bytes_total",
        help: "Message bytes read, by partition.",
        kind: "counter",
        value: |p| Some(p.counts.bytes as i64),
    },
    Family {
        name: "replaystore_kafka_chunks_total",
        help: "Chunks appended, by partition.",
        kind: "counter",
        value: |p| Some(p.counts.chunks as i64),
    },
    Family {
        name: "replaystore_kafka_refused_total",
        help: "Messages not stored: undecodable, unknown token, or refused by the store.",
        kind: "counter",
        value: |p| Some(p.counts.refused as i64),
    },
    Family {
        name: "replaystore_kafka_erased_total",
        help: "Messages of erased persons or sessions, passed over.",
        kind: "counter",
        value: |p| Some(p.counts.erased as i64),
    },
    Family {
        name: "replaystore_kafka_pauses_total",
        help: "Times fetching was paused because the store refused appends.",
        kind: "counter",
        value: |p| Some(p.counts.pauses as i64),
    },
    Family {
        name: "replaystore_kafka_duplicates_total",
        help: "Messages passed over because the store already held their offset.",
        kind: "counter",
        value: |p| Some(p.counts.duplicates as i64),
    },
    Family {
        name: "replaystore_kafka_offset",
        help: "Next offset to read, by partition.",
        kind: "gauge",
        value: |p| p.next,
    },
    Family {
        name: "replaystore_kafka_durable_offset",
        help: "Offset before which everything is durable in the partition's store.",
        kind: "gauge",
        value: |p| p.durable,
    },
    Family {
        name: "replaystore_kafka_committed_offset",
        help: "The group's offset as last committed (with a bucket: what the bucket holds).",
        kind: "gauge",
        value: |p| p.committed,
    },
    Family {
        name: "replaystore_kafka_lag",
        help: "Messages between the durable offset and the partition's end.",
        kind: "gauge",
        value: |p| Some(p.counts.high_watermark? - p.durable.unwrap_or(0)),
    },
    Family {
        name: "replaystore_kafka_paused",
        help: "1 while the partition's fetches are paused (its store refuses appends).",
        kind: "gauge",
        value: |p| Some(i64::from(p.refused_at.is_some())),
    },
];

fn render(parts: &Partitions) -> String {
    let mut out = String::new();
    let owned: Vec<_> = parts.iter().collect();
    let _ = writeln!(
        out,
        "# HELP replaystore_kafka_partitions Partitions this consumer owns.\n# TYPE replaystore_kafka_partitions gauge\nreplaystore_kafka_partitions {}",
        owned.len()
    );
    for f in FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for (p, part) in &owned {
            let v = (f.value)(part);
            if let Some(v) = v {
                let _ = writeln!(out, "{}{{partition=\"{p}\"}} {v}", f.name);
            }
        }
    }
    out
}
