//! Criterion benches: ingest (append + durable flushes) beside zstd alone on the same groups,
//! read_session from the page cache and from an in-memory bucket (remote tier), compaction (verbatim, and with regrouping), and the rrweb
//! annotator (session summaries) that runs on the flush path.
//! `cargo bench --bench ingest`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use replaystore::{Config, Store};
use replaystore_posthog::rrweb::RrwebAnnotator;
use replaystore_testkit::generator::{interleaved, session, Workload};

fn workload() -> Vec<replaystore::Chunk> {
    interleaved(&Workload {
        sessions: 24,
        median_session_bytes: 1 << 20,
        ..Workload::default()
    })
}

fn ingest(c: &mut Criterion) {
    let chunks = workload();
    let raw: usize = chunks.iter().map(|c| c.payload.len()).sum();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(raw as u64));
    g.sample_size(10);

    g.bench_function("store: append + flush every 8 MiB", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let store =
                Store::open(dir.path(), Config::default().with_background_flush(false)).unwrap();
            let mut since = 0;
            for c in &chunks {
                since += c.payload.len();
                store.append(c.clone()).unwrap();
                if since >= 8 << 20 {
                    store.flush().unwrap();
                    since = 0;
                }
            }
            store.flush().unwrap();
        })
    });

    g.bench_function(
        "limit: zstd-3 of the same session groups, 1 thread, no I/O",
        |b| {
            b.iter(|| {
                // Same grouping as a flush every 8 MiB: consecutive chunks of one session together.
                let mut out = 0usize;
                let mut group: std::collections::HashMap<&str, Vec<u8>> = Default::default();
                let mut since = 0;
                for c in &chunks {
                    since += c.payload.len();
                    group
                        .entry(&c.session_id)
                        .or_default()
                        .extend_from_slice(&c.payload);
                    if since >= 8 << 20 {
                        out += group
                            .drain()
                            .map(|(_, v)| zstd::bulk::compress(&v, 3).unwrap().len())
                            .sum::<usize>();
                        since = 0;
                    }
                }
                out += group
                    .drain()
                    .map(|(_, v)| zstd::bulk::compress(&v, 3).unwrap().len())
                    .sum::<usize>();
                out
            })
        },
    );
    g.finish();
}

fn read(c: &mut Criterion) {
    let chunks = workload();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default().with_background_flush(false)).unwrap();
    for c in &chunks {
        store.append(c.clone()).unwrap();
    }
    store.flush().unwrap();
    let first = &chunks[0];
    let size = store
        .read_session(first.team, &first.session_id)
        .unwrap()
        .unwrap()
        .summary
        .raw_bytes;
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(size));
    g.bench_function("read_session (page cache)", |b| {
        b.iter(|| {
            store
                .read_session(first.team, &first.session_id)
                .unwrap()
                .unwrap()
        })
    });
    // The same session with its segments only in an in-memory bucket: the remote path's own
    // cost (range planning, the runtime hand-off, copies), without any network.
    let remote_dir = tempfile::tempdir().unwrap();
    let bucket = std::sync::Arc::new(object_store::memory::InMemory::new());
    let remote = replaystore::RemoteConfig::in_memory(bucket, "bench")
        .with_local_retention(std::time::Duration::ZERO);
    let config = Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_remote(remote);
    let rstore = Store::open(remote_dir.path(), config).unwrap();
    for c in &chunks {
        rstore.append(c.clone()).unwrap();
    }
    rstore.seal_active().unwrap();
    rstore.sync_remote().unwrap();
    g.bench_function("read_session (segments in an in-memory bucket)", |b| {
        b.iter(|| {
            let (data, trace) = rstore
                .read_session_traced(first.team, &first.session_id)
                .unwrap();
            assert!(trace.gets > 0);
            data.unwrap()
        })
    });
    g.finish();
}

fn compaction(c: &mut Criterion) {
    let chunks = workload();
    let raw: u64 = chunks.iter().map(|c| c.payload.len() as u64).sum();
    let build = |regroup: bool| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default()
            .with_background_flush(false)
            .with_maintenance_interval(None)
            .with_default_retention_days(3650)
            .with_regroup(regroup)
            .with_regroup_idle(std::time::Duration::ZERO);
        let store = Store::open(dir.path(), cfg).unwrap();
        for c in &chunks {
            store.append(c.clone()).unwrap();
        }
        store.flush().unwrap();
        store.seal_active().unwrap();
        store
            .delete_person(chunks[0].team, &chunks[0].person)
            .unwrap();
        (dir, store)
    };
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(raw));
    g.bench_function("delete a person, compact (verbatim copy)", |b| {
        b.iter_batched(
            || build(false),
            |(_d, s)| s.compact().unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("delete a person, compact with regroup (level 9)", |b| {
        b.iter_batched(
            || build(true),
            |(_d, s)| s.compact().unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The analyzer scans every payload byte once per flush; compare its rate with zstd's.
fn analyze(c: &mut Criterion) {
    let w = Workload {
        sessions: 12,
        ..Workload::default()
    };
    let sessions: Vec<_> = (0..w.sessions).map(|i| session(&w, i)).collect();
    let raw: usize = sessions.iter().map(|s| s.raw_bytes()).sum();
    let mut g = c.benchmark_group("analyze");
    g.throughput(Throughput::Bytes(raw as u64));
    g.sample_size(10);
    g.bench_function("rrweb summary, whole sessions", |b| {
        b.iter(|| {
            sessions
                .iter()
                .map(|s| RrwebAnnotator.summarize(&s.chunks).event_count)
                .sum::<u64>()
        })
    });
    g.finish();
}

/// The posthog-js normalization (inflate the SDK's in-event gzip) on real captured payloads:
/// the docs-reading session when ../shared/fixtures is there, else the small app's.
fn normalize(c: &mut Criterion) {
    use replaystore::PayloadTransform;
    let docs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/posthog-js-docs/snapshot-batches.jsonl"
    );
    let small = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/posthog-js/snapshot-batches.jsonl"
    );
    let Ok(text) = std::fs::read(docs).or_else(|_| std::fs::read(small)) else {
        eprintln!("SKIP normalize: no posthog-js fixture");
        return;
    };
    let payloads: Vec<Vec<u8>> = replaystore_posthog::posthog::parse_body(1, &text)
        .into_iter()
        .filter_map(|(_, r)| r.ok().flatten())
        .map(|c| c.payload)
        .collect();
    let raw: usize = payloads.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Bytes(raw as u64));
    g.sample_size(10);
    g.bench_function("posthog-js payloads, as sent", |b| {
        b.iter(|| {
            payloads
                .iter()
                .map(|p| {
                    replaystore_posthog::Normalize
                        .transform(p)
                        .map_or(0, |o| o.len())
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, ingest, read, compaction, analyze, normalize);
criterion_main!(benches);
