//! The console's pages: Recordings (`/`), Replay (`/replay/<team>/<session>`), Privacy
//! (`/privacy`) and Storage (`/storage`). Each is a small HTML shell; the page's script
//! (`assets/console.js`, served by the binary) fills it from the JSON endpoints a script would
//! use. rrweb-player is not committed: it is installed with npm into `web/node_modules` and
//! served from there.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::Shared;

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

type Q = Query<HashMap<String, String>>;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A console page: the navigation, the page's body, and what its script needs to know
/// (`data-*` attributes of `<body>`, escaped).
fn shell(title: &str, page: &str, data: &[(&str, String)], body: &str, head: &str) -> String {
    let nav = [
        ("recordings", "/", "Recordings"),
        ("privacy", "/privacy", "Privacy"),
        ("storage", "/storage", "Storage"),
    ]
    .iter()
    .map(|(id, href, name)| {
        let current = if *id == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{name}</a>")
    })
    .collect::<Vec<_>>()
    .join("");
    let attrs: String = data
        .iter()
        .map(|(k, v)| format!(" data-{k}=\"{}\"", escape(v)))
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title} · replaystore</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">{head}</head>\
         <body data-page=\"{page}\"{attrs}><header><strong>replaystore</strong><nav>{nav}</nav></header>\
         <main>{body}</main><script src=\"/assets/console.js\"></script></body></html>",
        title = escape(title),
    )
}

/// The team a page opens on: `?team=`, else the smallest team of the project tokens.
fn default_team(app: &super::App, q: &HashMap<String, String>) -> u64 {
    q.get("team")
        .and_then(|t| t.parse().ok())
        .or_else(|| app.tokens.values().min().copied())
        .unwrap_or(1)
}

/// `/`: the recordings of a team, filtered and paged. The first page comes inside the HTML
/// (the same JSON `/api/sessions` answers), so the list shows without a second round trip.
pub async fn recordings(State(app): State<Shared>, Query(q): Q) -> Response {
    let team = default_team(&app, &q);
    let first = match super::api::page(&app, team, &q).await {
        Ok(v) => v,
        Err(r) => return *r,
    };
    // `<` escaped: the JSON cannot close the script element it sits in.
    let first = first.to_string().replace('<', "\\u003c");
    let body = format!(
        "{}<script type=\"application/json\" id=\"first-page\">{first}</script>",
        include_str!("../assets/recordings.html")
    );
    IntoResponse::into_response(Html(shell(
        "Recordings",
        "recordings",
        &[("team", team.to_string())],
        &body,
        "",
    )))
}

/// `/privacy`: deleting a person or a session, the requests' receipts, each team's retention.
pub async fn privacy(State(app): State<Shared>, Query(q): Q) -> Response {
    let team = default_team(&app, &q).to_string();
    let admin = app.admin_token.is_some().to_string();
    IntoResponse::into_response(Html(shell(
        "Privacy",
        "privacy",
        &[("team", team), ("admin", admin)],
        include_str!("../assets/privacy.html"),
        "",
    )))
}

/// `/storage`: where the bytes are and what they will cost.
pub async fn storage() -> Response {
    IntoResponse::into_response(Html(shell(
        "Storage",
        "storage",
        &[],
        include_str!("../assets/storage.html"),
        "",
    )))
}

/// Where rrweb-player's built files are: `web/node_modules/rrweb-player/dist`.
pub fn player_dir() -> PathBuf {
    let base = std::env::var_os("REPLAYSTORE_WEB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("web"));
    base.join("node_modules/rrweb-player/dist")
}

/// `/replay/<team>/<session>`: rrweb-player, the side panel and the marker bar.
pub async fn replay(Path((team, session)): Path<(u64, String)>) -> Response {
    if !player_dir().join("index.js").exists() {
        return IntoResponse::into_response(Html(format!(
            "<!doctype html><html><body><h1>rrweb-player is not installed</h1><p>The replay page needs the \
             player's files in <code>{}</code>. Install them with <code>npm install --prefix web</code> and \
             reload.</p></body></html>",
            escape(&player_dir().display().to_string())
        )));
    }
    let head = "<link rel=\"stylesheet\" href=\"/assets/rrweb-player/style.css\">\
                <script src=\"/assets/rrweb-player/index.js\"></script>";
    IntoResponse::into_response(Html(shell(
        &format!("Session {session}"),
        "replay",
        &[("team", team.to_string()), ("session", session.clone())],
        include_str!("../assets/replay.html"),
        head,
    )))
}

/// The console's own stylesheet and script (compiled into the binary).
pub async fn console_asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "console.css" => ([(header::CONTENT_TYPE, "text/css")], CSS).into_response(),
        "console.js" => ([(header::CONTENT_TYPE, "application/javascript")], JS).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// rrweb-player's files, from `web/node_modules` (never committed).
pub async fn player_asset(Path(file): Path<String>) -> Response {
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
