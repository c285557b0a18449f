//! Request bodies to JSON text, with every buffer bounded twice: by a size cap (a larger output
//! is refused as too large, never allocated) and by an `Allowance`, the caller's memory budget,
//! asked before each buffer grows (the server shares one budget among its requests in flight).

use std::borrow::Cow;
use std::io::Read;

use super::WireError;

/// Largest body `decode_body` (the CLI's `ingest`) accepts after gunzip.
pub const MAX_DECODED_BODY: usize = 512 << 20;

/// Memory a request may take while it is decoded and parsed. Decoders ask before a buffer
/// grows; what they ask stays taken until the caller's own accounting ends (the server: the
/// request), except what they `give` back.
pub trait Allowance {
    /// Accounts for `n` more bytes; `false` if the budget is spent (the caller refuses with
    /// `WireError::Busy`).
    fn take(&mut self, n: usize) -> bool;
    /// Returns `n` bytes taken earlier (a buffer was freed).
    fn give(&mut self, n: usize);
}

/// No budget: only the size caps bound the buffers (a command-line tool on local files).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unbudgeted;

impl Allowance for Unbudgeted {
    fn take(&mut self, _: usize) -> bool {
        true
    }
    fn give(&mut self, _: usize) {}
}

/// Makes room in `v` for `extra` more elements, at most `max` in all (else `TooLarge`, naming
/// `what`), growing its capacity geometrically and taking the new bytes from `a` first.
pub fn reserve<T>(
    v: &mut Vec<T>,
    extra: usize,
    max: usize,
    a: &mut dyn Allowance,
    what: &str,
) -> Result<(), WireError> {
    let need = v.len().saturating_add(extra);
    if need > max {
        return Err(WireError::TooLarge(format!(
            "{what} exceeds {max} {}",
            if std::mem::size_of::<T>() == 1 {
                "bytes"
            } else {
                "units"
            }
        )));
    }
    if need <= v.capacity() {
        return Ok(());
    }
    let new_cap = need.max(v.capacity() * 2).max(1024).min(max.max(need));
    if !a.take((new_cap - v.capacity()) * std::mem::size_of::<T>()) {
        return Err(WireError::Busy);
    }
    v.reserve_exact(new_cap - v.len());
    Ok(())
}

/// Gunzips `body` if it starts with the gzip magic (at most `MAX_DECODED_BODY` bytes).
pub fn decode_body(body: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(body));
    }
    gunzip(body, MAX_DECODED_BODY, &mut Unbudgeted).map(Cow::Owned)
}

/// Inflates gzip data into at most `max` bytes, piece by piece (a bomb is refused at the cap,
/// having allocated no more than the cap).
pub fn gunzip(data: &[u8], max: usize, a: &mut dyn Allowance) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(data);
    let mut piece = vec![0u8; 64 << 10];
    loop {
        let n = dec
            .read(&mut piece)
            .map_err(|e| WireError::Invalid(format!("invalid gzip: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        reserve(&mut out, n, max, a, "the decoded body")?;
        out.extend_from_slice(&piece[..n]);
    }
}

/// Decodes a request body as posthog-js sends it to `/s/`: gzip (by its magic bytes, with or
/// without `?compression=gzip-js`), a `data=<base64>` form (`compression=base64`, or lz64 in it
/// with `compression=lz64`), or plain JSON (returned as is, not copied). The result is at most
/// `max` bytes; every buffer is taken from `a`.
pub fn decode_request<'b>(
    body: &'b [u8],
    compression: Option<&str>,
    max: usize,
    a: &mut dyn Allowance,
) -> Result<Cow<'b, [u8]>, WireError> {
    if body.starts_with(&[0x1f, 0x8b]) {
        return gunzip(body, max, a).map(Cow::Owned);
    }
    let Some(form) = body.strip_prefix(b"data=") else {
        if compression == Some("lz64") || compression == Some("base64") {
            // The encoded text itself as the body (no form).
            return decode_text(body, compression, max, a).map(Cow::Owned);
        }
        return Ok(Cow::Borrowed(body));
    };
    let value = form.split(|&b| b == b'&').next().unwrap_or(&[]);
    let mut raw = Vec::new();
    reserve(&mut raw, value.len(), value.len(), a, "the form")?;
    percent_decode(value, &mut raw);
    let out = match compression {
        Some("lz64") => decode_text(&raw, compression, max, a),
        _ => decode_text(&raw, Some("base64"), max, a),
    };
    a.give(raw.capacity());
    out.map(Cow::Owned)
}

/// base64 (possibly of gzip) or lz64 text to JSON bytes.
fn decode_text(
    text: &[u8],
    compression: Option<&str>,
    max: usize,
    a: &mut dyn Allowance,
) -> Result<Vec<u8>, WireError> {
    use base64::Engine;
    if compression == Some("lz64") {
        return super::lz64::decompress_base64(text, max, a);
    }
    let mut clean = Vec::new();
    reserve(&mut clean, text.len(), text.len(), a, "the base64 text")?;
    clean.extend(text.iter().copied().filter(|b| !b.is_ascii_whitespace()));
    let mut bytes = Vec::new();
    let decoded_len = clean.len() / 4 * 3 + 3;
    reserve(&mut bytes, decoded_len, decoded_len, a, "the base64 data")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode_vec(&clean, &mut bytes)
        .map_err(|e| WireError::Invalid(format!("invalid base64: {e}")));
    a.give(clean.capacity());
    drop(clean);
    decoded?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let out = gunzip(&bytes, max, a);
        a.give(bytes.capacity());
        return out;
    }
    if bytes.len() > max {
        return Err(WireError::TooLarge(format!(
            "the decoded body exceeds {max} bytes"
        )));
    }
    Ok(bytes)
}

/// Decodes `%XX` and `+` in a form value into `out`.
fn percent_decode(v: &[u8], out: &mut Vec<u8>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Counts what is taken, and refuses past a limit.
    struct Meter {
        taken: usize,
        limit: usize,
    }
    impl Allowance for Meter {
        fn take(&mut self, n: usize) -> bool {
            self.taken += n;
            self.taken <= self.limit
        }
        fn give(&mut self, n: usize) {
            self.taken -= n;
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, data).unwrap_or_default();
        gz.finish().unwrap_or_default()
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_cap_and_the_budget_is_asked_first() -> TestResult {
        let bomb = gz(&vec![b' '; 10 << 20]);
        let mut m = Meter {
            taken: 0,
            limit: usize::MAX,
        };
        let e = decode_request(&bomb, None, 1 << 20, &mut m).unwrap_err();
        assert!(matches!(e, WireError::TooLarge(_)), "{e}");
        assert!(m.taken <= 1 << 20, "took {} bytes", m.taken);
        let mut tight = Meter {
            taken: 0,
            limit: 100 << 10,
        };
        assert_eq!(
            decode_request(&bomb, None, 64 << 20, &mut tight),
            Err(WireError::Busy)
        );
        let small = gz(b"[1]");
        let ok = decode_request(&small, None, 1 << 20, &mut m)?;
        assert_eq!(&*ok, b"[1]");
        Ok(())
    }

    #[test]
    fn forms_base64_and_plain_bodies_decode() -> TestResult {
        use base64::Engine;
        let a = &mut Unbudgeted;
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"[{\"a\":1}]");
        let form = format!("data={}", b64.replace('=', "%3D"));
        assert_eq!(
            &*decode_request(form.as_bytes(), Some("base64"), 100, a)?,
            b"[{\"a\":1}]"
        );
        let b64gz = base64::engine::general_purpose::STANDARD.encode(gz(b"[2]"));
        let form = format!("data={}", b64gz.replace('+', "%2B").replace('/', "%2F"));
        assert_eq!(&*decode_request(form.as_bytes(), None, 100, a)?, b"[2]");
        assert!(matches!(
            decode_request(b"[1]", None, 100, a)?,
            Cow::Borrowed(b"[1]")
        ));
        assert!(decode_request(b"data=%%%", None, 100, a).is_err());
        Ok(())
    }
}
