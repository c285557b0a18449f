//! Simulated power failures: a deterministic workload (append, flush, delete, compact, seal by
//! age, reopen) runs on `SimStorage`, which powers off after the k-th mutating storage
//! operation (every later one fails with EIO) and then `crash()`es: only synced file data and
//! synced directory entries survive, plus, in half the runs, a random prefix of unsynced
//! appends (a torn write). The store is reopened on what survived and checked: every
//! acknowledged chunk (its `flush` returned Ok) is readable unless a deletion covers it, no
//! chunk covered by an acknowledged deletion is readable, nothing is read twice, nothing is read
//! that was never appended. k runs over every operation of several workloads, at least 10,000
//! crashes in all; `REPLAYSTORE_SIM_CRASHES=N` asks for at least N.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use replaystore::storage::{OpenMode, SimStorage, Storage};
use replaystore::{Chunk, Config, ManualClock, Store};

mod common;

const T0: i64 = 1_795_000_000_000;
const SESSIONS: usize = 5;
const PERSONS: usize = 3;
const DIR: &str = "/data/store";

fn config(sim: &SimStorage, clock: &Arc<ManualClock>) -> Config {
    Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_compression_threads(1)
        .with_segment_bytes(4096)
        .with_segment_max_age(Duration::from_secs(3600))
        .with_regroup_idle(Duration::from_secs(1800))
        .with_default_retention_days(30)
        .with_clock(clock.clone())
        .with_storage(Arc::new(sim.clone()))
}

fn sid(s: usize) -> String {
    format!("session-{s}")
}

fn person_of(session: usize) -> usize {
    session % PERSONS
}

/// What the workload was told succeeded, and what it tried.
#[derive(Default)]
struct Log {
    /// Chunk id -> (session, arrival ms), for every chunk `append` accepted.
    appended: HashMap<usize, (usize, i64)>,
    /// Chunks made durable by a `flush` (or `close`) that returned Ok.
    acked: HashSet<usize>,
    /// Chunks accepted since the last acknowledged flush.
    buffered: Vec<usize>,
    /// Session deletions tried, and whether acknowledged.
    session_deletes: HashMap<usize, bool>,
    /// Person deletions tried: (person, time, acknowledged).
    person_deletes: Vec<(usize, i64, bool)>,
}

impl Log {
    fn ack_buffered(&mut self) {
        self.acked.extend(self.buffered.drain(..));
    }
    /// Whether a deletion (acknowledged, or also one merely tried) covers chunk `id`.
    fn deleted(&self, id: usize, only_acked: bool) -> bool {
        let (session, arrival) = self.appended[&id];
        let counts = |acked: bool| acked || !only_acked;
        self.session_deletes
            .get(&session)
            .is_some_and(|&a| counts(a))
            || self
                .person_deletes
                .iter()
                .any(|&(p, at, a)| p == person_of(session) && arrival <= at && counts(a))
    }
}

/// A small LCG: the workload's choices, from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

type Step = replaystore::Result<()>;

/// The workload for `seed`; stops at the first error (the power went).
fn workload(
    seed: u64,
    sim: &SimStorage,
    clock: &Arc<ManualClock>,
    store: &mut Option<Store>,
    log: &mut Log,
) -> Step {
    let mut rng = Rng(seed);
    let mut next_id = 0;
    for _ in 0..40 {
        let s = store.as_ref().expect("open");
        match rng.next(10) {
            0..=4 => {
                for _ in 0..1 + rng.next(8) {
                    let session = rng.next(SESSIONS as u64) as usize;
                    next_id += 1;
                    if append(
                        s,
                        clock,
                        session,
                        next_id,
                        200 + rng.next(1500) as usize,
                        log,
                    )? {
                        log.buffered.push(next_id);
                    }
                }
                s.flush()?;
                log.ack_buffered();
            }
            5 => {
                let session = rng.next(SESSIONS as u64) as usize;
                log.session_deletes.entry(session).or_insert(false);
                s.delete_session(1, &sid(session))?;
                log.session_deletes.insert(session, true);
                clock.advance(Duration::from_secs(1));
            }
            6 => {
                let person = rng.next(PERSONS as u64) as usize;
                let at = clock.now();
                log.person_deletes.push((person, at, false));
                s.delete_person(1, &format!("person-{person}"))?;
                if let Some(d) = log.person_deletes.last_mut() {
                    d.2 = true;
                }
                clock.advance(Duration::from_secs(1));
            }
            7 => {
                let r = s.compact()?;
                if !r.failed_jobs.is_empty() {
                    return Err(replaystore::Error::InvalidConfig {
                        field: "compaction",
                        reason: format!("{:?}", r.failed_jobs),
                    });
                }
                log.ack_buffered();
            }
            8 => {
                // Seals segments by age at the next flush; makes data idle for regrouping.
                clock.advance(Duration::from_secs(3600 + rng.next(3600)));
                s.flush()?;
                log.ack_buffered();
            }
            _ => {
                store.take().expect("open").close()?;
                log.ack_buffered();
                *store = Some(Store::open(DIR, config(sim, clock))?);
            }
        }
    }
    Ok(())
}

/// Appends chunk `id` of `session`; whether the store accepted it (a deleted session's is
/// refused).
fn append(
    s: &Store,
    clock: &ManualClock,
    session: usize,
    id: usize,
    len: usize,
    log: &mut Log,
) -> replaystore::Result<bool> {
    let now = clock.now();
    let c = Chunk {
        team: 1,
        session_id: sid(session),
        person: format!("person-{}", person_of(session)),
        window_id: None,
        first_ts_ms: now - 500,
        last_ts_ms: now,
        sent_at_ms: None,
        payload: common::payload(&sid(session), id, len),
    };
    match s.append(c) {
        Ok(()) => {
            log.appended.insert(id, (session, now));
            Ok(true)
        }
        Err(replaystore::Error::Deleted { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Chunk ids of everything the reopened store returns, per session.
fn read_all(s: &Store) -> Vec<usize> {
    let mut ids = Vec::new();
    for n in 0..SESSIONS {
        let data = s.read_session(1, &sid(n)).expect("read after crash");
        for c in data.map(|d| d.chunks).unwrap_or_default() {
            let text = String::from_utf8_lossy(&c.payload).to_string();
            let i = text
                .split("\"i\":")
                .nth(1)
                .and_then(|t| t.split(',').next())
                .and_then(|t| t.parse().ok())
                .expect("a payload of the workload");
            ids.push(i);
        }
    }
    ids
}

/// One run of workload `seed` with the power going after `k` operations (`None`: never).
/// Returns the operations the run did and the chunks it acknowledged.
fn run(seed: u64, k: Option<u64>, torn: bool) -> (u64, u64) {
    let sim = if torn {
        SimStorage::new().with_torn_writes(seed ^ k.unwrap_or(0))
    } else {
        SimStorage::new()
    };
    let clock = Arc::new(ManualClock::new(T0));
    let mut store = Some(Store::open(DIR, config(&sim, &clock)).expect("first open"));
    if let Some(k) = k {
        sim.power_off_after(k);
    }
    let mut log = Log::default();
    let res = workload(seed, &sim, &clock, &mut store, &mut log);
    let ops = sim.ops();
    if k.is_none() {
        res.expect("the workload without a power failure");
    }
    if let Some(s) = store.take() {
        s.simulate_crash();
    }
    sim.crash();
    let ctx = format!("seed {seed}, power off after {k:?} ops, torn writes {torn}");
    let s = Store::open(DIR, config(&sim, &clock)).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let ids = read_all(&s);
    let mut seen = HashSet::new();
    for &id in &ids {
        assert!(seen.insert(id), "{ctx}: chunk {id} read twice");
        assert!(
            log.appended.contains_key(&id),
            "{ctx}: chunk {id} was never appended"
        );
        assert!(
            !log.deleted(id, true),
            "{ctx}: chunk {id} read after its deletion was acknowledged"
        );
    }
    for &id in &log.acked {
        if !log.deleted(id, false) {
            assert!(seen.contains(&id), "{ctx}: acknowledged chunk {id} lost");
        }
    }
    s.close()
        .unwrap_or_else(|e| panic!("{ctx}: close after recovery: {e}"));
    (ops, log.acked.len() as u64)
}

#[test]
fn acknowledged_data_and_deletions_survive_every_power_failure() {
    let wanted: u64 = std::env::var("REPLAYSTORE_SIM_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let started = std::time::Instant::now();
    let (mut crashes, mut seed, mut acked) = (0u64, 0u64, 0u64);
    while crashes < wanted {
        seed += 1;
        let (total, n) = run(seed, None, false);
        acked += n;
        for k in 0..=total {
            run(seed, Some(k), k % 2 == 1);
            crashes += 1;
        }
    }
    println!(
        "simulated power failures: {crashes} over {seed} workloads ({} acknowledged chunks, {} \
         operations each on average) in {:.1} s",
        acked / seed,
        crashes / seed,
        started.elapsed().as_secs_f64()
    );
    assert!(crashes >= wanted);
}

/// The disk model itself: what a crash keeps.
#[test]
fn the_simulated_disk_keeps_only_what_was_synced() -> std::io::Result<()> {
    let sim = SimStorage::new();
    let d = Path::new("/d");
    sim.create_dir_all(d)?;
    sim.sync_dir(Path::new("/"))?;
    // Synced data and entry: kept. Unsynced append: lost.
    let a = sim.open(&d.join("a"), OpenMode::CreateNew)?;
    a.append(b"kept")?;
    a.sync_data()?;
    sim.sync_dir(d)?;
    a.append(b" lost")?;
    // A rename and a removal not followed by a directory sync are undone.
    let c = sim.open(&d.join("c"), OpenMode::CreateNew)?;
    c.sync_data()?;
    sim.sync_dir(d)?;
    // Data synced but entry never: the file disappears.
    let b = sim.open(&d.join("b"), OpenMode::CreateNew)?;
    b.append(b"x")?;
    b.sync_data()?;
    sim.rename(&d.join("c"), &d.join("c2"))?;
    sim.remove_file(&d.join("a"))?;
    sim.crash();
    assert!(a.size().is_err(), "a handle from before the crash is dead");
    assert_eq!(sim.read(&d.join("a"))?, b"kept");
    assert!(!sim.exists(&d.join("b")));
    assert!(sim.exists(&d.join("c")) && !sim.exists(&d.join("c2")));
    // Power off: the next operation fails, and keeps failing.
    sim.power_off_after(1);
    let e = sim.open(&d.join("e"), OpenMode::CreateNew)?;
    assert!(e.append(b"x").is_err());
    assert!(sim.read(&d.join("a")).is_err());
    assert!(sim.powered_off());
    sim.crash();
    assert!(!sim.exists(&d.join("e")));
    Ok(())
}
