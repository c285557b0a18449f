//! POST /s/: read the body within the memory budget, decode it, check every event, append
//! the chunks, and answer once they are durable.
//!
//! Answers: 200 once stored; 400 for a malformed request or a client time that is not a time
//! (nothing stored), or when the store refused chunks for their timestamps (the others of the
//! request are stored: the window is the store's, checked chunk by chunk at append, and a
//! retry would refuse the same); 401 for an unknown token; 413 for a body too large, as sent or
//! decoded, or with too many events; 503 with Retry-After when in-flight requests or their bytes are at their bound.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use replaystore::{Chunk, Error};
use replaystore_posthog::posthog::{self, Allowance, WireError};

use super::budget::Share;
use super::metrics::Metrics;
use super::{reply, App, Shared};

/// Why a request was not (wholly) stored.
enum Refusal {
    /// The request itself: nothing of it was stored.
    Wire(WireError),
    Unauthorized(String),
    /// The store refused `refused` of `total` chunks for their timestamps (the first error);
    /// the rest are stored and durable.
    Timestamps {
        first: Error,
        refused: u64,
        total: u64,
    },
    Store(Error),
}

pub async fn capture(
    State(app): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let m = &app.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    let mut share = Share::new(app.memory.clone());
    let body = match read_body(body, &headers, app.max_body, &mut share).await {
        Ok(b) => b,
        Err(e) => return refused(m, Refusal::Wire(e)),
    };
    m.bytes_in.fetch_add(body.len() as u64, Ordering::Relaxed);
    let Ok(_permit) = app.inflight.try_acquire() else {
        m.rejected_overloaded.fetch_add(1, Ordering::Relaxed);
        return busy("overloaded, retry later");
    };
    if let Some(ms) = capture_delay() {
        // Test hook (like the crash points): hold the permit a while, to observe overload.
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let app2 = app.clone();
    let started = Instant::now();
    // Decoding (gunzip, JSON) and the store's calls (group commit waits on an fsync) run on a
    // blocking thread, off the async workers that serve connections.
    let stored = tokio::task::spawn_blocking(move || store_request(&app2, body, &q, share)).await;
    match stored {
        Ok(Ok((stored, deleted))) => {
            m.observe_flush(started.elapsed().as_secs_f64());
            m.chunks.fetch_add(stored, Ordering::Relaxed);
            m.chunks_refused_deleted
                .fetch_add(deleted, Ordering::Relaxed);
            reply(StatusCode::OK, "")
        }
        Ok(Err(r)) => refused(m, r),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn busy(why: &str) -> Response {
    let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, why);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// The answer to a refused request, counted.
fn refused(m: &Metrics, r: Refusal) -> Response {
    let count = |c: &std::sync::atomic::AtomicU64| c.fetch_add(1, Ordering::Relaxed);
    match r {
        Refusal::Wire(WireError::Busy) => {
            count(&m.rejected_over_budget);
            busy("too many bytes in flight, retry later")
        }
        Refusal::Wire(e @ WireError::TooLarge(_)) => {
            count(&m.rejected_too_large);
            reply(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        Refusal::Wire(e) => {
            count(&m.rejected_bad_request);
            if matches!(e, WireError::Timestamp { .. }) {
                count(&m.chunks_refused_timestamp_invalid);
            }
            reply(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Refusal::Unauthorized(why) => {
            count(&m.rejected_unauthorized);
            reply(StatusCode::UNAUTHORIZED, &why)
        }
        Refusal::Timestamps {
            first,
            refused,
            total,
        } => {
            count(&m.rejected_bad_request);
            let stored = total - refused;
            reply(
                StatusCode::BAD_REQUEST,
                &format!("{refused} of {total} chunks refused ({stored} stored): {first}"),
            )
        }
        Refusal::Store(e) => {
            log::error!("storing a request failed: {e}");
            reply(StatusCode::SERVICE_UNAVAILABLE, "not stored, retry later")
        }
    }
}

/// The body, at most `max` bytes, each piece taken from the budget as it arrives (a client
/// that sends slowly holds only what it sent).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    share: &mut Share,
) -> Result<Vec<u8>, WireError> {
    let too_large = || WireError::TooLarge(format!("the body exceeds {max} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| WireError::Invalid(format!("reading the body: {e}")))?;
        posthog::reserve(&mut out, frame.len(), max, share, "the body")?;
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

/// Decodes, checks and stores one request (on a blocking thread): `(stored, refused as
/// deleted)`, or why not.
fn store_request(
    app: &App,
    body: Vec<u8>,
    q: &HashMap<String, String>,
    mut share: Share,
) -> Result<(u64, u64), Refusal> {
    // The send time from the query (posthog-js: `_`, ms by the client's clock) applies to the
    // events that carry none in the body.
    let sent_at = q
        .get("_")
        .map(|v| posthog::number_ms("_", v.as_bytes()))
        .transpose()
        .map_err(Refusal::Wire)?;
    let compression = q.get("compression").map(String::as_str);
    let decoded = posthog::decode_request(&body, compression, app.max_decoded, &mut share)
        .map_err(Refusal::Wire)?;
    let decoded = match decoded {
        std::borrow::Cow::Owned(v) => Some(v),
        std::borrow::Cow::Borrowed(_) => None,
    };
    // Once decoded, the body as sent is no longer needed.
    let json = match decoded {
        Some(v) => {
            share.give(body.capacity());
            drop(body);
            v
        }
        None => body,
    };
    let chunks = decode_chunks(app, &json, sent_at, &mut share)?;
    drop(json);
    let total = chunks.len() as u64;
    let (mut stored, mut deleted, mut timestamps) = (0, 0, None);
    for c in chunks {
        match app.store.append(c) {
            Ok(()) => stored += 1,
            Err(Error::Deleted { .. }) => deleted += 1,
            Err(e @ Error::Timestamp { .. }) => {
                app.metrics.count_timestamp_refusal(&e);
                timestamps.get_or_insert((e, 0)).1 += 1;
            }
            Err(e @ Error::InvalidChunk { .. }) => {
                return Err(Refusal::Wire(WireError::Invalid(e.to_string())))
            }
            Err(e) => return Err(Refusal::Store(e)),
        }
    }
    app.store.flush().map_err(Refusal::Store)?;
    match timestamps {
        None => Ok((stored, deleted)),
        Some((first, refused)) => {
            app.metrics.chunks.fetch_add(stored, Ordering::Relaxed);
            app.metrics
                .chunks_refused_deleted
                .fetch_add(deleted, Ordering::Relaxed);
            Err(Refusal::Timestamps {
                first,
                refused,
                total,
            })
        }
    }
}

/// Heap memory a parsed chunk holds (its struct is in the vector, accounted as it grows).
fn chunk_bytes(c: &Chunk) -> usize {
    c.session_id.len()
        + c.person.len()
        + c.window_id.as_ref().map_or(0, String::len)
        + c.payload.len()
}

/// The request's chunks, each with its team, or why the whole request is refused. Nothing is
/// stored unless every `$snapshot` event is valid and has a known token.
fn decode_chunks(
    app: &App,
    json: &[u8],
    sent_at: Option<i64>,
    share: &mut Share,
) -> Result<Vec<Chunk>, Refusal> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut unauthorized = None;
    let mut events = 0;
    let read = posthog::for_each_event(json, &mut |e| {
        events += 1;
        if events > app.max_events {
            return Err(WireError::TooLarge(format!(
                "more than {} events in one request",
                app.max_events
            )));
        }
        let Some((token, mut chunk)) = posthog::parse_event(e.get())? else {
            return Ok(());
        };
        if !share.take(chunk_bytes(&chunk)) {
            return Err(WireError::Busy);
        }
        let team = token.as_deref().and_then(|t| app.tokens.get(t)).copied();
        let Some(team) = team else {
            unauthorized = Some(format!(
                "unknown project token {:?}",
                token.unwrap_or_default()
            ));
            return Err(WireError::Invalid(String::new()));
        };
        chunk.team = team;
        chunk.sent_at_ms = chunk.sent_at_ms.or(sent_at);
        chunk
            .validate(app.store.config().max_payload_bytes)
            .map_err(|e| WireError::Invalid(e.to_string()))?;
        posthog::reserve(&mut out, 1, usize::MAX, share, "the chunks")?;
        out.push(chunk);
        Ok(())
    });
    match (unauthorized, read) {
        (Some(why), _) => Err(Refusal::Unauthorized(why)),
        (None, Err(e)) => Err(Refusal::Wire(e)),
        (None, Ok(())) => Ok(out),
    }
}

/// `REPLAYSTORE_CAPTURE_DELAY_MS`: tests make requests slow to fill the in-flight bound.
fn capture_delay() -> Option<u64> {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("REPLAYSTORE_CAPTURE_DELAY_MS")
            .ok()?
            .parse()
            .ok()
    })
}
