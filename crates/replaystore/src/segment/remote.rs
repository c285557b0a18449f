//! Segments held in object storage: opening one from its footer cache, fetching its blocks by
//! byte range (several segments at once), and downloading it whole for a scrub or a rewrite.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::path::Path as ObjPath;

use crate::error::{IoContext, Result};
use crate::format::{
    BlockHeader, BlockRef, DecodeError, FooterFormat, FooterView, SegmentHeader, Trailer,
    SEGMENT_HEADER_LEN, TRAILER_LEN,
};
use crate::remote::footer_cache::FooterCache;
use crate::remote::tier::Tier;
use crate::storage::{Mapped, OpenMode};

use super::{corrupt, Segment, State};

/// The segment id in an object key (`.../<id>.seg`).
fn parse_id(key: &ObjPath) -> Option<u64> {
    key.filename()?.strip_suffix(".seg")?.parse().ok()
}

/// A block's header and its chunks' payloads, verified and decompressed.
pub(crate) type DecodedBlock = (BlockHeader, Vec<Vec<u8>>);

/// A whole segment's bytes (`Segment::whole_bytes`).
pub(crate) struct WholeBytes {
    pub map: Mapped,
    _tmp: Option<ScratchFile>,
}

/// A download in the scratch directory, removed when dropped (and at open after a crash).
struct ScratchFile {
    fs: crate::fs::Fs,
    path: PathBuf,
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.fs.remove_quietly(&self.path);
    }
}

/// Numbers scratch files: two scrubs may download at once.
static NEXT_SCRATCH: AtomicU64 = AtomicU64::new(0);

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
    pub tier: Arc<Tier>,
    pub key: ObjPath,
    /// Size of the object (the sealed segment file).
    pub size: u64,
    /// The segment's header bytes and trailer, kept to fetch and check its whole footer.
    header: Vec<u8>,
    trailer: Trailer,
    footer_format: FooterFormat,
    /// Whole footers, bounded; the fixed part and bloom stay in the segment's `FooterView`.
    cache: Arc<FooterCache>,
    /// Where whole-object downloads go (compaction of a remote segment).
    scratch_dir: PathBuf,
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
        let fetch = || -> Result<Vec<u8>> {
            self.tier.count_footer_fetch();
            let body = self.tier.get_range(&self.key, t.footer_offset..self.size)?;
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
        let map = self.cache.get(id, len, valid, fetch)?;
        if let Some(n) = fetched.get() {
            read.footer_fetches += 1;
            read.gets += 1;
            read.bytes += n;
        }
        Ok(map)
    }
}

impl Segment {
    /// A sealed segment held only in object storage, opened from its `.meta` cache file
    /// (segment header, trailer, footer's fixed part and bloom): no request.
    pub fn open_remote(
        tier: Arc<Tier>,
        cache: Arc<FooterCache>,
        key: ObjPath,
        size: u64,
        scratch_dir: &Path,
    ) -> Result<Self> {
        let (id, meta_path) = match parse_id(&key) {
            Some(id) => (id, cache.meta_path(id)),
            None => {
                let why = DecodeError::new("object key is not a segment name");
                return Err(corrupt(0, Path::new(key.as_ref()), 0, why));
            }
        };
        let bytes = cache
            .fs()
            .read(&meta_path)
            .ctx(|| format!("read {}", meta_path.display()))?;
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
            path: PathBuf::from(format!("{}/{key}", tier.url_root())),
            state: State::Remote {
                data: Box::new(RemoteData {
                    tier,
                    key,
                    size,
                    header: bytes[..SEGMENT_HEADER_LEN].to_vec(),
                    trailer: t,
                    footer_format,
                    cache,
                    scratch_dir: scratch_dir.to_path_buf(),
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
                _tmp: None,
            }),
            // An active segment only grows past what its index covers.
            State::Indexed { file, .. } => Ok(WholeBytes {
                map: file.map().ctx(|| format!("mmap {}", self.path.display()))?,
                _tmp: None,
            }),
            State::Remote { data: r, .. } => {
                let fs = r.cache.fs().clone();
                let n = NEXT_SCRATCH.fetch_add(1, Ordering::Relaxed);
                let path = r.scratch_dir.join(format!("download-{n}.tmp"));
                let file = fs
                    .open(&path, OpenMode::CreateTruncate)
                    .ctx(|| format!("create {}", path.display()))?;
                let tmp = ScratchFile { fs, path };
                let n = r.tier.download(&r.key, file.clone())?;
                if n != r.size {
                    let why = DecodeError::new(format!("object is {n} bytes, expected {}", r.size));
                    return Err(self.corrupt(0, why));
                }
                let map = file.map().ctx(|| format!("mmap {}", tmp.path.display()))?;
                Ok(WholeBytes {
                    map,
                    _tmp: Some(tmp),
                })
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
    let mut tier = None;
    for (seg, refs) in items {
        if let State::Remote { data: r, .. } = &seg.state {
            let ranges = refs
                .iter()
                .map(|b| b.offset..b.offset.saturating_add(b.len as u64))
                .collect();
            remote_reqs.push((r.key.clone(), ranges));
            tier = Some(r.tier.clone());
        }
    }
    let mut fetched = match tier {
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
