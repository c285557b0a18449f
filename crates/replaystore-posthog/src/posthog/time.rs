//! Client times on the wire: rrweb event timestamps and posthog-js send times, read strictly.
//!
//! A time is a whole number of milliseconds since the epoch that JavaScript can hold exactly
//! (|t| <= 2^53 - 1, `Number.MAX_SAFE_INTEGER`): what `Date.now()` gives. Anything else (a
//! string, `null`, a fraction, `1e300`, `2^63`) is refused with a `WireError::Timestamp` naming
//! the field and the value. Whether a valid time is plausible (a 1970 clock, a clock ten years
//! ahead) is not decided here: the store checks it against its arrival time (one window,
//! `Config::max_ts_behind` / `max_ts_ahead`), after correcting skew from the send time.

use super::WireError;

/// The largest magnitude accepted: JavaScript's largest exact integer.
pub const MAX_SAFE_MS: i64 = (1 << 53) - 1;

fn refuse(field: &str, value: &[u8], reason: &'static str) -> WireError {
    let value = String::from_utf8_lossy(value);
    let mut shown: String = value.chars().take(40).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    WireError::Timestamp {
        field: field.to_string(),
        value: shown,
        reason,
    }
}

/// A JSON value (its exact text) as a time in ms.
pub fn json_ms(field: &str, v: &[u8]) -> Result<i64, WireError> {
    let v = v.trim_ascii();
    match v.first() {
        Some(b'-' | b'0'..=b'9') => number_ms(field, v),
        Some(b'"') => Err(refuse(
            field,
            v,
            "is a string, not a number of milliseconds",
        )),
        _ => Err(refuse(field, v, "is not a number of milliseconds")),
    }
}

/// A number's text (JSON or a query parameter) as a time in ms.
pub fn number_ms(field: &str, v: &[u8]) -> Result<i64, WireError> {
    let text = std::str::from_utf8(v).map_err(|_| refuse(field, v, "is not a number"))?;
    let integral = text.strip_prefix('-').unwrap_or(text);
    let ms = if !integral.is_empty() && integral.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>()
            .map_err(|_| refuse(field, v, "is out of range"))?
    } else {
        let f: f64 = text
            .parse()
            .map_err(|_| refuse(field, v, "is not a number"))?;
        if !f.is_finite() || f.abs() > MAX_SAFE_MS as f64 {
            return Err(refuse(field, v, "is out of range (beyond ±2^53 ms)"));
        }
        if f.fract() != 0.0 {
            return Err(refuse(field, v, "is not a whole number of milliseconds"));
        }
        f as i64
    };
    if ms.unsigned_abs() > MAX_SAFE_MS as u64 {
        return Err(refuse(field, v, "is out of range (beyond ±2^53 ms)"));
    }
    Ok(ms)
}

/// A send time from the body: an ISO 8601 string (`2026-11-26T03:33:26.011Z`, what posthog-js
/// sends as `sent_at`) or a number of ms. `null` is no send time.
pub fn sent_at_ms(field: &str, v: &[u8]) -> Result<Option<i64>, WireError> {
    let v = v.trim_ascii();
    if v == b"null" {
        return Ok(None);
    }
    if v.first() != Some(&b'"') {
        return json_ms(field, v).map(Some);
    }
    let text: String =
        serde_json::from_slice(v).map_err(|_| refuse(field, v, "is not a string"))?;
    iso8601_ms(text.as_bytes())
        .map(Some)
        .ok_or_else(|| refuse(field, v, "is not an ISO 8601 UTC time"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` as ms since the epoch.
fn iso8601_ms(s: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = s.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(d).ok()?.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| s.get(i).is_some_and(|b| c.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if sep(i, b".") {
        let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits (finer ones are dropped).
        let first3 = &s[i + 1..i + 1 + digits.min(3)];
        ms = std::str::from_utf8(first3).ok()?.parse::<i64>().ok()?
            * 10_i64.pow(3 - digits.min(3) as u32);
        i += 1 + digits;
    }
    let offset_min = match s.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_whole_safe_numbers() {
        assert_eq!(json_ms("t", b"1795664003192"), Ok(1_795_664_003_192));
        assert_eq!(
            json_ms("t", b"-1"),
            Ok(-1),
            "plausibility is the store's call"
        );
        assert_eq!(json_ms("t", b"1.795664003192e12"), Ok(1_795_664_003_192));
        assert_eq!(json_ms("t", b"5.0"), Ok(5));
        for (bad, why) in [
            ("1e300", "out of range"),
            ("9223372036854775808", "out of range"),
            ("9223372036854775807", "out of range"),
            ("-9223372036854775808", "out of range"),
            ("9007199254740992", "out of range"),
            ("-1e400", "out of range"),
            ("1.5", "whole number"),
            ("\"NaN\"", "string"),
            ("\"abc\"", "string"),
            ("null", "not a number"),
            ("[1]", "not a number"),
            ("true", "not a number"),
        ] {
            let e = json_ms("$snapshot_data[0].timestamp", bad.as_bytes()).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(why), "{text}");
            assert!(text.contains("$snapshot_data[0].timestamp"), "{text}");
            assert!(text.contains(bad), "{text}");
        }
    }

    #[test]
    fn send_times_are_iso_8601_or_ms() {
        let at = |s: &str| sent_at_ms("sent_at", s.as_bytes());
        assert_eq!(
            at("\"2026-11-26T03:33:26.011Z\""),
            Ok(Some(1_795_664_006_011))
        );
        assert_eq!(at("\"1970-01-01T00:00:00Z\""), Ok(Some(0)));
        assert_eq!(
            at("\"2000-02-29T12:00:00.5+01:30\""),
            Ok(Some(951_820_200_500))
        );
        assert_eq!(at("\"1969-12-31T23:59:59.999999Z\""), Ok(Some(-1)));
        assert_eq!(at("1795664006011"), Ok(Some(1_795_664_006_011)));
        assert_eq!(at("null"), Ok(None));
        for bad in [
            "\"yesterday\"",
            "\"2026-13-01T00:00:00Z\"",
            "\"2026-11-26T03:33:26\"",
            "1e300",
            "{}",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }
}
