//! A listing page from the index: one pass over the team's entries keeping the best `limit + 1`
//! matches in a bounded heap (O(entries x log limit), no sort of the team, no footer read).
//! An entry stands for its session as is when nothing of it is hidden and no person filter
//! splits it; otherwise (a record past retention, a pending deletion of one of its persons, a
//! person filter on a session recorded under several) the session is summarized again from its
//! records, exactly as a footer scan would (`read::hidden`, `read::Listed`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::SessionIndex;
use crate::annotation::Annotator;
use crate::error::Result;
use crate::filter::{Page, SessionFilter};
use crate::format::session_index::IndexEntry;
use crate::read::{hidden, Listed, SessionSummary};
use crate::retention::cutoff;
use crate::segment_set::Version;
use crate::tombstone::Tombstones;

/// What a page is asked against: the listing, and what decides visibility now.
pub(crate) struct PageQuery<'a> {
    pub team: u64,
    pub filter: &'a SessionFilter,
    pub tombstones: &'a Tombstones,
    pub version: &'a Version,
    pub now_ms: i64,
}

/// A matching session: its entry as is, or summarized again from its visible records.
enum Found<'a> {
    Entry(&'a IndexEntry),
    Summary(SessionSummary),
}

impl Found<'_> {
    fn span(&self) -> (i64, i64) {
        match self {
            Found::Entry(e) => (e.first_ts, e.last_ts),
            Found::Summary(s) => (s.first_ts_ms, s.last_ts_ms),
        }
    }
}

/// A match in the heap, ordered as the listing orders (so the heap's top is the one to drop).
struct Ranked<'a> {
    key: (i64, &'a str),
    descending: bool,
    found: Found<'a>,
}

impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        let c = self.key.cmp(&other.key);
        if self.descending {
            c.reverse()
        } else {
            c
        }
    }
}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Ranked<'_> {}

impl SessionIndex {
    /// The page `q.filter` asks for: the same sessions, in the same order, with the same
    /// cursor as `SessionFilter::page` over a full footer scan.
    pub fn page(&self, q: &PageQuery) -> Result<Page> {
        let st = self.state.read();
        let Some(sessions) = st.teams.get(&q.team) else {
            return Ok(q.filter.cut(Vec::new()));
        };
        let cursor = q.filter.cursor_key();
        let keep = q.filter.limit.unwrap_or(usize::MAX).saturating_add(1);
        let mut heap = BinaryHeap::new();
        for (id, e) in sessions {
            let Some(found) = self.found(q, id, e)? else {
                continue;
            };
            let (first, last) = found.span();
            let key = (q.filter.sort_key(first, last), &**id);
            if cursor.as_ref().is_some_and(|c| !q.filter.after(key, c)) {
                continue;
            }
            heap.push(Ranked {
                key,
                descending: q.filter.descending,
                found,
            });
            if heap.len() > keep {
                heap.pop();
            }
        }
        let sorted = heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| match r.found {
                Found::Entry(e) => summary(q.team, r.key.1, e),
                Found::Summary(s) => s,
            })
            .collect();
        Ok(q.filter.cut(sorted))
    }

    /// The session if it matches the filter, from its entry when that is exact now.
    fn found<'a>(&self, q: &PageQuery, id: &str, e: &'a IndexEntry) -> Result<Option<Found<'a>>> {
        let (f, ts) = (q.filter, q.tombstones);
        if q.now_ms >= e.all_hidden_from || ts.session_deleted(q.team, id) {
            return Ok(None);
        }
        let person_deleted = |p: &str| ts.person_deleted_at(q.team, p).is_some();
        let exact = q.now_ms < e.hidden_from
            && !person_deleted(&e.person)
            && !e.other_persons.iter().any(|p| person_deleted(p))
            && (f.person.is_none() || e.other_persons.is_empty());
        if !exact {
            let s = self.summarize(q, id, e)?;
            return Ok(s.filter(|s| f.matches(s)).map(Found::Summary));
        }
        if f.person.as_deref().is_some_and(|p| p != &*e.person)
            || !f.matches_span(e.first_ts, e.last_ts)
        {
            return Ok(None);
        }
        if let Some(af) = &f.annotation {
            let by_facets = self
                .annotator
                .as_deref()
                .zip(e.facets.as_deref())
                .and_then(|(a, facets)| af.matches_facets(a.name(), facets));
            if !by_facets.unwrap_or_else(|| af.matches(e.annotation.as_deref())) {
                return Ok(None);
            }
        }
        Ok(Some(Found::Entry(e)))
    }

    /// The session summarized from its visible records (of the filter's person only), as a
    /// footer scan does: `None` when none is visible.
    fn summarize(&self, q: &PageQuery, id: &str, e: &IndexEntry) -> Result<Option<SessionSummary>> {
        let mut listed: Option<Listed> = None;
        for sid in e.segments.iter() {
            let Some(seg) = q.version.get(*sid) else {
                continue;
            };
            let cut = cutoff(seg.lane_days, q.now_ms);
            for r in seg.find(q.team, id)? {
                let person_ok = q.filter.person.as_deref().is_none_or(|p| p == r.person);
                if !person_ok || hidden(q.tombstones, &r, cut) {
                    continue;
                }
                match &mut listed {
                    Some(l) => l.add(r),
                    None => listed = Some(Listed::new(r)),
                }
            }
        }
        let annotator: Option<&dyn Annotator> = self.annotator.as_deref();
        Ok(listed.map(|l| l.finish(annotator)))
    }
}

/// A page row from an entry.
fn summary(team: u64, id: &str, e: &IndexEntry) -> SessionSummary {
    SessionSummary {
        team,
        session_id: id.to_string(),
        person: e.person.to_string(),
        first_ts_ms: e.first_ts,
        last_ts_ms: e.last_ts,
        chunk_count: e.chunk_count,
        raw_bytes: e.raw_bytes,
        stored_bytes: e.stored_bytes,
        duration_ms: e.last_ts - e.first_ts,
        annotation: e.annotation.as_ref().map(|a| a.to_vec()),
    }
}
