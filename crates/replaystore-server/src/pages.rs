//! The read side of the server: a session list page, a replay page playing a session with
//! rrweb-player, and the JSON API feeding them. Off unless `--read-token` is set; then every
//! request must carry it (`Authorization: Bearer <token>` or `?token=`). rrweb-player is not
//! committed: it is installed with npm into `web/node_modules` and served from there.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use replaystore::PayloadTransform;
use replaystore::SessionFilter;
use replaystore_posthog::posthog::{payload_events, Normalize};
use replaystore_posthog::rrweb::read_for_playback;
use replaystore_posthog::SessionRow;

use super::Shared;

/// Checks the read token; `Err` is the status and reason to answer with.
fn authorize(
    app: &super::App,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<String, (StatusCode, &'static str)> {
    let Some(want) = &app.read_token else {
        return Err((
            StatusCode::NOT_FOUND,
            "the read API is off (start the server with --read-token)",
        ));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(q.get("token").map(String::as_str));
    match given {
        Some(t) if t == want => Ok(t.to_string()),
        _ => Err((StatusCode::UNAUTHORIZED, "missing or wrong read token")),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub async fn api_sessions(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&app, &headers, &q) {
        return r.into_response();
    }
    let Some(team) = q.get("team").and_then(|t| t.parse::<u64>().ok()) else {
        return (StatusCode::BAD_REQUEST, "team=<number> is required").into_response();
    };
    let app2 = app.clone();
    let listed = tokio::task::spawn_blocking(move || {
        app2.store.list_sessions(team, &SessionFilter::default())
    })
    .await;
    match listed {
        Ok(Ok(list)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&SessionRow::all(&list)).unwrap_or_default(),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The session's rrweb events as JSON lines, in order, as plain rrweb JSON. With
/// `from_ms=MS`, a ranged read: the meta + full snapshot at or before MS, then every later
/// event (only the blocks from that keyframe on are decompressed).
pub async fn api_events(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((team, session)): Path<(u64, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authorize(&app, &headers, &q) {
        return r.into_response();
    }
    let from_ms = match q.get("from_ms").map(|v| v.parse::<i64>()) {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "from_ms=<ms since epoch>").into_response();
        }
    };
    let app2 = app.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_for_playback(&app2.store, team, &session, from_ms)
    })
    .await;
    let data = match read {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => return (StatusCode::NOT_FOUND, "no such session").into_response(),
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // rrweb-player plays plain rrweb events: posthog-js's in-event gzip is inflated here.
    let mut out = String::new();
    for c in &data.chunks {
        let plain = Normalize.transform(&c.payload);
        if let Ok(events) = payload_events(plain.as_deref().unwrap_or(&c.payload)) {
            for e in events {
                out.push_str(e.get());
                out.push('\n');
            }
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
}

/// `/`: the sessions of a team, with links to their replay.
pub async fn index(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize(&app, &headers, &q) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let team: u64 = q
        .get("team")
        .and_then(|t| t.parse().ok())
        .or_else(|| app.tokens.values().min().copied())
        .unwrap_or(1);
    let app2 = app.clone();
    let list = tokio::task::spawn_blocking(move || {
        app2.store.list_sessions(team, &SessionFilter::default())
    })
    .await
    .ok()
    .and_then(|r| r.ok())
    .unwrap_or_default();
    let mut rows = String::new();
    for s in list {
        rows.push_str(&format!(
            "<tr><td><a href=\"/replay/{team}/{id}?token={tok}\">{id}</a></td><td>{person}</td><td>{start}</td><td>{dur:.1} s</td><td>{size} B</td></tr>\n",
            id = escape(&s.session_id),
            tok = escape(&token),
            person = escape(&s.person),
            start = s.first_ts_ms,
            dur = s.duration_ms as f64 / 1000.0,
            size = s.raw_bytes,
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>replaystore sessions</title></head><body>\
         <h1>Sessions of team {team}</h1><table><tr><th>session</th><th>person</th><th>start (ms)</th><th>duration</th><th>size</th></tr>\n{rows}</table></body></html>"
    ))
    .into_response()
}

/// Where rrweb-player's built files are: `web/node_modules/rrweb-player/dist`.
pub fn player_dir() -> PathBuf {
    let base = std::env::var_os("REPLAYSTORE_WEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("web"));
    base.join("node_modules/rrweb-player/dist")
}

/// `/replay/<team>/<session>`: plays the session with rrweb-player.
pub async fn replay(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path((team, session)): Path<(u64, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token = match authorize(&app, &headers, &q) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if !player_dir().join("index.js").exists() {
        return Html(format!(
            "<!doctype html><html><body><h1>rrweb-player is not installed</h1><p>The replay page needs the \
             player's files in <code>{}</code>. Install them with <code>npm install --prefix web</code> and \
             reload.</p></body></html>",
            player_dir().display()
        ))
        .into_response();
    }
    let events_url = format!(
        "/api/sessions/{team}/{}/events?token={}",
        urlencode(&session),
        urlencode(&token)
    );
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>replay {sid}</title>
<link rel="stylesheet" href="/assets/rrweb-player/style.css"></head><body>
<h1>Session {sid}</h1><div id="player"></div><p id="status">loading...</p>
<script src="/assets/rrweb-player/index.js"></script>
<script>
fetch({events_url:?}).then(r => r.text()).then(text => {{
  const events = text.split('\n').filter(l => l).map(l => JSON.parse(l));
  const Player = window.rrwebPlayer.default || window.rrwebPlayer;
  new Player({{ target: document.getElementById('player'), props: {{ events, autoPlay: true }} }});
  document.getElementById('status').textContent = 'playing ' + events.length + ' events';
}}).catch(e => {{ document.getElementById('status').textContent = 'error: ' + e; }});
</script></body></html>"#,
        sid = escape(&session),
    ))
    .into_response()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// rrweb-player's files, from `web/node_modules` (never committed).
pub async fn asset(Path(file): Path<String>) -> Response {
    let allowed = ["index.js", "style.css"];
    if !allowed.contains(&file.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(player_dir().join(&file)).await {
        Ok(bytes) => {
            let ct = if file.ends_with(".css") {
                "text/css"
            } else {
                "application/javascript"
            };
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            "rrweb-player is not installed: npm install --prefix web",
        )
            .into_response(),
    }
}
