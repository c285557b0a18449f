//! A segment file at run time: its bytes (a read-only mmap once sealed, the file otherwise) and
//! its session index (the footer once sealed, an in-memory map while active or when the footer
//! could not be trusted), or, for a segment held in object storage, its key and its footer
//! cache (`remote`). `scan` rebuilds an index from the blocks; `mem_index` is that index.

mod mem_index;
mod remote;
mod scan;

pub(crate) use mem_index::MemIndex;
pub use remote::RemoteRead;
pub(crate) use remote::{
    encode_meta, read_blocks_many, DecodedBlock, FooterBytes, ObjectRanges, ObjectSource,
    RemoteData, WholeBytes,
};
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

/// What a segment is, and so how it is read: each state holds exactly what reading it needs
/// (there is no "sealed without its bytes" nor "remote with an in-memory index").
enum State {
    /// Sealed, local: the read-only mapping, and the footer parsed from it.
    Sealed {
        map: Mapped,
        footer: Box<FooterView>,
    },
    /// Indexed in memory (the active segment, or one whose footer failed its checks): blocks
    /// are read through the file.
    Indexed {
        file: FileHandle,
        index: Arc<RwLock<MemIndex>>,
    },
    /// Sealed, in object storage only: blocks are fetched by byte range, the whole footer
    /// comes from the local cache (fetched on a miss); its fixed part and bloom stay in RAM.
    Remote {
        data: Box<RemoteData>,
        footer: Box<FooterView>,
    },
}

/// A segment's session index as a lookup sees it: a footer with the bytes its offsets point
/// into, or the in-memory map.
enum IndexView<'a> {
    Footer(&'a FooterView, FooterBytes<'a>),
    Memory(&'a RwLock<MemIndex>),
}

/// One segment file, shared by readers through an `Arc`. A reader holding an old `Arc` keeps
/// reading correctly after the store swaps in a sealed or compacted replacement.
pub(crate) struct Segment {
    pub id: u64,
    pub lane_days: u16,
    pub created_ms: i64,
    pub path: PathBuf,
    state: State,
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
            state: State::Sealed {
                map,
                footer: Box::new(footer),
            },
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
            state: State::Indexed { file, index },
        }
    }

    /// The session index, with the bytes a footer's offsets point into: the whole mapped file,
    /// or a remote segment's whole footer (from the bounded cache, fetched with one GET on a
    /// miss, counted in `read`).
    fn index_view(&self, read: &mut RemoteRead) -> Result<IndexView<'_>> {
        Ok(match &self.state {
            State::Sealed { map, footer } => IndexView::Footer(footer, FooterBytes::Local(map)),
            State::Remote { data, footer } => IndexView::Footer(
                footer,
                FooterBytes::Cached(data.whole_footer(self.id, read)?),
            ),
            State::Indexed { index, .. } => IndexView::Memory(index),
        })
    }

    /// In object storage only (no local copy).
    pub fn is_remote(&self) -> bool {
        matches!(self.state, State::Remote { .. })
    }

    /// The segment's size in bytes (local file or object).
    pub fn size(&self) -> u64 {
        match &self.state {
            State::Sealed { map, .. } => map.len() as u64,
            State::Indexed { file, .. } => file.size().unwrap_or(0),
            State::Remote { data, .. } => data.size,
        }
    }

    /// The whole sealed file's bytes, when mapped locally (upload checksums, footer caches).
    pub fn mapped_bytes(&self) -> Option<&[u8]> {
        match &self.state {
            State::Sealed { map, .. } => Some(map),
            _ => None,
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.footer().is_some()
    }

    /// Time range and totals of what this segment holds.
    pub fn totals(&self) -> FooterTotals {
        match &self.state {
            State::Sealed { footer, .. } | State::Remote { footer, .. } => footer.totals,
            State::Indexed { index, .. } => index.read().totals,
        }
    }

    /// Heap bytes this segment's index keeps in RAM (for the memory report).
    pub fn index_heap_bytes(&self) -> usize {
        match &self.state {
            State::Sealed { footer: f, .. } | State::Remote { footer: f, .. } => {
                f.bloom.heap_bytes() + f.replaces.len() * 8
            }
            State::Indexed { index, .. } => {
                let m = index.read();
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
        // The bloom filter first: a remote segment's footer is not fetched for nothing.
        let h = crate::format::key_hash(team, session);
        if self.footer().is_some_and(|f| !f.bloom.may_contain(h)) {
            return Ok(Vec::new());
        }
        match self.index_view(read)? {
            IndexView::Footer(f, map) => {
                f.find(&map, team, session).map_err(|e| self.corrupt(0, e))
            }
            IndexView::Memory(m) => Ok(m
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
        match self.index_view(&mut RemoteRead::default())? {
            IndexView::Footer(ft, map) => {
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
            IndexView::Memory(m) => {
                for e in m.read().sessions.values().flatten() {
                    if e.team == team && person.is_none_or(|p| p == e.person) {
                        f(e.clone());
                    }
                }
            }
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
        match self.index_view(&mut RemoteRead::default())? {
            IndexView::Footer(ft, map) => {
                for i in ft.team_range(&map, team) {
                    if person_hashes.contains(&ft.person_hash(&map, i)) {
                        f(ft.entry(&map, i).map_err(|e| self.corrupt(0, e))?);
                    }
                }
            }
            IndexView::Memory(m) => {
                for e in m.read().sessions.values().flatten() {
                    if e.team == team
                        && person_hashes.contains(&crate::format::key_hash(team, &e.person))
                    {
                        f(e.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Every (team, session hash) key in sorted order; used to count distinct sessions across
    /// segments. Sealed segments stream them from the footer without allocating.
    pub fn sorted_keys(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        let view = match self.index_view(&mut RemoteRead::default()) {
            Ok(v) => v,
            Err(e) => {
                log::error!("segment {}: footer unavailable, keys skipped: {e}", self.id);
                return Box::new(std::iter::empty());
            }
        };
        match view {
            IndexView::Footer(f, map) => {
                Box::new((0..f.session_count).map(move |i| f.key(&map, i)))
            }
            IndexView::Memory(m) => {
                let mut keys: Vec<(u64, u64)> = m
                    .read()
                    .sessions
                    .keys()
                    .map(|(t, s)| (*t, crate::format::key_hash(*t, s)))
                    .collect();
                keys.sort_unstable();
                Box::new(keys.into_iter())
            }
        }
    }

    /// Every session record, from the footer (each verified) or the in-memory index; a record
    /// that fails its checks is returned as an error in its place.
    pub fn all_entries(&self) -> Vec<std::result::Result<SessionEntry, String>> {
        let view = match self.index_view(&mut RemoteRead::default()) {
            Ok(v) => v,
            Err(e) => return vec![Err(format!("footer unavailable: {e}"))],
        };
        match view {
            IndexView::Footer(f, map) => (0..f.session_count)
                .map(|i| {
                    f.entry(&map, i)
                        .map_err(|e| format!("session entry {i}: {}", e.0))
                })
                .collect(),
            IndexView::Memory(m) => m
                .read()
                .sessions
                .values()
                .flatten()
                .cloned()
                .map(Ok)
                .collect(),
        }
    }

    /// The footer, when sealed.
    pub fn footer(&self) -> Option<&FooterView> {
        match &self.state {
            State::Sealed { footer, .. } | State::Remote { footer, .. } => Some(footer),
            State::Indexed { .. } => None,
        }
    }

    /// Does this segment hold blocks of the session? (Bloom filter first when sealed.)
    pub fn contains(&self, team: u64, session: &str) -> Result<bool> {
        match &self.state {
            State::Indexed { index, .. } => {
                Ok(index.read().sessions.contains_key(&(team, session.into())))
            }
            _ => Ok(!self.find(team, session)?.is_empty()),
        }
    }

    /// Ids of the segments this one supersedes (written by compaction).
    pub fn replaces(&self) -> &[u64] {
        self.footer().map_or(&[], |f| &f.replaces)
    }

    /// Calls `f(offset, block bytes, header)` for every indexed block, in file order; the first block
    /// that fails its checks is an error. Sealed segments are walked sequentially through the
    /// mapping; in-memory-indexed ones (a footer that failed its checks) block by block.
    pub fn for_each_block(&self, f: &mut BlockVisitor) -> Result<()> {
        match &self.state {
            State::Sealed { map, footer } => self.walk_blocks(map, footer.offset, f),
            State::Remote { footer, .. } => {
                // A rewrite needs every block: one streamed GET into a scratch file.
                let whole = self.whole_bytes()?;
                self.walk_blocks(&whole.map, footer.offset, f)
            }
            State::Indexed { index, .. } => {
                let mut refs: Vec<BlockRef> = index
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
        match &self.state {
            State::Sealed { map, .. } => map
                .get(r.offset as usize..(r.offset as usize).saturating_add(r.len as usize))
                .map(std::borrow::Cow::Borrowed)
                .ok_or_else(|| self.corrupt(r.offset, DecodeError::new("block ref outside file"))),
            State::Indexed { file, .. } => {
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
            State::Remote { data: remote, .. } => {
                let range = r.offset..r.offset.saturating_add(r.len as u64);
                Ok(std::borrow::Cow::Owned(remote.block(range)?))
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
