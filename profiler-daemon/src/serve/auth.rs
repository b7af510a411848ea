//! Who may use the listener, from `--web-config-file` ([`webconfig`], Prometheus'
//! exporter-toolkit format): TLS on every connection (the accept loop runs the handshake, see
//! [`super::listener`]) and, as a middleware on every route, basic or bearer authentication
//! ([`verify`]). In: the file, then each request's `Authorization`. Out: the request, a 401
//! with `WWW-Authenticate: Basic realm="profilerd"`, or a 429 when password checks are rate
//! limited; refusals are counted (`profilerd_http_auth_refused_total{reason}`), never logged
//! with what the client sent.
//!
//! `/healthz` needs no credentials (it still needs TLS): a Kubernetes probe sends none, and
//! the answer tells only whether the pipeline drains. Everything else, `/metrics` included,
//! needs them.
//!
//! SIGHUP re-reads the file ([`Security::reload`]): new connections get the new certificate
//! and key, requests are checked against the new users and tokens; a file that no longer
//! reads leaves the running one in place.

pub mod verify;
pub mod webconfig;

use std::{
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, RwLock},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rustls::ServerConfig;

use super::WebState;
use verify::Refusal;
use webconfig::{WebConfig, WebConfigError};

/// The one path that needs no credentials.
const HEALTHZ: &str = "/healthz";

/// The web config file in force, swapped whole by a reload.
pub struct Security {
    path: PathBuf,
    active: RwLock<Arc<WebConfig>>,
}

impl Security {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        Ok(Self {
            path: path.to_path_buf(),
            active: RwLock::new(Arc::new(WebConfig::load(path)?)),
        })
    }

    /// Re-reads the file; on an error the running configuration stays. Says what is in force.
    pub fn reload(&self) -> Result<String, WebConfigError> {
        let config = WebConfig::load(&self.path)?;
        let described = config.describe();
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(described)
    }

    pub fn current(&self) -> Arc<WebConfig> {
        Arc::clone(&self.active.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The TLS configuration new connections get; `None`: plain HTTP.
    pub fn tls(&self) -> Option<Arc<ServerConfig>> {
        self.current().tls.clone()
    }
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("Security")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One file per daemon: the same one is the same file.
impl PartialEq for Security {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Security {}

/// Lets a request through when it shows credentials of the web config file (or the file has
/// none, or it asks for `/healthz`); refuses it otherwise.
pub(super) async fn check_auth(
    State(state): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(security) = &state.listener.security else {
        return next.run(request).await;
    };
    let config = security.current();
    let Some(credentials) = &config.credentials else {
        return next.run(request).await;
    };
    if request.uri().path() == HEALTHZ {
        return next.run(request).await;
    }
    match credentials
        .check(request.headers().get(header::AUTHORIZATION))
        .await
    {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let stats = &state.metrics.listener;
            stats.auth_refused[refusal.index()].fetch_add(1, Ordering::Relaxed);
            tracing::debug!("HTTP {} refused: {}", request.uri().path(), refusal.name());
            refused(refusal, credentials.has_users(), credentials.has_tokens())
        }
    }
}

/// The answer to a refused request: a 401 naming the schemes the file accepts, or a 429.
fn refused(refusal: Refusal, users: bool, tokens: bool) -> Response {
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if refusal == Refusal::RateLimited {
        let line = "too many password checks at once: retry in a second\n";
        return (
            StatusCode::TOO_MANY_REQUESTS,
            text,
            [(header::RETRY_AFTER, "1")],
            line,
        )
            .into_response();
    }
    let line = "authentication required: send the user and password of a basic_auth_users entry, or a bearer token, of the listener's --web-config-file\n";
    let mut response = (StatusCode::UNAUTHORIZED, text, line).into_response();
    let headers = response.headers_mut();
    if users || !tokens {
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"profilerd\""),
        );
    }
    if tokens {
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"profilerd\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicU64, time::Duration};

    use axum::{body::Body, routing::get, Router};
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    use tower_service::Service;

    use super::*;
    use crate::serve::{listener::ListenerConfig, metrics::Metrics};

    /// A router with the middleware, under a web config file with one user and one token
    /// (`foo`).
    fn app() -> (Router, Arc<WebState>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.yml");
        let hash = bcrypt::hash("secret", 4).unwrap();
        let digest = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let text =
            format!("basic_auth_users:\n  alice: {hash}\nbearer_tokens_sha256: [{digest}]\n");
        std::fs::write(&file, text).unwrap();
        let state = Arc::new(WebState {
            metrics: Arc::new(Metrics::default()),
            dump_dir: None,
            page_window: Duration::from_secs(3600),
            heartbeat: AtomicU64::new(0),
            stall_after: Duration::from_secs(10),
            address: None,
            listener: ListenerConfig {
                max_connections: 8,
                header_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                descriptor_reserve: 16,
                security: Some(Arc::new(Security::load(&file).unwrap())),
            },
            file_workers: Default::default(),
            pprof: None,
            allowed_hosts: None,
        });
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(|| async { "metrics\n" }))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                check_auth,
            ))
            .with_state(Arc::clone(&state));
        (app, state)
    }

    async fn call(app: &mut Router, path: &str, authorization: Option<&str>) -> Response {
        let mut request = axum::http::Request::get(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        app.call(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_route_but_healthz_needs_credentials() {
        let (mut app, state) = app();
        let basic = format!("Basic {}", STANDARD.encode("alice:secret"));
        assert_eq!(call(&mut app, "/metrics", Some(&basic)).await.status(), 200);
        assert_eq!(
            call(&mut app, "/metrics", Some("Bearer foo"))
                .await
                .status(),
            200
        );
        assert_eq!(call(&mut app, "/healthz", None).await.status(), 200);
        let refused = call(&mut app, "/metrics", None).await;
        assert_eq!(refused.status(), 401);
        let schemes: Vec<_> = refused
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            schemes,
            ["Basic realm=\"profilerd\"", "Bearer realm=\"profilerd\""]
        );
        let wrong = format!("Basic {}", STANDARD.encode("alice:guess"));
        assert_eq!(call(&mut app, "/metrics", Some(&wrong)).await.status(), 401);
        let stats = &state.metrics.listener;
        let refused = |r: Refusal| stats.auth_refused[r.index()].load(Ordering::Relaxed);
        assert_eq!(refused(Refusal::Missing), 1);
        assert_eq!(refused(Refusal::WrongPassword), 1);
        let text = state.metrics.encode().unwrap();
        assert!(
            text.contains("profilerd_http_auth_refused_total{reason=\"wrong_password\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn rate_limited_checks_get_a_429_to_retry() {
        let response = refused(Refusal::RateLimited, true, false);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = refused(Refusal::WrongToken, false, true);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"profilerd\""
        );
    }
}
