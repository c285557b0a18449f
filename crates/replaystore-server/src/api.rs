//! The console's JSON endpoints, the same a script would use: sessions (filtered, paged),
//! a session's events from a moment, its timeline, the teams and their retention. Each
//! checks the read token first (`auth`); deletions and storage have their own modules.

use std::collections::HashMap;
use std::str::FromStr;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use replaystore::Store;
use replaystore_posthog::markers::timeline;
use replaystore_posthog::playback::{from_full_snapshot, plain_events, PlainEvent};
use replaystore_posthog::rrweb::read_for_playback;
use replaystore_posthog::{ListQuery, SessionRow};

use super::Shared;

/// Rows per page when the request does not say, and the most it may ask for: a page is
/// for a person to read, and the whole team could be 250,000 sessions.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

type Q = Query<HashMap<String, String>>;

pub(crate) fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => internal(e),
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

pub(crate) fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, why).into_response()
}

/// Runs a store call off the async threads (reads decompress, listings walk footers).
pub(crate) async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&Store) -> replaystore::Result<T> + Send + 'static,
) -> Result<T, Box<Response>> {
    let app = app.clone();
    match tokio::task::spawn_blocking(move || f(&app.store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Box::new(internal(e))),
        Err(e) => Err(Box::new(internal(e))),
    }
}

/// Query parameter `name` parsed, `None` when absent or empty (an empty form field).
fn param<T: FromStr>(q: &HashMap<String, String>, name: &str) -> Result<Option<T>, Box<Response>> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Box::new(bad_request(format!("{name}={v:?} is not valid")))),
    }
}

/// A flag: present and not `false`/`0` (`errors=1`, `errors=true`, a checked box's `on`).
fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name)
        .is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// `/api/sessions`'s parameters, named like the `ls` flags.
fn list_query(q: &HashMap<String, String>) -> Result<ListQuery, Box<Response>> {
    let text = |name: &str| q.get(name).filter(|v| !v.is_empty()).cloned();
    let limit = param::<usize>(q, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Box::new(bad_request(format!(
            "limit must be 1..={MAX_LIMIT}"
        ))));
    }
    let sort = text("sort").unwrap_or_else(|| "start".into());
    if sort != "start" && sort != "duration" {
        return Err(Box::new(bad_request(
            "sort must be start or duration".into(),
        )));
    }
    Ok(ListQuery {
        person: text("person"),
        from_ms: param(q, "from_ms")?,
        to_ms: param(q, "to_ms")?,
        min_duration_s: param(q, "min_duration_s")?,
        max_duration_s: param(q, "max_duration_s")?,
        min_active_s: param(q, "min_active_s")?,
        errors: flag(q, "errors"),
        rage: flag(q, "rage"),
        min_clicks: param(q, "min_clicks")?,
        url: text("url"),
        sort,
        desc: flag(q, "desc"),
        limit: Some(limit),
        cursor: text("cursor"),
    })
}

/// A page of `team`'s sessions as `q` asks: `{"sessions": [ls --json rows], "next_cursor"}`.
pub(crate) async fn page(
    app: &Shared,
    team: u64,
    q: &HashMap<String, String>,
) -> Result<serde_json::Value, Box<Response>> {
    let filter = list_query(q)?.into_filter();
    let page = blocking(app, move |s| s.list_page(team, &filter)).await?;
    Ok(serde_json::json!({
        "sessions": SessionRow::all(&page.sessions),
        "next_cursor": page.next_cursor,
    }))
}

/// `/api/sessions?team=T&...`: a page of the team's sessions.
pub async fn sessions(State(app): State<Shared>, Query(q): Q) -> Response {
    let Some(team) = q.get("team").and_then(|t| t.parse::<u64>().ok()) else {
        return bad_request("team=<number> is required".into());
    };
    match page(&app, team, &q).await {
        Ok(v) => json(&v),
        Err(r) => *r,
    }
}

/// The events a player needs from `from_ms` on (all of them without it), or `None` for no
/// such session. With `from_ms`, a ranged read (`Store::read_session_from` through
/// `read_for_playback`): only the blocks from the last keyframe at or before it are
/// decompressed, and the output starts at its meta + full snapshot; the trim after it finds a
/// later full snapshot at or before `from_ms` in the same chunk, if any.
pub(crate) fn events_from(
    store: &Store,
    team: u64,
    session: &str,
    from_ms: Option<i64>,
) -> replaystore::Result<Option<Vec<PlainEvent>>> {
    let Some(data) = read_for_playback(store, team, session, from_ms)? else {
        return Ok(None);
    };
    let events = plain_events(&data.chunks);
    Ok(Some(match from_ms {
        Some(ms) => from_full_snapshot(events, ms),
        None => events,
    }))
}

/// The session's rrweb events as JSON lines, plain rrweb JSON, from `from_ms` when given.
pub async fn events(
    State(app): State<Shared>,
    Path((team, session)): Path<(u64, String)>,
    Query(q): Q,
) -> Response {
    let from_ms = match param::<i64>(&q, "from_ms") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match blocking(&app, move |s| events_from(s, team, &session, from_ms)).await {
        Ok(Some(events)) => {
            let mut out = String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum());
            for e in events {
                out.push_str(&e.json);
                out.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such session").into_response(),
        Err(r) => *r,
    }
}

/// The session's row (counts, person) and timeline (markers, pages, windows).
pub async fn markers(
    State(app): State<Shared>,
    Path((team, session)): Path<(u64, String)>,
) -> Response {
    match blocking(&app, move |s| s.read_session(team, &session)).await {
        Ok(Some(data)) => json(&serde_json::json!({
            "session": SessionRow::new(&data.summary),
            "timeline": timeline(&data.chunks),
        })),
        Ok(None) => (StatusCode::NOT_FOUND, "no such session").into_response(),
        Err(r) => *r,
    }
}

/// One team the console knows of, with its retention lane.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct TeamInfo {
    pub team: u64,
    pub retention_days: u16,
}

/// The teams of the project tokens and of the retention settings, in order.
pub(crate) fn teams(app: &super::App) -> Vec<TeamInfo> {
    let cfg = app.store.config();
    let mut ids: Vec<u64> = app
        .tokens
        .values()
        .chain(cfg.team_retention_days.keys())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|team| TeamInfo {
            team,
            retention_days: cfg
                .team_retention_days
                .get(&team)
                .copied()
                .unwrap_or(cfg.default_retention_days),
        })
        .collect()
}

/// `/api/teams`: the teams and each one's retention.
pub async fn teams_api(State(app): State<Shared>) -> Response {
    json(&serde_json::json!({
        "teams": teams(&app),
        "default_retention_days": app.store.config().default_retention_days,
    }))
}
