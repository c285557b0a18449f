//! The consumer: a group member whose run loop polls, decodes and appends, flushes on a timer,
//! commits after each flush, and pauses a partition whose store refuses appends. Rebalances
//! arrive through librdkafka's callback, inside `poll`, on the same thread (`Ctx`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::partition::lock;
use crate::partition::{Counts, StoreFactory};
use crate::partition::{Partition, Partitions};
use crate::rebalance::Ctx;

/// What `Consumer::run` needs.
pub struct Options {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub stores: StoreFactory,
    /// Project token -> team (a message whose token is not here is refused).
    pub tokens: HashMap<String, u64>,
    /// Flush (and then commit) at least this often. Default 1 s.
    pub flush_interval: Duration,
    /// ... and whenever this many bytes were appended since the last flush. Default 8 MiB.
    pub flush_bytes: usize,
    /// With a bucket: seal, upload, then commit the group's offsets this often (an upload
    /// point; `Partition::make_durable`). Default 10 s.
    pub upload_interval: Duration,
    /// Serve Prometheus text on this address.
    pub metrics: Option<SocketAddr>,
    /// The group's session timeout: how long a dead member keeps its partitions. Default 10 s.
    pub session_timeout: Duration,
    /// Stop once the group has committed every partition of the topic up to its end and
    /// nothing arrived for a second (tests and measurements: a bounded backlog).
    pub exit_when_drained: bool,
    /// Further librdkafka properties (security, `debug`, fetch sizes...), set on both clients
    /// after ours, so they win.
    pub client_config: Vec<(String, String)>,
    /// The deletion topic (one partition): every request on it is applied to every owned
    /// store, with receipts in the bucket (`erasure`). `None`: no fleet erasure.
    pub deletion_topic: Option<String>,
}

impl Options {
    pub fn new(brokers: &str, topic: &str, group: &str, stores: StoreFactory) -> Options {
        Options {
            brokers: brokers.into(),
            topic: topic.into(),
            group: group.into(),
            stores,
            tokens: HashMap::new(),
            flush_interval: Duration::from_secs(1),
            flush_bytes: 8 << 20,
            upload_interval: Duration::from_secs(10),
            metrics: None,
            session_timeout: Duration::from_secs(10),
            exit_when_drained: false,
            client_config: Vec::new(),
            deletion_topic: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub totals: Counts,
    /// The whole run, group join and final flush included.
    pub elapsed: Duration,
    /// From the first message read to the last (what a throughput is measured over).
    pub reading: Duration,
    /// From each message's Kafka timestamp (the producer's clock, or the broker's) to the end
    /// of the flush that made it durable: median and 99th percentile, in ms.
    pub durable_p50_ms: Option<i64>,
    pub durable_p99_ms: Option<i64>,
}

/// Samples kept for the produce-to-durable latency (the first ones of the run).
const MAX_LATENCY_SAMPLES: usize = 1 << 20;

fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get(((last as f64) * q).round() as usize).copied()
}

/// A consumer-group member storing each owned partition in its own store.
pub struct Consumer {
    opts: Options,
    parts: Arc<Mutex<Partitions>>,
    /// When the first and the last message of the run were read.
    reading: Mutex<Option<(Instant, Instant)>>,
    /// Produce-to-durable latencies, ms.
    latency_ms: Mutex<Vec<i64>>,
}

impl Consumer {
    pub fn new(opts: Options) -> Consumer {
        let parts = Arc::new(Mutex::new(Partitions::new(opts.stores.clone())));
        Consumer {
            opts,
            parts,
            reading: Mutex::new(None),
            latency_ms: Mutex::new(Vec::new()),
        }
    }

    /// The librdkafka configuration both clients start from: brokers, group, the user's
    /// properties.
    fn base_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.opts.brokers)
            .set("group.id", &self.opts.group);
        for (k, v) in &self.opts.client_config {
            c.set(k, v);
        }
        c
    }

    fn client(&self) -> crate::Result<BaseConsumer<Ctx>> {
        let offsets: BaseConsumer = self
            .base_config()
            .set("enable.auto.commit", "false")
            .create()?;
        let mut config = ClientConfig::new();
        config
            .set("group.id", &self.opts.group)
            // Offsets are committed by hand, after the flush that made them durable.
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                self.opts.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            // Bounds what librdkafka prefetches into the consumer's queue (one fetch response
            // may overshoot it): memory stays bounded however far behind the consumer is.
            .set("queued.max.messages.kbytes", "16384");
        for (k, v) in self.base_config().config_map() {
            config.set(k, v);
        }
        let consumer: BaseConsumer<Ctx> =
            config.create_with_context(Ctx::new(self.parts.clone(), &self.opts.topic, offsets))?;
        consumer.subscribe(&[&self.opts.topic])?;
        Ok(consumer)
    }

    /// Runs until `stop` is set (or, with `exit_when_drained`, the backlog is consumed), then
    /// flushes, commits, leaves the group and closes every store.
    pub fn run(&self, stop: &AtomicBool) -> crate::Result<Report> {
        let start = Instant::now();
        let metrics = match self.opts.metrics {
            Some(addr) => Some(crate::metrics::serve(addr, self.parts.clone())?),
            None => None,
        };
        let result = self.join_fleet().and_then(|()| self.member_runs(stop));
        if let Some(m) = metrics {
            m.stop();
        }
        let mut parts = lock(&self.parts);
        let mut closing = Ok(());
        for p in parts.numbers() {
            if let Err(e) = parts.revoke(p) {
                closing = closing.and(Err(e));
            }
        }
        result?;
        closing?;
        if let Some(e) = parts.failed.take() {
            return Err(e);
        }
        let reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let mut waits = self.latency_ms.lock().unwrap_or_else(|e| e.into_inner());
        waits.sort_unstable();
        Ok(Report {
            totals: parts.totals(),
            elapsed: start.elapsed(),
            reading: reading.map_or(Duration::ZERO, |(first, last)| last - first),
            durable_p50_ms: quantile(&waits, 0.5),
            durable_p99_ms: quantile(&waits, 0.99),
        })
    }

    /// With a deletion topic: reads it to its end before any partition is stored, and opens
    /// the receipts (the bucket's prefix, or the directory without one).
    fn join_fleet(&self) -> crate::Result<()> {
        let Some(topic) = &self.opts.deletion_topic else {
            return Ok(());
        };
        let mut base = self.base_config();
        base.set("group.id", format!("{}.deletions", self.opts.group));
        let mut feed = crate::erasure::Feed::open(base, topic)?;
        feed.catch_up(Duration::from_secs(1));
        let factory = lock(&self.parts).factory().clone();
        let location = match factory.remote {
            Some(r) => r,
            None => {
                let receipts_dir = |e: std::io::Error| {
                    crate::Error::Receipts(format!("{}: {e}", factory.dir.display()))
                };
                std::fs::create_dir_all(&factory.dir).map_err(receipts_dir)?;
                let dir = factory.dir.canonicalize().map_err(receipts_dir)?;
                replaystore::RemoteConfig::new(format!("file://{}", dir.display()))
            }
        };
        let receipts = crate::erasure::Receipts::open(&location)?;
        lock(&self.parts).join_fleet(crate::partition::Fleet {
            feed,
            receipts,
            read: Vec::new(),
        });
        Ok(())
    }

    /// Runs as a group member until stopped; again as a new member when the coordinator skipped
    /// a rebalance (`generation`).
    fn member_runs(&self, stop: &AtomicBool) -> crate::Result<()> {
        loop {
            let consumer = self.client()?;
            let result = self.run_loop(&consumer, stop);
            let last = self.flush_and_commit(&consumer, CommitMode::Sync, true);
            let rejoin = consumer.context().rejoin.load(Ordering::Relaxed);
            // Leaving the group runs the revoke callback: every store is flushed and closed.
            drop(consumer);
            if result.is_err() || !rejoin || stop.load(Ordering::Relaxed) {
                return result.and(last);
            }
        }
    }

    fn run_loop(&self, consumer: &BaseConsumer<Ctx>, stop: &AtomicBool) -> crate::Result<()> {
        let mut last_flush = Instant::now();
        let mut last_upload = Instant::now();
        let mut last_message = Instant::now();
        let mut last_check = Instant::now();
        let rejoin = &consumer.context().rejoin;
        while !stop.load(Ordering::Relaxed) && !rejoin.load(Ordering::Relaxed) {
            let polled = consumer.poll(Duration::from_millis(100));
            if let Some(e) = lock(&self.parts).failed.take() {
                return Err(e);
            }
            match polled {
                Some(Ok(m)) => {
                    last_message = Instant::now();
                    let mut r = self.reading.lock().unwrap_or_else(|e| e.into_inner());
                    let first = r.map_or(last_message, |(f, _)| f);
                    *r = Some((first, last_message));
                    drop(r);
                    if self.handle(consumer, &m) >= self.opts.flush_bytes {
                        last_flush = Instant::now();
                        self.flush_and_commit(consumer, CommitMode::Async, false)?;
                    }
                }
                Some(Err(e)) => log::warn!("consume: {e}"),
                None => {}
            }
            if last_flush.elapsed() >= self.opts.flush_interval {
                last_flush = Instant::now();
                let upload = last_upload.elapsed() >= self.opts.upload_interval;
                if upload {
                    last_upload = Instant::now();
                }
                self.flush_and_commit(consumer, CommitMode::Async, upload)?;
            }
            if let Err(e) = lock(&self.parts).poll_deletions() {
                log::warn!("deletion requests: {e}");
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                if let Err(e) = lock(&self.parts).progress_erasures() {
                    log::warn!("erasure: {e} (retried in a second)");
                }
                self.retry_refused(consumer);
                if self.opts.metrics.is_some() {
                    self.update_watermarks(consumer);
                }
                let idle = last_message.elapsed() >= Duration::from_secs(1);
                if self.opts.exit_when_drained && idle && self.drained(consumer) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Decodes and appends one message; returns the bytes its partition holds unflushed.
    fn handle(&self, consumer: &BaseConsumer<Ctx>, m: &BorrowedMessage<'_>) -> usize {
        let mut parts = lock(&self.parts);
        let Some(part) = parts.get_mut(m.partition()) else {
            return 0; // revoked while it was in flight
        };
        let offset = m.offset();
        log::trace!("partition {} offset {offset}", m.partition());
        // Dropped while paused: fetching resumes from the refused message.
        let paused = part.refused_at.is_some_and(|r| offset >= r);
        if paused || part.next.is_some_and(|n| offset < n) {
            return part.unflushed;
        }
        let source = offset.max(0) as u64;
        if part.held.binary_search(&source).is_ok() {
            part.counts.duplicates += 1;
            part.next = Some(offset + 1);
            return part.unflushed;
        }
        let payload = m.payload().unwrap_or_default();
        part.counts.messages += 1;
        part.counts.bytes += payload.len() as u64;
        let received = m.timestamp().to_millis();
        match self.append(part, payload, received, source) {
            Appended::Refused => {
                part.refused_at = Some(offset);
                part.counts.pauses += 1;
                part.counts.messages -= 1;
                part.counts.bytes -= payload.len() as u64;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.opts.topic, m.partition());
                if let Err(e) = consumer.pause(&tpl) {
                    log::warn!("pause partition {}: {e}", m.partition());
                }
                return part.unflushed;
            }
            Appended::Chunk(n) => {
                part.counts.chunks += 1;
                part.unflushed += n;
                part.appended(m.partition(), received);
            }
            Appended::Skipped => part.counts.skipped += 1,
            Appended::Erased => part.counts.erased += 1,
            Appended::Bad(why) => {
                part.counts.refused += 1;
                log::warn!("partition {} offset {offset}: {why}", m.partition());
            }
        }
        part.next = Some(offset + 1);
        part.unflushed
    }

    fn append(
        &self,
        part: &mut Partition,
        payload: &[u8],
        received: Option<i64>,
        source: u64,
    ) -> Appended {
        let decoded = match crate::envelope::decode(payload) {
            Ok(Some(d)) => d,
            Ok(None) => return Appended::Skipped,
            Err(e) => return Appended::Bad(e.to_string()),
        };
        let team = decoded.token.as_ref().and_then(|t| self.opts.tokens.get(t));
        let Some(&team) = team else {
            return Appended::Bad(format!("unknown project token {:?}", decoded.token));
        };
        let arrival = part.store.config().parts.clock.now_ms();
        let mut chunk = decoded.into_chunk(arrival, received);
        chunk.team = team;
        let n = chunk.payload.len();
        match part.store.append_from_source(chunk, source) {
            Ok(()) => Appended::Chunk(n),
            // The message itself is wrong: passing over it is all there is to do.
            Err(
                e
                @ (replaystore::Error::InvalidChunk { .. } | replaystore::Error::Timestamp { .. }),
            ) => Appended::Bad(e.to_string()),
            // Its person or session was erased: as it should be, not an error.
            Err(replaystore::Error::Deleted { .. }) => Appended::Erased,
            // The store cannot take it now (a full buffer whose flushes fail, a failing disk):
            // wait, and read the message again later. Never dropped.
            Err(e) => {
                log::warn!("store refuses appends: {e}");
                Appended::Refused
            }
        }
    }

    /// Flushes every partition that read something since its last flush, then commits the
    /// group's offsets for those whose flush returned.
    /// `upload_point`: with a bucket, the group's offsets advance only here, after the stores
    /// sealed and uploaded what they flushed (`Partition::make_durable`).
    fn flush_and_commit(
        &self,
        consumer: &BaseConsumer<Ctx>,
        mode: CommitMode,
        upload_point: bool,
    ) -> crate::Result<()> {
        let mut parts = lock(&self.parts);
        let remote = parts.factory().remote.is_some();
        let mut latency = self.latency_ms.lock().unwrap_or_else(|e| e.into_inner());
        let mut tpl = TopicPartitionList::new();
        for (p, part) in parts.iter_mut() {
            let now = crate::partition::wall_ms();
            let waits = match part.make_durable(p, remote, remote && upload_point) {
                Some(d) => d,
                None => continue,
            };
            let room = MAX_LATENCY_SAMPLES.saturating_sub(latency.len());
            latency.extend(
                waits
                    .flushed_ts
                    .iter()
                    .map(|ts| now.saturating_sub(*ts))
                    .take(room),
            );
            if let Some(c) = waits.commit {
                tpl.add_partition_offset(&self.opts.topic, p, Offset::Offset(c.offset))?;
                if let Some(mut el) = tpl.find_partition(&self.opts.topic, p) {
                    el.set_metadata(c.metadata());
                }
            }
        }
        drop((parts, latency));
        if tpl.count() > 0 {
            // Uploaded, not yet committed: what the next owner must pass over by reading the
            // bucket (tests/kafka.rs kills a member here).
            replaystore::crash_point("consume:before_commit");
            if let Err(e) = consumer.commit(&tpl, mode) {
                log::warn!("commit: {e}");
            }
        }
        Ok(())
    }

    /// Resumes the paused partitions whose store accepts again (a flush succeeds), from the
    /// message it refused.
    fn retry_refused(&self, consumer: &BaseConsumer<Ctx>) {
        let mut parts = lock(&self.parts);
        for (p, part) in parts.iter_mut() {
            let Some(at) = part.refused_at else { continue };
            if part.store.flush().is_err() {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.opts.topic, p);
            let seek = consumer.seek(
                &self.opts.topic,
                p,
                Offset::Offset(at),
                Duration::from_secs(5),
            );
            match seek.and_then(|()| consumer.resume(&tpl)) {
                Ok(()) => part.refused_at = None,
                Err(e) => log::warn!("resume partition {p}: {e}"),
            }
        }
    }

    fn update_watermarks(&self, consumer: &BaseConsumer<Ctx>) {
        let numbers = lock(&self.parts).numbers();
        for p in numbers {
            let w = consumer.fetch_watermarks(&self.opts.topic, p, Duration::from_millis(500));
            if let (Ok((_, high)), Some(part)) = (w, lock(&self.parts).get_mut(p)) {
                part.counts.high_watermark = Some(high);
            }
        }
    }

    /// Whether the group has committed every partition of the topic up to its end.
    fn drained(&self, consumer: &BaseConsumer<Ctx>) -> bool {
        let timeout = Duration::from_secs(2);
        let Ok(meta) = consumer.fetch_metadata(Some(&self.opts.topic), timeout) else {
            return false;
        };
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for t in meta.topics() {
            for p in t.partitions() {
                match consumer.fetch_watermarks(&self.opts.topic, p.id(), timeout) {
                    // An empty partition (low == high) has nothing to wait for.
                    Ok((low, high)) => ends.insert(p.id(), (low < high).then_some(high)),
                    Err(_) => return false,
                };
                tpl.add_partition(&self.opts.topic, p.id());
            }
        }
        let Ok(committed) = consumer.committed_offsets(tpl, timeout) else {
            return false;
        };
        let done = !ends.is_empty()
            && committed.elements().iter().all(|e| {
                match ends.get(&e.partition()).copied().flatten() {
                    Some(end) => matches!(e.offset(), Offset::Offset(o) if o >= end),
                    None => true,
                }
            });
        if done {
            let at: Vec<String> = committed
                .elements()
                .iter()
                .map(|e| {
                    format!(
                        "p{} {:?} of {:?}",
                        e.partition(),
                        e.offset(),
                        ends.get(&e.partition())
                    )
                })
                .collect();
            log::info!("drained: {}", at.join(", "));
        }
        done
    }
}

enum Appended {
    Chunk(usize),
    Erased,
    Skipped,
    Bad(String),
    Refused,
}
