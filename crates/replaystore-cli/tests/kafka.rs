//! `replaystore consume` against a real Kafka-compatible broker: tansu, installed and started
//! on loopback by `.ci/run`, which exports its address as `REPLAYSTORE_KAFKA_BROKERS`. Without
//! it the tests skip, loudly; under CI (`CI` set) they fail instead.
//!
//! By hand: `cargo install tansu --locked --features dynostore --root ~/.cache/replaystore/tansu`,
//! `~/.cache/replaystore/tansu/bin/tansu broker --listener-url tcp://127.0.0.1:9092
//! --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ &`, then
//! `REPLAYSTORE_KAFKA_BROKERS=127.0.0.1:9092 REPLAYSTORE_TANSU=~/.cache/replaystore/tansu/bin/tansu cargo test --release --test kafka -- --nocapture`.
//!
//! The data is the real posthog-js capture (tests/data/posthog-js), copied under several
//! session ids and produced as PostHog's capture service does: one message per request, keyed
//! by session id, the request's `$snapshot` events merged into one `$snapshot_items` event in
//! `data`; every other copy instead as posthog-js's own `$snapshot` events, one per message.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::value::RawValue;

const PARTITIONS: i32 = 4;
const TOKEN: &str = "phc_kafkatest";

/// The broker's address; `None` (after saying so) when there is none.
fn brokers(test: &str) -> Option<String> {
    let Ok(b) = std::env::var("REPLAYSTORE_KAFKA_BROKERS") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but REPLAYSTORE_KAFKA_BROKERS is not: .ci/run must start tansu"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no Kafka broker (set REPLAYSTORE_KAFKA_BROKERS, see the top of \
             tests/kafka.rs)"
        );
        return None;
    };
    Some(b)
}

/// A fresh name, so that tests (and runs against one broker) never share topics or groups.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// Creates the topic with tansu's own command line (`REPLAYSTORE_TANSU`, exported by
/// `.ci/run`; default: where `.ci/run` installs it): librdkafka's admin client waits for a
/// controller that tansu 0.6 does not announce, and times out.
fn create_topic(brokers: &str, topic: &str) {
    let tansu = std::env::var_os("REPLAYSTORE_TANSU").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/replaystore/tansu/bin/tansu")
        },
        std::path::PathBuf::from,
    );
    let out = Command::new(&tansu)
        .args(["topic", "create", "--broker", &format!("tcp://{brokers}")])
        .args(["--partitions", &PARTITIONS.to_string(), topic])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tansu.display()));
    assert!(
        out.status.success(),
        "tansu topic create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One produced message: its session (the key) and the rrweb events of the chunk it becomes.
struct Message {
    session: String,
    value: String,
    first_ts: i64,
    events: Vec<String>,
}

/// The fixture's requests as capture would produce them, under `copies` session ids.
fn messages(copies: usize) -> Vec<Message> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/posthog-js/snapshot-batches.jsonl"),
    )
    .unwrap();
    let mut out = Vec::new();
    for copy in 0..copies {
        for line in text.lines() {
            let events: Vec<&RawValue> = serde_json::from_str(line).unwrap();
            let parsed: Vec<serde_json::Value> = serde_json::from_str(line).unwrap();
            let session = format!(
                "{}-{copy}",
                parsed[0]["properties"]["$session_id"].as_str().unwrap()
            );
            let sent_at = parsed[0]["sent_at"].clone();
            let person = parsed[0]["properties"]["distinct_id"].clone();
            let items = |ev: &RawValue| -> Vec<String> {
                #[derive(serde::Deserialize)]
                struct E<'a> {
                    #[serde(borrow)]
                    properties: P<'a>,
                }
                #[derive(serde::Deserialize)]
                struct P<'a> {
                    #[serde(rename = "$snapshot_data", borrow)]
                    data: Vec<&'a RawValue>,
                }
                let e: E = serde_json::from_str(ev.get()).unwrap();
                e.properties
                    .data
                    .iter()
                    .map(|r| r.get().to_string())
                    .collect()
            };
            let first = |items: &[String]| {
                items
                    .iter()
                    .map(|i| {
                        serde_json::from_str::<serde_json::Value>(i).unwrap()["timestamp"]
                            .as_i64()
                            .unwrap()
                    })
                    .min()
                    .unwrap()
            };
            let envelope = |data: String| {
                serde_json::json!({
                    "uuid": "01a215ea-0000-7000-8000-000000000000",
                    "distinct_id": person,
                    "ip": "127.0.0.1",
                    "data": data,
                    // Capture received the request when it was sent: no skew to correct.
                    "now": sent_at,
                    "sent_at": sent_at,
                    "token": TOKEN,
                    "event": "$snapshot_items",
                })
                .to_string()
            };
            let with_session = |ev: &str| {
                let orig = parsed[0]["properties"]["$session_id"].as_str().unwrap();
                ev.replace(&format!("\"{orig}\""), &format!("\"{session}\""))
            };
            if copy % 2 == 0 {
                // Capture's form: the request's events merged into one `$snapshot_items`.
                let all: Vec<String> = events.iter().flat_map(|e| items(e)).collect();
                let data = serde_json::json!({
                    "event": "$snapshot_items",
                    "properties": {
                        "distinct_id": person,
                        "$session_id": session,
                        "$window_id": parsed[0]["properties"]["$window_id"],
                        "$snapshot_source": "web",
                        "$snapshot_items": "ITEMS",
                        "$lib": "web",
                    }
                })
                .to_string()
                .replace("\"ITEMS\"", &format!("[{}]", all.join(",")));
                out.push(Message {
                    session: session.clone(),
                    value: envelope(data),
                    first_ts: first(&all),
                    events: all,
                });
            } else {
                // posthog-js's form (what `/s/` decodes): one `$snapshot` event per message.
                for ev in &events {
                    let its = items(ev);
                    out.push(Message {
                        session: session.clone(),
                        value: envelope(with_session(ev.get())),
                        first_ts: first(&its),
                        events: its,
                    });
                }
            }
        }
    }
    out
}

fn produce(brokers: &str, topic: &str, msgs: &[Message]) {
    // One message per batch: tansu 0.6 answers a fetch from an offset inside a batch with the
    // batches that start after it (dynostore's `fetch`: `offsets.split_off(&offset)`), so a
    // consumer resuming mid-batch would never see the rest of that batch. A Kafka broker
    // returns the batch holding the offset. docs/scale-out.md, "The test broker".
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "20000000")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    for m in msgs {
        let mut record = BaseRecord::to(topic).key(&m.session).payload(&m.value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "produce: {e}"
                    );
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush producer");
}

/// Each session's rrweb events in the order the store promises: chunks by first timestamp
/// (stable), each chunk's events as sent.
fn expected(msgs: &[Message]) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<(i64, &[String])>> = BTreeMap::new();
    for m in msgs {
        by.entry(m.session.clone())
            .or_default()
            .push((m.first_ts, &m.events));
    }
    by.into_iter()
        .map(|(s, mut chunks)| {
            chunks.sort_by_key(|(t, _)| *t);
            (
                s,
                chunks
                    .into_iter()
                    .flat_map(|(_, e)| e.iter().cloned())
                    .collect(),
            )
        })
        .collect()
}

/// Every session's events as the partition stores under `dir` hold them, and in how many
/// partitions each session was found.
fn stored(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let pdir = dir.join(format!("p{p}"));
        if !pdir.exists() {
            continue;
        }
        let store = common::open(&pdir);
        for s in store
            .list_sessions(1, &replaystore::SessionFilter::default())
            .unwrap()
        {
            let data = store.read_session(1, &s.session_id).unwrap().unwrap();
            let events: Vec<String> = data
                .chunks
                .iter()
                .flat_map(|c| {
                    replaystore_posthog::posthog::payload_events(&c.payload)
                        .unwrap()
                        .into_iter()
                        .map(|e| e.get().to_string())
                        .collect::<Vec<_>>()
                })
                .collect();
            assert!(
                out.insert(s.session_id.clone(), events).is_none(),
                "session {} in two partitions",
                s.session_id
            );
        }
        store.close().unwrap();
    }
    out
}

fn consume(brokers: &str, topic: &str, group: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_replaystore"));
    c.args([
        "consume",
        "--retention-days",
        "3650",
        "--max-age-days",
        "3650",
    ])
    .args(["--brokers", brokers, "--topic", topic, "--group", group])
    .args(["--token", &format!("{TOKEN}=1"), "--session-timeout-s", "6"])
    .arg("--dir")
    .arg(dir);
    c
}

fn assert_same(got: &BTreeMap<String, Vec<String>>, want: &BTreeMap<String, Vec<String>>) {
    let missing: Vec<&String> = want.keys().filter(|s| !got.contains_key(*s)).collect();
    let extra: Vec<&String> = got.keys().filter(|s| !want.contains_key(*s)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "sessions missing: {missing:?}, not produced: {extra:?}"
    );
    for (s, events) in want {
        let g = got.get(s).unwrap_or_else(|| panic!("session {s} missing"));
        assert_eq!(g.len(), events.len(), "session {s}: event count");
        for (i, (a, b)) in g.iter().zip(events).enumerate() {
            assert!(
                a == b,
                "session {s}: event {i} differs: {a:.200} vs {b:.200}"
            );
        }
    }
}

#[test]
fn consumed_sessions_export_exactly_what_was_produced() {
    let Some(brokers) = brokers("consumed_sessions_export_exactly_what_was_produced") else {
        return;
    };
    let topic = unique("recordings");
    create_topic(&brokers, &topic);
    let copies: usize = std::env::var("REPLAYSTORE_KAFKA_COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let msgs = messages(copies);
    produce(&brokers, &topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = consume(&brokers, &topic, &unique("g"), dir.path())
        .arg("--exit-when-drained")
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "consume failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("consumed {} messages", msgs.len())),
        "{stdout}"
    );
    assert_same(&stored(dir.path()), &expected(&msgs));
    eprintln!("consume: {stdout}(wall {took:.1?} including the group join)");
}

fn wait_for(
    child: &mut Child,
    limit: Duration,
    log: &dyn Fn() -> String,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("consumer still running after {limit:?}: {}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two members in one group; A dies inside a flush (its third fsync returned, its caller never
/// heard: the crash point `flush:after_sync`, an abort, no destructor, as SIGKILL would), so
/// its stores hold messages whose offsets the group never got. B takes A's partitions, opens
/// A's stores (one directory, as the machines of a fleet share the bucket), resumes where they
/// say, passes over what they already hold, and every session must export exactly what was
/// produced.
#[test]
fn a_member_killed_mid_flush_loses_nothing_and_doubles_nothing() {
    let test = "a_member_killed_mid_flush_loses_nothing_and_doubles_nothing";
    let Some(brokers) = brokers(test) else {
        return;
    };
    if !common::failpoints(test) {
        return;
    }
    let topic = unique("recordings");
    create_topic(&brokers, &topic);
    let msgs = messages(24);
    produce(&brokers, &topic, &msgs);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    // Kept after the run (under target/), for reading when it fails.
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("kafka-kill"));
    std::fs::create_dir_all(&logs).unwrap();
    let spawn = |name: &str, crash_at: Option<&str>| {
        let mut c = consume(&brokers, &topic, &group, dir.path());
        c.args(["--exit-when-drained", "--flush-interval-ms", "20"]);
        if let Some(at) = crash_at {
            c.env("REPLAYSTORE_CRASH_AT", at);
        }
        if std::env::var_os("REPLAYSTORE_KAFKA_DEBUG").is_some() {
            c.args(["--kafka-config", "debug=cgrp"])
                .env("RUST_LOG", "info,librdkafka=trace,replaystore_kafka=trace");
        }
        let file = |ext: &str| std::fs::File::create(logs.join(format!("{name}.{ext}")));
        c.stdout(file("out").unwrap())
            .stderr(file("err").unwrap())
            .spawn()
            .unwrap()
    };
    let read_log = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    let mut a = spawn("a", Some("flush:after_sync@3"));
    // B joins once A is reading, so that A owns partitions when it dies.
    std::thread::sleep(Duration::from_millis(300));
    let mut b = spawn("b", None);
    let a_status = wait_for(&mut a, Duration::from_secs(60), &|| read_log("a.err"));
    assert!(
        !a_status.success() && read_log("a.err").contains("crash point flush:after_sync"),
        "A was to die in its third flush: {a_status}\n{}",
        read_log("a.err")
    );
    let status = wait_for(&mut b, Duration::from_secs(60), &|| read_log("b.err"));
    let stdout = read_log("b.out");
    assert!(
        status.success(),
        "B failed: {stdout}\n{} (logs in {})",
        read_log("b.err"),
        logs.display()
    );
    eprintln!("B: {stdout}");
    // What A made durable without its offsets reaching the group was read again by B and
    // passed over, not stored twice (the comparison below would see doubled events).
    let held: u64 = stdout
        .split(" already held")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'already held' count in {stdout}"));
    assert!(held > 0, "B found nothing of A's last flush: {stdout}");
    assert_same(&stored(dir.path()), &expected(&msgs));
}
