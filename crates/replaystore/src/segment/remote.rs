//! Segments held in object storage: opening one from its footer cache, fetching its blocks by
//! byte range (several segments at once), and downloading it whole for a scrub or a rewrite.
//!
//! Where the bytes come from is the `ObjectSource` trait, defined here and implemented by the
//! remote tier: `segment` never imports `remote` (which imports `segment` to upload, replace and
//! open segments), so the two modules do not form an import cycle.

use std::any::Any;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjPath;

use crate::error::{IoContext, Result};
use crate::format::{
    BlockHeader, BlockRef, DecodeError, FooterFormat, FooterView, SegmentHeader, Trailer,
    SEGMENT_HEADER_LEN, TRAILER_LEN,
};
use crate::storage::Mapped;

use super::{corrupt, Segment, State};

/// Where a remote segment's bytes come from: range reads of its object, the local cache of its
/// footers, whole downloads. Implemented by the remote tier (`remote::Objects`); every remote
/// segment of a store shares one.
pub(crate) trait ObjectSource: Send + Sync {
    /// `scheme://bucket`, to name remote segments in paths and messages.
    fn url_root(&self) -> &str;
    /// One byte range of an object: one GET.
    fn get_range(&self, key: &ObjPath, range: Range<u64>) -> Result<Bytes>;
    /// Byte ranges of several objects, coalesced and fetched concurrently. Per object, in the
    /// order given: the bytes of each range asked for, and the GETs made.
    fn read_ranges_many(&self, reqs: &[ObjectRanges]) -> Result<Vec<(Vec<Bytes>, u64)>>;
    /// The whole object, downloaded into a scratch file and mapped.
    fn download(&self, key: &ObjPath) -> Result<WholeBytes>;
    /// The `.meta` cache file of segment `id` (segment header, trailer, the footer's fixed part
    /// and bloom filter): its path and bytes.
    fn read_meta(&self, id: u64) -> Result<(PathBuf, Vec<u8>)>;
    /// The whole footer file of segment `id` (`len` bytes), from the bounded cache; on a miss,
    /// or when `valid` refuses the cached bytes, from `fetch` (counted as a footer fetch), then
    /// cached.
    fn cached_footer(
        &self,
        id: u64,
        len: u64,
        valid: &dyn Fn(&[u8]) -> bool,
        fetch: &mut dyn FnMut() -> Result<Vec<u8>>,
    ) -> Result<Arc<Mapped>>;
}

/// The byte ranges wanted from one object (`ObjectSource::read_ranges_many`).
pub(crate) type ObjectRanges = (ObjPath, Vec<Range<u64>>);

/// The segment id in an object key (`.../<id>.seg`).
fn parse_id(key: &ObjPath) -> Option<u64> {
    key.filename()?.strip_suffix(".seg")?.parse().ok()
}

/// A block's header and its chunks' payloads, verified and decompressed.
pub(crate) type DecodedBlock = (BlockHeader, Vec<Vec<u8>>);

/// A whole segment's bytes (`Segment::whole_bytes`): a local segment's mapping, or a download.
pub(crate) struct WholeBytes {
    pub map: Mapped,
    /// Keeps a download's scratch file until the mapping is dropped, then removes it (the
    /// remote tier's guard; `None` for a local segment).
    _scratch: Option<Box<dyn Any + Send + Sync>>,
}

impl WholeBytes {
    /// A download's bytes, and the guard that removes its scratch file when they are dropped.
    pub fn downloaded(map: Mapped, scratch: impl Any + Send + Sync) -> WholeBytes {
        WholeBytes {
            map,
            _scratch: Some(Box::new(scratch)),
        }
    }
}

/// What reading remote blocks cost (`Store::read_session_traced`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteRead {
    /// Remote segments the read touched.
    pub remote_segments: u64,
    /// Range GETs made (after coalescing), footer fetches included.
    pub gets: u64,
    /// Bytes those GETs fetched.
    pub bytes: u64,
    /// Whole footers fetched because the footer cache did not hold them.
    pub footer_fetches: u64,
}

/// A segment whose bytes are in object storage.
pub(crate) struct RemoteData {
    source: Arc<dyn ObjectSource>,
    key: ObjPath,
    /// Size of the object (the sealed segment file).
    pub size: u64,
    /// The segment's header bytes and trailer, kept to fetch and check its whole footer.
    header: Vec<u8>,
    trailer: Trailer,
    footer_format: FooterFormat,
}

/// The bytes a footer's offsets point into: a local segment's mapping, or a remote segment's
/// whole footer from the cache (segment header, footer, trailer).
pub(crate) enum FooterBytes<'a> {
    Local(&'a [u8]),
    Cached(Arc<Mapped>),
}

impl std::ops::Deref for FooterBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FooterBytes::Local(b) => b,
            FooterBytes::Cached(m) => m,
        }
    }
}

/// `<id>.meta`: the segment header, the trailer, then the footer's first `meta_len` bytes.
pub(crate) fn encode_meta(header: &[u8], trailer: &[u8], footer_meta: &[u8]) -> Vec<u8> {
    [header, trailer, footer_meta].concat()
}

impl RemoteData {
    /// The whole footer, from the cache or fetched (one range GET from the footer to the end).
    pub fn whole_footer(&self, id: u64, read: &mut RemoteRead) -> Result<Arc<Mapped>> {
        let fetched = std::cell::Cell::new(None);
        let t = &self.trailer;
        let len = (SEGMENT_HEADER_LEN + TRAILER_LEN) as u64 + t.footer_len as u64;
        let valid = |b: &[u8]| {
            b.get(..SEGMENT_HEADER_LEN) == Some(&self.header[..])
                && FooterView::parse(
                    b,
                    SEGMENT_HEADER_LEN as u64,
                    t.footer_len,
                    t.footer_crc,
                    self.footer_format,
                )
                .is_ok()
        };
        let mut fetch = || -> Result<Vec<u8>> {
            let body = self
                .source
                .get_range(&self.key, t.footer_offset..self.size)?;
            fetched.set(Some(body.len() as u64));
            let bytes = [&self.header[..], &body[..]].concat();
            if bytes.len() as u64 != len || !valid(&bytes) {
                let why = DecodeError::new("the object's footer differs from the one recorded");
                return Err(corrupt(
                    id,
                    Path::new(self.key.as_ref()),
                    t.footer_offset,
                    why,
                ));
            }
            Ok(bytes)
        };
        let map = self.source.cached_footer(id, len, &valid, &mut fetch)?;
        if let Some(n) = fetched.get() {
            read.footer_fetches += 1;
            read.gets += 1;
            read.bytes += n;
        }
        Ok(map)
    }

    /// One block's bytes (one GET).
    pub fn block(&self, range: Range<u64>) -> Result<Vec<u8>> {
        Ok(self.source.get_range(&self.key, range)?.to_vec())
    }
}

impl Segment {
    /// A sealed segment held only in object storage, opened from its `.meta` cache file
    /// (segment header, trailer, footer's fixed part and bloom): no request.
    pub fn open_remote(source: Arc<dyn ObjectSource>, key: ObjPath, size: u64) -> Result<Self> {
        let Some(id) = parse_id(&key) else {
            let why = DecodeError::new("object key is not a segment name");
            return Err(corrupt(0, Path::new(key.as_ref()), 0, why));
        };
        let (meta_path, bytes) = source.read_meta(id)?;
        let bad = |e| corrupt(id, &meta_path, 0, e);
        let fixed = SEGMENT_HEADER_LEN + TRAILER_LEN;
        if bytes.len() < fixed {
            return Err(bad(DecodeError::new("footer cache too short")));
        }
        let header = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN]).map_err(bad)?;
        let t = Trailer::decode(&bytes[SEGMENT_HEADER_LEN..fixed], size).map_err(bad)?;
        if header.segment_id != id {
            return Err(bad(DecodeError::new("footer cache of another segment")));
        }
        let footer_format = t.footer_format(header.created_ms);
        let mut view = FooterView::parse_meta(
            &bytes[fixed..],
            SEGMENT_HEADER_LEN as u64,
            t.footer_len,
            t.footer_crc,
            footer_format,
        )
        .map_err(bad)?;
        view.offset = t.footer_offset;
        Ok(Segment {
            id,
            lane_days: header.lane_days,
            created_ms: header.created_ms,
            path: PathBuf::from(format!("{}/{key}", source.url_root())),
            state: State::Remote {
                data: Box::new(RemoteData {
                    source,
                    key,
                    size,
                    header: bytes[..SEGMENT_HEADER_LEN].to_vec(),
                    trailer: t,
                    footer_format,
                }),
                footer: Box::new(view),
            },
        })
    }

    /// The whole segment, mapped: the local file, or for a remote segment a download into a
    /// scratch file (removed when the result drops). For scrubs and rewrites.
    pub fn whole_bytes(&self) -> Result<WholeBytes> {
        match &self.state {
            State::Sealed { map, .. } => Ok(WholeBytes {
                map: map.clone(),
                _scratch: None,
            }),
            // An active segment only grows past what its index covers.
            State::Indexed { file, .. } => Ok(WholeBytes {
                map: file.map().ctx(|| format!("mmap {}", self.path.display()))?,
                _scratch: None,
            }),
            State::Remote { data: r, .. } => {
                let whole = r.source.download(&r.key)?;
                let n = whole.map.len() as u64;
                if n != r.size {
                    let why = DecodeError::new(format!("object is {n} bytes, expected {}", r.size));
                    return Err(self.corrupt(0, why));
                }
                Ok(whole)
            }
        }
    }
}

/// Reads, verifies and decodes blocks of several segments (one list of refs per segment; the
/// result is in the same order). The remote ones are fetched together: every range GET of every
/// remote segment runs concurrently, so a session spread over several segments in the bucket
/// costs about one round trip.
pub(crate) fn read_blocks_many(
    items: &[(&Segment, &[BlockRef])],
    read: &mut RemoteRead,
) -> Result<Vec<Vec<DecodedBlock>>> {
    let mut remote_reqs = Vec::new();
    let mut source = None;
    for (seg, refs) in items {
        if let State::Remote { data: r, .. } = &seg.state {
            let ranges = refs
                .iter()
                .map(|b| b.offset..b.offset.saturating_add(b.len as u64))
                .collect();
            remote_reqs.push((r.key.clone(), ranges));
            source = Some(r.source.clone());
        }
    }
    let mut fetched = match source {
        Some(t) => t.read_ranges_many(&remote_reqs)?.into_iter(),
        None => Vec::new().into_iter(),
    };
    let mut out = Vec::with_capacity(items.len());
    for (seg, refs) in items {
        let blocks = match &seg.state {
            State::Remote { .. } => {
                let (bytes, gets) = fetched.next().unwrap_or_default();
                read.gets += gets;
                read.bytes += bytes.iter().map(|b| b.len() as u64).sum::<u64>();
                read.remote_segments += 1;
                seg.decode_blocks(refs, bytes)?
            }
            _ => {
                let bytes: Vec<_> = refs
                    .iter()
                    .map(|r| seg.block_bytes(*r))
                    .collect::<Result<_>>()?;
                seg.decode_blocks(refs, bytes)?
            }
        };
        out.push(blocks);
    }
    Ok(out)
}
