//! `replaystore serve`: an ingestion server embedding the store, compatible with what the
//! posthog-js SDK sends for recordings (`/s/`), with durable acknowledgements (a request is
//! answered 200 only after its chunks' group commit returned), bounded concurrency (503 with
//! Retry-After beyond it), CORS for browser SDKs, Prometheus metrics and graceful shutdown;
//! and, with `--read-token`, the recordings console (`pages`, `api`, `privacy`, `storage`,
//! guarded by `auth`).

mod api;
mod auth;
mod budget;
mod capture;
mod metrics;
mod pages;
mod privacy;
mod storage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{middleware, Router};
use replaystore::{Config, Error, Result, Store};
use tokio::sync::Semaphore;

pub use budget::Limits;
use budget::MemoryBudget;
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
    /// Turns the console (pages and JSON API) on, and is required by them.
    pub read_token: Option<String>,
    /// Allows deletions from the console (sent as `Authorization: Bearer`).
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub config: Config,
}

struct App {
    store: Store,
    tokens: HashMap<String, u64>,
    read_token: Option<String>,
    admin_token: Option<String>,
    /// Deletion requests made through the console.
    deletions: privacy::Requests,
    inflight: Semaphore,
    /// Bytes requests in flight hold (bodies, decoded text, chunks).
    memory: Arc<MemoryBudget>,
    max_body: usize,
    max_decoded: usize,
    max_events: usize,
    metrics: Metrics,
}

type Shared = Arc<App>;

pub fn run(args: Args) -> Result<i32> {
    if let Some(why) = args.limits.check(args.max_body_bytes) {
        eprintln!("{why}");
        return Ok(2);
    }
    fixed_mmap_threshold();
    let mut config = args.config.clone();
    if args.normalize {
        config = config.with_transform(Arc::new(replaystore_posthog::posthog::Normalize), false);
    } else {
        config.parts.transform = None;
    }
    let store = Store::open(&args.dir, config)?;
    let app = Arc::new(App {
        store,
        tokens: args.tokens.clone(),
        read_token: args.read_token.clone(),
        admin_token: args.admin_token.clone(),
        deletions: privacy::Requests::default(),
        inflight: Semaphore::new(args.max_inflight.max(1)),
        memory: MemoryBudget::new(args.limits.memory_budget_bytes),
        max_body: args.max_body_bytes,
        max_decoded: args.limits.max_decoded_bytes,
        max_events: args.limits.max_events_per_request,
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

/// Request buffers (bodies, decoded text) are large and short-lived, and freed on threads other
/// than the ones that will allocate the next: glibc's default raises its mmap threshold after
/// the first such free (up to 32 MiB), after which they come from per-thread arenas that keep
/// the memory, and the process's RSS grows far past the bytes in flight (measured: 520 MiB peak
/// with a 128 MiB budget; 170 MiB with a fixed threshold). A fixed threshold keeps every buffer
/// of 128 KiB or more in its own mapping, returned to the system when freed.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
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

/// The console's routes, each behind its token gate (`auth`): pages with the HTML one, JSON
/// endpoints and assets with the plain one.
fn console(app: &Shared) -> Router<Shared> {
    let pages = Router::new()
        .route("/", get(pages::recordings))
        .route("/privacy", get(pages::privacy))
        .route("/storage", get(pages::storage))
        .route("/replay/{team}/{session}", get(pages::replay))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::gate_page));
    let api = Router::new()
        .route("/assets/{file}", get(pages::console_asset))
        .route("/assets/rrweb-player/{file}", get(pages::player_asset))
        .route("/api/sessions", get(api::sessions))
        .route("/api/sessions/{team}/{session}/events", get(api::events))
        .route("/api/sessions/{team}/{session}/markers", get(api::markers))
        .route("/api/teams", get(api::teams_api))
        .route("/api/storage", get(storage::storage))
        .route("/api/deletions", get(privacy::list).post(privacy::create))
        .route("/api/deletions/{id}", get(privacy::status))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::gate));
    pages.merge(api)
}

fn router(app: Shared, max_body: usize) -> Router {
    Router::new()
        .route("/s", post(capture::capture))
        .route("/s/", post(capture::capture))
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
        .merge(console(&app))
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
    let stats = app.store.stats().unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&stats, app.memory.used()),
    )
        .into_response()
}
