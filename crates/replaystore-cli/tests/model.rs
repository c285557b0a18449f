//! Model-based test (proptest): random sequences of append, flush, read, list, delete_person,
//! delete_session, clock moves with enforce_retention, compact, clean reopen and crash, checked
//! against a plain in-memory model of what must be visible. It runs twice: on a real directory
//! (a crash drops the store's buffers), and on `SimStorage` (a crash also loses every byte and
//! directory entry not synced, so a missing fsync anywhere shows).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use replaystore::storage::SimStorage;
use replaystore::{Chunk, Config, Error, ManualClock, SessionFilter, Store, DAY_MS};

const SESSIONS: usize = 6;
const PERSONS: usize = 3;
const T0: i64 = 1_795_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        session: usize,
        size: usize,
        /// Which device clock sends it (see `DEVICES`).
        device: usize,
    },
    Flush,
    Read {
        session: usize,
    },
    List,
    DeletePerson {
        person: usize,
    },
    DeleteSession {
        session: usize,
    },
    /// Move the clock forward by this many hours, then enforce retention.
    Advance {
        hours: u32,
    },
    Compact,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SESSIONS, 1usize..3000, 0..DEVICES.len())
            .prop_map(|(session, size, device)| Op::Append { session, size, device }),
        3 => Just(Op::Flush),
        2 => (0..SESSIONS).prop_map(|session| Op::Read { session }),
        1 => Just(Op::List),
        1 => (0..PERSONS).prop_map(|person| Op::DeletePerson { person }),
        1 => (0..SESSIONS).prop_map(|session| Op::DeleteSession { session }),
        1 => (1u32..24 * 40).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

const HOUR: i64 = 3_600_000;

/// Device clocks: (offset from the store's clock in ms, whether the chunk carries its send
/// time). Some are corrected, some accepted as they are, some refused.
const DEVICES: [(i64, bool); 7] = [
    (0, false),
    (50 * 60_000, false),
    (-40 * HOUR, false),
    (365 * DAY_MS, true),
    (1000 - T0, true),
    (365 * DAY_MS, false),
    (-50 * HOUR, false),
];

/// One chunk as the model knows it.
#[derive(Clone)]
struct Known {
    payload: Vec<u8>,
    /// Its first timestamp once the store corrected the device's clock.
    first_ts: i64,
    arrival: i64,
    /// Order of appends, for chunks with equal timestamps.
    seq: usize,
    durable: bool,
}

/// What the store must do with a chunk from `device` appended at `now`: its corrected first
/// timestamp, or `None` when it must be refused for its timestamps.
fn corrected_first_ts(device: usize, now: i64) -> Option<i64> {
    let (skew, sends) = DEVICES[device];
    let correction = if sends && skew.abs() > 10_000 {
        -skew
    } else {
        0
    };
    let (first, last) = (now + skew - 500 + correction, now + skew + correction);
    (first >= now - 48 * HOUR && last <= now + HOUR).then_some(first)
}

#[derive(Default)]
struct Model {
    sessions: HashMap<usize, Vec<Known>>,
    deleted_sessions: Vec<usize>,
    /// person -> latest deletion time
    deleted_persons: HashMap<usize, i64>,
    appended: usize,
}

const RETENTION_DAYS: i64 = 30;

impl Model {
    fn person(session: usize) -> usize {
        session % PERSONS
    }
    fn refused(&self, session: usize, first_ts: i64) -> bool {
        self.deleted_sessions.contains(&session)
            || self
                .deleted_persons
                .get(&Self::person(session))
                .is_some_and(|&at| first_ts <= at)
    }
    /// What a read of `session` must return at `now`: payloads and arrival times, in
    /// timestamp order (append order for ties).
    fn visible(&self, session: usize, now: i64) -> Vec<(Vec<u8>, i64)> {
        if self.deleted_sessions.contains(&session) {
            return Vec::new();
        }
        let cut = now - RETENTION_DAYS * DAY_MS;
        let deleted_at = self.deleted_persons.get(&Self::person(session)).copied();
        let mut cs: Vec<&Known> = self
            .sessions
            .get(&session)
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.durable && c.arrival >= cut)
                    .filter(|c| deleted_at.is_none_or(|at| c.arrival > at))
                    .collect()
            })
            .unwrap_or_default();
        cs.sort_by_key(|c| (c.first_ts, c.seq));
        cs.iter().map(|c| (c.payload.clone(), c.arrival)).collect()
    }
}

fn sid(s: usize) -> String {
    format!("session-{s}")
}

fn config(clock: &Arc<ManualClock>) -> Config {
    Config::default()
        .with_background_flush(false)
        .with_maintenance_interval(None)
        .with_segment_bytes(16 << 10)
        .with_segment_max_age(Duration::from_secs(3600))
        .with_default_retention_days(RETENTION_DAYS as u16)
        .with_clock(clock.clone())
}

/// Where the store lives.
enum Disk {
    Real(tempfile::TempDir),
    Sim(SimStorage),
}

impl Disk {
    fn new(simulated: bool) -> Disk {
        match simulated {
            true => Disk::Sim(SimStorage::new()),
            false => Disk::Real(tempfile::tempdir().unwrap()),
        }
    }
    fn open(&self, clock: &Arc<ManualClock>) -> Store {
        match self {
            Disk::Real(d) => Store::open(d.path(), config(clock)).unwrap(),
            Disk::Sim(sim) => {
                let c = config(clock).with_storage(Arc::new(sim.clone()));
                Store::open("/model/store", c).unwrap()
            }
        }
    }
    /// The process dies (buffers lost); on the simulated disk, the power too.
    fn crash(&self, store: Store) {
        store.simulate_crash();
        if let Disk::Sim(sim) = self {
            sim.crash();
        }
    }
}

fn run(ops: Vec<Op>, simulated: bool) {
    let disk = Disk::new(simulated);
    let clock = Arc::new(ManualClock::new(T0));
    let mut store = Some(disk.open(&clock));
    let mut model = Model::default();
    for op in ops {
        let s = store.as_ref().unwrap();
        let now = clock.now();
        match op {
            Op::Append {
                session,
                size,
                device,
            } => {
                model.appended += 1;
                let payload = common::payload(&sid(session), model.appended, size);
                let (skew, sends) = DEVICES[device];
                let c = Chunk {
                    team: 1,
                    session_id: sid(session),
                    person: format!("person-{}", Model::person(session)),
                    window_id: None,
                    first_ts_ms: now + skew - 500,
                    last_ts_ms: now + skew,
                    sent_at_ms: sends.then_some(now + skew),
                    payload: payload.clone(),
                };
                let expected = corrected_first_ts(device, now);
                match (s.append(c), expected) {
                    (Ok(()), Some(first_ts)) => {
                        assert!(
                            !model.refused(session, first_ts),
                            "a deleted chunk was accepted"
                        );
                        // Admitted after a deletion of its person: arrives after it.
                        let arrival = match model.deleted_persons.get(&Model::person(session)) {
                            Some(&at) => now.max(at + 1),
                            None => now,
                        };
                        model.sessions.entry(session).or_default().push(Known {
                            payload,
                            first_ts,
                            arrival,
                            seq: model.appended,
                            durable: false,
                        });
                    }
                    (Err(Error::Deleted { .. }), Some(first_ts)) => {
                        assert!(model.refused(session, first_ts))
                    }
                    (Err(Error::Timestamp { .. }), None) => {}
                    (got, expected) => panic!("append: {got:?}, expected {expected:?}"),
                }
            }
            Op::Flush => {
                s.flush().unwrap();
                model
                    .sessions
                    .values_mut()
                    .flatten()
                    .for_each(|c| c.durable = true);
            }
            Op::Read { session } => {
                let got = read(s, session);
                assert_eq!(got, model.visible(session, now), "read of {}", sid(session));
            }
            Op::List => {
                let listed = s.list_sessions(1, &SessionFilter::default()).unwrap();
                for l in &listed {
                    let n: usize = l.session_id["session-".len()..].parse().unwrap();
                    assert!(
                        !model.visible(n, now).is_empty(),
                        "{} listed but not visible",
                        l.session_id
                    );
                }
                // Sessions of persons never deleted are listed exactly when visible.
                for n in 0..SESSIONS {
                    if model.deleted_persons.contains_key(&Model::person(n)) {
                        continue;
                    }
                    let is_listed = listed.iter().any(|l| l.session_id == sid(n));
                    assert_eq!(
                        is_listed,
                        !model.visible(n, now).is_empty(),
                        "listing of {}",
                        sid(n)
                    );
                }
            }
            Op::DeletePerson { person } => {
                s.delete_person(1, &format!("person-{person}")).unwrap();
                model.deleted_persons.insert(person, now);
                // Buffered chunks of the person (all arrived up to now) are purged.
                for (session, cs) in model.sessions.iter_mut() {
                    if Model::person(*session) == person {
                        cs.retain(|c| c.durable);
                    }
                }
            }
            Op::DeleteSession { session } => {
                s.delete_session(1, &sid(session)).unwrap();
                model.deleted_sessions.push(session);
                if let Some(cs) = model.sessions.get_mut(&session) {
                    cs.retain(|c| c.durable);
                }
            }
            Op::Advance { hours } => {
                clock.advance(Duration::from_secs(hours as u64 * 3600));
                s.flush().unwrap(); // also seals segments by age
                model
                    .sessions
                    .values_mut()
                    .flatten()
                    .for_each(|c| c.durable = true);
                s.enforce_retention(clock.now()).unwrap();
            }
            Op::Compact => {
                let r = s.compact().unwrap();
                assert!(r.failed_jobs.is_empty(), "{r:?}");
                model
                    .sessions
                    .values_mut()
                    .flatten()
                    .for_each(|c| c.durable = true);
            }
            Op::Reopen => {
                store.take().unwrap().close().unwrap();
                model
                    .sessions
                    .values_mut()
                    .flatten()
                    .for_each(|c| c.durable = true);
                store = Some(disk.open(&clock));
            }
            Op::Crash => {
                disk.crash(store.take().unwrap());
                model
                    .sessions
                    .values_mut()
                    .for_each(|cs| cs.retain(|c| c.durable));
                store = Some(disk.open(&clock));
            }
        }
    }
    // Final check of every session.
    let s = store.as_ref().unwrap();
    for n in 0..SESSIONS {
        let got = read(s, n);
        assert_eq!(
            got,
            model.visible(n, clock.now()),
            "final read of {}",
            sid(n)
        );
    }
}

/// A session's chunks as the store returns them: payloads and arrival times, in order.
fn read(s: &Store, session: usize) -> Vec<(Vec<u8>, i64)> {
    s.read_session(1, &sid(session))
        .unwrap()
        .map(|d| {
            d.chunks
                .into_iter()
                .map(|c| (c.payload, c.arrival_ms))
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, false);
    }

    #[test]
    fn store_matches_the_model_on_a_simulated_disk(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, true);
    }
}
