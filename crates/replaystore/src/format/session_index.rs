//! The session index file (`sessions.idx`): a checkpoint of the per-team session index, with
//! the segments it was built from. Derived data: footers stay the source of truth, and a file
//! that fails any check here is rebuilt from them (docs/format.md, "Session index").
//!
//! ```text
//! header:   magic "RSIX" | version u16 | annotator_len u16 | annotator name (UTF-8)
//! segments: count u32, each: id u64 | created_ms i64 | size u64 | sealed u8
//! entries:  count u64, each:
//!   team u64 | first_ts i64 | last_ts i64 | chunk_count u64 | raw_bytes u64 | stored_bytes u64
//!   | hidden_from i64 | all_hidden_from i64 | session: len u16 + bytes | person: len u16 +
//!   bytes | other persons: count u16, each len u16 + bytes | segments: count u32 x u64
//!   | facets: flag u8 (0 none, 1 present), then numbers: count u16 x u64, texts: count u16,
//!   each len u32 + bytes | annotation: len u32 (0: none) + bytes
//! trailer:  crc32 u32 of every byte before it
//! ```

use super::{
    put_i64, put_u16, put_u32, put_u64, Bytes, DecodeError, DecodeResult, Facets,
    MAX_ANNOTATION_BYTES,
};

pub const INDEX_MAGIC: &[u8; 4] = b"RSIX";
pub const INDEX_VERSION: u16 = 1;

/// A segment the file's entries were built from, as it was then. A segment is taken as
/// unchanged at open only if it was sealed then and its id, creation time and size still match
/// (an id can be reused after its segment is gone; a sealed file never changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoveredSegment {
    pub id: u64,
    pub created_ms: i64,
    pub size: u64,
    pub sealed: bool,
}

/// One session of one team, every record of it in the covered segments merged (hidden ones
/// too: what is hidden depends on the clock and the deletions, so a listing decides that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub first_ts: i64,
    pub last_ts: i64,
    pub chunk_count: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// The store time from which a listing hides one of its records (retention by arrival),
    /// and from which it hides all of them.
    pub hidden_from: i64,
    pub all_hidden_from: i64,
    /// The person it started under; then any other person a record of it names.
    pub person: Box<str>,
    pub other_persons: Box<[Box<str>]>,
    /// Ids of the segments holding a record of it, ascending.
    pub segments: Box<[u64]>,
    /// The annotator's facets of `annotation` (none without an annotator or an annotation).
    pub facets: Option<Box<Facets>>,
    /// The merged annotation, as a listing returns it.
    pub annotation: Option<Box<[u8]>>,
}

/// A decoded index file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// `Annotator::name` of the annotator that made the facets ("" without one).
    pub annotator: String,
    pub segments: Vec<CoveredSegment>,
    /// (team, session id, entry).
    pub entries: Vec<(u64, Box<str>, IndexEntry)>,
}

/// Encodes the header and segment list; entries follow with `encode_entry`, then `finish`.
pub fn encode_head(annotator: &str, segments: &[CoveredSegment], entries: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + segments.len() * 25);
    out.extend_from_slice(INDEX_MAGIC);
    put_u16(&mut out, INDEX_VERSION);
    put_str16(&mut out, annotator);
    put_u32(&mut out, segments.len() as u32);
    for s in segments {
        put_u64(&mut out, s.id);
        put_i64(&mut out, s.created_ms);
        put_u64(&mut out, s.size);
        out.push(s.sealed as u8);
    }
    put_u64(&mut out, entries);
    out
}

pub fn encode_entry(out: &mut Vec<u8>, team: u64, session: &str, e: &IndexEntry) {
    put_u64(out, team);
    for v in [e.first_ts, e.last_ts] {
        put_i64(out, v);
    }
    for v in [e.chunk_count, e.raw_bytes, e.stored_bytes] {
        put_u64(out, v);
    }
    put_i64(out, e.hidden_from);
    put_i64(out, e.all_hidden_from);
    put_str16(out, session);
    put_str16(out, &e.person);
    put_u16(out, e.other_persons.len() as u16);
    for p in e.other_persons.iter() {
        put_str16(out, p);
    }
    put_u32(out, e.segments.len() as u32);
    for s in e.segments.iter() {
        put_u64(out, *s);
    }
    match &e.facets {
        None => out.push(0),
        Some(f) => {
            out.push(1);
            put_u16(out, f.numbers.len() as u16);
            for n in &f.numbers {
                put_u64(out, *n);
            }
            put_u16(out, f.texts.len() as u16);
            for t in &f.texts {
                put_u32(out, t.len() as u32);
                out.extend_from_slice(t.as_bytes());
            }
        }
    }
    let a = e.annotation.as_deref().unwrap_or(&[]);
    put_u32(out, a.len() as u32);
    out.extend_from_slice(a);
}

/// Appends the trailer: the crc32 of everything written so far (`hasher` fed with it).
pub fn finish(hasher: crc32fast::Hasher) -> [u8; 4] {
    hasher.finalize().to_le_bytes()
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Every string written here is bounded well below 64 KiB (ids, persons, annotator names).
    put_u16(out, s.len().min(u16::MAX as usize) as u16);
    out.extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
}

/// Decodes a whole file, checking its crc, magic, version and every length.
pub fn decode(buf: &[u8]) -> DecodeResult<IndexFile> {
    let body_len = buf
        .len()
        .checked_sub(4)
        .ok_or_else(|| DecodeError::new("index file shorter than its crc"))?;
    let (body, crc) = buf.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(DecodeError::new("index file crc mismatch"));
    }
    let mut b = Bytes::new(body);
    if b.take(4)? != INDEX_MAGIC {
        return Err(DecodeError::new("not a session index file"));
    }
    let version = b.u16()?;
    if version != INDEX_VERSION {
        return Err(DecodeError::new(format!("index version {version}")));
    }
    let annotator = str16(&mut b, "annotator")?.to_string();
    let mut segments = Vec::new();
    for _ in 0..b.u32()? {
        segments.push(CoveredSegment {
            id: b.u64()?,
            created_ms: b.i64()?,
            size: b.u64()?,
            sealed: b.u8()? != 0,
        });
    }
    let mut entries = Vec::new();
    for _ in 0..b.u64()? {
        entries.push(decode_entry(&mut b)?);
    }
    if b.pos() != body.len() {
        return Err(DecodeError::new("index file has trailing bytes"));
    }
    Ok(IndexFile {
        annotator,
        segments,
        entries,
    })
}

fn str16<'a>(b: &mut Bytes<'a>, what: &str) -> DecodeResult<&'a str> {
    let n = b.u16()? as usize;
    b.str(n, what)
}

fn decode_entry(b: &mut Bytes) -> DecodeResult<(u64, Box<str>, IndexEntry)> {
    let team = b.u64()?;
    let (first_ts, last_ts) = (b.i64()?, b.i64()?);
    let (chunk_count, raw_bytes, stored_bytes) = (b.u64()?, b.u64()?, b.u64()?);
    let (hidden_from, all_hidden_from) = (b.i64()?, b.i64()?);
    let session: Box<str> = str16(b, "session id")?.into();
    let person: Box<str> = str16(b, "person")?.into();
    let mut others = Vec::new();
    for _ in 0..b.u16()? {
        others.push(str16(b, "person")?.into());
    }
    let mut segments = Vec::new();
    for _ in 0..b.u32()? {
        segments.push(b.u64()?);
    }
    let facets = match b.u8()? {
        0 => None,
        1 => Some(Box::new(decode_facets(b)?)),
        f => return Err(DecodeError::new(format!("facets flag {f}"))),
    };
    let len = b.u32()? as usize;
    if len > MAX_ANNOTATION_BYTES {
        return Err(DecodeError::new("annotation over its bound"));
    }
    let annotation = (len > 0).then(|| b.take(len).map(Box::from)).transpose()?;
    let entry = IndexEntry {
        first_ts,
        last_ts,
        chunk_count,
        raw_bytes,
        stored_bytes,
        hidden_from,
        all_hidden_from,
        person,
        other_persons: others.into(),
        segments: segments.into(),
        facets,
        annotation,
    };
    Ok((team, session, entry))
}

fn decode_facets(b: &mut Bytes) -> DecodeResult<Facets> {
    let mut f = Facets::default();
    for _ in 0..b.u16()? {
        f.numbers.push(b.u64()?);
    }
    for _ in 0..b.u16()? {
        let n = b.u32()? as usize;
        f.texts.push(b.str(n, "facet text")?.to_string());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexFile {
        let entry = IndexEntry {
            first_ts: 10,
            last_ts: 20,
            chunk_count: 3,
            raw_bytes: 300,
            stored_bytes: 100,
            hidden_from: 99,
            all_hidden_from: 120,
            person: "p".into(),
            other_persons: vec!["q".into()].into(),
            segments: vec![1, 4].into(),
            facets: Some(Box::new(Facets {
                numbers: vec![5, 0, 7],
                texts: vec!["https://a/".into()],
            })),
            annotation: Some(vec![2, 9].into()),
        };
        let bare = IndexEntry {
            other_persons: Vec::new().into(),
            facets: None,
            annotation: None,
            ..entry.clone()
        };
        IndexFile {
            annotator: "rrweb".into(),
            segments: vec![CoveredSegment {
                id: 4,
                created_ms: 7,
                size: 4096,
                sealed: true,
            }],
            entries: vec![(1, "s1".into(), entry), (2, "s2".into(), bare)],
        }
    }

    fn encode(f: &IndexFile) -> Vec<u8> {
        let mut out = encode_head(&f.annotator, &f.segments, f.entries.len() as u64);
        for (team, id, e) in &f.entries {
            encode_entry(&mut out, *team, id, e);
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&out);
        out.extend_from_slice(&finish(h));
        out
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let f = sample();
        let bytes = encode(&f);
        assert_eq!(decode(&bytes), Ok(f));
        for at in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {at} accepted");
        }
        for len in [0, 3, bytes.len() - 1] {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len} accepted");
        }
    }
}
