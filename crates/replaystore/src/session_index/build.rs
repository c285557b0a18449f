//! Computing entries from records, and keeping them in step with the segment set.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Covered, State};
use crate::annotation::Annotator;
use crate::format::session_index::IndexEntry;
use crate::format::SessionEntry;
use crate::read::Listed;
use crate::segment::Segment;
use crate::segment_set::Version;
use crate::units::DAY_MS;

/// What one refresh did.
#[derive(Debug, Default)]
pub(super) struct Refreshed {
    pub added: u64,
    pub removed: u64,
    pub sessions: u64,
}

/// A session's records, each with the id of its segment.
type Records = Vec<(u64, SessionEntry)>;

/// Brings `st` up to version `v`: segments gone (removed, or changed: an active segment
/// sealed, a file found different at open) take their sessions' entries with them, to be
/// computed again from what remains; segments new (or changed) add their records' sessions.
/// Every touched session is computed again from all its records, in segment order.
pub(super) fn refresh(st: &mut State, v: &Version, annotator: Option<&dyn Annotator>) -> Refreshed {
    let mut gone: HashSet<u64> = HashSet::new();
    let mut fresh: Vec<&Arc<Segment>> = Vec::new();
    for seg in v.segments() {
        match st.covered.get(&seg.id) {
            Some(c) if c.still(seg) => {}
            Some(_) => {
                gone.insert(seg.id);
                fresh.push(seg);
            }
            None => fresh.push(seg),
        }
    }
    let removed: Vec<u64> = st
        .covered
        .keys()
        .copied()
        .filter(|id| !v.contains(*id))
        .collect();
    gone.extend(&removed);
    if gone.is_empty() && fresh.is_empty() {
        return Refreshed::default();
    }
    let mut todo: HashMap<(u64, Box<str>), Records> = HashMap::new();
    for (team, sessions) in &st.teams {
        for (id, e) in sessions {
            if e.segments.iter().any(|s| gone.contains(s)) {
                todo.entry((*team, id.clone())).or_default();
            }
        }
    }
    for seg in &fresh {
        for r in seg.all_entries() {
            match r {
                Ok(r) => todo
                    .entry((r.team, r.session.as_str().into()))
                    .or_default()
                    .push((seg.id, r)),
                Err(why) => log::error!("session index: segment {}: {why}", seg.id),
            }
        }
    }
    let done = Refreshed {
        added: fresh.len() as u64,
        removed: removed.len() as u64,
        sessions: todo.len() as u64,
    };
    for ((team, id), mut recs) in todo {
        let kept: Vec<u64> = st
            .entry(team, &id)
            .map(|e| e.segments.iter().copied().filter(|s| !gone.contains(s)))
            .into_iter()
            .flatten()
            .collect();
        gather(v, team, &id, &kept, &mut recs);
        st.set(team, id, entry_of(recs, v, annotator));
    }
    st.covered = v
        .segments()
        .iter()
        .map(|s| (s.id, Covered::of(s)))
        .collect();
    st.generation += 1;
    done
}

/// Computes again the entries of `sessions`, which just got blocks in segment `id`.
pub(super) fn recompute(
    st: &mut State,
    v: &Version,
    annotator: Option<&dyn Annotator>,
    id: u64,
    sessions: &[(u64, &str)],
) {
    let mut seen = HashSet::new();
    for &(team, session) in sessions {
        if !seen.insert((team, session)) {
            continue;
        }
        let mut segs: Vec<u64> = st
            .entry(team, session)
            .map(|e| e.segments.to_vec())
            .unwrap_or_default();
        if !segs.contains(&id) {
            segs.push(id);
        }
        let mut recs = Vec::new();
        gather(v, team, session, &segs, &mut recs);
        st.set(team, session.into(), entry_of(recs, v, annotator));
    }
}

/// Adds the records of one session found in segments `ids` of `v` to `recs`, then orders them
/// by segment (stable: a segment's records keep their order), as a listing meets them.
fn gather(v: &Version, team: u64, session: &str, ids: &[u64], recs: &mut Records) {
    for &sid in ids {
        let Some(seg) = v.get(sid) else { continue };
        match seg.find(team, session) {
            Ok(found) => recs.extend(found.into_iter().map(|r| (sid, r))),
            Err(e) => log::error!("session index: segment {sid}: {e}"),
        }
    }
    recs.sort_by_key(|(sid, _)| *sid);
}

/// From when a listing hides a record of lane `lane_days` whose last chunk arrived at
/// `last_arrival_ms`: once `retention::cutoff` passes it.
fn hidden_at(last_arrival_ms: i64, lane_days: u16) -> i64 {
    last_arrival_ms
        .saturating_add(lane_days as i64 * DAY_MS)
        .saturating_add(1)
}

/// The entry of a session from all its records (in segment order), or `None` for none.
fn entry_of(recs: Records, v: &Version, annotator: Option<&dyn Annotator>) -> Option<IndexEntry> {
    let (mut hidden_from, mut all_hidden_from) = (i64::MAX, i64::MIN);
    let mut segments: Vec<u64> = Vec::new();
    let mut persons: Vec<Box<str>> = Vec::new();
    for (sid, r) in &recs {
        let lane = v.get(*sid).map_or(0, |s| s.lane_days);
        let at = hidden_at(r.arrival().last_ms, lane);
        hidden_from = hidden_from.min(at);
        all_hidden_from = all_hidden_from.max(at);
        if segments.last() != Some(sid) {
            segments.push(*sid);
        }
        if !persons.iter().any(|p| **p == *r.person) {
            persons.push(r.person.as_str().into());
        }
    }
    let mut records = recs.into_iter().map(|(_, r)| r);
    let mut listed = Listed::new(records.next()?);
    records.for_each(|r| listed.add(r));
    let s = listed.finish(annotator);
    persons.retain(|p| **p != *s.person);
    let facets = annotator
        .zip(s.annotation.as_deref())
        .map(|(a, bytes)| Box::new(a.facets(bytes)));
    Some(IndexEntry {
        first_ts: s.first_ts_ms,
        last_ts: s.last_ts_ms,
        chunk_count: s.chunk_count,
        raw_bytes: s.raw_bytes,
        stored_bytes: s.stored_bytes,
        hidden_from,
        all_hidden_from,
        person: s.person.into(),
        other_persons: persons.into(),
        segments: segments.into(),
        facets,
        annotation: s.annotation.map(Vec::into_boxed_slice),
    })
}

/// Heap bytes of one entry and its slot in the map (key, value, control byte).
pub(super) fn heap_bytes(key: &str, e: &IndexEntry) -> usize {
    let slot = std::mem::size_of::<(Box<str>, IndexEntry)>() + 1;
    let facets = e.facets.as_ref().map_or(0, |f| {
        std::mem::size_of_val(&**f)
            + f.numbers.capacity() * 8
            + f.texts
                .iter()
                .map(|t| t.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
    });
    slot + key.len()
        + e.person.len()
        + e.other_persons.iter().map(|p| p.len() + 16).sum::<usize>()
        + e.segments.len() * 8
        + facets
        + e.annotation.as_ref().map_or(0, |a| a.len())
}

impl State {
    pub(super) fn entry(&self, team: u64, session: &str) -> Option<&IndexEntry> {
        self.teams.get(&team)?.get(session)
    }

    /// Sets (or, for `None`, removes) the entry of a session.
    pub(super) fn set(&mut self, team: u64, session: Box<str>, e: Option<IndexEntry>) {
        match e {
            Some(e) => {
                self.teams.entry(team).or_default().insert(session, e);
            }
            None => {
                if let Some(t) = self.teams.get_mut(&team) {
                    t.remove(&session);
                    if t.is_empty() {
                        self.teams.remove(&team);
                    }
                }
            }
        }
    }
}
