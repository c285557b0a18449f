//! The Storage page's figures: bytes per session as a distribution (per team, with its
//! retention lane, and per lane), the store's own totals (`Store::stats`, passed through whole
//! so fields the engine adds appear without a change here), disk and bucket usage, and the
//! heaviest sessions. Listing every session of every team is O(sessions): a page a person
//! opens now and then, not a hot path.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use replaystore::{SessionFilter, SessionSummary, Store};
use replaystore_posthog::SessionRow;

use super::api::{blocking, json, teams, TeamInfo};
use super::Shared;

/// Sessions listed as the heaviest.
const HEAVIEST: usize = 20;

/// Stored bytes per session, summarized.
#[derive(Debug, Default, Serialize, PartialEq)]
pub(crate) struct Distribution {
    pub sessions: u64,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// Sessions per power-of-two size class: `(upper bound in bytes, count)`, the classes
    /// from the smallest to the largest session's.
    pub histogram: Vec<(u64, u64)>,
}

impl Distribution {
    fn of(sessions: &[&SessionSummary]) -> Distribution {
        let mut sizes: Vec<u64> = sessions.iter().map(|s| s.stored_bytes).collect();
        sizes.sort_unstable();
        let Some(&max) = sizes.last() else {
            return Distribution::default();
        };
        let at = |p: f64| sizes[((sizes.len() - 1) as f64 * p).round() as usize];
        let class = |b: u64| b.max(1).next_power_of_two();
        let mut histogram: Vec<(u64, u64)> = Vec::new();
        let mut bound = class(sizes[0]);
        while bound < class(max) {
            histogram.push((bound, 0));
            bound *= 2;
        }
        histogram.push((bound, 0));
        let first = class(sizes[0]).trailing_zeros();
        for &s in &sizes {
            histogram[(class(s).trailing_zeros() - first) as usize].1 += 1;
        }
        let stored: u64 = sizes.iter().sum();
        Distribution {
            sessions: sizes.len() as u64,
            stored_bytes: stored,
            raw_bytes: sessions.iter().map(|s| s.raw_bytes).sum(),
            mean: stored as f64 / sizes.len() as f64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max,
            histogram,
        }
    }
}

#[derive(Serialize)]
struct TeamStorage {
    #[serde(flatten)]
    team: TeamInfo,
    #[serde(flatten)]
    sizes: Distribution,
}

#[derive(Serialize)]
struct LaneStorage {
    retention_days: u16,
    teams: Vec<u64>,
    #[serde(flatten)]
    sizes: Distribution,
}

/// The file system holding the store.
#[derive(Serialize)]
struct Disk {
    total_bytes: u64,
    available_bytes: u64,
}

fn disk(dir: &FsPath) -> Option<Disk> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(Disk {
        total_bytes: st.f_blocks as u64 * st.f_frsize as u64,
        available_bytes: st.f_bavail as u64 * st.f_frsize as u64,
    })
}

fn report(store: &Store, teams: Vec<TeamInfo>) -> replaystore::Result<serde_json::Value> {
    let mut listed = Vec::with_capacity(teams.len());
    for t in teams {
        listed.push((t, store.list_sessions(t.team, &SessionFilter::default())?));
    }
    let mut per_team = Vec::new();
    let mut lanes: BTreeMap<u16, (Vec<u64>, Vec<&SessionSummary>)> = BTreeMap::new();
    let mut everyone: Vec<&SessionSummary> = Vec::new();
    for (t, sessions) in &listed {
        let refs: Vec<&SessionSummary> = sessions.iter().collect();
        let lane = lanes.entry(t.retention_days).or_default();
        lane.0.push(t.team);
        lane.1.extend(&refs);
        everyone.extend(&refs);
        per_team.push(TeamStorage {
            team: TeamInfo { ..*t },
            sizes: Distribution::of(&refs),
        });
    }
    let lanes: Vec<LaneStorage> = lanes
        .into_iter()
        .map(|(days, (teams, s))| LaneStorage {
            retention_days: days,
            teams,
            sizes: Distribution::of(&s),
        })
        .collect();
    everyone.sort_unstable_by_key(|s| std::cmp::Reverse(s.stored_bytes));
    let heaviest: Vec<SessionRow> = everyone
        .iter()
        .take(HEAVIEST)
        .map(|s| SessionRow::new(s))
        .collect();
    Ok(serde_json::json!({
        "stats": store.stats()?,
        "all": Distribution::of(&everyone),
        "teams": per_team,
        "lanes": lanes,
        "heaviest": heaviest,
        "disk": disk(store.dir()),
        "remote": store.remote_status(),
    }))
}

/// `GET /api/storage`.
pub async fn storage(State(app): State<Shared>) -> Response {
    let teams = teams(&app);
    match blocking(&app, move |s| report(s, teams)).await {
        Ok(v) => json(&v),
        Err(r) => *r,
    }
}
