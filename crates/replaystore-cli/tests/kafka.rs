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
    create_topic_with(brokers, topic, PARTITIONS);
}

fn create_topic_with(brokers: &str, topic: &str, partitions: i32) {
    let tansu = std::env::var_os("REPLAYSTORE_TANSU").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/replaystore/tansu/bin/tansu")
        },
        std::path::PathBuf::from,
    );
    let out = Command::new(&tansu)
        .args(["topic", "create", "--broker", &format!("tcp://{brokers}")])
        .args(["--partitions", &partitions.to_string(), topic])
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
    messages_of(copies, |_| None)
}

/// `messages`, with the person of copy `i` replaced by `person(i)` when it gives one.
fn messages_of(copies: usize, person_of: impl Fn(usize) -> Option<&'static str>) -> Vec<Message> {
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
            let orig_person = parsed[0]["properties"]["distinct_id"].as_str().unwrap();
            let person = serde_json::Value::from(person_of(copy).unwrap_or(orig_person));
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
                    .replace(&format!("\"{orig_person}\""), &format!("{person}"))
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

/// A fresh topic (4 partitions) holding `msgs`.
fn topic_with(brokers: &str, msgs: Vec<Message>) -> (String, Vec<Message>) {
    let topic = unique("recordings");
    create_topic(brokers, &topic);
    produce(brokers, &topic, &msgs);
    (topic, msgs)
}

/// The `already held` count of `consume`'s last line.
fn already_held(stdout: &str) -> u64 {
    stdout
        .split(" already held")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'already held' count in {stdout}"))
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

/// Every session's events as the partition stores under `dir` hold them (a session found in
/// two partitions fails).
fn stored(dir: &Path) -> BTreeMap<String, Vec<String>> {
    stored_in(|p| {
        let pdir = dir.join(format!("p{p}"));
        pdir.exists().then(|| common::open(&pdir))
    })
}

/// `stored`, over the stores `open` gives for each partition.
fn stored_in(open: impl Fn(i32) -> Option<replaystore::Store>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let Some(store) = open(p) else {
            continue;
        };
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

/// The consumers' output, kept after the run (under target/) for reading when it fails.
struct Logs {
    dir: std::path::PathBuf,
}

impl Logs {
    fn new(what: &str) -> Logs {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(what));
        std::fs::create_dir_all(&dir).unwrap();
        Logs { dir }
    }

    /// Starts `c` with its stdout and stderr in `<name>.out` and `<name>.err`.
    fn spawn(&self, name: &str, mut c: Command) -> Child {
        let file = |ext: &str| std::fs::File::create(self.dir.join(format!("{name}.{ext}")));
        c.stdout(file("out").unwrap())
            .stderr(file("err").unwrap())
            .spawn()
            .unwrap()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
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
    let (topic, msgs) = topic_with(&brokers, messages(24));
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let logs = Logs::new("kafka-kill");
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
        logs.spawn(name, c)
    };
    let read_log = |name: &str| logs.read(name);
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
        logs.dir.display()
    );
    eprintln!("B: {stdout}");
    // What A made durable without its offsets reaching the group was read again by B and
    // passed over, not stored twice (the comparison below would see doubled events).
    let held = already_held(&stdout);
    assert!(held > 0, "B found nothing of A's last flush: {stdout}");
    assert_same(&stored(dir.path()), &expected(&msgs));
}

/// The options that put a consumer's stores under `prefix` of the test bucket.
fn remote_args(c: &mut Command, ep: &str, prefix: &str) {
    c.args(["--remote", &format!("s3://{}/{prefix}", common::s3::BUCKET)]);
    c.args(["--remote-option", &format!("endpoint={ep}")]);
    for (k, v) in common::s3::OPTIONS {
        c.args(["--remote-option", &format!("{k}={v}")]);
    }
}

/// `stored`, read from the bucket alone (each partition's store adopted into a fresh directory).
fn stored_in_bucket(ep: &str, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let fresh = tempfile::tempdir().unwrap();
    stored_in(|p| {
        let cfg = common::s3::bucket(ep, &format!("{prefix}/p{p}"));
        let config = common::config().with_remote(cfg);
        Some(replaystore::Store::open(fresh.path().join(format!("p{p}")), config).unwrap())
    })
}

/// Two members on two "machines" (a directory each, one bucket). A uploads its partitions and
/// dies before it commits their offsets (crash point `consume:before_commit`); B takes them over
/// from the bucket alone, reads in the bucket which messages A stored (the remote segments past
/// the group's commit: here all, as A never committed), passes over them, and every session in
/// the bucket is exactly what was produced.
#[test]
fn a_member_dying_between_upload_and_commit_doubles_nothing_in_the_bucket() {
    let test = "a_member_dying_between_upload_and_commit_doubles_nothing_in_the_bucket";
    let Some(brokers) = brokers(test) else {
        return;
    };
    let Some(ep) = common::s3::endpoint(test) else {
        return;
    };
    if !common::failpoints(test) {
        return;
    }
    let (topic, msgs) = topic_with(&brokers, messages(16));
    let prefix = common::s3::prefix("upload-crash");
    let group = unique("g");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let logs = Logs::new("kafka-upload-crash");
    let spawn = |name: &str, dir: &Path, crash_at: Option<&str>| {
        let mut c = consume(&brokers, &topic, &group, dir);
        c.args(["--exit-when-drained", "--upload-interval-s", "1"]);
        remote_args(&mut c, &ep, &prefix);
        if let Some(at) = crash_at {
            c.env("REPLAYSTORE_CRASH_AT", at);
        }
        logs.spawn(name, c)
    };
    let mut a = spawn("a", dir_a.path(), Some("consume:before_commit"));
    let status = wait_for(&mut a, Duration::from_secs(60), &|| logs.read("a.err"));
    assert!(
        !status.success()
            && logs
                .read("a.err")
                .contains("crash point consume:before_commit"),
        "A was to die before its first commit: {status}\n{}",
        logs.read("a.err")
    );
    let mut b = spawn("b", dir_b.path(), None);
    let status = wait_for(&mut b, Duration::from_secs(90), &|| logs.read("b.err"));
    let stdout = logs.read("b.out");
    assert!(
        status.success(),
        "B failed: {stdout}\n{}",
        logs.read("b.err")
    );
    let held = already_held(&stdout);
    assert!(held > 0, "B found nothing of what A uploaded: {stdout}");
    assert_same(&stored_in_bucket(&ep, &prefix), &expected(&msgs));
}

/// A free loopback port (bound, then released for the consumer to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sum over partitions of one metric of `GET /metrics`; `None` while nothing listens.
fn metric_sum(port: u16, name: &str) -> Option<i64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum(),
    )
}

const CANARY: &str = "canary-person-5e1f0d";

/// A person whose sessions sit on every partition is erased through the deletion topic while
/// a second member joins (a rebalance: every partition handed over through the bucket, each
/// member with its own directory, as on two machines). Every partition reports done, no
/// object of the bucket holds the person's id any more, and every other session is in the
/// bucket exactly as produced.
#[test]
fn a_person_erased_during_a_rebalance_is_gone_from_every_partition_and_object() {
    let test = "a_person_erased_during_a_rebalance_is_gone_from_every_partition_and_object";
    let Some(brokers) = brokers(test) else {
        return;
    };
    let Some(ep) = common::s3::endpoint(test) else {
        return;
    };
    let topic = unique("recordings");
    create_topic(&brokers, &topic);
    let deletions = unique("deletions");
    create_topic_with(&brokers, &deletions, 1);
    let msgs = messages_of(16, |copy| (copy % 3 == 1).then_some(CANARY));
    produce(&brokers, &topic, &msgs);
    let prefix = common::s3::prefix("fleet");
    let remote_args = |c: &mut Command| remote_args(c, &ep, &prefix);
    let group = unique("g");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let logs = Logs::new("kafka-erase");
    let spawn = |name: &str, dir: &Path, port: u16| {
        let mut c = consume(&brokers, &topic, &group, dir);
        c.args(["--deletion-topic", &deletions]);
        c.args(["--metrics", &format!("127.0.0.1:{port}")]);
        remote_args(&mut c);
        c.env("RUST_LOG", "info");
        logs.spawn(name, c)
    };
    let read_log = |name: &str| logs.read(name);
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = spawn("a", dir_a.path(), port_a);
    // A alone reads the whole topic first.
    let start = Instant::now();
    while metric_sum(port_a, "replaystore_kafka_durable_offset") != Some(msgs.len() as i64) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "A did not consume the topic: {}",
            read_log("a.err")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The erasure is published and B joins at once: the group rebalances (A hands partitions
    // over through the bucket) while the stores apply it.
    let published = Instant::now();
    let mut del = Command::new(env!("CARGO_BIN_EXE_replaystore"));
    del.args(["delete-person", "--team", "1", "--person", CANARY])
        .args(["--brokers", &brokers, "--deletion-topic", &deletions]);
    let out = del.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "delete-person: {stdout}");
    let request = stdout.split('\t').next().unwrap().to_string();
    let mut b = spawn("b", dir_b.path(), port_b);
    // Done only once every partition's store reports done.
    let status = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_replaystore"));
        c.args([
            "deletion-status",
            "--request",
            &request,
            "--partitions",
            "4",
        ]);
        remote_args(&mut c);
        c.output().unwrap()
    };
    loop {
        let out = status();
        if out.status.success() {
            eprintln!(
                "erased on 4 partitions {:.1?} after publishing: {}",
                published.elapsed(),
                String::from_utf8_lossy(&out.stdout)
            );
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(90),
            "not done: {}\nA: {}\nB: {}",
            String::from_utf8_lossy(&out.stdout),
            read_log("a.err"),
            read_log("b.err")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    while metric_sum(port_b, "replaystore_kafka_partitions").unwrap_or(0) == 0 {
        assert!(
            published.elapsed() < Duration::from_secs(60),
            "B never got a partition: {}",
            read_log("b.err")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in [&mut a, &mut b] {
        // SIGTERM: each flushes, seals, syncs and closes its stores.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        assert!(wait_for(c, Duration::from_secs(60), &|| read_log("a.err")).success());
    }
    let config = common::s3::bucket(&ep, &prefix);
    let objects = replaystore::remote::bucket_objects(&config, true).unwrap();
    assert!(
        objects.iter().any(|o| o.key.contains("/p0/")),
        "no store in the bucket"
    );
    for o in &objects {
        let bytes = o.bytes.as_deref().unwrap_or_default();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "the erased person's id is still in {}",
            o.key
        );
    }
    // Nothing else was lost or doubled on the way: every other session, read back from the
    // bucket alone, is what was produced.
    let got = stored_in_bucket(&ep, &prefix);
    let kept: Vec<Message> = msgs
        .into_iter()
        .filter(|m| !m.value.contains(CANARY))
        .collect();
    assert_same(&got, &expected(&kept));
}

/// Fails every write and fsync of segment files while `on` is set: a disk failing for a while.
#[derive(Debug)]
struct FailingDisk {
    on: std::sync::atomic::AtomicBool,
}

impl replaystore::fs::FaultInjector for FailingDisk {
    fn inject(&self, op: &replaystore::fs::FileOp<'_>) -> Option<replaystore::fs::Fault> {
        use replaystore::fs::FileOp;
        let segment = match op {
            FileOp::Write { path, .. } | FileOp::Sync { path } => {
                path.to_string_lossy().contains("lanes")
            }
            _ => false,
        };
        let on = self.on.load(std::sync::atomic::Ordering::SeqCst);
        (segment && on).then_some(replaystore::fs::Fault::Errno(libc::EIO))
    }
}

/// Back-pressure: while its store refuses appends (a small buffer, flushes failing), a
/// partition's fetches are paused and its messages dropped from the refused one on; once the
/// disk works again the consumer resumes from that message. Nothing is lost, nothing doubled,
/// no message counted bad.
#[test]
fn a_store_refusing_appends_pauses_its_partition_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(brokers) = brokers("a_store_refusing_appends_pauses_its_partition_and_loses_nothing")
    else {
        return;
    };
    let (topic, msgs) = topic_with(&brokers, messages(12));
    let disk = std::sync::Arc::new(FailingDisk {
        on: AtomicBool::new(true),
    });
    let dir = tempfile::tempdir().unwrap();
    let config = common::config()
        .with_faults(disk.clone())
        .with_max_buffer_bytes(128 << 10);
    let stores = replaystore_kafka::StoreFactory {
        dir: dir.path().to_path_buf(),
        remote: None,
        config,
    };
    let mut opts = replaystore_kafka::Options::new(&brokers, &topic, &unique("g"), stores);
    opts.tokens = [(TOKEN.to_string(), 1)].into();
    opts.exit_when_drained = true;
    let consumer = replaystore_kafka::Consumer::new(opts);
    let stop = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| consumer.run(&stop));
        std::thread::sleep(Duration::from_secs(3));
        disk.on.store(false, Ordering::SeqCst);
        run.join().unwrap()
    })
    .expect("the consumer's run");
    let t = report.totals;
    assert!(t.pauses > 0, "no partition was paused: {t:?}");
    assert_eq!(t.refused, 0, "messages counted bad: {t:?}");
    assert_same(&stored(dir.path()), &expected(&msgs));
}
