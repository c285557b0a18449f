//! Deletions from the console: a person's or a session's recordings erased with the admin
//! token (`Store::delete_person` / `delete_session`, then a purge requested at once rather than
//! within `purge_within`), and where each request stands as `deletion_status` reports it.
//! The requests made through this server are remembered (the last `KEPT`) so the Privacy page
//! can show their receipts after the engine has retired them from its pending list.

use std::collections::VecDeque;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use replaystore::{DeletionStatus, Target};

use super::api::{bad_request, blocking, json};
use super::Shared;

const KEPT: usize = 200;

/// What a deletion request names: exactly one of the two.
#[derive(Deserialize)]
struct Ask {
    team: u64,
    person: Option<String>,
    session: Option<String>,
}

/// A request as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Request {
    pub id: u64,
    pub team: u64,
    /// `person` or `session`.
    pub kind: &'static str,
    pub target: String,
}

impl Request {
    fn new(id: u64, team: u64, target: &Target) -> Request {
        let (kind, t) = match target {
            Target::Person(p) => ("person", p),
            Target::Session(s) => ("session", s),
        };
        Request {
            id,
            team,
            kind,
            target: t.clone(),
        }
    }
}

/// The requests made through this server, newest last.
#[derive(Default)]
pub(crate) struct Requests(Mutex<VecDeque<Request>>);

impl Requests {
    fn add(&self, r: Request) {
        let mut q = self.0.lock();
        if q.len() == KEPT {
            q.pop_front();
        }
        q.push_back(r);
    }

    fn all(&self) -> Vec<Request> {
        self.0.lock().iter().cloned().collect()
    }
}

fn with_status(r: &Request, status: DeletionStatus) -> serde_json::Value {
    serde_json::json!({ "request": r, "status": status })
}

/// `POST /api/deletions` with `{"team": T, "person": P}` or `{"team": T, "session": S}` and
/// the admin token: durable when answered (hidden from every read from then on).
pub async fn create(State(app): State<Shared>, body: Bytes) -> Response {
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(format!("expected {{team, person | session}}: {e}")),
    };
    let target = match (ask.person, ask.session) {
        (Some(p), None) if !p.is_empty() => Target::Person(p),
        (None, Some(s)) if !s.is_empty() => Target::Session(s),
        _ => return bad_request("name exactly one of person or session".into()),
    };
    let (team, t) = (ask.team, target.clone());
    let made = blocking(&app, move |s| {
        let id = match &t {
            Target::Person(p) => s.delete_person(team, p)?,
            Target::Session(id) => s.delete_session(team, id)?,
        };
        s.request_purge();
        Ok((id, s.deletion_status(id)))
    })
    .await;
    match made {
        Ok((id, status)) => {
            let r = Request::new(id, team, &target);
            app.deletions.add(r.clone());
            (StatusCode::CREATED, json(&with_status(&r, status))).into_response()
        }
        Err(r) => *r,
    }
}

/// `GET /api/deletions/<id>`: where request `id` stands.
pub async fn status(State(app): State<Shared>, Path(id): Path<u64>) -> Response {
    json(&serde_json::json!({ "id": id, "status": app.store.deletion_status(id) }))
}

/// `GET /api/deletions`: the requests made through this server and every pending one.
pub async fn list(State(app): State<Shared>) -> Response {
    let made: Vec<_> = app
        .deletions
        .all()
        .iter()
        .rev()
        .map(|r| with_status(r, app.store.deletion_status(r.id)))
        .collect();
    let pending: Vec<_> = app
        .store
        .pending_deletions()
        .iter()
        .map(|t| {
            let r = Request::new(t.id, t.team, &t.target);
            with_status(&r, app.store.deletion_status(t.id))
        })
        .collect();
    json(&serde_json::json!({ "requests": made, "pending": pending }))
}
