//! The read API: one session's chunks, session listings, and store-wide statistics.
//!
//! Readers take a snapshot of the segment list (a vector of `Arc`s) and release the lock before
//! any I/O, so a flush, seal or compaction never waits for them nor they for it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;
use xxhash_rust::xxh3::Xxh3Builder;

use crate::annotation::{merge_parts, Annotation, Annotator};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::footer::{FooterTotals, SEGMENT_REGROUPED};
use crate::format::{BlockHeader, BlockRef, DecodeError, SessionEntry};
use crate::retention::cutoff;
use crate::seek::{self, Plan, ReadTrace, StartAt};
use crate::segment::{corrupt, read_blocks_many, DecodedBlock, RemoteRead, Segment};
use crate::segment_set::SegmentSet;
use crate::tombstone::Tombstones;

/// What the store knows of one session without reading its payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    pub team: u64,
    pub session_id: String,
    pub person: String,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub chunk_count: u64,
    /// Payload bytes as appended.
    pub raw_bytes: u64,
    /// Bytes its blocks take on disk (headers, compressed payloads, checksums).
    pub stored_bytes: u64,
    /// last_ts_ms - first_ts_ms.
    pub duration_ms: i64,
    /// The annotator's bytes for the session (its parts merged), opaque to the engine: the
    /// annotator's crate decodes them (for recordings, `replaystore_posthog::summary`). `None`
    /// when no part is annotated, or when several are and no annotator is configured to merge
    /// them (docs/design.md, "Annotations").
    #[serde(skip)]
    pub annotation: Option<Vec<u8>>,
}

impl SessionSummary {
    fn from_entry(e: &SessionEntry) -> Self {
        Self::new(e.team, &e.session, &e.person, e.first_ts, e.last_ts)
    }

    /// Starts an empty summary before the blocks of a read are added.
    fn empty(team: u64, session_id: &str, h: &BlockHeader) -> Self {
        Self::new(team, session_id, &h.person, i64::MAX, i64::MIN)
    }

    fn new(team: u64, session_id: &str, person: &str, first_ts_ms: i64, last_ts_ms: i64) -> Self {
        SessionSummary {
            team,
            session_id: session_id.to_string(),
            person: person.to_string(),
            first_ts_ms,
            last_ts_ms,
            chunk_count: 0,
            raw_bytes: 0,
            stored_bytes: 0,
            duration_ms: 0,
            annotation: None,
        }
    }

    /// Fills the derived fields once the parts are known: the duration, and the annotation
    /// (the parts' annotations merged).
    fn finish(&mut self, parts: Vec<Annotation>, annotator: Option<&dyn Annotator>) {
        self.duration_ms = self.last_ts_ms - self.first_ts_ms;
        self.annotation = merge_parts(annotator, parts).map(|a| a.bytes);
    }

    /// Adds one block's visible chunks. The session's person is the one it started under.
    fn add_block(&mut self, h: &BlockHeader, block_len: u64, visible: &[OrderedChunk]) {
        let first = visible
            .iter()
            .map(|c| c.chunk.first_ts_ms)
            .min()
            .unwrap_or(h.first_ts);
        if first < self.first_ts_ms {
            self.person = h.person.clone();
            self.first_ts_ms = first;
        }
        for c in visible.iter().map(|c| &c.chunk) {
            self.last_ts_ms = self.last_ts_ms.max(c.last_ts_ms);
            self.raw_bytes += c.payload.len() as u64;
        }
        self.chunk_count += visible.len() as u64;
        self.stored_bytes += block_len;
    }

    /// Adds one segment's record. The session's person is the one it started under.
    fn merge(&mut self, e: &SessionEntry) {
        if e.first_ts < self.first_ts_ms {
            self.person = e.person.clone();
        }
        self.first_ts_ms = self.first_ts_ms.min(e.first_ts);
        self.last_ts_ms = self.last_ts_ms.max(e.last_ts);
        self.chunk_count += e.chunk_count as u64;
        self.raw_bytes += e.raw_bytes;
        self.stored_bytes += e.stored_bytes;
    }
}

/// One stored chunk, payload bit-exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChunk {
    pub window_id: Option<String>,
    /// The SDK's timestamps, after the store's clock-skew correction.
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// When the store accepted the chunk, by its own clock (for data written before format 2:
    /// its segment's creation time).
    pub arrival_ms: i64,
    /// When the chunk holds a keyframe (a point playback can start from, as the store's
    /// `Annotator::keyframe` said when it was written), the time of its first one.
    pub keyframe_ms: Option<i64>,
    pub payload: Vec<u8>,
}

/// A whole session: its summary and its chunks in timestamp order (append order for ties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    pub summary: SessionSummary,
    pub chunks: Vec<StoredChunk>,
}

/// A read from a point in time (`Store::read_session_from`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeekRead {
    /// The chunks from the keyframe on (all of them when `keyframe_ms` is `None`), with a
    /// summary of exactly those; `None` when no chunk of the session is visible.
    pub data: Option<SessionData>,
    /// The time of the keyframe the read starts at: the first chunk holds it. `None`: no
    /// keyframe at or before the time asked for (or none recorded), so the whole session.
    pub keyframe_ms: Option<i64>,
    pub trace: ReadTrace,
}

/// A session being listed: its summary so far, and its parts' annotations. Listings and the
/// session index add a session's records in the same order (segment id, then the segment's
/// order), so both merge the same parts into the same summary.
pub(crate) struct Listed {
    summary: SessionSummary,
    parts: Vec<Annotation>,
}

impl Listed {
    pub fn new(first: SessionEntry) -> Self {
        let mut l = Listed {
            summary: SessionSummary::from_entry(&first),
            parts: Vec::new(),
        };
        l.add(first);
        l
    }

    /// Adds one more record of the session.
    pub fn add(&mut self, e: SessionEntry) {
        self.summary.merge(&e);
        self.parts.extend(e.annotations);
    }

    pub fn finish(mut self, annotator: Option<&dyn Annotator>) -> SessionSummary {
        self.summary.finish(self.parts, annotator);
        self.summary
    }
}

/// Whether a listing leaves out record `e` of a segment whose retention cutoff is `cut`: past
/// retention (by arrival), or hidden by a pending deletion.
pub(crate) fn hidden(tombstones: &Tombstones, e: &SessionEntry, cut: i64) -> bool {
    let arrival = e.arrival();
    arrival.last_ms < cut
        || tombstones.session_deleted(e.team, &e.session)
        || tombstones
            .person_deleted_at(e.team, &e.person)
            .is_some_and(|at| arrival.first_ms <= at)
}

/// Store-wide figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub sessions: u64,
    pub chunks: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// raw_bytes / stored_bytes.
    pub ratio: f64,
    /// bytes_on_disk / sessions: what one session costs, footers and headers included.
    /// Stored bytes (local and remote) per distinct session.
    pub bytes_per_session: f64,
    pub segments: u64,
    pub sealed_segments: u64,
    /// Bytes of local segment files.
    pub bytes_on_disk: u64,
    /// Segments held only in object storage, and their bytes there.
    pub remote_segments: u64,
    pub bytes_remote: u64,
    /// Bytes (local and remote) of segments not written by regrouping: the hot copy, as
    /// flushed (or rewritten by compaction).
    pub bytes_hot: u64,
    /// Bytes of segments written by regrouping: the cold copy.
    pub bytes_regrouped: u64,
    /// The regroup backlog: hot bytes that regrouping will take (local segments, regrouping
    /// on), due now or once idle. Bounded over time only if regrouping keeps up with ingest.
    pub regroup_backlog_bytes: u64,
    /// Of the backlog, the bytes due now (`Config::regroup_due_before`).
    pub regroup_due_bytes: u64,
    pub buffered_bytes: u64,
    /// Heap bytes the index keeps in RAM (bloom filters of sealed segments, maps of active ones).
    pub index_heap_bytes: u64,
    /// Heap bytes of the session index (its entries, their strings, facets and annotations).
    pub session_index_heap_bytes: u64,
    pub flush_rounds: u64,
    pub fsyncs: u64,
    /// Segments sealed since open (full, old, or before compaction or a copy).
    pub segments_sealed: u64,
    /// Sealed segments unlinked by retention since open.
    pub segments_expired: u64,
    /// Chunks refused by `append` because their session or person was deleted.
    pub chunks_refused_deleted: u64,
    /// Chunks refused by `append` for an untrustworthy SDK timestamp (`Error::Timestamp`).
    pub chunks_refused_timestamp: u64,
    /// Chunks whose timestamps were shifted to correct their client's clock skew.
    pub chunks_clock_corrected: u64,
}

/// What the read API works on; `Store` lends it for each call.
pub(crate) struct Reader<'a> {
    pub segments: &'a SegmentSet,
    pub tombstones: &'a RwLock<Tombstones>,
    pub config: &'a Config,
    pub fs: &'a crate::fs::Fs,
}

impl Reader<'_> {
    fn snapshot(&self) -> Vec<Arc<Segment>> {
        self.segments.current().segments().to_vec()
    }

    /// See `Store::read_session_traced`.
    pub(crate) fn read_session_traced(
        &self,
        team: u64,
        session_id: &str,
    ) -> Result<(Option<SessionData>, RemoteRead)> {
        let read = self.read_session_from(team, session_id, None)?;
        Ok((read.data, read.trace.remote))
    }

    /// See `Store::read_session_from`; `None`: a whole read.
    pub(crate) fn read_session_from(
        &self,
        team: u64,
        session_id: &str,
        from_ms: Option<i64>,
    ) -> Result<SeekRead> {
        let mut trace = ReadTrace::default();
        let tombstones = self.tombstones.read();
        if tombstones.session_deleted(team, session_id) {
            return Ok(SeekRead::default());
        }
        let now = self.config.parts.clock.now_ms();
        // First the index: every wanted block of every segment (from the keyframe on, with
        // one). Then one fetch of all of them (the remote segments' range GETs all at once),
        // then the blocks in segment order.
        let segments = self.snapshot();
        let key = (team, session_id);
        let plan = seek::plan(&segments, &tombstones, key, now, from_ms, &mut trace.remote)?;
        let items: Vec<(&Segment, &[BlockRef])> = plan
            .wanted
            .iter()
            .map(|w| (w.seg.as_ref(), w.refs.as_slice()))
            .collect();
        let fetched = read_blocks_many(&items, &mut trace.remote)?;
        trace.blocks_skipped = plan.skipped;
        let mut session = SessionRead::new(team, session_id);
        session.from = plan.start.and_then(|s| start_key(&plan, &fetched, s));
        for (w, blocks) in plan.wanted.iter().zip(fetched) {
            for (i, (h, payloads)) in blocks.into_iter().enumerate() {
                trace.blocks_read += 1;
                trace.bytes_decompressed += h.raw_len as u64;
                session.add_block(&w.seg, w.refs[i], w.cut, w.deleted(i), h, payloads)?;
            }
        }
        if plan.start.is_some() && !session.starts_at_from() {
            // The keyframe's own chunk is not visible (past retention chunk by chunk), or not
            // in its block: the suffix would not start at a keyframe, so read the whole
            // session instead.
            drop(tombstones);
            return self.read_session_from(team, session_id, None);
        }
        let keyframe_ms = plan
            .start
            .filter(|_| session.from.is_some())
            .map(|s| s.ts_ms);
        let annotator = self.config.parts.annotator.as_deref();
        let data = session.finish(annotator);
        Ok(SeekRead {
            data,
            keyframe_ms,
            trace,
        })
    }

    /// Every visible session of `team` (of `person` only, when given), unsorted: what
    /// `Store::list_page` filters and pages.
    pub(crate) fn list_sessions(
        &self,
        team: u64,
        person: Option<&str>,
    ) -> Result<Vec<SessionSummary>> {
        let tombstones = self.tombstones.read();
        let now = self.config.parts.clock.now_ms();
        // xxh3 rather than SipHash: the map sees every record of the team.
        let mut by_id: HashMap<String, Listed, Xxh3Builder> =
            HashMap::with_hasher(Xxh3Builder::new());
        for seg in self.snapshot() {
            let cut = cutoff(seg.lane_days, now);
            if seg.totals().max_arrival_ms < cut {
                continue;
            }
            seg.for_each_session(team, person, &mut |e| {
                if hidden(&tombstones, &e, cut) {
                    return;
                }
                match by_id.get_mut(&e.session) {
                    Some(listed) => listed.add(e),
                    None => {
                        by_id.insert(e.session.clone(), Listed::new(e));
                    }
                }
            })?;
        }
        let annotator = self.config.parts.annotator.as_deref();
        let all = by_id.into_values().map(|l| l.finish(annotator)).collect();
        Ok(all)
    }

    /// The segment figures of `Store::stats`, added to `st` (which holds the counters).
    pub(crate) fn stats(&self, mut st: Stats) -> Result<Stats> {
        let segs = self.snapshot();
        let due_before = self
            .config
            .regroup_due_before(self.config.parts.clock.now_ms());
        st.segments = segs.len() as u64;
        for s in &segs {
            let t = s.totals();
            st.chunks += t.chunk_count;
            st.raw_bytes += t.raw_bytes;
            st.stored_bytes += t.stored_bytes;
            st.sealed_segments += s.is_sealed() as u64;
            st.index_heap_bytes += s.index_heap_bytes() as u64;
            let bytes = if s.is_remote() {
                st.remote_segments += 1;
                st.bytes_remote += s.size();
                s.size()
            } else {
                let len = match self.fs.size(&s.path) {
                    Ok(len) => len,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(Error::io(format!("stat {}", s.path.display()), e)),
                };
                st.bytes_on_disk += len;
                len
            };
            regroup_figures(&mut st, s, t, bytes, due_before);
        }
        st.sessions = count_distinct(&segs);
        if st.stored_bytes > 0 {
            st.ratio = st.raw_bytes as f64 / st.stored_bytes as f64;
        }
        if st.sessions > 0 {
            st.bytes_per_session = (st.bytes_on_disk + st.bytes_remote) as f64 / st.sessions as f64;
        }
        Ok(st)
    }
}

/// Adds one segment of `bytes` bytes to the hot / regrouped split and the regroup backlog
/// (what `Compactor::regroup_jobs` takes: local segments not regrouped, once idle).
fn regroup_figures(st: &mut Stats, s: &Segment, t: FooterTotals, bytes: u64, due: Option<i64>) {
    if t.flags & SEGMENT_REGROUPED != 0 {
        st.bytes_regrouped += bytes;
        return;
    }
    st.bytes_hot += bytes;
    if let (Some(due), false) = (due, s.is_remote()) {
        st.regroup_backlog_bytes += bytes;
        if t.max_arrival_ms <= due {
            st.regroup_due_bytes += bytes;
        }
    }
}

/// Where a chunk goes in playback order: timestamp order, append order for ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PlaybackKey {
    first_ts: i64,
    /// The flush round that wrote its block.
    seq: u64,
    /// Its position in the block.
    index: usize,
}

/// A chunk read back, with its place in playback order.
struct OrderedChunk {
    key: PlaybackKey,
    chunk: StoredChunk,
}

/// One session being read: its visible chunks and summary so far.
struct SessionRead<'a> {
    team: u64,
    session_id: &'a str,
    summary: Option<SessionSummary>,
    /// The annotations of the blocks read.
    parts: Vec<Annotation>,
    chunks: Vec<OrderedChunk>,
    /// (seq, crc) of blocks read: a block retried after a failed flush is returned once.
    seen: std::collections::HashSet<(u64, u32)>,
    /// The keyframe chunk's place, for a read from it: chunks before it are left out.
    from: Option<PlaybackKey>,
}

impl<'a> SessionRead<'a> {
    fn new(team: u64, session_id: &'a str) -> Self {
        SessionRead {
            team,
            session_id,
            summary: None,
            parts: Vec::new(),
            chunks: Vec::new(),
            seen: std::collections::HashSet::new(),
            from: None,
        }
    }

    /// Whether the first chunk in playback order is the keyframe chunk the read started at.
    fn starts_at_from(&self) -> bool {
        self.from.is_some() && self.chunks.iter().map(|c| c.key).min() == self.from
    }

    /// Adds the chunks of one block, unless a deletion covers it or it was seen already, that
    /// arrived after `cut` (retention by arrival, chunk by chunk).
    fn add_block(
        &mut self,
        seg: &Segment,
        r: BlockRef,
        cut: i64,
        covered: bool,
        h: BlockHeader,
        payloads: Vec<Vec<u8>>,
    ) -> Result<()> {
        if h.team != self.team || h.session != self.session_id {
            let why = DecodeError::new("block belongs to another session");
            return Err(corrupt(seg.id, &seg.path, r.offset, why));
        }
        if !self.seen.insert((h.seq, h.crc)) || covered {
            return Ok(());
        }
        let before = self.chunks.len();
        for (index, (c, payload)) in h.chunks.iter().zip(payloads).enumerate() {
            let chunk = StoredChunk {
                window_id: c.window.and_then(|w| h.windows.get(w as usize).cloned()),
                first_ts_ms: c.first_ts,
                last_ts_ms: c.last_ts,
                arrival_ms: c.arrival_ms.unwrap_or(seg.created_ms),
                keyframe_ms: h.keyframe_of(index),
                payload,
            };
            let key = PlaybackKey {
                first_ts: c.first_ts,
                seq: h.seq,
                index,
            };
            if chunk.arrival_ms >= cut && self.from.is_none_or(|f| key >= f) {
                self.chunks.push(OrderedChunk { key, chunk });
            }
        }
        if self.chunks.len() == before {
            return Ok(());
        }
        let (team, id) = (self.team, self.session_id);
        let s = self
            .summary
            .get_or_insert_with(|| SessionSummary::empty(team, id, &h));
        s.add_block(&h, r.len as u64, &self.chunks[before..]);
        if let Some(bytes) = h.annotation {
            let first_ts_ms = h.first_ts;
            self.parts.push(Annotation { first_ts_ms, bytes });
        }
        Ok(())
    }

    /// The session in playback order; `None` when no chunk of it is visible.
    fn finish(mut self, annotator: Option<&dyn Annotator>) -> Option<SessionData> {
        let mut summary = self.summary?;
        summary.finish(self.parts, annotator);
        self.chunks.sort_by_key(|c| c.key);
        let chunks = self.chunks.into_iter().map(|c| c.chunk).collect();
        Some(SessionData { summary, chunks })
    }
}

/// The playback key of the keyframe chunk a read starts at, from its block as fetched.
fn start_key(plan: &Plan, fetched: &[Vec<DecodedBlock>], s: StartAt) -> Option<PlaybackKey> {
    let refs = &plan.wanted.get(s.wanted)?.refs;
    let i = refs.iter().position(|r| r.offset == s.offset)?;
    let (h, _) = fetched.get(s.wanted)?.get(i)?;
    Some(PlaybackKey {
        first_ts: h.chunks.get(s.chunk)?.first_ts,
        seq: h.seq,
        index: s.chunk,
    })
}

/// Distinct (team, session hash) keys over all segments: a k-way merge of sorted key streams.
fn count_distinct(segs: &[Arc<Segment>]) -> u64 {
    let mut iters: Vec<Box<dyn Iterator<Item = (u64, u64)> + '_>> =
        segs.iter().map(|s| s.sorted_keys()).collect();
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(k) = it.next() {
            heap.push(Reverse((k, i)));
        }
    }
    let (mut count, mut last) = (0u64, None);
    while let Some(Reverse((k, i))) = heap.pop() {
        if last != Some(k) {
            count += 1;
            last = Some(k);
        }
        if let Some(n) = iters[i].next() {
            heap.push(Reverse((n, i)));
        }
    }
    count
}
