//! `SessionIndex`: per team, one compact entry per session (its records in every segment
//! merged, with the annotator's facets), so that a listing page walks the team's entries
//! instead of every footer record (docs/design.md, "The session index").
//!
//! Derived data: footers and active segments' indexes stay the source of truth. The index
//! follows the segment set (`SetObserver`: every `SegmentSet::apply` and every publication of
//! blocks to an active segment), is checkpointed to `sessions.idx` (format/session_index.rs)
//! by the maintenance thread and at close, and at open is loaded and brought up to date with
//! the segments found (added, removed or changed since the checkpoint), or rebuilt from them
//! when the file is missing or fails its checks.

mod build;
mod page;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use xxhash_rust::xxh3::Xxh3Builder;

use crate::annotation::Annotator;
use crate::error::Result;
use crate::format::session_index::{self as file, CoveredSegment, IndexEntry};
use crate::fs::Fs;
use crate::segment::Segment;
use crate::segment_set::{SegmentSet, SetObserver};

pub(crate) use page::PageQuery;

const FILE: &str = "sessions.idx";
const TMP: &str = "sessions.idx.tmp";

/// What opening the session index found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionIndexReport {
    /// Sessions read from `sessions.idx`.
    pub loaded_sessions: u64,
    /// Why the file was not used (missing, failed its checks, another annotator's), if so.
    pub rebuilt_because: Option<String>,
    /// Segments found that the file did not cover (or covered as they were no more), and
    /// segments it covered that are gone.
    pub segments_added: u64,
    pub segments_removed: u64,
    /// Sessions whose entries were computed again from their records.
    pub sessions_recomputed: u64,
    /// Time to load, bring up to date and write the file back.
    pub open_ms: f64,
}

/// A segment as the entries last saw it: an active one by identity (its publications reach
/// the index as they happen), a sealed one also by its fingerprint (it never changes).
struct Covered {
    fingerprint: CoveredSegment,
    segment: Option<Arc<Segment>>,
}

impl Covered {
    fn of(seg: &Arc<Segment>) -> Covered {
        Covered {
            fingerprint: fingerprint(seg),
            segment: Some(seg.clone()),
        }
    }

    fn still(&self, seg: &Arc<Segment>) -> bool {
        self.segment.as_ref().is_some_and(|s| Arc::ptr_eq(s, seg))
            || (self.fingerprint.sealed && seg.is_sealed() && self.fingerprint == fingerprint(seg))
    }
}

fn fingerprint(seg: &Segment) -> CoveredSegment {
    CoveredSegment {
        id: seg.id,
        created_ms: seg.created_ms,
        size: seg.size(),
        sealed: seg.is_sealed(),
    }
}

type Sessions = HashMap<Box<str>, IndexEntry, Xxh3Builder>;

/// The index proper, behind `SessionIndex::state`.
#[derive(Default)]
struct State {
    teams: HashMap<u64, Sessions>,
    covered: BTreeMap<u64, Covered>,
    /// Bumped whenever the covered segments change: what a checkpoint is worth writing for.
    generation: u64,
}

/// The component: its state behind its own lock (taken under the writers or maintenance lock
/// by the observer calls, and by listings under the tombstones' read lock; it holds only
/// leaves while held: the segment set's lock, active indexes, the footer cache).
pub(crate) struct SessionIndex {
    state: RwLock<State>,
    /// The generation last written to the file; held by one checkpoint at a time, never while
    /// waiting for `state`'s write lock.
    persisted: Mutex<u64>,
    fs: Fs,
    path: PathBuf,
    tmp: PathBuf,
    annotator: Option<Arc<dyn Annotator>>,
    report: SessionIndexReport,
}

impl SessionIndex {
    /// Loads `sessions.idx` from `dir` (a missing or damaged file is rebuilt from the
    /// segments), brings it up to date with `set` and writes it back if that changed anything.
    pub fn open(
        dir: &std::path::Path,
        fs: &Fs,
        annotator: Option<Arc<dyn Annotator>>,
        set: &SegmentSet,
    ) -> Result<SessionIndex> {
        let start = Instant::now();
        let (path, tmp) = (dir.join(FILE), dir.join(TMP));
        fs.remove_quietly(&tmp);
        let name = annotator.as_ref().map_or("", |a| a.name());
        let mut report = SessionIndexReport::default();
        let mut state = match load(fs, &path, name) {
            Ok(state) => state,
            Err(why) => {
                log::info!("session index {}: {why}; rebuilt", path.display());
                report.rebuilt_because = Some(why);
                State::default()
            }
        };
        report.loaded_sessions = state.teams.values().map(|t| t.len() as u64).sum();
        let ann = annotator.as_deref();
        let done = build::refresh(&mut state, &set.current(), ann);
        report.segments_added = done.added;
        report.segments_removed = done.removed;
        report.sessions_recomputed = done.sessions;
        let index = SessionIndex {
            // A file that was not used is written whatever the refresh did.
            persisted: Mutex::new(if report.rebuilt_because.is_some() {
                u64::MAX
            } else {
                0
            }),
            state: RwLock::new(state),
            fs: fs.clone(),
            path,
            tmp,
            annotator,
            report,
        };
        index.checkpoint()?;
        let mut index = index;
        index.report.open_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(index)
    }

    pub fn report(&self) -> &SessionIndexReport {
        &self.report
    }

    /// Heap bytes of the entries (an estimate: the entries, their strings, facets and
    /// annotations, and the maps' slots).
    pub fn heap_bytes(&self) -> u64 {
        let st = self.state.read();
        st.teams
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, e)| build::heap_bytes(k, e) as u64)
            .sum()
    }

    /// Writes the index to its file (temp file, fsync, rename, directory fsync) if the segments
    /// it covers changed since the last write; returns whether it wrote. Encoded under the
    /// read lock, written after releasing it.
    pub fn checkpoint(&self) -> Result<bool> {
        let mut persisted = self.persisted.lock();
        let (bytes, generation) = {
            let st = self.state.read();
            if st.generation == *persisted {
                return Ok(false);
            }
            let name = self.annotator.as_ref().map_or("", |a| a.name());
            (encode(&st, name), st.generation)
        };
        self.fs.replace_file(&self.path, &self.tmp, &[&bytes])?;
        *persisted = generation;
        Ok(true)
    }
}

/// The file's state, or why it cannot be used.
fn load(fs: &Fs, path: &std::path::Path, annotator: &str) -> std::result::Result<State, String> {
    let bytes = match fs.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let f = file::decode(&bytes).map_err(|e| format!("damaged: {e}"))?;
    if f.annotator != annotator {
        return Err(format!("made with annotator {:?}", f.annotator));
    }
    let mut st = State::default();
    for s in f.segments {
        let covered = Covered {
            fingerprint: s,
            segment: None,
        };
        st.covered.insert(s.id, covered);
    }
    for (team, session, e) in f.entries {
        st.teams.entry(team).or_default().insert(session, e);
    }
    Ok(st)
}

fn encode(st: &State, annotator: &str) -> Vec<u8> {
    let segments: Vec<CoveredSegment> = st.covered.values().map(|c| c.fingerprint).collect();
    let count = st.teams.values().map(|t| t.len() as u64).sum();
    let mut out = file::encode_head(annotator, &segments, count);
    for (team, sessions) in &st.teams {
        for (id, e) in sessions {
            file::encode_entry(&mut out, *team, id, e);
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

impl SetObserver for SessionIndex {
    fn applied(&self, set: &SegmentSet) {
        let version = set.current();
        let mut st = self.state.write();
        build::refresh(&mut st, &version, self.annotator.as_deref());
    }

    fn published(&self, set: &SegmentSet, id: u64, sessions: &[(u64, &str)]) {
        let version = set.current();
        let mut st = self.state.write();
        let ann = self.annotator.as_deref();
        build::refresh(&mut st, &version, ann);
        if version.contains(id) {
            build::recompute(&mut st, &version, ann, id, sessions);
        }
    }
}
