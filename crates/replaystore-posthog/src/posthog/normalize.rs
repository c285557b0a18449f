//! `Normalize`: posthog-js's in-event compression (`"cv": "2024-10"`: gzip bytes stored as a
//! latin1 JSON string in place of JSON) inflated back to plain rrweb JSON, which compresses
//! about twice as well and which rrweb-player plays as is.
//!
//! A byte-level rewrite, not a parse and re-serialization: the events of the payload (the
//! JSON array the wire decoder validated at ingest) and the members of each compressed event
//! are located by the scanner, and the inflated text is spliced in place of its string. Every
//! other byte is copied as sent, so events without compression stay byte-exact, and what is
//! spliced in is checked to be valid UTF-8 and one JSON value first: a client's gzip is never
//! trusted to hold JSON. Profiled on the docs capture, the former `serde_json::Value` round
//! trip ran at ~140 MiB/s; the time went to maps, allocation and re-escaping, then to
//! re-validating the whole payload and decoding `\u00XX` escapes through `str` parsing.

use serde::de::IgnoredAny;

use crate::jsonscan::{each_element, members, skip_value, string};

/// Largest inflated field accepted; a larger one stays compressed.
const MAX_INFLATED_FIELD: u64 = 128 << 20;
/// The only compression version posthog-js has shipped.
const CV_GZIP: &str = "2024-10";
/// The members of an incremental snapshot's `data` that posthog-js compresses.
const COMPRESSED_MUTATION_FIELDS: [&[u8]; 4] = [b"texts", b"attributes", b"removes", b"adds"];

/// The `PayloadTransform` for posthog-js payloads. Idempotent: its output holds no `cv`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Normalize;

impl replaystore::PayloadTransform for Normalize {
    fn transform(&self, payload: &[u8]) -> Option<Vec<u8>> {
        memchr::memmem::find(payload, b"\"cv\"")?;
        let mut out = Vec::with_capacity(payload.len() * 2);
        out.push(b'[');
        let mut changed = false;
        let end = each_element(payload, 0, &mut |at| {
            let end = skip_value(payload, at)?;
            let event = &payload[at..end];
            if out.len() > 1 {
                out.push(b',');
            }
            let start = out.len();
            if memchr::memmem::find(event, b"\"cv\"").is_some() && inflate_event(event, &mut out) {
                changed = true;
            } else {
                out.truncate(start);
                out.extend_from_slice(event);
            }
            Some(end)
        })?;
        // Only whitespace may follow the array: anything else is not a payload we wrote.
        if !payload[end..].iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        out.push(b']');
        changed.then_some(out)
    }
}

/// One member of an object: its key as written (escaped, without quotes) and its value's text.
struct Member<'a> {
    key: &'a [u8],
    value: &'a [u8],
}

fn object_members(json: &[u8]) -> Option<Vec<Member<'_>>> {
    let mut all = Vec::new();
    members(json, 0, &mut |key, value| all.push(Member { key, value }))?;
    Some(all)
}

fn write_member(out: &mut Vec<u8>, first: bool, key: &[u8], value: &[u8]) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value);
}

/// Writes the event with its compressed fields inflated and `cv` dropped; false (and partial
/// output the caller discards) if it is not a compressed event or a field does not inflate.
fn inflate_event(event: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(fields) = object_members(event) else {
        return false;
    };
    let value_of = |k: &[u8]| fields.iter().find(|m| m.key == k).map(|m| m.value);
    if value_of(b"cv").and_then(string).as_deref() != Some(CV_GZIP) {
        return false;
    }
    let kind = value_of(b"type").and_then(crate::jsonscan::number);
    out.push(b'{');
    let mut first = true;
    for m in fields.iter().filter(|m| m.key != b"cv") {
        let inflated = match (m.key, kind) {
            (b"data", Some(2.0)) => inflate_string(m.value),
            (b"data", Some(3.0)) => inflate_mutation(m.value),
            (b"data", _) => None,
            _ => {
                write_member(out, first, m.key, m.value);
                first = false;
                continue;
            }
        };
        let Some(text) = inflated else {
            return false;
        };
        write_member(out, first, m.key, &text);
        first = false;
    }
    out.push(b'}');
    true
}

/// An incremental snapshot's `data` with its compressed string members inflated.
fn inflate_mutation(data: &[u8]) -> Option<Vec<u8>> {
    let fields = object_members(data)?;
    let mut out = Vec::with_capacity(data.len() * 4);
    out.push(b'{');
    for (i, m) in fields.iter().enumerate() {
        let compressed =
            COMPRESSED_MUTATION_FIELDS.contains(&m.key) && m.value.first() == Some(&b'"');
        if compressed {
            write_member(&mut out, i == 0, m.key, &inflate_string(m.value)?);
        } else {
            write_member(&mut out, i == 0, m.key, m.value);
        }
    }
    out.push(b'}');
    Some(out)
}

/// A JSON string of latin1 characters holding gzip bytes -> the JSON text they hold, checked
/// to be one valid JSON value (it is spliced into the payload unparsed).
fn inflate_string(value: &[u8]) -> Option<Vec<u8>> {
    let gz = latin1_bytes(value)?;
    let text = gunzip_member(&gz)?;
    std::str::from_utf8(&text).ok()?;
    serde_json::from_slice::<IgnoredAny>(&text).ok()?;
    Some(text)
}

/// The contents of one gzip member (RFC 1952), inflated straight into the output's spare
/// capacity (no zero-filling, no intermediate reader). The trailer's CRC is not checked: what
/// comes out is validated as JSON, and a damaged stream fails that or the inflate itself.
fn gunzip_member(gz: &[u8]) -> Option<Vec<u8>> {
    let body = gz.get(gzip_header_len(gz)?..)?;
    let mut inflater = flate2::Decompress::new(false);
    let mut text = Vec::with_capacity(body.len() * 4);
    loop {
        if text.len() == text.capacity() {
            if text.len() as u64 >= MAX_INFLATED_FIELD {
                return None;
            }
            text.reserve(text.len());
        }
        let read = inflater.total_in() as usize;
        let status = inflater
            .decompress_vec(
                body.get(read..)?,
                &mut text,
                flate2::FlushDecompress::Finish,
            )
            .ok()?;
        match status {
            flate2::Status::StreamEnd => break,
            flate2::Status::Ok => {}
            // No progress possible: the stream is truncated.
            flate2::Status::BufError if text.len() < text.capacity() => return None,
            flate2::Status::BufError => {}
        }
    }
    // The 8-byte trailer (CRC, size) ends the data: a second member or junk is not ours.
    let after = inflater.total_in() as usize + 8;
    (text.len() as u64 <= MAX_INFLATED_FIELD && body.len() == after).then_some(text)
}

/// Length of a gzip member's header: the fixed 10 bytes and the optional fields its flags name.
fn gzip_header_len(gz: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if gz.get(..3)? != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = gz[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = u16::from_le_bytes([*gz.get(at)?, *gz.get(at + 1)?]) as usize;
        at += 2 + len;
    }
    for field in [FNAME, FCOMMENT] {
        if flags & field != 0 {
            at += memchr::memchr(0, gz.get(at..)?)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    (at <= gz.len()).then_some(at)
}

/// The bytes of a JSON string (quotes included) whose characters are all U+0000..=U+00FF;
/// `None` for anything else. Handles the escapes JSON allows and UTF-8 two-byte sequences.
/// Gzip bytes are random, so which of the three cases comes next is unpredictable: the one-
/// and two-byte cases share one branch-free step (the value picked by a select, validity
/// accumulated in a flag), and only escapes (about 1 byte in 8) take a branch.
fn latin1_bytes(value: &[u8]) -> Option<Vec<u8>> {
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut out = vec![0u8; inner.len()];
    let (mut i, mut o) = (0, 0);
    let mut invalid = false;
    while i < inner.len() {
        let c = inner[i];
        if c == b'\\' {
            let (byte, used) = escape(&inner[i + 1..])?;
            out[o] = byte;
            o += 1;
            i += 1 + used;
            continue;
        }
        let next = inner.get(i + 1).copied().unwrap_or(0);
        let wide = c >= 0x80;
        // Only C2 xx and C3 xx (continuation xx) encode U+0080..=U+00FF.
        invalid |= wide & ((c & 0xFE != 0xC2) | (next & 0xC0 != 0x80));
        out[o] = if wide {
            ((c & 0x03) << 6) | (next & 0x3F)
        } else {
            c
        };
        o += 1;
        i += 1 + usize::from(wide);
    }
    if invalid {
        return None;
    }
    out.truncate(o);
    Some(out)
}

/// The byte an escape stands for (after its backslash) and how many bytes it used. `\u00XX`
/// comes first: JSON.stringify writes every control byte of the gzip data that way.
fn escape(rest: &[u8]) -> Option<(u8, usize)> {
    if let Some(&[b'u', b'0', b'0', hi, lo]) = rest.get(..5) {
        let (hi, lo) = (HEX[hi as usize], HEX[lo as usize]);
        // Latin1 only: \u00XX; any other code unit is refused.
        return ((hi | lo) & 0xF0 == 0).then_some(((hi << 4) | lo, 5));
    }
    let byte = match *rest.first()? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0C,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    };
    Some((byte, 1))
}

/// Hex digit values; 0xFF for bytes that are not hex digits.
const HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use replaystore::PayloadTransform;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn gzip_latin1(text: &str) -> Result<String, std::io::Error> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, text.as_bytes())?;
        Ok(gz.finish()?.iter().map(|&b| b as char).collect())
    }

    #[test]
    fn inflates_cv_fields_and_leaves_other_events_exact() -> TestResult {
        let plain_snapshot =
            r#"{"node":{"type":0,"childNodes":[],"id":1},"initialOffset":{"left":0,"top":0}}"#;
        let compressed = serde_json::json!({"type": 2, "data": gzip_latin1(plain_snapshot)?,
            "timestamp": 5, "cv": "2024-10"});
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
        assert_eq!(events[0]["timestamp"], 5);
        assert!(events[0].get("cv").is_none());
        assert!(
            String::from_utf8(out.clone())?.ends_with(&format!("{untouched}]")),
            "byte-exact"
        );
        assert!(Normalize.transform(&out).is_none(), "idempotent");
        assert!(Normalize
            .transform(format!("[{untouched}]").as_bytes())
            .is_none());
        assert!(Normalize.transform(b"not json \"cv\"").is_none());
        Ok(())
    }

    #[test]
    fn inflates_only_the_compressed_members_of_a_mutation() -> TestResult {
        let adds = r#"[{"parentId":1,"node":{"type":3,"textContent":"caf\u00e9 \"q\""}}]"#;
        let data = serde_json::json!({"source": 0, "adds": gzip_latin1(adds)?,
            "texts": [], "removes": gzip_latin1("[]")?});
        let event = serde_json::json!({"type": 3, "cv": "2024-10", "data": data, "timestamp": 9});
        let out = Normalize
            .transform(format!("[{event}]").as_bytes())
            .ok_or("mutation not inflated")?;
        let events: Vec<serde_json::Value> = serde_json::from_slice(&out)?;
        let expected: serde_json::Value = serde_json::from_str(adds)?;
        assert_eq!(events[0]["data"]["adds"], expected);
        assert_eq!(events[0]["data"]["removes"], serde_json::json!([]));
        assert_eq!(events[0]["data"]["texts"], serde_json::json!([]));
        assert_eq!(events[0]["data"]["source"], 0);
        Ok(())
    }

    #[test]
    fn an_event_that_does_not_inflate_is_kept_as_sent() -> TestResult {
        let not_gzip = r#"{"type":2,"data":"\u0001\u0002 not gzip","timestamp":1,"cv":"2024-10"}"#;
        let not_json = serde_json::json!({"type": 2, "data": gzip_latin1("{not json")?,
            "timestamp": 2, "cv": "2024-10"});
        let other_cv = serde_json::json!({"type": 2, "data": gzip_latin1("{}")?,
            "timestamp": 3, "cv": "2099-01"});
        for event in [
            not_gzip.to_string(),
            not_json.to_string(),
            other_cv.to_string(),
        ] {
            assert!(
                Normalize
                    .transform(format!("[{event}]").as_bytes())
                    .is_none(),
                "{event}"
            );
        }
        let good = serde_json::json!({"type": 2, "data": gzip_latin1("{}")?,
            "timestamp": 4, "cv": "2024-10"});
        let out = Normalize
            .transform(format!("[{not_gzip},{good}]").as_bytes())
            .ok_or("the good event was not inflated")?;
        let text = String::from_utf8(out)?;
        assert!(text.starts_with(&format!("[{not_gzip},")), "{text}");
        assert!(
            text.ends_with(r#"{"type":2,"data":{},"timestamp":4}]"#),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn latin1_strings_decode_escapes_and_two_byte_characters() {
        assert_eq!(
            latin1_bytes("\"a\\u0000\\\"ÿ\\n\"".as_bytes()),
            Some(vec![b'a', 0, b'"', 0xFF, b'\n'])
        );
        assert_eq!(latin1_bytes("\"€\"".as_bytes()), None, "not latin1");
        assert_eq!(latin1_bytes(b"\"\\u0100\""), None);
        assert_eq!(latin1_bytes(b"\"\\x\""), None);
    }
}
