//! `replaystore serve`: an ingestion server embedding the store, compatible with what the
//! posthog-js SDK sends for recordings (`/s/`), with durable acknowledgements (a request is
//! answered 200 only after its chunks' group commit returned), bounded concurrency (503 with
//! Retry-After beyond it), CORS for browser SDKs, Prometheus metrics and graceful shutdown.

mod metrics;
mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use replaystore::{Chunk, Config, Error, Result, Store};
use replaystore_posthog::posthog::{decode_request, parse_event};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use metrics::Metrics;

pub struct Args {
    pub dir: std::path::PathBuf,
    pub listen: SocketAddr,
    /// Project token -> team.
    pub tokens: HashMap<String, u64>,
    pub max_body_bytes: usize,
    /// Requests being processed at once; more get 503.
    pub max_inflight: usize,
    pub normalize: bool,
    /// Turns the read API and pages on, and is required by them.
    pub read_token: Option<String>,
    pub config: Config,
}

struct App {
    store: Store,
    tokens: HashMap<String, u64>,
    read_token: Option<String>,
    inflight: Semaphore,
    metrics: Metrics,
}

type Shared = Arc<App>;

pub fn run(args: Args) -> Result<i32> {
    let mut config = args.config.clone();
    if args.normalize {
        config = config.with_transform(Arc::new(replaystore_posthog::posthog::Normalize), false);
    }
    let store = Store::open(&args.dir, config)?;
    let app = Arc::new(App {
        store,
        tokens: args.tokens.clone(),
        read_token: args.read_token.clone(),
        inflight: Semaphore::new(args.max_inflight.max(1)),
        metrics: Metrics::default(),
    });
    let io = |e: std::io::Error| Error::Io {
        context: "server".into(),
        source: e,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        // The first line on stdout says where to connect (port 0 picks a free one).
        println!("listening on http://{addr}");
        let router = router(app.clone(), args.max_body_bytes);
        // Answers go out at once: no Nagle delay on a kept-alive connection.
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(io)
    })?;
    // Stopped accepting; everything acknowledged is durable already. Flush the rest; the store
    // closes when the last request task lets go of it (at the latest, as the process exits).
    app.store.flush()?;
    drop(app);
    eprintln!("shut down cleanly");
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn router(app: Shared, max_body: usize) -> Router {
    Router::new()
        .route("/s", post(capture))
        .route("/s/", post(capture))
        .route("/flags", any(flags))
        .route("/flags/", any(flags))
        .route("/decide", any(flags))
        .route("/decide/", any(flags))
        .route("/array/{token}/config", any(remote_config))
        .route("/array/{token}/config.js", get(remote_config_js))
        .route("/e", any(drop_events))
        .route("/e/", any(drop_events))
        .route("/i/v0/e", any(drop_events))
        .route("/i/v0/e/", any(drop_events))
        .route("/batch", any(drop_events))
        .route("/batch/", any(drop_events))
        .route("/metrics", get(metrics))
        .route("/", get(pages::index))
        .route("/api/sessions", get(pages::api_sessions))
        .route(
            "/api/sessions/{team}/{session}/events",
            get(pages::api_events),
        )
        .route("/replay/{team}/{session}", get(pages::replay))
        .route("/assets/rrweb-player/{file}", get(pages::asset))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::cors::CorsLayer::very_permissive())
        .with_state(app)
}

fn reply(status: StatusCode, msg: &str) -> Response {
    let body =
        serde_json::json!({ "status": if status.is_success() { 1 } else { 0 }, "error": msg });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// POST /s/: decode, check every event, store all or nothing, answer once durable.
async fn capture(
    State(app): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let m = &app.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    m.bytes_in.fetch_add(body.len() as u64, Ordering::Relaxed);
    let Ok(_permit) = app.inflight.try_acquire() else {
        m.rejected_overloaded.fetch_add(1, Ordering::Relaxed);
        let mut r = reply(StatusCode::SERVICE_UNAVAILABLE, "overloaded, retry later");
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    };
    if let Some(ms) = capture_delay() {
        // Test hook (like the crash points): hold the permit a while, to observe overload.
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let app2 = app.clone();
    let compression = q.get("compression").cloned();
    let started = Instant::now();
    // Decoding (gunzip, JSON) and the store's calls (group commit waits on an fsync) run on a
    // blocking thread, off the async workers that serve connections.
    let stored =
        tokio::task::spawn_blocking(move || -> std::result::Result<(u64, u64), Refusal> {
            let chunks =
                decode_chunks(&app2, &body, compression.as_deref()).map_err(Refusal::Request)?;
            let (mut stored, mut refused) = (0, 0);
            for c in chunks {
                match app2.store.append(c) {
                    Ok(()) => stored += 1,
                    Err(Error::Deleted { .. }) => refused += 1,
                    Err(e) => return Err(Refusal::Store(e)),
                }
            }
            app2.store.flush().map_err(Refusal::Store)?;
            Ok((stored, refused))
        })
        .await;
    match stored {
        Ok(Ok((stored, refused))) => {
            m.observe_flush(started.elapsed().as_secs_f64());
            m.chunks.fetch_add(stored, Ordering::Relaxed);
            m.chunks_refused_deleted
                .fetch_add(refused, Ordering::Relaxed);
            reply(StatusCode::OK, "")
        }
        Ok(Err(Refusal::Request((status, why)))) => {
            let counter = if status == StatusCode::UNAUTHORIZED {
                &m.rejected_unauthorized
            } else {
                &m.rejected_bad_request
            };
            counter.fetch_add(1, Ordering::Relaxed);
            reply(status, &why)
        }
        Ok(Err(Refusal::Store(e @ Error::InvalidChunk { .. }))) => {
            m.rejected_bad_request.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Ok(Err(Refusal::Store(e))) => {
            log::error!("storing a request failed: {e}");
            reply(StatusCode::SERVICE_UNAVAILABLE, "not stored, retry later")
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Why a request was not stored: the request itself (status and reason), or the store.
enum Refusal {
    Request((StatusCode, String)),
    Store(Error),
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

/// The request's chunks, each with its team, or why the whole request is refused. Nothing is
/// stored unless every `$snapshot` event is valid and has a known token.
fn decode_chunks(
    app: &App,
    body: &[u8],
    compression: Option<&str>,
) -> std::result::Result<Vec<Chunk>, (StatusCode, String)> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let json = decode_request(body, compression).map_err(|e| bad(e.0))?;
    let events: Vec<&RawValue> = match serde_json::from_slice::<Vec<&RawValue>>(&json) {
        Ok(v) => v,
        Err(_) => vec![serde_json::from_slice::<&RawValue>(&json)
            .map_err(|e| bad(format!("invalid JSON: {e}")))?],
    };
    let mut out = Vec::new();
    for e in events {
        let Some((token, mut chunk)) = parse_event(e.get()).map_err(|e| bad(e.0))? else {
            continue;
        };
        let team = token.as_deref().and_then(|t| app.tokens.get(t)).copied();
        let Some(team) = team else {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!("unknown project token {:?}", token.unwrap_or_default()),
            ));
        };
        chunk.team = team;
        chunk
            .validate(app.store.config().max_payload_bytes)
            .map_err(|e| bad(e.to_string()))?;
        out.push(chunk);
    }
    Ok(out)
}

/// What posthog-js reads to decide to record: recording on, sent to `/s/`.
fn recording_config() -> serde_json::Value {
    serde_json::json!({
        "endpoint": "/s/",
        "consoleLogRecordingEnabled": true,
        "recorderVersion": "v2",
        "sampleRate": null,
        "minimumDurationMilliseconds": null,
        "linkedFlag": null,
        "networkPayloadCapture": null,
        "urlTriggers": [],
        "urlBlocklist": [],
        "eventTriggers": [],
        "scriptConfig": null,
        "recordCanvas": false,
    })
}

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "sessionRecording": recording_config(),
        "supportedCompression": ["gzip", "gzip-js"],
        "featureFlags": {},
        "flags": {},
        "errorsWhileComputingFlags": false,
        "capturePerformance": false,
        "autocapture_opt_out": true,
        "autocaptureExceptions": false,
        "heatmaps": false,
        "surveys": false,
        "siteApps": [],
        "toolbarParams": {},
        "isAuthenticated": false,
    })
}

async fn flags() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        config_json().to_string(),
    )
        .into_response()
}

async fn remote_config(Path(_token): Path<String>) -> Response {
    flags().await
}

async fn remote_config_js(Path(token): Path<String>) -> Response {
    let token_js = serde_json::to_string(&token).unwrap_or_default();
    let js = format!(
        "(function(){{window._POSTHOG_REMOTE_CONFIG=window._POSTHOG_REMOTE_CONFIG||{{}};window._POSTHOG_REMOTE_CONFIG[{token_js}]={{config:{},siteApps:[]}};}})();",
        config_json()
    );
    ([(header::CONTENT_TYPE, "application/javascript")], js).into_response()
}

/// Analytics events are accepted and dropped.
async fn drop_events(_headers: HeaderMap, _body: Bytes) -> Response {
    reply(StatusCode::OK, "")
}

async fn metrics(State(app): State<Shared>) -> Response {
    let fsyncs = app.store.stats().map(|s| s.fsyncs).unwrap_or(0);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(fsyncs),
    )
        .into_response()
}
