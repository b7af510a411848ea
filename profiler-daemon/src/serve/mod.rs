//! The daemon's HTTP listener (`--listen`): `/metrics`, `/healthz`, the local page ([`page`]:
//! `/` lists the profiles of the last hours, `/view/<file>` shows one with its timeline,
//! flame graphs and top table), the profile files (`/profiles/<file>`), and `/debug/pprof/`
//! ([`pprof`]), whose profiles the pipeline thread collects ([`ondemand`]). In: the dump dir's
//! files and sidecars, the pipeline's published [`metrics`](mod@metrics) and its on-demand
//! profiles. Out: HTTP answers.
//!
//! The page is plain server-rendered HTML with no external assets: on a single host it is the
//! whole product. It reads the `.json` sidecars that `run` writes next to every kept profile
//! and continuous-mode window in the dump dir, so it also lists profiles written before a
//! restart.
//!
//! The runtime is one thread, which also answers `/healthz` and handles shutdown: every read
//! of the dump dir runs on the blocking pool, at most [`files::FILE_WORKERS`] at once, and
//! only reads files the daemon wrote ([`files`]). The accept loop bounds connections
//! ([`listener`]).

pub mod auth;
mod files;
pub mod hosts;
pub mod listener;
pub mod metrics;
pub mod ondemand;
mod page;
pub mod pprof;

pub use files::FileWorkers;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path as UrlPath, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use thiserror::Error;
use tokio::{net::TcpListener, sync::watch};

use files::read_kept_file;
use listener::ListenerConfig;
use metrics::Metrics;

#[derive(Debug, Error)]
pub enum WebError {
    #[error("--listen {addr}: {source}: choose a free address with --listen ADDR:PORT, or turn the listener off with --listen off")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Shared with the pipeline thread.
pub struct WebState {
    pub metrics: Arc<Metrics>,
    /// Where kept profiles and their sidecars are.
    pub dump_dir: Option<PathBuf>,
    /// How far back the page lists kept profiles.
    pub page_window: Duration,
    /// Unix milliseconds of the last drain, 0 before the first.
    pub heartbeat: AtomicU64,
    /// `/healthz` fails when no drain happened for this long.
    pub stall_after: Duration,
    /// Where the listener is bound (logged once the daemon is up), `None` with `--listen off`.
    pub address: Option<SocketAddr>,
    /// Connection bounds of the listener.
    pub listener: ListenerConfig,
    /// The threads that read the dump dir.
    pub file_workers: FileWorkers,
    /// `/debug/pprof/`, `None` where nothing samples for it.
    pub pprof: Option<pprof::PprofEndpoint>,
    /// The `Host` values a loopback listener answers ([`hosts`]); `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

impl WebState {
    /// Called by the pipeline after every drain.
    pub fn beat(&self) {
        self.heartbeat
            .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds `addr`; the bound address (port 0 picks one) is in the result.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), WebError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| WebError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: Arc<WebState>, shutdown: watch::Receiver<bool>) {
    let config = state.listener.clone();
    let stats = Arc::clone(&state.metrics.listener);
    let app = Router::new()
        .route("/", get(page::list))
        .route("/view/{name}", get(page::view))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/profiles/{name}", get(profile_file))
        .route("/debug/pprof", get(pprof::index))
        .route("/debug/pprof/", get(pprof::index))
        .route("/debug/pprof/{kind}", get(pprof::profile))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::check_auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            hosts::check_host,
        ))
        .with_state(state);
    listener::serve(listener, app, config, stats, shutdown).await;
}

pub(crate) const BUSY: &str = "the dump dir is being read for other requests: retry in a moment\n";

async fn metrics(State(state): State<Arc<WebState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!("{err}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
        }
    }
}

async fn healthz(State(state): State<Arc<WebState>>) -> Response {
    let last = state.heartbeat.load(Ordering::Relaxed);
    let now = unix_millis(SystemTime::now());
    if last == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting: no drain yet\n").into_response();
    }
    let age = Duration::from_millis(now.saturating_sub(last));
    if age > state.stall_after {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: last drain {:.1} s ago\n", age.as_secs_f64()),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// A file of the dump dir, only if a kept profile's sidecar names it and it is the daemon's.
async fn profile_file(
    State(state): State<Arc<WebState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(dir) = state.dump_dir.clone() else {
        return (StatusCode::NOT_FOUND, "no dump dir\n").into_response();
    };
    let (window, stats) = (state.page_window, Arc::clone(&state.metrics.files));
    let wanted = name.clone();
    let read = state.file_workers.run(&state.metrics.files, move || {
        read_kept_file(&dir, &wanted, window, SystemTime::now(), &stats)
    });
    let Ok(read) = read.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, BUSY).into_response();
    };
    let Some(bytes) = read else {
        return (StatusCode::NOT_FOUND, "not a kept profile\n").into_response();
    };
    if name.ends_with(".svg") {
        ([(header::CONTENT_TYPE, "image/svg+xml")], bytes).into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            bytes,
        )
            .into_response()
    }
}
