//! A segment file at run time: its bytes (a read-only mmap once sealed, the file otherwise) and
//! its session index (the footer once sealed, an in-memory map while active or when the footer
//! could not be trusted). Also the block-by-block scan that rebuilds an index from the blocks.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::RwLock;

use object_store::path::Path as ObjPath;

use crate::error::{Error, IoContext, Result};
use crate::format::block::{self, peek_total_len, BLOCK_FIXED_LEN};
use crate::format::footer::FooterTotals;
use crate::format::{
    BlockHeader, BlockRef, DecodeError, FooterView, SegmentHeader, SessionEntry, Trailer,
    SEGMENT_HEADER_LEN, TRAILER_LEN,
};
use crate::remote::tier::Tier;

/// The in-memory session index of an active (or footer-less) segment.
#[derive(Debug, Default)]
pub(crate) struct MemIndex {
    /// One entry per (session, person): a session whose distinct id changes mid-way (posthog-js
    /// `identify`) has one entry per person, so deletion by person finds every block.
    pub sessions: HashMap<(u64, Box<str>), Vec<SessionEntry>>,
    pub totals: FooterTotals,
}

impl MemIndex {
    /// Records one block written (or found) at `offset`.
    pub fn add_block(&mut self, h: &BlockHeader, offset: u64) {
        let r = BlockRef {
            offset,
            len: h.total_len() as u32,
            chunks: h.chunks.len() as u32,
        };
        let t = &mut self.totals;
        if t.block_count == 0 {
            t.min_ts = h.first_ts;
            t.max_ts = h.last_ts;
        }
        t.min_ts = t.min_ts.min(h.first_ts);
        t.max_ts = t.max_ts.max(h.last_ts);
        t.chunk_count += h.chunks.len() as u64;
        t.raw_bytes += h.raw_len as u64;
        t.stored_bytes += r.len as u64;
        t.block_count += 1;
        t.max_seq = t.max_seq.max(h.seq);
        let entries = self
            .sessions
            .entry((h.team, h.session.as_str().into()))
            .or_default();
        let at = match entries.iter().position(|e| e.person == h.person) {
            Some(i) => i,
            None => {
                entries.push(SessionEntry {
                    team: h.team,
                    session: h.session.clone(),
                    person: h.person.clone(),
                    first_ts: h.first_ts,
                    last_ts: h.last_ts,
                    chunk_count: 0,
                    raw_bytes: 0,
                    stored_bytes: 0,
                    blocks: Vec::new(),
                    summary: Default::default(),
                });
                entries.len() - 1
            }
        };
        let e = &mut entries[at];
        if let Some(s) = &h.summary {
            e.summary.merge(s);
        }
        e.first_ts = e.first_ts.min(h.first_ts);
        e.last_ts = e.last_ts.max(h.last_ts);
        e.chunk_count += h.chunks.len() as u32;
        e.raw_bytes += h.raw_len as u64;
        e.stored_bytes += r.len as u64;
        e.blocks.push(r);
    }
}

/// A block's header and its chunks' payloads, verified and decompressed.
pub(crate) type DecodedBlock = (BlockHeader, Vec<Vec<u8>>);

/// A whole segment's bytes (`Segment::whole_bytes`).
pub(crate) struct WholeBytes {
    pub map: Mmap,
    _tmp: Option<tempfile::NamedTempFile>,
}

/// What reading remote blocks cost (`Store::read_session_traced`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteRead {
    /// Remote segments the read touched.
    pub remote_segments: u64,
    /// Range GETs made (after coalescing).
    pub gets: u64,
    /// Bytes those GETs fetched.
    pub bytes: u64,
}

/// What `Segment::for_each_block` calls with each block's offset, bytes and header.
pub(crate) type BlockVisitor<'a> = dyn FnMut(u64, &[u8], &BlockHeader) -> Result<()> + 'a;

enum Data {
    Mapped(Mmap),
    File(File),
    /// In object storage only: blocks are fetched by byte range, the footer is cached locally.
    Remote(RemoteData),
}

/// A segment whose bytes are in object storage.
pub(crate) struct RemoteData {
    pub tier: Arc<Tier>,
    pub key: ObjPath,
    /// Size of the object (the sealed segment file).
    pub size: u64,
    /// The local footer cache: the segment header, then the footer and trailer.
    footer: Mmap,
    /// Where whole-object downloads go (compaction of a remote segment).
    scratch_dir: PathBuf,
}

pub(crate) enum Index {
    Footer(FooterView),
    Memory(Arc<RwLock<MemIndex>>),
}

/// One segment file, shared by readers through an `Arc`. A reader holding an old `Arc` keeps
/// reading correctly after the store swaps in a sealed or compacted replacement.
pub(crate) struct Segment {
    pub id: u64,
    pub lane_days: u16,
    pub created_ms: i64,
    pub path: PathBuf,
    data: Data,
    pub index: Index,
}

impl Segment {
    fn corrupt(&self, offset: u64, e: DecodeError) -> Error {
        corrupt(self.id, &self.path, offset, e)
    }

    /// A sealed segment: header and trailer valid, footer's fixed part verified.
    pub fn open_sealed(path: &Path, header: SegmentHeader, file: File, len: u64) -> Result<Self> {
        // SAFETY: sealed segments are never modified in place; the store owns the directory
        // (LOCK), and compaction replaces files by rename, so the mapping stays valid.
        let map = unsafe { Mmap::map(&file) }.ctx(|| format!("mmap {}", path.display()))?;
        let id = header.segment_id;
        let bad = |e| corrupt(id, path, len.saturating_sub(TRAILER_LEN as u64), e);
        let tail = map
            .len()
            .checked_sub(TRAILER_LEN)
            .map(|at| &map[at..])
            .unwrap_or(&[]);
        let t = Trailer::decode(tail, len).map_err(bad)?;
        let footer =
            FooterView::parse(&map, t.footer_offset, t.footer_len, t.footer_crc).map_err(bad)?;
        Ok(Segment {
            id,
            lane_days: header.lane_days,
            created_ms: header.created_ms,
            path: path.to_path_buf(),
            data: Data::Mapped(map),
            index: Index::Footer(footer),
        })
    }

    /// A segment indexed in memory (the active one, or one whose footer is missing or bad).
    pub fn in_memory(
        path: &Path,
        header: SegmentHeader,
        file: File,
        index: Arc<RwLock<MemIndex>>,
    ) -> Self {
        Segment {
            id: header.segment_id,
            lane_days: header.lane_days,
            created_ms: header.created_ms,
            path: path.to_path_buf(),
            data: Data::File(file),
            index: Index::Memory(index),
        }
    }

    /// A sealed segment held only in object storage: `cache` is its footer cache file
    /// (segment header, then footer and trailer; see `remote::sync::write_footer_cache`).
    pub fn open_remote(
        tier: Arc<Tier>,
        key: ObjPath,
        size: u64,
        cache: &Path,
        scratch_dir: &Path,
    ) -> Result<Self> {
        let file = File::open(cache).ctx(|| format!("open {}", cache.display()))?;
        // SAFETY: footer cache files are written whole and renamed into place, never modified.
        let footer = unsafe { Mmap::map(&file) }.ctx(|| format!("mmap {}", cache.display()))?;
        let header = SegmentHeader::decode(footer.get(..SEGMENT_HEADER_LEN).unwrap_or(&[]))
            .map_err(|e| corrupt(0, cache, 0, e))?;
        let id = header.segment_id;
        let bad = |e| corrupt(id, cache, 0, e);
        let tail = footer
            .len()
            .checked_sub(TRAILER_LEN)
            .map(|at| &footer[at..])
            .unwrap_or(&[]);
        let t = Trailer::decode(tail, size).map_err(bad)?;
        if footer.len() as u64 != (SEGMENT_HEADER_LEN + TRAILER_LEN) as u64 + t.footer_len as u64 {
            return Err(bad(DecodeError::new("footer cache has the wrong length")));
        }
        let mut view = FooterView::parse(
            &footer,
            SEGMENT_HEADER_LEN as u64,
            t.footer_len,
            t.footer_crc,
        )
        .map_err(bad)?;
        view.offset = t.footer_offset;
        Ok(Segment {
            id,
            lane_days: header.lane_days,
            created_ms: header.created_ms,
            path: PathBuf::from(format!("{}/{key}", tier.url_root())),
            data: Data::Remote(RemoteData {
                tier,
                key,
                size,
                footer,
                scratch_dir: scratch_dir.to_path_buf(),
            }),
            index: Index::Footer(view),
        })
    }

    /// The bytes the footer's offsets point into: the whole mapped file, or a remote
    /// segment's footer cache.
    fn footer_bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Mapped(m) => Some(m),
            Data::Remote(r) => Some(&r.footer),
            Data::File(_) => None,
        }
    }

    /// In object storage only (no local copy).
    pub fn is_remote(&self) -> bool {
        matches!(self.data, Data::Remote(_))
    }

    /// The segment's size in bytes (local file or object).
    pub fn size(&self) -> u64 {
        match &self.data {
            Data::Mapped(m) => m.len() as u64,
            Data::File(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
            Data::Remote(r) => r.size,
        }
    }

    /// The whole sealed file's bytes, when mapped locally (upload checksums, footer caches).
    pub fn mapped_bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Mapped(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self.index, Index::Footer(_))
    }

    /// Time range and totals of what this segment holds.
    pub fn totals(&self) -> FooterTotals {
        match &self.index {
            Index::Footer(f) => f.totals,
            Index::Memory(m) => m.read().totals,
        }
    }

    /// Heap bytes this segment's index keeps in RAM (for the memory report).
    pub fn index_heap_bytes(&self) -> usize {
        match &self.index {
            Index::Footer(f) => f.bloom.heap_bytes() + f.replaces.len() * 8,
            Index::Memory(m) => {
                let m = m.read();
                m.sessions
                    .values()
                    .flatten()
                    .map(|e| 2 * e.session.len() + e.person.len() + e.blocks.len() * 16 + 160)
                    .sum()
            }
        }
    }

    /// This segment's records of one session (one per person it was recorded under).
    pub fn find(&self, team: u64, session: &str) -> Result<Vec<SessionEntry>> {
        match (&self.index, self.footer_bytes()) {
            (Index::Footer(f), Some(map)) => {
                f.find(map, team, session).map_err(|e| self.corrupt(0, e))
            }
            (Index::Memory(m), _) => Ok(m
                .read()
                .sessions
                .get(&(team, session.into()))
                .cloned()
                .unwrap_or_default()),
            (Index::Footer(_), None) => Ok(Vec::new()),
        }
    }

    /// Calls `f` with every session record of `team` (person filter applied by hash first).
    pub fn for_each_session(
        &self,
        team: u64,
        person: Option<&str>,
        f: &mut dyn FnMut(SessionEntry),
    ) -> Result<()> {
        let person_hash = person.map(|p| crate::format::key_hash(team, p));
        match (&self.index, self.footer_bytes()) {
            (Index::Footer(ft), Some(map)) => {
                for i in ft.team_range(map, team) {
                    if person_hash.is_some_and(|h| ft.person_hash(map, i) != h) {
                        continue;
                    }
                    let e = ft.entry(map, i).map_err(|e| self.corrupt(0, e))?;
                    if person.is_none_or(|p| p == e.person) {
                        f(e);
                    }
                }
            }
            (Index::Memory(m), _) => {
                for e in m.read().sessions.values().flatten() {
                    if e.team == team && person.is_none_or(|p| p == e.person) {
                        f(e.clone());
                    }
                }
            }
            (Index::Footer(_), None) => {}
        }
        Ok(())
    }

    /// Calls `f` with every session record of `team` whose person hash is in `person_hashes`:
    /// one pass over the team's records, decoding only the candidates (deletion planning).
    pub fn for_each_session_of(
        &self,
        team: u64,
        person_hashes: &std::collections::HashSet<u64>,
        f: &mut dyn FnMut(SessionEntry),
    ) -> Result<()> {
        match (&self.index, self.footer_bytes()) {
            (Index::Footer(ft), Some(map)) => {
                for i in ft.team_range(map, team) {
                    if person_hashes.contains(&ft.person_hash(map, i)) {
                        f(ft.entry(map, i).map_err(|e| self.corrupt(0, e))?);
                    }
                }
            }
            (Index::Memory(m), _) => {
                for e in m.read().sessions.values().flatten() {
                    if e.team == team
                        && person_hashes.contains(&crate::format::key_hash(team, &e.person))
                    {
                        f(e.clone());
                    }
                }
            }
            (Index::Footer(_), None) => {}
        }
        Ok(())
    }

    /// Every (team, session hash) key in sorted order; used to count distinct sessions across
    /// segments. Sealed segments stream them from the footer without allocating.
    pub fn sorted_keys(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        match (&self.index, self.footer_bytes()) {
            (Index::Footer(f), Some(map)) => {
                Box::new((0..f.session_count).map(move |i| f.key(map, i)))
            }
            (Index::Memory(m), _) => {
                let mut keys: Vec<(u64, u64)> = m
                    .read()
                    .sessions
                    .keys()
                    .map(|(t, s)| (*t, crate::format::key_hash(*t, s)))
                    .collect();
                keys.sort_unstable();
                Box::new(keys.into_iter())
            }
            _ => Box::new(std::iter::empty()),
        }
    }

    /// Every session record, from the footer (each verified) or the in-memory index; a record
    /// that fails its checks is returned as an error in its place.
    pub fn all_entries(&self) -> Vec<std::result::Result<SessionEntry, String>> {
        match (&self.index, self.footer_bytes()) {
            (Index::Footer(f), Some(map)) => (0..f.session_count)
                .map(|i| {
                    f.entry(map, i)
                        .map_err(|e| format!("session entry {i}: {}", e.0))
                })
                .collect(),
            (Index::Memory(m), _) => m
                .read()
                .sessions
                .values()
                .flatten()
                .cloned()
                .map(Ok)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The footer, when sealed.
    pub fn footer(&self) -> Option<&FooterView> {
        match &self.index {
            Index::Footer(f) => Some(f),
            Index::Memory(_) => None,
        }
    }

    /// Does this segment hold blocks of the session? (Bloom filter first when sealed.)
    pub fn contains(&self, team: u64, session: &str) -> Result<bool> {
        match &self.index {
            Index::Memory(m) => Ok(m.read().sessions.contains_key(&(team, session.into()))),
            Index::Footer(_) => Ok(!self.find(team, session)?.is_empty()),
        }
    }

    /// Ids of the segments this one supersedes (written by compaction).
    pub fn replaces(&self) -> &[u64] {
        match &self.index {
            Index::Footer(f) => &f.replaces,
            Index::Memory(_) => &[],
        }
    }

    /// Calls `f(offset, block bytes, header)` for every indexed block, in file order; the first block
    /// that fails its checks is an error. Sealed segments are walked sequentially through the
    /// mapping; in-memory-indexed ones (a footer that failed its checks) block by block.
    pub fn for_each_block(&self, f: &mut BlockVisitor) -> Result<()> {
        match (&self.index, &self.data) {
            (Index::Footer(footer), Data::Mapped(map)) => self.walk_blocks(map, footer.offset, f),
            (Index::Footer(footer), Data::Remote(_)) => {
                // A rewrite needs every block: one streamed GET into a scratch file.
                let whole = self.whole_bytes()?;
                self.walk_blocks(&whole.map, footer.offset, f)
            }
            (Index::Memory(m), _) => {
                let mut refs: Vec<BlockRef> = m
                    .read()
                    .sessions
                    .values()
                    .flatten()
                    .flat_map(|e| e.blocks.iter().copied())
                    .collect();
                refs.sort_by_key(|r| r.offset);
                for r in refs {
                    let bytes = self.block_bytes(r)?;
                    let h = block::parse_block(&bytes).map_err(|e| self.corrupt(r.offset, e))?;
                    f(r.offset, &bytes, &h)?;
                }
                Ok(())
            }
            (Index::Footer(_), Data::File(_)) => Ok(()),
        }
    }

    /// The whole segment, mapped: the local file, or for a remote segment a download into a
    /// scratch file (removed when the result drops). For scrubs and rewrites.
    pub fn whole_bytes(&self) -> Result<WholeBytes> {
        let (file, name, tmp) = match &self.data {
            Data::Remote(r) => {
                let tmp = tempfile::NamedTempFile::new_in(&r.scratch_dir)
                    .ctx(|| format!("create a file in {}", r.scratch_dir.display()))?;
                let n = r.tier.download(&r.key, tmp.path())?;
                if n != r.size {
                    let why = DecodeError::new(format!("object is {n} bytes, expected {}", r.size));
                    return Err(self.corrupt(0, why));
                }
                let file =
                    File::open(tmp.path()).ctx(|| format!("open {}", tmp.path().display()))?;
                (file, tmp.path().to_path_buf(), Some(tmp))
            }
            _ => {
                let file =
                    File::open(&self.path).ctx(|| format!("open {}", self.path.display()))?;
                (file, self.path.clone(), None)
            }
        };
        // SAFETY: a sealed file (never modified in place), an active one (only grows past what
        // the index covers), or a private scratch file.
        let map = unsafe { Mmap::map(&file) }.ctx(|| format!("mmap {}", name.display()))?;
        Ok(WholeBytes { map, _tmp: tmp })
    }

    /// Walks the blocks of a whole segment's bytes, from the header to `end` (the footer).
    fn walk_blocks(&self, bytes: &[u8], end: u64, f: &mut BlockVisitor) -> Result<()> {
        let end = (end as usize).min(bytes.len());
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < end {
            let b = &bytes[pos..end];
            let h = block::parse_block(b).map_err(|e| self.corrupt(pos as u64, e))?;
            let len = h.total_len() as usize;
            f(pos as u64, &b[..len], &h)?;
            pos += len;
        }
        Ok(())
    }

    /// Verifies and decodes blocks whose bytes were fetched.
    fn decode_blocks<B: AsRef<[u8]>>(
        &self,
        refs: &[BlockRef],
        fetched: Vec<B>,
    ) -> Result<Vec<DecodedBlock>> {
        refs.iter()
            .zip(fetched)
            .map(|(r, bytes)| {
                let bytes = bytes.as_ref();
                let h = block::parse_block(bytes).map_err(|e| self.corrupt(r.offset, e))?;
                let p = block::decode_payloads(&h, bytes).map_err(|e| self.corrupt(r.offset, e))?;
                Ok((h, p))
            })
            .collect()
    }

    /// The raw bytes of one block (not yet verified).
    fn block_bytes(&self, r: BlockRef) -> Result<std::borrow::Cow<'_, [u8]>> {
        match &self.data {
            Data::Mapped(map) => map
                .get(r.offset as usize..(r.offset as usize).saturating_add(r.len as usize))
                .map(std::borrow::Cow::Borrowed)
                .ok_or_else(|| self.corrupt(r.offset, DecodeError::new("block ref outside file"))),
            Data::File(file) => {
                let mut buf = vec![0u8; r.len as usize];
                file.read_exact_at(&mut buf, r.offset)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => {
                            self.corrupt(r.offset, DecodeError::new("block ref past end of file"))
                        }
                        _ => Error::io(format!("read {}", self.path.display()), e),
                    })?;
                Ok(std::borrow::Cow::Owned(buf))
            }
            Data::Remote(remote) => {
                let range = r.offset..r.offset.saturating_add(r.len as u64);
                Ok(std::borrow::Cow::Owned(
                    remote.tier.get_range(&remote.key, range)?.to_vec(),
                ))
            }
        }
    }

    /// Reads, verifies and decodes one block: its header and its chunks' payloads.
    pub fn read_block(&self, r: BlockRef) -> Result<(BlockHeader, Vec<Vec<u8>>)> {
        let bytes = self.block_bytes(r)?;
        let h = block::parse_block(&bytes).map_err(|e| self.corrupt(r.offset, e))?;
        let payloads = block::decode_payloads(&h, &bytes).map_err(|e| self.corrupt(r.offset, e))?;
        Ok((h, payloads))
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
        if let Data::Remote(r) = &seg.data {
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
        let blocks = match &seg.data {
            Data::Remote(_) => {
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

pub(crate) fn corrupt(segment: u64, path: &Path, offset: u64, e: DecodeError) -> Error {
    Error::Corrupt {
        segment,
        path: path.to_path_buf(),
        offset,
        reason: e.0,
    }
}

/// What a block-by-block scan of a segment found.
pub(crate) struct Scan {
    pub index: MemIndex,
    /// End of the last good block: where a torn tail begins, and where appends resume.
    pub good_len: u64,
    /// Offsets of corrupt blocks skipped in the middle of the file (followed by good blocks).
    pub skipped: Vec<(u64, String)>,
    /// Why the scan stopped before the end of the file, if it did (a torn or corrupt tail).
    pub tail: Option<(u64, String)>,
}

/// Rebuilds the index of a segment from its blocks, from the header up to `end`.
///
/// A block that fails its checks ends the scan (a torn tail: everything after it is cut) unless
/// its length field is intact and another valid block starts right after it: then it is a
/// corrupt block in the middle of acknowledged data, and it is skipped, not cut.
pub(crate) fn scan_blocks(bytes: &[u8], end: u64) -> Scan {
    let mut scan = Scan {
        index: MemIndex::default(),
        good_len: SEGMENT_HEADER_LEN as u64,
        skipped: Vec::new(),
        tail: None,
    };
    let end = (end as usize).min(bytes.len());
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < end {
        match block::parse_block(&bytes[pos..end]) {
            Ok(h) => {
                scan.index.add_block(&h, pos as u64);
                pos += h.total_len() as usize;
                scan.good_len = pos as u64;
            }
            Err(e) => {
                let next = peek_total_len(&bytes[pos..end.min(pos + BLOCK_FIXED_LEN)])
                    .ok()
                    .map(|n| pos as u64 + n)
                    .filter(|&n| n < end as u64);
                match next {
                    Some(n) if block::parse_block(&bytes[n as usize..end]).is_ok() => {
                        scan.skipped.push((pos as u64, e.0));
                        pos = n as usize;
                        scan.good_len = pos as u64;
                    }
                    _ => {
                        scan.tail = Some((pos as u64, e.0));
                        break;
                    }
                }
            }
        }
    }
    scan
}
