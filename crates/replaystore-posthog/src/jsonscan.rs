//! A minimal JSON scanner for the flush path: walks the keys of an object and skips values
//! without building them, so the analyzer can read a few fields of each rrweb event while full
//! snapshots and mutations (most of the bytes) are stepped over at memory speed. It does not
//! validate JSON; malformed input ends the scan early (the analyzer counts what it saw).

/// Position after the value starting at `i` (whitespace before it skipped), or `None`.
pub fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(b, i);
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            // Count brackets of this kind byte by byte (dense structure: a plain loop beats a
            // search call per token); strings are skipped whole.
            let (open, close) = if b[i] == b'{' {
                (b'{', b'}')
            } else {
                (b'[', b']')
            };
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                let c = b[j];
                if c == b'"' {
                    j = skip_string(b, j)?;
                    continue;
                }
                if c == open {
                    depth += 1;
                } else if c == close {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j + 1);
                    }
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    // Short strings (class names, words) end within a few bytes: look there first. Longer ones
    // jump from quote to quote (SIMD search); a quote preceded by an odd run of backslashes is
    // escaped (posthog-js's in-event gzip strings are full of `\uXXXX` escapes).
    let mut j = i + 1;
    let short_end = (j + 24).min(b.len());
    while j < short_end {
        match b[j] {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    loop {
        let k = j + memchr::memchr(b'"', b.get(j..)?)?;
        let backslashes = b[..k].iter().rev().take_while(|&&c| c == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(k + 1);
        }
        j = k + 1;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

/// Calls `f(key, value)` for each member of the object starting at `i` (keys unescaped only if
/// plain). Returns the position after the object.
pub fn members<'a>(b: &'a [u8], i: usize, f: &mut dyn FnMut(&'a [u8], &'a [u8])) -> Option<usize> {
    let mut i = skip_ws(b, i);
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match *b.get(i)? {
            b'}' => return Some(i + 1),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = skip_string(b, i)?;
        let key = &b[i + 1..key_end - 1];
        let colon = skip_ws(b, key_end);
        if *b.get(colon)? != b':' {
            return None;
        }
        let start = skip_ws(b, colon + 1);
        let end = skip_value(b, start)?;
        f(key, &b[start..end]);
        i = end;
    }
}

/// A JSON number as f64.
pub fn number(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A JSON string, unescaped.
pub fn string(v: &[u8]) -> Option<String> {
    if !v.contains(&b'\\') {
        return std::str::from_utf8(v.get(1..v.len().checked_sub(1)?)?)
            .ok()
            .map(String::from);
    }
    serde_json::from_slice(v).ok()
}

/// Calls `f(i)` with the position of each element of the array starting at `i`; `f` returns
/// the position after the element (it parses it), or `None` to stop. Each element is scanned
/// once, by `f`, not skipped first.
pub fn each_element(
    b: &[u8],
    i: usize,
    f: &mut dyn FnMut(usize) -> Option<usize>,
) -> Option<usize> {
    let mut i = skip_ws(b, i);
    if *b.get(i)? != b'[' {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match *b.get(i)? {
            b']' => return Some(i + 1),
            b',' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        i = f(i)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_members_and_skips_nested_values() -> Result<(), Box<dyn std::error::Error>> {
        let doc = br#"{"type":3, "data":{"source":2,"adds":[{"s":"a\"}]"}],"x":1.5},"timestamp":17,"s":"q\\"}"#;
        let mut seen = Vec::new();
        let end = members(doc, 0, &mut |k, v| seen.push((k.to_vec(), v.to_vec())))
            .ok_or("members() rejected a valid object")?;
        assert_eq!(end, doc.len());
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], (b"type".to_vec(), b"3".to_vec()));
        assert_eq!(number(&seen[2].1), Some(17.0));
        assert_eq!(string(&seen[3].1).as_deref(), Some("q\\"));
        let mut inner = Vec::new();
        members(&seen[1].1, 0, &mut |k, v| {
            inner.push((k.to_vec(), v.to_vec()))
        });
        assert_eq!(inner[0].1, b"2".to_vec());
        assert_eq!(number(&inner[2].1), Some(1.5));
        let mut n = 0;
        let arr = b"[1, {\"a\":[2]}, \"x]\"]";
        let end = each_element(arr, 0, &mut |at| {
            n += 1;
            skip_value(arr, at)
        });
        assert_eq!((n, end), (3, Some(arr.len())));
        assert!(members(b"{\"a\":", 0, &mut |_, _| {}).is_none());
        Ok(())
    }
}
