//! The remote manifest, `<dir>/REMOTE`: which segments are in object storage and in what
//! state. Rewritten whole and atomically (temp file, fsync, rename, fsync directory) on every
//! change: changes are per segment or per uploaded part, a few per minute, and the file stays
//! small (one line of JSON per segment). Byte layout in docs/format.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fs::Fs;

const MAGIC: &str = "replaystore-remote";
const VERSION: u32 = 1;
/// A manifest larger than this is refused rather than read (about a million segments).
const MAX_BYTES: u64 = 256 << 20;

/// Where a multipart upload stands: what the manifest records after each part, so that a
/// restarted process continues with the next part instead of starting over. Part of the
/// manifest's format (docs/format.md), owned here: the object-store client fills it in, and
/// renaming anything in the client cannot change what is on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadProgress {
    pub upload_id: Option<String>,
    /// Content ids (ETags) of the parts uploaded so far, in order.
    pub parts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Being uploaded; the progress of a multipart upload lets a restart resume it.
    Uploading(UploadProgress),
    /// Uploaded, and size and checksum checked against the local copy.
    Verified,
    /// To be deleted from the bucket: expired, or replaced by segment `after` (deleted only
    /// once `after` is verified, so the bucket always holds the data or its replacement).
    Doomed { after: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub lane_days: u16,
    /// Size and CRC-32 of the whole segment file, as sealed.
    pub size: u64,
    pub crc32: u32,
    pub state: State,
}

#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    fs: Fs,
    pub entries: BTreeMap<u64, Entry>,
}

impl Manifest {
    pub fn open(dir: &Path, fs: &Fs) -> Result<Manifest> {
        let path = dir.join("REMOTE");
        let mut m = Manifest {
            path: path.clone(),
            fs: fs.clone(),
            entries: BTreeMap::new(),
        };
        let len = match fs.size(&path) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(m),
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        };
        if len > MAX_BYTES {
            return Err(m.corrupt(format!("{len} bytes, more than the {MAX_BYTES} allowed")));
        }
        let bytes = fs.read(&path).ctx(|| format!("read {}", path.display()))?;
        m.entries = decode(&bytes).map_err(|why| m.corrupt(why))?;
        Ok(m)
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            segment: 0,
            path: self.path.clone(),
            offset: 0,
            reason,
        }
    }

    /// Makes the current entries durable.
    pub fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        self.fs
            .replace_file(&self.path, &tmp, &[&encode(&self.entries)])
    }

    pub fn set(&mut self, e: Entry) -> Result<()> {
        self.entries.insert(e.id, e);
        self.save()
    }

    pub fn state(&self, id: u64) -> Option<&State> {
        self.entries.get(&id).map(|e| &e.state)
    }

    pub fn is_verified(&self, id: u64) -> bool {
        matches!(self.state(id), Some(State::Verified))
    }
}

/// `replaystore-remote 1 <crc32 of body, 8 hex> <body length>\n` then one JSON entry per line.
pub(crate) fn encode(entries: &BTreeMap<u64, Entry>) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries.values() {
        // Serializing plain structs of integers and strings cannot fail.
        if let Ok(line) = serde_json::to_vec(e) {
            body.extend_from_slice(&line);
            body.push(b'\n');
        }
    }
    let mut out = format!(
        "{MAGIC} {VERSION} {:08x} {}\n",
        crc32fast::hash(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<BTreeMap<u64, Entry>, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not UTF-8")?;
    let body = &bytes[nl + 1..];
    let f: Vec<&str> = header.split(' ').collect();
    if f.len() != 4 || f[0] != MAGIC {
        return Err(format!("bad header {header:?}"));
    }
    if f[1] != VERSION.to_string() {
        return Err(format!("unsupported manifest version {}", f[1]));
    }
    let crc = u32::from_str_radix(f[2], 16).map_err(|_| "bad checksum field")?;
    let len: usize = f[3].parse().map_err(|_| "bad length field")?;
    if len != body.len() {
        return Err(format!("body is {} bytes, header says {len}", body.len()));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut out = BTreeMap::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_slice(line).map_err(|e| format!("entry {i}: {e}"))?;
        out.insert(e.id, e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<u64, Entry> {
        let mut m = BTreeMap::new();
        let states = [
            State::Verified,
            State::Uploading(UploadProgress {
                upload_id: Some("abc".into()),
                parts: vec!["etag1".into()],
            }),
            State::Doomed { after: Some(9) },
        ];
        for (i, state) in states.into_iter().enumerate() {
            let id = i as u64 + 1;
            m.insert(
                id,
                Entry {
                    id,
                    lane_days: 30,
                    size: 1000 * id,
                    crc32: 7,
                    state,
                },
            );
        }
        m
    }

    #[test]
    fn round_trips_and_refuses_damage() -> std::result::Result<(), String> {
        let m = sample();
        let bytes = encode(&m);
        assert_eq!(decode(&bytes)?, m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        Ok(())
    }
}
