//! The daemon's HTTP listener (`--listen`): `/metrics`, `/healthz`, the local page at `/`
//! listing the kept profiles of the last hours with their flame graphs and pprof downloads,
//! and `/debug/pprof/` ([`pprof`]), whose profiles the pipeline thread collects ([`ondemand`]).
//! In: the dump dir's sidecars, the pipeline's published [`metrics`](mod@metrics) and its
//! on-demand profiles. Out: HTTP answers.
//!
//! The page is plain server-rendered HTML with no external assets: on a single host it is the
//! whole product. It reads the `.json` sidecar that `run` writes next to every kept profile in
//! the dump dir, so it also lists profiles kept before a restart.
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
pub mod pprof;

pub use files::FileWorkers;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{Path as UrlPath, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use thiserror::Error;
use tokio::{net::TcpListener, sync::watch};

use crate::export::KeptSummary;
use files::{list_kept, read_kept_file, Listing, MAX_ROWS};
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
    let config = state.listener;
    let stats = Arc::clone(&state.metrics.listener);
    let app = Router::new()
        .route("/", get(page))
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

const BUSY: &str = "the dump dir is being read for other requests: retry in a moment\n";

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

async fn page(State(state): State<Arc<WebState>>) -> Response {
    let listing = match state.dump_dir.clone() {
        Some(dir) => {
            let (window, stats) = (state.page_window, Arc::clone(&state.metrics.files));
            let read = state.file_workers.run(&state.metrics.files, move || {
                list_kept(&dir, window, SystemTime::now(), &stats)
            });
            match read.await {
                Ok(listing) => listing,
                Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, BUSY).into_response(),
            }
        }
        None => Listing::default(),
    };
    Html(render_page(
        &listing,
        state.page_window,
        state.dump_dir.as_deref(),
    ))
    .into_response()
}

/// Escapes text for HTML element content and attribute values.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a file name for a URL path segment.
fn url_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn render_page(listing: &Listing, window: Duration, dir: Option<&Path>) -> String {
    let rows: &[KeptSummary] = &listing.rows;
    let hours = window.as_secs_f64() / 3600.0;
    let mut out = String::with_capacity(4096 + rows.len() * 1024);
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>profilerd: kept profiles</title>\
         <style>\
         body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
         table{border-collapse:collapse;width:100%}\
         th,td{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}\
         th{background:#f4f4f4}\
         .flame{width:100%;max-width:1200px;border:1px solid #ccc;margin:.3em 0 1.2em}\
         .num{text-align:right;font-variant-numeric:tabular-nums}\
         code{font-size:.95em}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>profilerd: kept profiles</h1>\n<p>Profiles kept by trigger rules in the last {hours:.0} h, newest first{}. \
         <a href=\"/metrics\">metrics</a></p>",
        dir.map_or(String::new(), |d| format!(", from <code>{}</code>", html(&d.display().to_string())))
    );
    if listing.truncated {
        let _ = writeln!(
            out,
            "<p id=\"truncated\">Only the {MAX_ROWS} newest kept profiles are read; older ones are in the dump dir.</p>"
        );
    }
    if rows.is_empty() {
        out.push_str("<p id=\"empty\">No profile was kept in this time. A profile is kept when a trigger rule fires.</p>\n");
    } else {
        out.push_str(
            "<table id=\"kept\"><thead><tr><th>time (UTC)</th><th>target</th><th>service</th>\
             <th>trigger</th><th>reason</th><th>top functions (self)</th><th class=\"num\">samples</th>\
             <th>files</th></tr></thead><tbody>\n",
        );
        for row in rows {
            let top: Vec<String> = row
                .top
                .iter()
                .map(|(f, pct)| format!("<code>{}</code> {pct:.1}%", html(f)))
                .collect();
            let svg_link = row.svg.as_ref().map_or(String::new(), |svg| {
                format!(
                    " <a href=\"/profiles/{}\">flame graph</a>",
                    url_segment(svg)
                )
            });
            let _ = writeln!(
                out,
                "<tr class=\"profile\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td><a href=\"/profiles/{}\" download>pprof</a>{svg_link}</td></tr>",
                html(&row.fired_at),
                html(&row.target),
                html(&row.service),
                html(&row.trigger),
                html(&row.reasons.join("; "))
                    + if row.capturing {
                        " <em class=\"capturing\">(capturing: the seconds after the firing are still being recorded)</em>"
                    } else {
                        ""
                    },
                top.join("<br>"),
                row.samples,
                url_segment(&row.pprof),
            );
            if let Some(svg) = &row.svg {
                let _ = writeln!(
                    out,
                    "<tr class=\"flame-row\"><td colspan=\"8\"><img class=\"flame\" alt=\"flame graph of {}\" src=\"/profiles/{}\"></td></tr>",
                    html(&row.target),
                    url_segment(svg)
                );
            }
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</body></html>\n");
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, fired_unix: u64) -> KeptSummary {
        KeptSummary {
            fired_at: "2026-11-26T10:00:00Z".into(),
            fired_unix,
            target: target.into(),
            service: "svc".into(),
            trigger: "cpu".into(),
            reasons: vec!["cpu: meet diff trigger condition".into()],
            top: vec![("work_three".into(), 74.5), ("<script>".into(), 1.0)],
            samples: 335,
            window_seconds: 13.0,
            pprof: format!("cpu.{fired_unix}.pb.gz"),
            svg: Some(format!("cpu.{fired_unix}.svg")),
            capturing: false,
        }
    }

    #[test]
    fn page_escapes_and_links() {
        let listing = Listing {
            rows: vec![row("spike-1 <b>", 1)],
            truncated: true,
        };
        let html = render_page(&listing, Duration::from_secs(6 * 3600), None);
        assert!(html.contains("spike-1 &lt;b&gt;"));
        assert!(html.contains("<code>&lt;script&gt;</code> 1.0%"));
        assert!(html.contains("href=\"/profiles/cpu.1.pb.gz\" download"));
        assert!(html.contains("src=\"/profiles/cpu.1.svg\""));
        assert!(html.contains("last 6 h"));
        assert!(html.contains("id=\"truncated\""));
        assert!(!html.contains("capturing"));
        let mut capturing = row("spike-2", 2);
        capturing.capturing = true;
        let listing = Listing {
            rows: vec![capturing],
            truncated: false,
        };
        let html = render_page(&listing, Duration::from_secs(3600), None);
        assert!(html.contains("class=\"capturing\""), "{html}");
        let empty = render_page(&Listing::default(), Duration::from_secs(3600), None);
        assert!(empty.contains("id=\"empty\""));
        assert!(!empty.contains("id=\"truncated\""));
    }

    #[test]
    fn url_segments_are_encoded() {
        assert_eq!(url_segment("a b/c.svg"), "a%20b%2Fc.svg");
    }
}
