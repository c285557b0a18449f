//! Session summaries: counts on real posthog-js data equal an independent count from the
//! events; filters find exactly the sessions the generator planted; summaries survive reopen,
//! compaction and regrouping, and leave with a deletion.

mod common;

use std::collections::BTreeSet;

use common::{config, open};
use replaystore::{SessionFilter, SortBy, Store};
use replaystore_posthog::listing::activity;
use replaystore_posthog::ActivityFilter;
use replaystore_testkit::generator::{session, Workload};

fn fixture_events() -> Vec<serde_json::Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/posthog-js/session-wire-events.jsonl");
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<(String, serde_json::Value)>(l)
                .unwrap()
                .1
        })
        .collect()
}

#[test]
fn counts_on_real_posthog_data_match_an_independent_count() {
    let events = fixture_events();
    let src = |e: &serde_json::Value| e["data"]["source"].as_i64();
    let clicks = events
        .iter()
        .filter(|e| {
            e["type"] == 3
                && src(e) == Some(2)
                && matches!(e["data"]["type"].as_i64(), Some(2 | 3 | 4 | 9))
        })
        .count();
    let keypresses = events
        .iter()
        .filter(|e| e["type"] == 3 && src(e) == Some(5))
        .count();
    let console = |levels: &[&str]| {
        events
            .iter()
            .filter(|e| e["type"] == 6 && e["data"]["plugin"] == "rrweb/console@1")
            .filter(|e| levels.contains(&e["data"]["payload"]["level"].as_str().unwrap_or("")))
            .count()
    };
    let mut urls: Vec<String> = Vec::new();
    for e in events.iter().filter(|e| e["type"] == 4) {
        let h = e["data"]["href"].as_str().unwrap().to_string();
        if !urls.contains(&h) {
            urls.push(h);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/posthog-js/snapshot-batches.jsonl"),
    )
    .unwrap();
    for (_, c) in replaystore_posthog::posthog::parse_body(1, &body) {
        // Replayed in a burst, not live: the send times of the capture are not clock skew.
        let mut c = c.unwrap().unwrap();
        c.sent_at_ms = None;
        store.append(c).unwrap();
        store.flush().unwrap(); // one block per request, as posthog-js sends them
    }
    let s = &store.list_sessions(1, &SessionFilter::default()).unwrap()[0];
    let a = &activity(s);
    assert_eq!(a.event_count as usize, events.len());
    assert_eq!(a.click_count as usize, clicks);
    assert_eq!(a.keypress_count as usize, keypresses);
    assert_eq!(
        a.console_error_count as usize,
        console(&["error", "assert"])
    );
    assert_eq!(
        a.console_warn_count as usize,
        console(&["warn", "countReset"])
    );
    assert_eq!(a.urls, urls);
    assert_eq!(a.first_url(), Some(urls[0].as_str()));
    let row = replaystore_posthog::SessionRow::new(s);
    assert_eq!(row.first_url.as_deref(), Some(urls[0].as_str()));
    assert_eq!(row.size, s.raw_bytes);
    assert_eq!((a.viewport_width, a.viewport_height), (1280, 800));
    assert_eq!(a.windows.len(), 2);
    assert!(a.rage_click_count >= 1, "the recording has rage clicks");
    assert!(a.active_milliseconds > 0 && (a.active_milliseconds as i64) <= s.duration_ms);
    // read_session agrees with the listing.
    let read = store
        .read_session(1, &s.session_id)
        .unwrap()
        .unwrap()
        .summary;
    assert_eq!(activity(&read), activity(s));
    assert_eq!(read.annotation, s.annotation);
}

fn planted_store(dir: &std::path::Path, n: usize) -> (Store, Workload) {
    let w = Workload {
        sessions: n,
        median_session_bytes: 120_000,
        teams: 1,
        ..Workload::default()
    };
    let store = open(dir);
    for i in 0..n {
        for c in session(&w, i).chunks {
            store.append(c).unwrap();
        }
        if i % 3 == 0 {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    (store, w)
}

fn ids(store: &Store, f: &SessionFilter) -> BTreeSet<String> {
    store
        .list_sessions(1, f)
        .unwrap()
        .into_iter()
        .map(|s| s.session_id)
        .collect()
}

#[test]
fn filters_find_exactly_the_planted_sessions_before_and_after_reopen_and_compaction() {
    let n = 36;
    let dir = tempfile::tempdir().unwrap();
    let (store, w) = planted_store(dir.path(), n);
    let want_errors: BTreeSet<String> = (0..n)
        .map(|i| session(&w, i))
        .filter(|s| s.has_console_errors)
        .map(|s| s.session_id)
        .collect();
    let want_rage: BTreeSet<String> = (0..n)
        .map(|i| session(&w, i))
        .filter(|s| s.has_rage_clicks)
        .map(|s| s.session_id)
        .collect();
    assert!(!want_errors.is_empty() && !want_rage.is_empty());
    let errors = ActivityFilter {
        has_console_errors: true,
        ..Default::default()
    }
    .apply(SessionFilter::default());
    let rage = ActivityFilter {
        has_rage_clicks: true,
        ..Default::default()
    }
    .apply(SessionFilter::default());
    let before = store.list_sessions(1, &SessionFilter::default()).unwrap();
    let check = |store: &Store, stage: &str| {
        assert_eq!(ids(store, &errors), want_errors, "{stage}: console errors");
        assert_eq!(ids(store, &rage), want_rage, "{stage}: rage clicks");
        let mut now = store.list_sessions(1, &SessionFilter::default()).unwrap();
        let mut was = before.clone();
        now.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        was.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        for (a, b) in now.iter().zip(&was) {
            assert_eq!(
                activity(a),
                activity(b),
                "{stage}: summary of {} changed",
                a.session_id
            );
        }
        assert_eq!(now.len(), n);
    };
    check(&store, "fresh");
    drop(store);
    let store = open(dir.path());
    check(&store, "reopened");
    store.seal_active().unwrap();
    let r = store.compact().unwrap(); // regroups: one block per session, summaries merged
    assert!(r.segments_written >= 1);
    check(&store, "regrouped");
    drop(store);
    check(
        &Store::open(dir.path(), config()).unwrap(),
        "regrouped and reopened",
    );
}

#[test]
fn numeric_and_url_filters_sorting_and_cursor_paging() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = planted_store(dir.path(), 30);
    let all = store.list_sessions(1, &SessionFilter::default()).unwrap();
    let by = |f: SessionFilter, pred: &dyn Fn(&replaystore::SessionSummary) -> bool| {
        let got: BTreeSet<String> = store
            .list_sessions(1, &f)
            .unwrap()
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        let want: BTreeSet<String> = all
            .iter()
            .filter(|s| pred(s))
            .map(|s| s.session_id.clone())
            .collect();
        assert_eq!(got, want, "{f:?}");
        got.len()
    };
    let median = {
        let mut d: Vec<i64> = all.iter().map(|s| s.duration_ms).collect();
        d.sort();
        d[d.len() / 2]
    };
    assert!(
        by(
            SessionFilter {
                min_duration_ms: Some(median),
                ..Default::default()
            },
            &|s| s.duration_ms >= median
        ) > 0
    );
    by(
        SessionFilter {
            max_duration_ms: Some(median),
            ..Default::default()
        },
        &|s| s.duration_ms <= median,
    );
    by(
        ActivityFilter {
            min_active_ms: Some(20_000),
            ..Default::default()
        }
        .apply(SessionFilter::default()),
        &|s| activity(s).active_milliseconds >= 20_000,
    );
    by(
        ActivityFilter {
            min_clicks: Some(10),
            ..Default::default()
        }
        .apply(SessionFilter::default()),
        &|s| activity(s).click_count >= 10,
    );
    assert!(
        by(
            ActivityFilter {
                url_contains: Some("/2".into()),
                ..Default::default()
            }
            .apply(SessionFilter::default()),
            &|s| activity(s).urls.iter().any(|u| u.contains("/2"))
        ) > 0
    );

    // Pages of 7, by duration, longest first, join up to the whole sorted list.
    let base = SessionFilter {
        sort: SortBy::Duration,
        descending: true,
        limit: Some(7),
        ..Default::default()
    };
    let mut pages = Vec::new();
    let mut f = base.clone();
    loop {
        let page = store.list_page(1, &f).unwrap();
        pages.extend(
            page.sessions
                .into_iter()
                .map(|s| (s.duration_ms, s.session_id)),
        );
        match page.next_cursor {
            Some(c) => f.cursor = Some(c),
            None => break,
        }
    }
    let mut want: Vec<(i64, String)> = all
        .iter()
        .map(|s| (s.duration_ms, s.session_id.clone()))
        .collect();
    want.sort();
    want.reverse();
    assert_eq!(pages, want);
}

#[test]
fn a_deleted_persons_summaries_go_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (store, w) = planted_store(dir.path(), 12);
    let victim = session(&w, 0).person;
    store.delete_person(1, &victim).unwrap();
    store.compact().unwrap();
    let left = store.list_sessions(1, &SessionFilter::default()).unwrap();
    assert!(left.iter().all(|s| s.person != victim));
    assert_eq!(
        left.len(),
        (0..12).filter(|&i| session(&w, i).person != victim).count()
    );
}
