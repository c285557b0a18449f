//! The PostHog wire format, apart from the engine (which stores opaque bytes): request bodies as
//! posthog-js POSTs them to `/s/`, turned into chunks, and chunk payloads turned back into rrweb
//! events for export.
//!
//! Accepted input: a JSON array of `$snapshot` events, JSON lines of such arrays or of single
//! events, and either of them gzip-compressed (detected by the magic bytes 1f 8b). One chunk per
//! event; its payload is the `$snapshot_data` array exactly as sent (byte for byte), its time
//! range the min and max of its rrweb events' `timestamp`.

mod decode;
mod lz64;
mod normalize;
mod time;

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use replaystore::Chunk;

pub use decode::{
    decode_body, decode_request, gunzip, reserve, Allowance, Unbudgeted, MAX_DECODED_BODY,
};
pub use normalize::Normalize;
pub use time::{number_ms, sent_at_ms, MAX_SAFE_MS};

/// Why a body or an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The body or an event is malformed or lacks what a chunk needs; says why.
    #[error("{0}")]
    Invalid(String),
    /// The body, decoded, is larger than the receiver accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A client time (an rrweb `timestamp`, a send time) is not a time: names the field (e.g.
    /// `$snapshot_data[3].timestamp`, `sent_at`, the `_` query parameter) and the value.
    #[error("`{field}` = {value} {reason}")]
    Timestamp {
        field: String,
        value: String,
        reason: &'static str,
    },
    /// The receiver's memory budget for bodies in flight is spent: retry later.
    #[error("too many bytes in flight, retry later")]
    Busy,
}

fn err<T>(s: impl Into<String>) -> Result<T, WireError> {
    Err(WireError::Invalid(s.into()))
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow, default)]
    event: Option<std::borrow::Cow<'a, str>>,
    /// Read only if a string or a number: never built into a value tree.
    #[serde(borrow, default)]
    distinct_id: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<WireProps<'a>>,
    /// The client's clock when it sent the request (ISO 8601 or ms).
    #[serde(borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "$sent_at", borrow, default)]
    dollar_sent_at: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireProps<'a> {
    #[serde(rename = "$session_id", default)]
    session_id: Option<String>,
    #[serde(rename = "$window_id", default)]
    window_id: Option<String>,
    #[serde(borrow, default)]
    distinct_id: Option<&'a RawValue>,
    #[serde(rename = "$snapshot_data", borrow, default)]
    snapshot_data: Option<&'a RawValue>,
    /// What PostHog's capture service produces to Kafka instead: one `$snapshot_items` event
    /// per request, the `$snapshot_data` of all its `$snapshot` events in one array.
    #[serde(rename = "$snapshot_items", borrow, default)]
    snapshot_items: Option<&'a RawValue>,
    #[serde(rename = "$sent_at", borrow, default)]
    sent_at: Option<&'a RawValue>,
    /// The project API key, which an ingestion server maps to a team.
    #[serde(default)]
    token: Option<String>,
}

/// One parsed input item: where it was (1-based line; 0 for a whole-body array) and its chunk,
/// or `None` for a non-`$snapshot` event, which is skipped without error.
pub type Parsed = (usize, Result<Option<Chunk>, WireError>);

/// Calls `f` with each event of a decoded body, as it is read (no list of them is built): the
/// elements of a JSON array, or the body itself if it is one JSON object. Stops at the first
/// error, from the JSON or from `f`.
pub fn for_each_event<'a>(
    text: &'a [u8],
    f: &mut dyn FnMut(&'a RawValue) -> Result<(), WireError>,
) -> Result<(), WireError> {
    if text.trim_ascii_start().first() == Some(&b'{') {
        let ev: &RawValue =
            serde_json::from_slice(text).or_else(|e| err(format!("invalid JSON: {e}")))?;
        return f(ev);
    }
    struct Events<'f, 'a> {
        f: &'f mut dyn FnMut(&'a RawValue) -> Result<(), WireError>,
        failed: Option<WireError>,
    }
    impl<'a> Visitor<'a> for &mut Events<'_, 'a> {
        type Value = ();
        fn expecting(&self, out: &mut std::fmt::Formatter) -> std::fmt::Result {
            out.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(ev) = seq.next_element::<&'a RawValue>()? {
                if let Err(e) = (self.f)(ev) {
                    self.failed = Some(e);
                    return Err(A::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    let mut events = Events { f, failed: None };
    let mut de = serde_json::Deserializer::from_slice(text);
    let read = serde::Deserializer::deserialize_seq(&mut de, &mut events).and_then(|()| de.end());
    match (events.failed, read) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => err(format!("invalid JSON: {e}")),
        (None, Ok(())) => Ok(()),
    }
}

/// Parses a decoded body into chunks of `team`, each with the line it came from: one JSON
/// array or object, or JSON lines of them.
pub fn parse_body(team: u64, text: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::new();
    let on_line = |line_no: usize, line: &[u8], out: &mut Vec<Parsed>| {
        let read = for_each_event(line, &mut |e| {
            out.push((line_no, event_to_chunk(team, e.get())));
            Ok(())
        });
        if let Err(e) = read {
            out.push((line_no, Err(e)));
        }
    };
    // A whole-body JSON value (what posthog-js POSTs), possibly pretty-printed.
    if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok() {
        on_line(1, text, &mut out);
        return out;
    }
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if !line.is_empty() {
            on_line(i + 1, line, &mut out);
        }
    }
    out
}

/// Turns one `$snapshot` event into a chunk; `Ok(None)` for other events.
pub fn event_to_chunk(team: u64, json: &str) -> Result<Option<Chunk>, WireError> {
    Ok(parse_event(json)?.map(|(_, mut c)| {
        c.team = team;
        c
    }))
}

/// One `$snapshot` event (or capture's `$snapshot_items`, as it sits in a Kafka message): its
/// project token (if any) and its chunk (team 0, for the caller to set from the token;
/// `sent_at_ms` from the event's `sent_at` / `$sent_at`, if it has one). `Ok(None)` for other
/// events.
pub fn parse_event(json: &str) -> Result<Option<(Option<String>, Chunk)>, WireError> {
    let ev: WireEvent =
        serde_json::from_str(json).or_else(|e| err(format!("invalid event: {e}")))?;
    let items = match ev.event.as_deref() {
        Some("$snapshot") => false,
        Some("$snapshot_items") => true,
        _ => return Ok(None),
    };
    let Some(props) = ev.properties else {
        return err("event has no properties");
    };
    let Some(session_id) = props.session_id else {
        return err("event has no $session_id");
    };
    let person = match ev.distinct_id.or(props.distinct_id).map(RawValue::get) {
        Some(v) if v.starts_with('"') => serde_json::from_str::<String>(v).ok(),
        Some(v) if v.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => Some(v.to_string()),
        _ => None,
    };
    let Some(person) = person else {
        return err("event has no distinct_id");
    };
    let data = if items {
        props.snapshot_items
    } else {
        props.snapshot_data
    };
    let Some(data) = data else {
        return err(if items {
            "event has no $snapshot_items"
        } else {
            "event has no $snapshot_data"
        });
    };
    let sent_at = [
        ("sent_at", ev.sent_at),
        ("$sent_at", ev.dollar_sent_at),
        ("properties.$sent_at", props.sent_at),
    ]
    .into_iter()
    .find_map(|(field, v)| Some((field, v?)));
    let sent_at_ms = match sent_at {
        Some((field, v)) => time::sent_at_ms(field, v.get().as_bytes())?,
        None => None,
    };
    let (first, last) = time_range(data.get().as_bytes())?;
    Ok(Some((
        props.token,
        Chunk {
            team: 0,
            session_id,
            person,
            window_id: props.window_id,
            first_ts_ms: first,
            last_ts_ms: last,
            sent_at_ms,
            payload: data.get().as_bytes().to_vec(),
        },
    )))
}

/// The min and max `timestamp` of the rrweb events in `$snapshot_data`, each of which must
/// have a valid one (read with the scanner: the events are not parsed).
fn time_range(data: &[u8]) -> Result<(i64, i64), WireError> {
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    let mut bad: Option<WireError> = None;
    let mut i = 0usize;
    let scanned = crate::jsonscan::each_element(data, 0, &mut |at| {
        let mut ts: Option<Result<i64, WireError>> = None;
        let field = || format!("$snapshot_data[{i}].timestamp");
        let end = crate::jsonscan::members(data, at, &mut |k, v| {
            if k == b"timestamp" && !matches!(ts, Some(Err(_))) {
                ts = Some(time::json_ms(&field(), v));
            }
        })?;
        match ts {
            Some(Ok(t)) => (min, max) = (min.min(t), max.max(t)),
            Some(Err(e)) => bad = Some(e),
            None => {
                bad = Some(WireError::Timestamp {
                    field: field(),
                    value: "(none)".into(),
                    reason: "is missing: every rrweb event has one",
                })
            }
        }
        i += 1;
        bad.is_none().then_some(end)
    });
    if let Some(e) = bad {
        return Err(e);
    }
    if scanned.is_none() {
        return err("$snapshot_data is not an array of rrweb events");
    }
    if i == 0 {
        return err("$snapshot_data holds no rrweb event");
    }
    Ok((min, max))
}

/// The rrweb events of a stored chunk payload (a JSON array), each as its exact JSON text.
pub fn payload_events(payload: &[u8]) -> Result<Vec<&RawValue>, WireError> {
    serde_json::from_slice(payload)
        .or_else(|e| err(format!("payload is not a JSON array of events: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    const EV: &str = r#"{"event":"$snapshot","properties":{"$session_id":"s1","$window_id":"w1","distinct_id":"p1","$snapshot_data":[{"type":4,"data":{},"timestamp":20},{"type":3,"data":{},"timestamp":10}]}}"#;

    #[test]
    fn parses_arrays_lines_and_gzip() -> TestResult {
        let c = event_to_chunk(3, EV)?.ok_or("not a snapshot event")?;
        assert_eq!((c.team, c.first_ts_ms, c.last_ts_ms), (3, 10, 20));
        assert_eq!(c.session_id, "s1");
        assert_eq!(c.window_id.as_deref(), Some("w1"));
        assert!(std::str::from_utf8(&c.payload)?.starts_with(r#"[{"type":4"#));

        let arr = format!("[{EV},{EV}]");
        assert_eq!(parse_body(1, arr.as_bytes()).len(), 2);
        let lines = format!("{arr}\n\n{EV}\nnot json\n");
        let parsed = parse_body(1, lines.as_bytes());
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[3].0, 4);
        assert!(parsed[3].1.is_err());

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, arr.as_bytes())?;
        let gz = gz.finish()?;
        assert_eq!(&*decode_body(&gz)?, arr.as_bytes());
        assert!(decode_body(&gz[..gz.len() / 2]).is_err());
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_store() -> TestResult {
        let no_session = EV.replace("$session_id", "x");
        let e = event_to_chunk(1, &no_session).unwrap_err();
        assert!(e.to_string().contains("$session_id"), "{e}");
        let no_person = EV.replace("distinct_id", "x");
        assert!(event_to_chunk(1, &no_person).is_err());
        let tree_person = EV.replace(r#""p1""#, r#"[["p1"]]"#);
        assert!(event_to_chunk(1, &tree_person).is_err());
        let no_ts = EV.replace("timestamp", "t");
        assert!(event_to_chunk(1, &no_ts).is_err());
        let other = EV.replace("$snapshot", "$pageview");
        assert_eq!(event_to_chunk(1, &other)?, None);
        // Capture's Kafka form: the same chunk from `$snapshot_items`.
        let items = EV
            .replace(r#""$snapshot""#, r#""$snapshot_items""#)
            .replace("$snapshot_data", "$snapshot_items");
        assert_eq!(event_to_chunk(1, &items)?, event_to_chunk(1, EV)?);
        let e = event_to_chunk(1, &EV.replace(r#""$snapshot""#, r#""$snapshot_items""#));
        assert!(e.unwrap_err().to_string().contains("$snapshot_items"));
        Ok(())
    }

    #[test]
    fn timestamps_that_are_not_times_are_refused_naming_field_and_value() {
        for bad in [
            "1e300",
            "-1e300",
            "9223372036854775808",
            "\"NaN\"",
            "\"abc\"",
            "null",
            "1.5",
        ] {
            let ev = EV.replace(r#""timestamp":10"#, &format!(r#""timestamp":{bad}"#));
            match event_to_chunk(1, &ev) {
                Err(WireError::Timestamp { field, value, .. }) => {
                    assert_eq!(field, "$snapshot_data[1].timestamp");
                    assert_eq!(value, bad);
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // One event without a timestamp spoils the chunk (it would have no place in time).
        let missing = EV.replace(r#","timestamp":20"#, "");
        let e = event_to_chunk(1, &missing).unwrap_err();
        assert!(e.to_string().contains("$snapshot_data[0].timestamp"), "{e}");
        // A 1970 clock is a valid time: whether it is plausible is the store's decision.
        let ev = EV.replace(r#""timestamp":10"#, r#""timestamp":-1"#);
        let c = event_to_chunk(1, &ev).ok().flatten().map(|c| c.first_ts_ms);
        assert_eq!(c, Some(-1));
    }

    #[test]
    fn the_send_time_comes_from_the_event() -> TestResult {
        let c = event_to_chunk(1, EV)?.ok_or("chunk")?;
        assert_eq!(c.sent_at_ms, None);
        let with = |field: &str, v: &str| {
            let ev = format!("{},\"{field}\":{v}}}", &EV[..EV.len() - 1]);
            event_to_chunk(1, &ev)
        };
        let c = with("sent_at", r#""2026-11-26T03:33:26.011Z""#)?.ok_or("chunk")?;
        assert_eq!(c.sent_at_ms, Some(1_795_664_006_011));
        let c = with("$sent_at", "1795664006011")?.ok_or("chunk")?;
        assert_eq!(c.sent_at_ms, Some(1_795_664_006_011));
        let e = with("sent_at", r#""last tuesday""#).unwrap_err();
        assert!(e.to_string().contains("sent_at"), "{e}");
        // The fixture: every request carries its send time.
        let body = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../replaystore-cli/tests/data/posthog-js/snapshot-batches.jsonl"),
        )?;
        let parsed = parse_body(1, &body);
        assert_eq!(parsed.len(), 24);
        for (line, r) in parsed {
            let c = r.map_err(|e| format!("line {line}: {e}"))?.ok_or("chunk")?;
            let sent = c.sent_at_ms.ok_or("no send time")?;
            assert!(
                c.last_ts_ms <= sent && sent - c.first_ts_ms < 60_000,
                "line {line}"
            );
        }
        Ok(())
    }

    #[test]
    fn events_are_read_one_by_one_and_a_failure_stops_the_walk() {
        let body = format!("[{EV}, {EV} ,{EV}]");
        let mut seen = 0;
        let r = for_each_event(body.as_bytes(), &mut |e| {
            seen += 1;
            if seen == 2 {
                return Err(WireError::Invalid(format!("stop at {}", e.get().len())));
            }
            Ok(())
        });
        assert_eq!(seen, 2);
        assert!(matches!(r, Err(WireError::Invalid(s)) if s.starts_with("stop at")));
        let mut n = 0;
        assert!(for_each_event(EV.as_bytes(), &mut |_| {
            n += 1;
            Ok(())
        })
        .is_ok());
        assert_eq!(n, 1, "a single event object");
        for bad in ["[1,", "[1] x", "\"a\"", ""] {
            assert!(
                for_each_event(bad.as_bytes(), &mut |_| Ok(())).is_err(),
                "{bad}"
            );
        }
        // Deep nesting is stepped over as one element (no recursion), then refused as an event.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        let r = for_each_event(deep.as_bytes(), &mut |e| parse_event(e.get()).map(|_| ()));
        assert!(matches!(r, Err(WireError::Invalid(s)) if s.starts_with("invalid event")));
    }
}
