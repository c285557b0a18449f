//! `Objects`: the bucket as remote segments read it. The object-store client, the local cache of
//! remote segments' footers and the scratch directory for whole downloads, shared by every
//! remote segment (as the `segment::ObjectSource` they read through) and by the tier's steps.
//! Also the two ways a segment becomes remote: opened from the manifest (`open_segment`) and
//! replaced by its twin when its local copy goes (`twin`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjPath;

use super::client::Client;
use super::footer_cache::FooterCache;
use super::manifest::Entry;
use super::RemoteConfig;
use crate::error::{Error, IoContext, Result};
use crate::format::{FooterView, SegmentHeader, Trailer, SEGMENT_HEADER_LEN, TRAILER_LEN};
use crate::fs::Fs;
use crate::segment::{encode_meta, ObjectRanges, ObjectSource, Segment, WholeBytes};
use crate::storage::{Mapped, OpenMode};

/// First read of a footer: the object's last 64 KiB, enough for most footers in one GET.
const TAIL_GUESS: u64 = 64 << 10;

pub(crate) struct Objects {
    pub(super) client: Client,
    /// Footer caches in `<dir>/remote/footers/`, bounded by `footer_cache_bytes`.
    pub(super) cache: FooterCache,
    /// Scratch space for whole-object downloads (compaction or scrub of a remote segment).
    scratch: PathBuf,
    /// Numbers scratch files: two scrubs may download at once.
    next_scratch: AtomicU64,
}

/// A download in the scratch directory, removed when dropped (and at open after a crash).
struct ScratchFile {
    fs: Fs,
    path: PathBuf,
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        self.fs.remove_quietly(&self.path);
    }
}

impl Objects {
    /// The client, the footer cache in `<dir>/remote/footers/`, and an emptied scratch
    /// directory `<dir>/remote/tmp/`.
    pub fn open(dir: &Path, fs: &Fs, config: RemoteConfig) -> Result<Objects> {
        let limit = config.footer_cache_bytes;
        let client = Client::open(config)?;
        let cache = FooterCache::open(&dir.join("remote").join("footers"), limit, fs)?;
        let scratch = dir.join("remote").join("tmp");
        fs.create_dir_all(&scratch)?;
        // Leftovers of downloads cut short by a crash.
        for p in fs.list(&scratch).unwrap_or_default() {
            fs.remove_quietly(&p);
        }
        Ok(Objects {
            client,
            cache,
            scratch,
            next_scratch: AtomicU64::new(0),
        })
    }

    /// Opens a segment that is only in the bucket: from its `.meta` cache file, fetched
    /// (with the whole footer) when missing or damaged.
    pub fn open_segment(self: &Arc<Self>, e: &Entry) -> Result<Segment> {
        let key = self.client.segment_key(e.lane_days, e.id);
        let open = || Segment::open_remote(self.clone(), key.clone(), e.size);
        match open() {
            Ok(s) => Ok(s),
            Err(first) => {
                if self.cache.fs().exists(&self.cache.meta_path(e.id)) {
                    log::warn!(
                        "remote: footer cache of {} refused ({first}); fetching it",
                        e.id
                    );
                }
                self.fetch_footer(e.id, &key, e.size)?;
                open()
            }
        }
    }

    /// The remote twin of a sealed local segment (verified in the bucket), for the moment its
    /// local copy goes: the footer cache files are written from the local bytes first, so the
    /// twin opens without a request. `None` when `seg` is not a sealed, mapped segment.
    pub fn twin(self: &Arc<Self>, seg: &Segment) -> Result<Option<Segment>> {
        let (Some(bytes), Some(footer)) = (seg.mapped_bytes(), seg.footer()) else {
            return Ok(None);
        };
        let from = footer.offset as usize;
        self.write_cache(
            seg.id,
            &bytes[..SEGMENT_HEADER_LEN],
            &bytes[from..],
            &bytes[bytes.len() - TRAILER_LEN..],
            footer.meta_len(),
        )?;
        let key = self.client.segment_key(seg.lane_days, seg.id);
        Segment::open_remote(self.clone(), key, bytes.len() as u64).map(Some)
    }

    /// Two or three range GETs: the header, the last 64 KiB, the rest of a longer footer.
    /// Writes the `.meta` file and puts the whole footer in the cache.
    fn fetch_footer(&self, id: u64, key: &ObjPath, size: u64) -> Result<()> {
        let bad = |why: String| Error::Corrupt {
            segment: id,
            path: PathBuf::from(key.to_string()),
            offset: 0,
            reason: why,
        };
        let min = (SEGMENT_HEADER_LEN + TRAILER_LEN) as u64;
        if size < min {
            return Err(bad(format!("object of {size} bytes is too short")));
        }
        self.client.count_footer_fetch();
        let (tail, real) = self.client.get_tail(key, TAIL_GUESS.min(size))?;
        if real != size {
            return Err(bad(format!("object is {real} bytes, expected {size}")));
        }
        let t = Trailer::decode(&tail[tail.len().saturating_sub(TRAILER_LEN)..], size)
            .map_err(|e| bad(e.0))?;
        let want = t.footer_len as u64 + TRAILER_LEN as u64;
        let footer = if want <= tail.len() as u64 {
            tail.slice(tail.len() - want as usize..)
        } else {
            self.client.get_range(key, t.footer_offset..size)?
        };
        let header = self.client.get_range(key, 0..SEGMENT_HEADER_LEN as u64)?;
        let h = SegmentHeader::decode(&header).map_err(|e| bad(e.0))?;
        let format = t.footer_format(h.created_ms);
        let view = FooterView::parse(&footer, 0, t.footer_len, t.footer_crc, format)
            .map_err(|e| bad(e.0))?;
        let trailer = &footer[footer.len() - TRAILER_LEN..];
        self.write_cache(id, &header, &footer, trailer, view.meta_len())
    }

    /// Writes both cache files of a remote segment: `.meta` (kept) and the whole footer
    /// (bounded, evictable). `footer_and_trailer` is the segment's bytes from its footer on.
    fn write_cache(
        &self,
        id: u64,
        header: &[u8],
        footer_and_trailer: &[u8],
        trailer: &[u8],
        meta_len: usize,
    ) -> Result<()> {
        let meta = encode_meta(header, trailer, &footer_and_trailer[..meta_len]);
        self.cache.put_meta(id, &meta)?;
        self.cache.put(id, &[header, footer_and_trailer])
    }
}

impl ObjectSource for Objects {
    fn url_root(&self) -> &str {
        self.client.url_root()
    }

    fn get_range(&self, key: &ObjPath, range: Range<u64>) -> Result<Bytes> {
        self.client.get_range(key, range)
    }

    fn read_ranges_many(&self, reqs: &[ObjectRanges]) -> Result<Vec<(Vec<Bytes>, u64)>> {
        self.client.read_ranges_many(reqs)
    }

    fn download(&self, key: &ObjPath) -> Result<WholeBytes> {
        let fs = self.cache.fs().clone();
        let n = self.next_scratch.fetch_add(1, Ordering::Relaxed);
        let path = self.scratch.join(format!("download-{n}.tmp"));
        let file = fs
            .open(&path, OpenMode::CreateTruncate)
            .ctx(|| format!("create {}", path.display()))?;
        let tmp = ScratchFile { fs, path };
        self.client.download(key, file.clone())?;
        let map = file.map().ctx(|| format!("mmap {}", tmp.path.display()))?;
        Ok(WholeBytes::downloaded(map, tmp))
    }

    fn read_meta(&self, id: u64) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.cache.meta_path(id);
        let bytes = self
            .cache
            .fs()
            .read(&path)
            .ctx(|| format!("read {}", path.display()))?;
        Ok((path, bytes))
    }

    fn cached_footer(
        &self,
        id: u64,
        len: u64,
        valid: &dyn Fn(&[u8]) -> bool,
        fetch: &mut dyn FnMut() -> Result<Vec<u8>>,
    ) -> Result<Arc<Mapped>> {
        let fetch = || {
            self.client.count_footer_fetch();
            fetch()
        };
        self.cache.get(id, len, valid, fetch)
    }
}
