//! Client clocks at the server: rrweb timestamps that are not times are refused by the decoder
//! (400 naming the field and the value); plausible-looking but skewed clocks are corrected from
//! the send time (`sent_at` in the body, or the `_` query parameter) or refused by the store's
//! window (400 with the reason); `/metrics` counts each outcome.
//!
//! The server runs on the system clock, so the bodies are timed relative to now.

mod common;

use std::path::Path;

use common::server::{http, Server, TOKEN};

const HOUR: i64 = 3_600_000;
const YEAR: i64 = 365 * 24 * HOUR;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One `$snapshot` event of session `sid` with two rrweb events at `ts` (JSON text) and
/// `ts + 100` when `ts` is a number; `sent_at` (JSON text) added when given.
fn event(sid: &str, ts: &str, sent_at: Option<&str>) -> String {
    let second = ts
        .parse::<i64>()
        .map(|t| (t + 100).to_string())
        .unwrap_or_else(|_| ts.to_string());
    let sent = sent_at
        .map(|s| format!(r#","sent_at":{s}"#))
        .unwrap_or_default();
    format!(
        r#"{{"event":"$snapshot","properties":{{"$session_id":"{sid}","distinct_id":"p","token":"{TOKEN}","$snapshot_data":[{{"type":4,"data":{{}},"timestamp":{ts}}},{{"type":3,"data":{{}},"timestamp":{second}}}]}}{sent}}}"#
    )
}

fn post(addr: &str, path: &str, events: &[String]) -> (u16, String) {
    let body = format!("[{}]", events.join(","));
    let (status, _, resp) = http(addr, "POST", path, &[], body.as_bytes());
    (status, String::from_utf8_lossy(&resp).into_owned())
}

fn metric(addr: &str, name: &str) -> u64 {
    let (_, _, m) = http(addr, "GET", "/metrics", &[], b"");
    let m = String::from_utf8_lossy(&m).into_owned();
    m.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {m}"))
}

fn sessions(dir: &Path) -> Vec<replaystore::SessionSummary> {
    let store = replaystore::Store::open(
        dir,
        replaystore::Config::default()
            .with_default_retention_days(3650)
            .with_maintenance_interval(None),
    )
    .unwrap();
    store.list_sessions(1, &Default::default()).unwrap()
}

#[test]
fn timestamps_that_are_not_times_are_refused_naming_the_field_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let a = &server.addr;
    let sent = format!("{}", now_ms());
    let bad = [
        "1e300",
        "-1e300",
        "9223372036854775808",
        "9223372036854775807",
        "\"NaN\"",
        "\"abc\"",
        "null",
        "1.5",
    ];
    let mut refused = 0;
    for ts in bad {
        // Without a send time, with one in the body, and with one in the query.
        for (path, sent_at) in [
            ("/s/".to_string(), None),
            ("/s/".to_string(), Some(sent.as_str())),
            (format!("/s/?_={sent}"), None),
        ] {
            let (status, why) = post(a, &path, &[event("bad", ts, sent_at)]);
            assert_eq!(status, 400, "{ts} {path} {sent_at:?}: {why}");
            assert!(why.contains("$snapshot_data[0].timestamp"), "{why}");
            assert!(why.contains(ts.trim_matches('"')), "{ts}: {why}");
            refused += 1;
        }
    }
    // A send time that is not a time is refused too, whichever way it came.
    let good = now_ms().to_string();
    let (status, why) = post(a, "/s/?_=soon", &[event("bad", &good, None)]);
    assert_eq!(status, 400);
    assert!(why.contains("`_` = soon"), "{why}");
    let (status, why) = post(a, "/s/", &[event("bad", &good, Some("\"tomorrow\""))]);
    assert_eq!(status, 400);
    assert!(why.contains("`sent_at`"), "{why}");
    refused += 2;
    assert_eq!(
        metric(
            a,
            "replaystore_chunks_refused_timestamp_total{reason=\"invalid\"}"
        ),
        refused
    );
    assert_eq!(
        metric(a, "replaystore_rejected_total{reason=\"bad_request\"}"),
        refused
    );
    server.stop();
    assert!(sessions(dir.path()).is_empty(), "nothing stored");
}

/// The store's side (Store::append: skew correction and the window, by the lead's engine).
#[test]
fn skewed_clocks_are_corrected_from_the_send_time_or_refused_by_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let a = &server.addr;
    let now = now_ms();
    let ts = |t: i64| t.to_string();
    // Refused: a 1970 clock and a clock ten years ahead, with no send time to correct them.
    for (sid, t, reason) in [
        ("dead-rtc", 1_000, "too_old"),
        ("minus-one", -1, "too_old"),
        ("ten-years", now + 10 * YEAR, "too_new"),
    ] {
        let (status, why) = post(a, "/s/", &[event(sid, &ts(t), None)]);
        assert_eq!(status, 400, "{sid}: {why}");
        assert!(why.contains("chunk refused: `"), "names the field: {why}");
        let name = format!("replaystore_chunks_refused_timestamp_total{{reason=\"{reason}\"}}");
        assert!(metric(a, &name) >= 1, "{sid}");
    }
    // Corrected: the same clocks with their send time, in the body or in the query.
    let (status, why) = post(a, "/s/", &[event("dead-rtc-sent", "1000", Some("1500"))]);
    assert_eq!(status, 200, "{why}");
    let (status, why) = post(a, "/s/?_=0", &[event("minus-one-sent", "-1", None)]);
    assert_eq!(status, 200, "{why}");
    let ahead = now + 10 * YEAR;
    let sent = format!("\"{}\"", iso(ahead + 500));
    let (status, why) = post(
        a,
        "/s/",
        &[event("ten-years-sent", &ts(ahead), Some(&sent))],
    );
    assert_eq!(status, 200, "{why}");
    // The body's send time wins over the query's.
    let path = format!("/s/?_={}", now);
    let body_sent = (ahead + 500).to_string();
    let (status, why) = post(
        a,
        &path,
        &[event("body-wins", &ts(ahead), Some(&body_sent))],
    );
    assert_eq!(status, 200, "{why}");
    // A request straddling the window: the chunk inside is stored, the other refused.
    let (status, why) = post(
        a,
        "/s/",
        &[
            event("in-window", &ts(now), None),
            event("out", &ts(now + YEAR), None),
        ],
    );
    assert_eq!(status, 400);
    assert!(why.contains("1 of 2 chunks refused (1 stored)"), "{why}");
    assert_eq!(metric(a, "replaystore_chunks_clock_corrected_total"), 4);
    assert_eq!(
        metric(
            a,
            "replaystore_chunks_refused_timestamp_total{reason=\"too_old\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            a,
            "replaystore_chunks_refused_timestamp_total{reason=\"too_new\"}"
        ),
        2
    );
    server.stop();
    let mut stored: Vec<(String, i64)> = sessions(dir.path())
        .into_iter()
        .map(|s| (s.session_id, s.first_ts_ms))
        .collect();
    stored.sort();
    let names: Vec<&str> = stored.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "body-wins",
            "dead-rtc-sent",
            "in-window",
            "minus-one-sent",
            "ten-years-sent"
        ]
    );
    for (sid, first) in &stored {
        // Re-timed to the server's clock (the send happened right after the events).
        assert!((first - now).abs() < HOUR, "{sid}: {first} vs {now}");
    }
}

/// `ms` as ISO 8601 UTC with milliseconds (what posthog-js sends as `sent_at`).
fn iso(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[test]
fn iso_formats_like_the_sdk() {
    assert_eq!(iso(1_795_664_006_011), "2026-11-26T03:33:26.011Z");
    assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
}
