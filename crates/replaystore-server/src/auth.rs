//! Who may use the console. Two tokens, given to `serve`: the read token (every console page
//! and JSON endpoint) and the admin token (deletions; it reads too). A missing or wrong token
//! gets 401 everywhere; with no `--read-token` the console is off (404).
//!
//! How a browser presents them (docs/design.md, "The console"): the read token once as
//! `?token=` (a link someone was given), which the server answers with an `HttpOnly`,
//! `SameSite=Strict` cookie so later pages, `fetch` calls and the player's assets carry it
//! without the token in every URL; scripts send `Authorization: Bearer <token>`. The admin
//! token is never put in a cookie or a URL: the Privacy page sends it in the Authorization
//! header of the deletion request only, so no other site can make a browser delete anything.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::{App, Shared};

pub(crate) const COOKIE: &str = "replaystore_read";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Admin,
}

/// A granted request: the cookie to set when the token came in the URL.
struct Granted {
    pub set_cookie: Option<HeaderValue>,
}

impl Granted {
    /// `response` with the cookie, if one is to be set.
    pub fn attach(self, response: impl IntoResponse) -> Response {
        let mut r = response.into_response();
        if let Some(c) = self.set_cookie {
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        r
    }
}

/// The console's gate, in front of every JSON endpoint and asset (`route_layer`): a `POST`
/// needs the admin token, anything else the read token; refused requests get a plain 401.
pub(crate) async fn gate(State(app): State<Shared>, req: Request, next: Next) -> Response {
    gate_as(&app, req, next, false).await
}

/// The gate in front of the console's HTML pages: an HTML 401 with a token form, and the
/// read cookie set on the answer when the token came as `?token=`.
pub(crate) async fn gate_page(State(app): State<Shared>, req: Request, next: Next) -> Response {
    gate_as(&app, req, next, true).await
}

async fn gate_as(app: &App, req: Request, next: Next, page: bool) -> Response {
    let q: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let need = if req.method() == Method::POST {
        Need::Admin
    } else {
        Need::Read
    };
    match check(app, req.headers(), &q, need, page) {
        Ok(granted) => granted.attach(next.run(req).await),
        Err(refused) => *refused,
    }
}

/// Whether the request may do what it needs; `Err` is the answer otherwise. `page` picks an
/// HTML 401 with a token form over a plain one.
fn check(
    app: &App,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    need: Need,
    page: bool,
) -> Result<Granted, Box<Response>> {
    let Some(read) = &app.read_token else {
        return Err(Box::new(
            (
                StatusCode::NOT_FOUND,
                "the console is off (start the server with --read-token)",
            )
                .into_response(),
        ));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let is_admin = |t: &str| app.admin_token.as_deref().is_some_and(|a| same(t, a));
    if need == Need::Admin {
        if app.admin_token.is_none() {
            return Err(Box::new(
                (
                    StatusCode::FORBIDDEN,
                    "deletions are off (start the server with --admin-token)",
                )
                    .into_response(),
            ));
        }
        return match bearer {
            Some(t) if is_admin(t) => Ok(Granted { set_cookie: None }),
            _ => Err(unauthorized(
                "deletions need the admin token (Authorization: Bearer)",
                false,
            )),
        };
    }
    if bearer.is_some_and(|t| same(t, read) || is_admin(t)) {
        return Ok(Granted { set_cookie: None });
    }
    if let Some(t) = q.get("token") {
        return if same(t, read) {
            Ok(Granted {
                set_cookie: cookie(t),
            })
        } else {
            Err(unauthorized("wrong read token", page))
        };
    }
    match cookie_token(headers) {
        Some(t) if same(t, read) => Ok(Granted { set_cookie: None }),
        _ => Err(unauthorized("missing or wrong read token", page)),
    }
}

fn cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    ))
    .ok()
}

/// The read token of the request's cookie.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn unauthorized(why: &str, page: bool) -> Box<Response> {
    let mut r = if page {
        (
            StatusCode::UNAUTHORIZED,
            Html(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>replaystore: token needed</title>\
                 <link rel=\"icon\" href=\"data:,\"></head><body><h1>Read token needed</h1><p>{why}.</p>\
                 <form method=\"get\"><label>Read token <input type=\"password\" name=\"token\" autofocus></label> \
                 <button>Open</button></form></body></html>"
            )),
        )
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, why.to_string()).into_response()
    };
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Box::new(r)
}
