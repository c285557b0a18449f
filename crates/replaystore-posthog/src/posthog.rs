//! The PostHog wire format, apart from the engine (which stores opaque bytes): request bodies as
//! posthog-js POSTs them to `/s/`, turned into chunks, and chunk payloads turned back into rrweb
//! events for export.
//!
//! Accepted input: a JSON array of `$snapshot` events, JSON lines of such arrays or of single
//! events, and either of them gzip-compressed (detected by the magic bytes 1f 8b). One chunk per
//! event; its payload is the `$snapshot_data` array exactly as sent (byte for byte), its time
//! range the min and max of its rrweb events' `timestamp`.

use std::io::Read;

use serde::Deserialize;
use serde_json::value::RawValue;

use replaystore::Chunk;

/// Largest body accepted after gunzip; a larger one is refused, never allocated.
pub const MAX_DECODED_BODY: usize = 512 << 20;

/// Why a body or an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn err<T>(s: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(s.into()))
}

/// Gunzips `body` if it starts with the gzip magic (bounded by `MAX_DECODED_BODY`).
pub fn decode_body(body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, WireError> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_DECODED_BODY as u64 + 1)
        .read_to_end(&mut out)
        .or_else(|e| err(format!("invalid gzip: {e}")))?;
    if out.len() > MAX_DECODED_BODY {
        return err(format!(
            "body inflates to more than {MAX_DECODED_BODY} bytes"
        ));
    }
    Ok(std::borrow::Cow::Owned(out))
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    distinct_id: Option<serde_json::Value>,
    #[serde(borrow)]
    properties: Option<WireProps<'a>>,
}

#[derive(Deserialize)]
struct WireProps<'a> {
    #[serde(rename = "$session_id", default)]
    session_id: Option<String>,
    #[serde(rename = "$window_id", default)]
    window_id: Option<String>,
    #[serde(default)]
    distinct_id: Option<serde_json::Value>,
    #[serde(rename = "$snapshot_data", borrow, default)]
    snapshot_data: Option<&'a RawValue>,
    /// The project API key, which an ingestion server maps to a team.
    #[serde(default)]
    token: Option<String>,
}

/// One parsed input item: where it was (1-based line; 0 for a whole-body array) and its chunk,
/// or `None` for a non-`$snapshot` event, which is skipped without error.
pub type Parsed = (usize, Result<Option<Chunk>, WireError>);

/// Parses a decoded body into chunks of `team`, each with the line it came from.
pub fn parse_body(team: u64, text: &[u8]) -> Vec<Parsed> {
    // A whole-body JSON array (what posthog-js POSTs), possibly pretty-printed.
    if let Ok(events) = serde_json::from_slice::<Vec<&RawValue>>(text) {
        return events
            .iter()
            .map(|e| (1, event_to_chunk(team, e.get())))
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let line_no = i + 1;
        match serde_json::from_slice::<&RawValue>(line) {
            Err(e) => out.push((line_no, err(format!("invalid JSON: {e}")))),
            Ok(v) if v.get().starts_with('[') => {
                match serde_json::from_str::<Vec<&RawValue>>(v.get()) {
                    Ok(events) => out.extend(
                        events
                            .iter()
                            .map(|e| (line_no, event_to_chunk(team, e.get()))),
                    ),
                    Err(e) => out.push((line_no, err(format!("invalid event array: {e}")))),
                }
            }
            Ok(v) => out.push((line_no, event_to_chunk(team, v.get()))),
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

/// One `$snapshot` event: its project token (if any) and its chunk (team 0, for the caller to
/// set from the token). `Ok(None)` for other events.
pub fn parse_event(json: &str) -> Result<Option<(Option<String>, Chunk)>, WireError> {
    let ev: WireEvent =
        serde_json::from_str(json).or_else(|e| err(format!("invalid event: {e}")))?;
    if ev.event.as_deref() != Some("$snapshot") {
        return Ok(None);
    }
    let Some(props) = ev.properties else {
        return err("event has no properties");
    };
    let Some(session_id) = props.session_id else {
        return err("event has no $session_id");
    };
    let person = match ev.distinct_id.or(props.distinct_id) {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return err("event has no distinct_id"),
    };
    let Some(data) = props.snapshot_data else {
        return err("event has no $snapshot_data");
    };
    // Only the events' timestamps are needed: read with the scanner, not a full parse.
    let mut ts: Vec<i64> = Vec::new();
    let bytes = data.get().as_bytes();
    let scanned = crate::jsonscan::each_element(bytes, 0, &mut |at| {
        crate::jsonscan::members(bytes, at, &mut |k, v| {
            if k == b"timestamp" {
                if let Some(t) = crate::jsonscan::number(v) {
                    ts.push(t as i64);
                }
            }
        })
    });
    if scanned.is_none() {
        return err("$snapshot_data is not an array of rrweb events");
    }
    let (Some(&first), Some(&last)) = (ts.iter().min(), ts.iter().max()) else {
        return err("$snapshot_data holds no timestamped rrweb event");
    };
    Ok(Some((
        props.token,
        Chunk {
            team: 0,
            session_id,
            person,
            window_id: props.window_id,
            first_ts_ms: first,
            last_ts_ms: last,
            sent_at_ms: None,
            payload: data.get().as_bytes().to_vec(),
        },
    )))
}

/// Decodes a request body as posthog-js sends it to `/s/`: gzip (by its magic bytes, with or
/// without `?compression=gzip-js`), a `data=<base64>` form (`compression=base64`, or lz64 in it
/// with `compression=lz64`), or plain JSON. Returns the JSON bytes.
pub fn decode_request(body: &[u8], compression: Option<&str>) -> Result<Vec<u8>, WireError> {
    use base64::Engine;
    if body.starts_with(&[0x1f, 0x8b]) {
        return decode_body(body).map(|b| b.into_owned());
    }
    let form = body.starts_with(b"data=").then(|| &body[5..]);
    let raw = match form {
        None => body.to_vec(),
        Some(v) => {
            let v = v.split(|&b| b == b'&').next().unwrap_or(&[]);
            percent_decode(v)
        }
    };
    match compression {
        Some("lz64") => {
            let s = std::str::from_utf8(&raw).or_else(|_| err("lz64 data is not text"))?;
            let chars = lz_str::decompress_from_base64(s)
                .ok_or_else(|| WireError("invalid lz64 data".into()))?;
            String::from_utf16(&chars)
                .map(String::into_bytes)
                .or_else(|_| err("lz64 data is not UTF-16"))
        }
        _ if form.is_some() || compression == Some("base64") => {
            let text: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .or_else(|e| err(format!("invalid base64: {e}")))?;
            if bytes.starts_with(&[0x1f, 0x8b]) {
                decode_body(&bytes).map(|b| b.into_owned())
            } else {
                Ok(bytes)
            }
        }
        _ => Ok(raw),
    }
}

/// Decodes `%XX` and `+` in a form value.
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < v.len() => {
                let hex = std::str::from_utf8(&v[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The rrweb events of a stored chunk payload (a JSON array), each as its exact JSON text.
pub fn payload_events(payload: &[u8]) -> Result<Vec<&RawValue>, WireError> {
    serde_json::from_slice(payload)
        .or_else(|e| err(format!("payload is not a JSON array of events: {e}")))
}

/// The `PayloadTransform` for posthog-js payloads: inflates the SDK's in-event compression
/// (`"cv": "2024-10"`: gzip stored as a latin1 string in place of JSON) back to plain rrweb JSON,
/// which compresses about twice as well and which rrweb-player plays as is. Events without it
/// keep their exact bytes; a field that does not inflate cleanly is left as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Normalize;

/// Largest inflated field accepted; a larger one stays compressed.
const MAX_INFLATED_FIELD: u64 = 128 << 20;

impl replaystore::PayloadTransform for Normalize {
    fn transform(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let events: Vec<&RawValue> = serde_json::from_slice(payload).ok()?;
        if !events.iter().any(|e| e.get().contains("\"cv\"")) {
            return None;
        }
        let mut out = Vec::with_capacity(payload.len() * 2);
        out.push(b'[');
        let mut changed = false;
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match inflate_event(e.get()) {
                Some(plain) => {
                    out.extend_from_slice(plain.as_bytes());
                    changed = true;
                }
                None => out.extend_from_slice(e.get().as_bytes()),
            }
        }
        out.push(b']');
        changed.then_some(out)
    }
}

/// The event with its compressed fields inflated and `cv` removed, if it had any.
fn inflate_event(json: &str) -> Option<String> {
    if !json.contains("\"cv\"") {
        return None;
    }
    let mut ev: serde_json::Value = serde_json::from_str(json).ok()?;
    let obj = ev.as_object_mut()?;
    if obj.get("cv")?.as_str()? != "2024-10" {
        return None;
    }
    let kind = obj.get("type")?.as_i64()?;
    let data = obj.get_mut("data")?;
    match kind {
        2 => *data = inflate_field(data)?,
        3 => {
            let fields = data.as_object_mut()?;
            for name in ["texts", "attributes", "removes", "adds"] {
                if let Some(v) = fields.get_mut(name) {
                    if v.is_string() {
                        *v = inflate_field(v)?;
                    }
                }
            }
        }
        _ => return None,
    }
    obj.shift_remove("cv");
    serde_json::to_string(&ev).ok()
}

/// A latin1 string of gzip bytes -> the JSON value they hold.
fn inflate_field(v: &serde_json::Value) -> Option<serde_json::Value> {
    let s = v.as_str()?;
    let bytes: Vec<u8> = s
        .chars()
        .map(|c| u8::try_from(c as u32).ok())
        .collect::<Option<_>>()?;
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(MAX_INFLATED_FIELD + 1)
        .read_to_end(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_INFLATED_FIELD {
        return None;
    }
    serde_json::from_slice(&text).ok()
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
    fn normalize_inflates_cv_fields_and_leaves_other_events_exact() -> TestResult {
        use replaystore::PayloadTransform;
        let plain_snapshot =
            r#"{"node":{"type":0,"childNodes":[],"id":1},"initialOffset":{"left":0,"top":0}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, plain_snapshot.as_bytes())?;
        let latin1: String = gz.finish()?.iter().map(|&b| b as char).collect();
        let compressed =
            serde_json::json!({"type": 2, "data": latin1, "timestamp": 5, "cv": "2024-10"});
        let untouched =
            r#"{"type":3,"data":{"source":1,"positions":[{"x":1.50,"y":2}]},"timestamp":6}"#;
        let payload = format!("[{compressed},{untouched}]");
        let out = Normalize
            .transform(payload.as_bytes())
            .ok_or("cv field not inflated")?;
        let events: Vec<serde_json::Value> = serde_json::from_slice(&out)?;
        assert_eq!(
            events[0]["data"],
            serde_json::from_str::<serde_json::Value>(plain_snapshot)?
        );
        assert!(events[0].get("cv").is_none());
        assert!(
            String::from_utf8(out)?.ends_with(&format!("{untouched}]")),
            "byte-exact"
        );
        assert!(Normalize
            .transform(format!("[{untouched}]").as_bytes())
            .is_none());
        assert!(Normalize.transform(b"not json").is_none());
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_store() -> TestResult {
        let no_session = EV.replace("$session_id", "x");
        assert!(event_to_chunk(1, &no_session)
            .unwrap_err()
            .0
            .contains("$session_id"));
        let no_person = EV.replace("distinct_id", "x");
        assert!(event_to_chunk(1, &no_person).is_err());
        let no_ts = EV.replace("timestamp", "t");
        assert!(event_to_chunk(1, &no_ts).is_err());
        let other = EV.replace("$snapshot", "$pageview");
        assert_eq!(event_to_chunk(1, &other).map_err(|e| e.0)?, None);
        Ok(())
    }
}
