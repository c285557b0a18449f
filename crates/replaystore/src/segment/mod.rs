//! A segment file at run time: its bytes (a read-only mmap once sealed, the file otherwise) and
//! its session index (the footer once sealed, an in-memory map while active or when the footer
//! could not be trusted), or, for a segment held in object storage, its key and its footer
//! cache (`remote`). `scan` rebuilds an index from the blocks; `mem_index` is that index.

mod mem_index;
mod remote;
mod scan;

pub(crate) use mem_index::MemIndex;
pub use remote::RemoteRead;
pub(crate) use remote::{encode_meta, read_blocks_many, DecodedBlock, FooterBytes, RemoteData};
pub(crate) use scan::scan_blocks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, IoContext, Result};
use crate::format::block;
use crate::format::footer::FooterTotals;
use crate::format::{
    BlockHeader, BlockRef, DecodeError, FooterView, SegmentHeader, SessionEntry, Trailer,
    TRAILER_LEN,
};
use crate::storage::{FileHandle, Mapped};

/// What `Segment::for_each_block` calls with each block's offset, bytes and header.
pub(crate) type BlockVisitor<'a> = dyn FnMut(u64, &[u8], &BlockHeader) -> Result<()> + 'a;

enum Data {
    Mapped(Mapped),
    File(FileHandle),
    /// In object storage only: blocks are fetched by byte range, the footer is cached locally.
    Remote(RemoteData),
}

// One per segment, held behind the segment's `Arc`: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Index {
    // Boxed: a footer view is ~200 bytes, the in-memory index a pointer.
    Footer(Box<FooterView>),
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
    pub fn open_sealed(
        path: &Path,
        header: SegmentHeader,
        file: FileHandle,
        len: u64,
    ) -> Result<Self> {
        // Sealed segments are never modified in place and compaction replaces files by rename,
        // so the mapping stays valid (see `OsStorage::map`).
        let map = file.map().ctx(|| format!("mmap {}", path.display()))?;
        let id = header.segment_id;
        let bad = |e| corrupt(id, path, len.saturating_sub(TRAILER_LEN as u64), e);
        let tail = map
            .len()
            .checked_sub(TRAILER_LEN)
            .map(|at| &map[at..])
            .unwrap_or(&[]);
        let t = Trailer::decode(tail, len).map_err(bad)?;
        let format = t.footer_format(header.created_ms);
        let footer = FooterView::parse(&map, t.footer_offset, t.footer_len, t.footer_crc, format)
            .map_err(bad)?;
        Ok(Segment {
            id,
            lane_days: header.lane_days,
            created_ms: header.created_ms,
            path: path.to_path_buf(),
            data: Data::Mapped(map),
            index: Index::Footer(Box::new(footer)),
        })
    }

    /// A segment indexed in memory (the active one, or one whose footer is missing or bad).
    pub fn in_memory(
        path: &Path,
        header: SegmentHeader,
        file: FileHandle,
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

    /// The bytes the footer's offsets point into: the whole mapped file, or a remote
    /// segment's whole footer (from the bounded cache, fetched with one GET on a miss).
    fn footer_bytes(&self) -> Result<Option<FooterBytes<'_>>> {
        self.footer_bytes_traced(&mut RemoteRead::default())
    }

    /// `footer_bytes`, counting a footer fetched from the bucket in `read`.
    fn footer_bytes_traced(&self, read: &mut RemoteRead) -> Result<Option<FooterBytes<'_>>> {
        match &self.data {
            Data::Mapped(m) => Ok(Some(FooterBytes::Local(m))),
            Data::Remote(r) => Ok(Some(FooterBytes::Cached(r.whole_footer(self.id, read)?))),
            Data::File(_) => Ok(None),
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
            Data::File(f) => f.size().unwrap_or(0),
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
        self.find_traced(team, session, &mut RemoteRead::default())
    }

    /// `find`, counting in `read` a footer it had to fetch from the bucket.
    pub fn find_traced(
        &self,
        team: u64,
        session: &str,
        read: &mut RemoteRead,
    ) -> Result<Vec<SessionEntry>> {
        match &self.index {
            Index::Footer(f) => {
                // The bloom filter first: a remote segment's footer is not fetched for nothing.
                if !f.bloom.may_contain(crate::format::key_hash(team, session)) {
                    return Ok(Vec::new());
                }
                match self.footer_bytes_traced(read)? {
                    Some(map) => f.find(&map, team, session).map_err(|e| self.corrupt(0, e)),
                    None => Ok(Vec::new()),
                }
            }
            Index::Memory(m) => Ok(m
                .read()
                .sessions
                .get(&(team, session.into()))
                .cloned()
                .unwrap_or_default()),
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
        match (&self.index, self.footer_bytes()?) {
            (Index::Footer(ft), Some(map)) => {
                for i in ft.team_range(&map, team) {
                    if person_hash.is_some_and(|h| ft.person_hash(&map, i) != h) {
                        continue;
                    }
                    let e = ft.entry(&map, i).map_err(|e| self.corrupt(0, e))?;
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
        match (&self.index, self.footer_bytes()?) {
            (Index::Footer(ft), Some(map)) => {
                for i in ft.team_range(&map, team) {
                    if person_hashes.contains(&ft.person_hash(&map, i)) {
                        f(ft.entry(&map, i).map_err(|e| self.corrupt(0, e))?);
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
        let bytes = match self.footer_bytes() {
            Ok(b) => b,
            Err(e) => {
                log::error!("segment {}: footer unavailable, keys skipped: {e}", self.id);
                None
            }
        };
        match (&self.index, bytes) {
            (Index::Footer(f), Some(map)) => {
                Box::new((0..f.session_count).map(move |i| f.key(&map, i)))
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
        let bytes = match self.footer_bytes() {
            Ok(b) => b,
            Err(e) => return vec![Err(format!("footer unavailable: {e}"))],
        };
        match (&self.index, bytes) {
            (Index::Footer(f), Some(map)) => (0..f.session_count)
                .map(|i| {
                    f.entry(&map, i)
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

    /// Walks the blocks of a whole segment's bytes, from the header to `end` (the footer).
    fn walk_blocks(&self, bytes: &[u8], end: u64, f: &mut BlockVisitor) -> Result<()> {
        for b in crate::format::blocks(bytes, end as usize) {
            let (at, h, block) = b.map_err(|(at, e)| self.corrupt(at as u64, e))?;
            f(at as u64, block, &h)?;
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

pub(crate) fn corrupt(segment: u64, path: &Path, offset: u64, e: DecodeError) -> Error {
    Error::Corrupt {
        segment,
        path: path.to_path_buf(),
        offset,
        reason: e.0,
    }
}
