//! The session index answers exactly what a full footer scan answers (`list_page` against
//! `list_page_scan`), over random appends (sessions changing person, rrweb payloads with
//! clicks, console errors and URLs), flushes, seals, deletions, retention, compaction,
//! reopens, crashes and a deleted, damaged or stale index file; and it is rebuilt or brought
//! up to date at open.

mod common;

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use replaystore::{Chunk, Clock, Config, ManualClock, SessionFilter, SortBy, Store, DAY_MS};
use replaystore_posthog::ActivityFilter;

const T0: i64 = 1_795_000_000_000;
const SESSIONS: usize = 8;
const PERSONS: usize = 3;
const HOUR: i64 = 3_600_000;

#[derive(Debug, Clone)]
enum Op {
    Append {
        team: u64,
        session: usize,
        person: usize,
        kind: usize,
    },
    Flush,
    Seal,
    DeletePerson {
        person: usize,
    },
    DeleteSession {
        session: usize,
    },
    Advance {
        hours: i64,
    },
    Compact,
    Reopen,
    Crash,
    RemoveIndexFile,
    DamageIndexFile,
    /// The index file of now, put back after more changes: a stale one.
    SaveIndexFile,
    RestoreIndexFile,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1u64..3, 0..SESSIONS, 0..PERSONS, 0..4usize)
            .prop_map(|(team, session, person, kind)| Op::Append { team, session, person, kind }),
        4 => Just(Op::Flush),
        1 => Just(Op::Seal),
        1 => (0..PERSONS).prop_map(|person| Op::DeletePerson { person }),
        1 => (0..SESSIONS).prop_map(|session| Op::DeleteSession { session }),
        1 => (1i64..24 * 12).prop_map(|hours| Op::Advance { hours }),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::RemoveIndexFile),
        1 => Just(Op::DamageIndexFile),
        1 => Just(Op::SaveIndexFile),
        1 => Just(Op::RestoreIndexFile),
    ]
}

fn config(clock: &Arc<ManualClock>) -> Config {
    common::config()
        .with_clock(clock.clone())
        .with_segment_bytes(8 << 10)
        .with_default_retention_days(3)
        .with_team_retention_days(2, 5)
}

/// An rrweb payload: a page view of URL `kind`, clicks, a console error, or a rage burst.
fn payload(kind: usize, ts: i64) -> Vec<u8> {
    let click = |dt: i64| {
        format!(
            r#"{{"type":3,"data":{{"source":2,"type":2,"x":10,"y":10}},"timestamp":{}}}"#,
            ts + dt
        )
    };
    let events = match kind {
        0 => format!(
            r#"{{"type":4,"data":{{"href":"https://shop/p/{}","width":800,"height":600}},"timestamp":{ts}}}"#,
            ts % 3
        ),
        1 => click(0),
        2 => format!(
            r#"{{"type":6,"data":{{"plugin":"rrweb/console@1","payload":{{"level":"error","payload":["x"]}}}},"timestamp":{ts}}}"#
        ),
        _ => [click(0), click(100), click(200)].join(","),
    };
    format!("[{events}]").into_bytes()
}

/// The filters every check compares, each paged 3 at a time to the end.
fn filters() -> Vec<SessionFilter> {
    let activity = |a: ActivityFilter| a.apply(SessionFilter::default());
    let mut out = vec![
        SessionFilter::default(),
        SessionFilter {
            person: Some("person-1".into()),
            ..Default::default()
        },
        SessionFilter {
            from_ts_ms: Some(T0 + 40 * HOUR),
            to_ts_ms: Some(T0 + 200 * HOUR),
            ..Default::default()
        },
        SessionFilter {
            min_duration_ms: Some(HOUR),
            sort: SortBy::Duration,
            descending: true,
            ..Default::default()
        },
        activity(ActivityFilter {
            has_console_errors: true,
            ..Default::default()
        }),
        activity(ActivityFilter {
            url_contains: Some("/p/1".into()),
            min_clicks: Some(1),
            ..Default::default()
        }),
        activity(ActivityFilter {
            has_rage_clicks: true,
            ..Default::default()
        }),
    ];
    for f in &mut out {
        f.limit = Some(3);
    }
    out
}

/// Every page of every filter, for both teams, the index's and the scan's answers equal.
fn check(store: &Store) {
    for team in 1..3 {
        for f in filters() {
            let mut f = f;
            loop {
                let by_index = store.list_page(team, &f).expect("list_page");
                let by_scan = store.list_page_scan(team, &f).expect("list_page_scan");
                assert_eq!(by_index.sessions, by_scan.sessions, "team {team}, {f:?}");
                assert_eq!(
                    by_index.next_cursor, by_scan.next_cursor,
                    "team {team}, {f:?}"
                );
                match by_index.next_cursor {
                    Some(c) => f.cursor = Some(c),
                    None => break,
                }
            }
        }
    }
}

fn index_path(dir: &Path) -> std::path::PathBuf {
    dir.join("sessions.idx")
}

struct Run {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Option<Store>,
    saved: Option<Vec<u8>>,
    appended: i64,
}

impl Run {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("open store")
    }

    fn reopen(&mut self, crash: bool) {
        let s = self.store.take().expect("open store");
        if crash {
            s.simulate_crash();
        } else {
            s.close().expect("close");
        }
        self.store = Some(Store::open(self.dir.path(), config(&self.clock)).expect("reopen"));
    }

    fn apply(&mut self, op: &Op) {
        let path = index_path(self.dir.path());
        match *op {
            Op::Append {
                team,
                session,
                person,
                kind,
            } => {
                self.appended += 1;
                let ts = self.clock.now_ms() - HOUR + self.appended * 1000;
                let chunk = Chunk {
                    team,
                    session_id: format!("s{session}"),
                    person: format!("person-{person}"),
                    window_id: None,
                    first_ts_ms: ts,
                    last_ts_ms: ts + 500 + (session as i64) * 600_000,
                    sent_at_ms: None,
                    payload: payload(kind, ts),
                };
                // A deleted session or person refuses late chunks: that is fine here.
                let _ = self.store().append(chunk);
            }
            Op::Flush => self.store().flush().expect("flush"),
            Op::Seal => self.store().seal_active().expect("seal"),
            Op::DeletePerson { person } => {
                let p = format!("person-{person}");
                self.store().delete_person(1, &p).expect("delete person");
            }
            Op::DeleteSession { session } => {
                let s = format!("s{session}");
                self.store().delete_session(2, &s).expect("delete session");
            }
            Op::Advance { hours } => {
                self.clock.set(self.clock.now_ms() + hours * HOUR);
                self.store()
                    .enforce_retention(self.clock.now_ms())
                    .expect("retention");
            }
            Op::Compact => {
                self.store().compact().expect("compact");
            }
            Op::Reopen => self.reopen(false),
            Op::Crash => self.reopen(true),
            Op::RemoveIndexFile => {
                let _ = std::fs::remove_file(&path);
                self.reopen(true);
            }
            Op::DamageIndexFile => {
                if let Ok(mut b) = std::fs::read(&path) {
                    let at = b.len() / 2;
                    b[at] ^= 1;
                    std::fs::write(&path, b).expect("write");
                }
                self.reopen(true);
            }
            Op::SaveIndexFile => {
                self.store().checkpoint_session_index().expect("checkpoint");
                self.saved = std::fs::read(&path).ok();
            }
            Op::RestoreIndexFile => {
                if let Some(b) = &self.saved {
                    std::fs::write(&path, b).expect("write");
                }
                self.reopen(true);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn index_answers_what_a_footer_scan_answers(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(T0 + 48 * HOUR));
        let store = Store::open(dir.path(), config(&clock)).expect("open");
        let mut run = Run { dir, clock, store: Some(store), saved: None, appended: 0 };
        for op in &ops {
            run.apply(op);
            check(run.store());
        }
    }
}

/// Builds a store with sealed segments in two teams and returns its directory.
fn filled(clock: &Arc<ManualClock>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), config(clock)).expect("open");
    for i in 0..200usize {
        let ts = clock.now_ms() - HOUR + i as i64 * 1000;
        let chunk = Chunk {
            team: 1 + (i % 2) as u64,
            session_id: format!("s{}", i % 40),
            person: format!("person-{}", i % 3),
            window_id: None,
            first_ts_ms: ts,
            last_ts_ms: ts + 500,
            sent_at_ms: None,
            payload: payload(i % 4, ts),
        };
        store.append(chunk).expect("append");
        if i % 20 == 19 {
            store.flush().expect("flush");
        }
    }
    store.seal_active().expect("seal");
    store.close().expect("close");
    dir
}

#[test]
fn a_missing_index_file_is_rebuilt() {
    let clock = Arc::new(ManualClock::new(T0 + 48 * HOUR));
    let dir = filled(&clock);
    let path = index_path(dir.path());
    assert!(path.exists(), "written at close");
    std::fs::remove_file(&path).expect("remove");
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    let r = store.session_index_report().clone();
    assert_eq!(r.rebuilt_because.as_deref(), Some("missing"));
    assert!(r.segments_added > 1 && r.sessions_recomputed == 40, "{r:?}");
    assert!(path.exists(), "written back at open");
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    let r = store.session_index_report();
    assert_eq!(r.rebuilt_because, None, "{r:?}");
    assert_eq!((r.loaded_sessions, r.sessions_recomputed), (40, 0), "{r:?}");
    check(&store);
}

#[test]
fn a_damaged_index_file_is_detected_and_rebuilt() {
    let clock = Arc::new(ManualClock::new(T0 + 48 * HOUR));
    let dir = filled(&clock);
    let path = index_path(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).expect("write");
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    let r = store.session_index_report();
    let why = r.rebuilt_because.clone().unwrap_or_default();
    assert!(why.contains("crc"), "{r:?}");
    assert_eq!(r.sessions_recomputed, 40);
    check(&store);
    assert_ne!(std::fs::read(&path).expect("read"), bytes, "rewritten");
}

#[test]
fn a_stale_index_file_is_brought_up_to_date() {
    let clock = Arc::new(ManualClock::new(T0 + 48 * HOUR));
    let dir = filled(&clock);
    let path = index_path(dir.path());
    let stale = std::fs::read(&path).expect("read");
    // Behind the file's back: a deletion compacted away (segments removed and added), more
    // sessions sealed, and three days later retention drops what arrived first.
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    store.delete_person(1, "person-0").expect("delete");
    store.compact().expect("compact");
    for i in 0..30usize {
        let ts = clock.now_ms() + i as i64 * 1000;
        let chunk = common::chunk(2, &format!("late{i}"), "p", i, 300);
        store
            .append(Chunk {
                first_ts_ms: ts,
                last_ts_ms: ts + 10,
                ..chunk
            })
            .expect("append");
    }
    store.seal_active().expect("seal");
    store.simulate_crash();
    std::fs::write(&path, &stale).expect("put the stale file back");
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    let r = store.session_index_report().clone();
    assert_eq!(r.rebuilt_because, None, "{r:?}");
    assert!(r.segments_added > 0 && r.segments_removed > 0, "{r:?}");
    check(&store);
    let listed = |s: &Store, team| s.list_page(team, &SessionFilter::default()).expect("list");
    assert_eq!(listed(&store, 2).sessions.len(), 20 + 30);
    assert!(listed(&store, 1)
        .sessions
        .iter()
        .all(|s| s.person != "person-0"));
    drop(store);
    clock.set(clock.now_ms() + 4 * DAY_MS);
    let store = Store::open(dir.path(), config(&clock)).expect("open");
    store.enforce_retention(clock.now_ms()).expect("retention");
    check(&store);
    assert!(listed(&store, 1).sessions.is_empty(), "past retention");
}
