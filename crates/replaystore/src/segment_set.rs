//! `SegmentSet`: the segments readers see, as immutable versions.
//!
//! A `Version` is a sorted list of segments (by id) and the ids of the active ones (one per lane
//! at most, each with a writer in the flush pipeline). Readers take the current version (one
//! `Arc` clone under a read lock) and never hold the lock during I/O; a segment that leaves the
//! set while a reader uses it stays valid for that reader through its `Arc`.
//!
//! Every change goes through `SegmentSet::apply(Edit)`, which builds the next version from the
//! current one and swaps it in whole (lsm-tree's `Version` and `VersionEdit`). Who edits what:
//! - the flush pipeline (under its writers lock) adds active segments, seals them (replaces one
//!   by its sealed version) and retires the writer of a segment made suspect by a failed write;
//! - maintenance (under the maintenance lock) adds compaction outputs, removes their sources
//!   and expired segments, and replaces a local segment by its remote twin.
//!
//! So sealed segments change only under the maintenance lock and active ones only under the
//! writers lock, which is why an edit planned from a version read earlier still applies.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use crate::segment::Segment;

/// One immutable state of the segment list.
#[derive(Default)]
pub(crate) struct Version {
    /// Sorted by id, ids unique.
    segments: Vec<Arc<Segment>>,
    /// Segments with a writer (appends go to them): neither compacted nor uploaded.
    active: BTreeSet<u64>,
}

impl Version {
    pub fn segments(&self) -> &[Arc<Segment>] {
        &self.segments
    }

    pub fn get(&self, id: u64) -> Option<&Arc<Segment>> {
        self.position(id).map(|i| &self.segments[i])
    }

    pub fn contains(&self, id: u64) -> bool {
        self.position(id).is_some()
    }

    /// Whether appends go to segment `id` (the one question maintenance asks before touching
    /// a segment).
    pub fn is_active(&self, id: u64) -> bool {
        self.active.contains(&id)
    }

    /// The segments maintenance may rewrite, upload or drop: every one without a writer (sealed
    /// ones, and suspect ones a failed write left unsealed).
    pub fn inactive(&self) -> impl Iterator<Item = &Arc<Segment>> + '_ {
        self.segments.iter().filter(|s| !self.is_active(s.id))
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&id, |s| s.id).ok()
    }

    /// The invariants every version keeps (checked after each edit in debug builds).
    fn check(&self) {
        debug_assert!(
            self.segments.windows(2).all(|w| w[0].id < w[1].id),
            "segment ids sorted and unique"
        );
        debug_assert!(
            self.active.iter().all(|id| self.contains(*id)),
            "every active segment is in the set"
        );
        debug_assert!(
            {
                let mut lanes: Vec<u16> = self.active_segments().map(|s| s.lane_days).collect();
                let n = lanes.len();
                lanes.sort_unstable();
                lanes.dedup();
                lanes.len() == n
            },
            "at most one active segment per lane"
        );
    }

    fn active_segments(&self) -> impl Iterator<Item = &Arc<Segment>> + '_ {
        self.active.iter().filter_map(|id| self.get(*id))
    }
}

/// A change to the segment list, applied whole by `SegmentSet::apply`.
#[derive(Default)]
pub(crate) struct Edit {
    added: Vec<(Arc<Segment>, bool)>,
    replaced: Vec<Arc<Segment>>,
    removed: Vec<u64>,
    retired: Vec<u64>,
}

impl Edit {
    /// Adds a new segment (a compaction output, sealed).
    pub fn add(mut self, seg: Arc<Segment>) -> Self {
        self.added.push((seg, false));
        self
    }

    /// Adds a new segment that appends go to.
    pub fn add_active(mut self, seg: Arc<Segment>) -> Self {
        self.added.push((seg, true));
        self
    }

    /// Replaces the segment of the same id (its sealed version, its remote twin).
    pub fn replace(mut self, seg: Arc<Segment>) -> Self {
        self.replaced.push(seg);
        self
    }

    /// Removes an inactive segment (compacted or expired).
    pub fn remove(mut self, id: u64) -> Self {
        self.removed.push(id);
        self
    }

    /// Segment `id` gets no more appends (sealed, or suspect after a failed write).
    pub fn retire_writer(mut self, id: u64) -> Self {
        self.retired.push(id);
        self
    }

    /// Replaces an active segment by its sealed version.
    pub fn seal(self, sealed: Arc<Segment>) -> Self {
        let id = sealed.id;
        self.replace(sealed).retire_writer(id)
    }
}

/// What is told of every change readers can see (the session index): called outside the
/// set's lock, by the thread that made the change (under the writers or maintenance lock).
pub(crate) trait SetObserver: Send + Sync {
    /// `apply` swapped in a new version (read it with `set.current()`).
    fn applied(&self, set: &SegmentSet);
    /// Blocks of `sessions` (team, session id) became readable in segment `id`, an active
    /// one: its content changed without an edit.
    fn published(&self, set: &SegmentSet, id: u64, sessions: &[(u64, &str)]);
}

/// The current version, swapped whole by `apply`; and the segment id allocator.
pub(crate) struct SegmentSet {
    current: RwLock<Arc<Version>>,
    next_id: AtomicU64,
    /// Set once at open, after the index was built from the first version.
    observer: OnceLock<Arc<dyn SetObserver>>,
}

impl SegmentSet {
    /// The set found at open: `segments` (any order), of which `active` have writers.
    pub fn new(mut segments: Vec<Arc<Segment>>, active: &[u64], next_id: u64) -> SegmentSet {
        segments.sort_by_key(|s| s.id);
        assert!(
            segments.iter().all(|s| s.id < next_id),
            "segment ids below the next id"
        );
        let v = Version {
            segments,
            active: active.iter().copied().collect(),
        };
        v.check();
        SegmentSet {
            current: RwLock::new(Arc::new(v)),
            next_id: AtomicU64::new(next_id),
            observer: OnceLock::new(),
        }
    }

    /// The current version. Cheap (one `Arc` clone); hold it as long as needed.
    pub fn current(&self) -> Arc<Version> {
        self.current.read().clone()
    }

    /// A fresh segment id, never used before in this store.
    pub fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::AcqRel)
    }

    /// Applies `edit` and makes the result the current version. An edit that breaks the
    /// invariants (an id added twice, a replaced or removed segment that is not there, an
    /// active segment removed) is a bug in the caller: it panics and the version is unchanged.
    pub fn apply(&self, edit: Edit) {
        {
            let mut current = self.current.write();
            let next = next_version(&current, edit, self.next_id.load(Ordering::Acquire));
            next.check();
            *current = Arc::new(next);
        }
        // Outside the lock (a leaf): the observer reads `current()` itself, so that observers
        // called out of order by two threads still end at the newest version.
        if let Some(o) = self.observer.get() {
            o.applied(self);
        }
    }

    /// From now on `observer` is told of every edit and publication. Once only.
    pub fn observe(&self, observer: Arc<dyn SetObserver>) {
        if self.observer.set(observer).is_err() {
            log::error!("segment set already observed");
        }
    }

    /// Blocks of `sessions` became readable in active segment `id` (the flush round calls
    /// this after publishing them).
    pub fn published(&self, id: u64, sessions: &[(u64, &str)]) {
        if let Some(o) = self.observer.get() {
            o.published(self, id, sessions);
        }
    }
}

fn next_version(v: &Version, edit: Edit, next_id: u64) -> Version {
    let mut segments = v.segments.clone();
    let mut active = v.active.clone();
    for id in &edit.removed {
        assert!(!active.contains(id), "segment {id} removed while active");
        let i = segments.binary_search_by_key(id, |s| s.id);
        let i = i.unwrap_or_else(|_| panic!("segment {id} removed but not in the set"));
        segments.remove(i);
    }
    for seg in edit.replaced {
        let i = segments.binary_search_by_key(&seg.id, |s| s.id);
        let i = i.unwrap_or_else(|_| panic!("segment {} replaced but not in the set", seg.id));
        segments[i] = seg;
    }
    for id in &edit.retired {
        assert!(active.remove(id), "segment {id} retired but not active");
    }
    for (seg, is_active) in edit.added {
        assert!(seg.id < next_id, "segment {} not allocated", seg.id);
        match segments.binary_search_by_key(&seg.id, |s| s.id) {
            Ok(_) => panic!("segment {} added twice", seg.id),
            Err(i) => {
                if is_active {
                    active.insert(seg.id);
                }
                segments.insert(i, seg);
            }
        }
    }
    Version { segments, active }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SegmentHeader;
    use crate::segment::{MemIndex, Segment};

    fn seg(id: u64, lane_days: u16) -> Arc<Segment> {
        let header = SegmentHeader {
            lane_days,
            segment_id: id,
            created_ms: 0,
        };
        let file: Arc<dyn crate::storage::StorageFile> = {
            use crate::storage::{OpenMode, Storage};
            let sim = crate::storage::SimStorage::new();
            let path = std::path::PathBuf::from(format!("/{id}.seg"));
            sim.open(&path, OpenMode::CreateTruncate)
                .expect("simulated file")
        };
        let index = Arc::new(parking_lot::RwLock::new(MemIndex::default()));
        let path = std::path::PathBuf::from(format!("{id}.seg"));
        Arc::new(Segment::in_memory(&path, header, file, index))
    }

    #[test]
    fn edits_build_new_versions_and_old_ones_stay() {
        let set = SegmentSet::new(vec![seg(2, 30), seg(1, 30)], &[2], 3);
        let before = set.current();
        let a = set.allocate_id();
        set.apply(Edit::default().add(seg(a, 30)).remove(1));
        let after = set.current();
        let ids: Vec<u64> = after.segments().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![2, 3]);
        assert!(after.is_active(2) && !after.is_active(3));
        assert_eq!(
            before.segments().len(),
            2,
            "a reader's version never changes"
        );
        set.apply(Edit::default().seal(seg(2, 30)));
        assert!(!set.current().is_active(2));
        assert_eq!(set.current().inactive().count(), 2);
    }

    #[test]
    #[should_panic(expected = "removed while active")]
    fn removing_an_active_segment_is_refused() {
        let set = SegmentSet::new(vec![seg(1, 30)], &[1], 2);
        set.apply(Edit::default().remove(1));
    }

    #[test]
    #[should_panic(expected = "added twice")]
    fn adding_an_id_twice_is_refused() {
        let set = SegmentSet::new(vec![seg(1, 30)], &[], 2);
        set.apply(Edit::default().add(seg(1, 30)));
    }

    #[test]
    #[should_panic(expected = "replaced but not in the set")]
    fn replacing_a_missing_segment_is_refused() {
        let set = SegmentSet::new(vec![seg(1, 30)], &[], 3);
        set.apply(Edit::default().replace(seg(2, 30)));
    }
}
