//! lz-string's base64 form (posthog-js `compression=lz64`), decompressed within bounds.
//!
//! The `lz_str` crate keeps each dictionary entry as its own vector: k codes can describe k^2/2
//! characters, so a 30 KB body can make it allocate gigabytes. Here every entry is a range of
//! the output already written (an LZW entry is always the previous output plus one character),
//! the output is capped, and both buffers are taken from the caller's allowance.

use super::decode::{reserve, Allowance};
use super::WireError;

const KEY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

fn invalid() -> WireError {
    WireError::Invalid("invalid lz64 data".into())
}

/// Reads the bit stream: 6 bits per base64 character, most significant first; characters
/// outside the alphabet are skipped (as lz-string does).
struct Bits<'a> {
    text: std::slice::Iter<'a, u8>,
    val: u32,
    position: u32,
}

impl Bits<'_> {
    fn next_value(&mut self) -> Option<u32> {
        self.text
            .by_ref()
            .find_map(|c| KEY.iter().position(|k| k == c).map(|p| p as u32))
    }

    fn bit(&mut self) -> Result<u32, WireError> {
        let bit = u32::from(self.val & self.position != 0);
        self.position >>= 1;
        if self.position == 0 {
            self.position = 32;
            self.val = self.next_value().ok_or_else(invalid)?;
        }
        Ok(bit)
    }

    fn bits(&mut self, n: u32) -> Result<u32, WireError> {
        (0..n).try_fold(0, |acc, i| Ok(acc | self.bit()? << i))
    }
}

/// The decompressed text as UTF-8 bytes, at most `max` of them (`TooLarge` beyond).
pub(crate) fn decompress_base64(
    text: &[u8],
    max: usize,
    a: &mut dyn Allowance,
) -> Result<Vec<u8>, WireError> {
    let mut units = Vec::new();
    let out = decompress(text, max, a, &mut units).and_then(|()| to_utf8(&units, max, a));
    a.give(units.capacity() * 2);
    out
}

/// A range of the output: (start, length).
type Range = (u32, u32);

fn decompress(
    text: &[u8],
    max: usize,
    a: &mut dyn Allowance,
    out: &mut Vec<u16>,
) -> Result<(), WireError> {
    let max = max.min(u32::MAX as usize / 2);
    let mut bits = Bits {
        text: text.iter(),
        val: 0,
        position: 32,
    };
    let Some(first) = bits.next_value() else {
        return Ok(()); // empty input: empty output
    };
    bits.val = first;
    // Codes 0 and 1 announce an 8- or 16-bit literal, 2 ends the stream; entries from 3.
    let mut dict: Vec<Range> = vec![(0, 0); 3];
    // The stream opens with a literal (or ends at once).
    let first = match bits.bits(2)? {
        c @ (0 | 1) => bits.bits(8 + 8 * c)?,
        2 => return Ok(()),
        _ => return Err(invalid()),
    };
    reserve(out, 1, max, a, "the lz64 text")?;
    out.push(first as u16);
    dict.push((0, 1));
    let mut w: Range = (0, 1);
    let (mut num_bits, mut enlarge_in) = (3u32, 4u64);
    let result = loop {
        if num_bits > 31 {
            break Err(invalid());
        }
        let mut code = bits.bits(num_bits)?;
        let start = out.len() as u32;
        let entry = match code {
            0 | 1 => {
                let c = bits.bits(8 + 8 * code)?;
                reserve(out, 1, max, a, "the lz64 text")?;
                out.push(c as u16);
                code = dict.len() as u32;
                reserve(&mut dict, 1, 2 * max + 8, a, "the lz64 dictionary")?;
                dict.push((start, 1));
                enlarge_in -= 1;
                (start, 1)
            }
            2 => break Ok(()),
            _ => (0, 0),
        };
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
        let entry = if entry.1 > 0 {
            entry
        } else {
            emit(out, &dict, code, w, max, a)?
        };
        // The previous output plus this entry's first character, which follows it.
        reserve(&mut dict, 1, 2 * max + 8, a, "the lz64 dictionary")?;
        dict.push((w.0, w.1 + 1));
        enlarge_in = enlarge_in.saturating_sub(1);
        w = entry;
        if enlarge_in == 0 {
            enlarge_in = 1 << num_bits;
            num_bits += 1;
        }
    };
    a.give(dict.capacity() * std::mem::size_of::<Range>());
    result
}

/// Appends dictionary entry `code` to the output (the entry being defined, `code` one past the
/// dictionary, is the previous output `w` plus its own first character); returns where it is.
fn emit(
    out: &mut Vec<u16>,
    dict: &[Range],
    code: u32,
    w: Range,
    max: usize,
    a: &mut dyn Allowance,
) -> Result<Range, WireError> {
    let start = out.len() as u32;
    if let Some(&(s, n)) = dict.get(code as usize) {
        reserve(out, n as usize, max, a, "the lz64 text")?;
        out.extend_from_within(s as usize..(s + n) as usize);
        Ok((start, n))
    } else if code as usize == dict.len() {
        reserve(out, w.1 as usize + 1, max, a, "the lz64 text")?;
        out.extend_from_within(w.0 as usize..(w.0 + w.1) as usize);
        out.push(out[w.0 as usize]);
        Ok((start, w.1 + 1))
    } else {
        Err(invalid())
    }
}

fn to_utf8(units: &[u16], max: usize, a: &mut dyn Allowance) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4];
    for c in char::decode_utf16(units.iter().copied()) {
        let c = c.map_err(|_| WireError::Invalid("lz64 data is not UTF-16".into()))?;
        let s = c.encode_utf8(&mut buf);
        reserve(&mut out, s.len(), max, a, "the lz64 text")?;
        out.extend_from_slice(s.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::decode::Unbudgeted;
    use super::*;

    #[test]
    fn decompresses_what_lz_string_compresses() {
        for text in [
            String::new(),
            "a".into(),
            "[{\"event\":\"$snapshot\",\"x\":\"ééé € 𝄞\"}]".repeat(50),
            (0..3000)
                .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
                .collect(),
            "a".repeat(100_000),
        ] {
            let lz = lz_str::compress_to_base64(text.as_str());
            let got = decompress_base64(lz.as_bytes(), 1 << 20, &mut Unbudgeted);
            assert_eq!(got.as_deref(), Ok(text.as_bytes()), "{:.40}", text);
        }
    }

    #[test]
    fn a_run_is_refused_at_the_cap_and_garbage_is_invalid() {
        let lz = lz_str::compress_to_base64("a".repeat(100_000).as_str());
        let got = decompress_base64(lz.as_bytes(), 10_000, &mut Unbudgeted);
        assert!(matches!(got, Err(WireError::TooLarge(_))), "{got:?}");
        for bad in ["////", "A", "zzzzzzzzzzzzzzzz"] {
            assert!(
                decompress_base64(bad.as_bytes(), 100, &mut Unbudgeted).is_err(),
                "{bad}"
            );
        }
    }
}
