//! A stand-in for a Grafana Pyroscope server (none can be installed here): a real HTTP server on
//! 127.0.0.1 with both ingestion endpoints, enforcing the server's validation rules
//! (`shared/reference/pyroscope-ingest.md`, sections 1, 2 and 4) with its status codes and
//! error bodies, and recording every profile it accepted.
//!
//! Written from the specification, independently of profilerd's own checks, so that a bug in
//! one does not hide in the other.

//!
//! `validate` holds the profile and label rules (section 4), `push` the Connect endpoint
//! (section 2), `ingest` the legacy `/ingest` endpoint (section 1).

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use profilerd::pprof_proto::Profile;
use tokio::{net::TcpListener, sync::oneshot};

mod ingest;
mod push;
mod validate;

pub(super) const MAX_PROFILE_BYTES: usize = 4 << 20;
pub(super) const MAX_BODY_BYTES: usize = 256 << 20;
pub(super) const MAX_LABEL_NAMES: usize = 30;
pub(super) const MAX_NAME_LEN: usize = 1024;
pub(super) const MAX_VALUE_LEN: usize = 2048;
pub(super) const MAX_SAMPLES: usize = 16_000;
pub(super) const MAX_STACK_DEPTH: usize = 1000;
pub(super) const MAX_SYMBOL_LEN: usize = 65_535;

/// One profile the stand-in accepted.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// "push" or "ingest".
    pub protocol: &'static str,
    /// Series labels after the server's own processing (`__name__`, `service_name` set).
    pub labels: BTreeMap<String, String>,
    pub profile: Profile,
    /// Request headers, lower-case names.
    pub headers: BTreeMap<String, String>,
    /// `from`/`until` query parameters of `/ingest`, in seconds.
    pub from_until: Option<(i64, i64)>,
    /// Stacks cut to 1000 frames or symbols to 65535 bytes, as the server does.
    pub truncated: bool,
}

impl Accepted {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// Total of the first sample value (sample counts).
    pub fn samples(&self) -> i64 {
        self.profile
            .sample
            .iter()
            .map(|s| s.value.first().copied().unwrap_or(0))
            .sum()
    }

    /// Whether any function of the profile has this name.
    pub fn has_function(&self, name: &str) -> bool {
        self.profile.function.iter().any(|f| {
            self.profile
                .string_table
                .get(f.name as usize)
                .map(String::as_str)
                == Some(name)
        })
    }
}

/// Every request, accepted or not.
#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
struct Shared {
    accepted: Vec<Accepted>,
    requests: Vec<Logged>,
    /// Responses forced on the next requests: status and Retry-After seconds.
    inject: VecDeque<(u16, Option<u64>)>,
    multi_tenant: bool,
}

type Store = Arc<Mutex<Shared>>;

/// A rejection as the server sends it.
#[derive(Debug)]
pub struct Reject {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Reject {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message }).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// The running stand-in. `stop` and `restart` simulate an outage on the same port.
pub struct StandIn {
    addr: SocketAddr,
    store: Store,
    runtime: tokio::runtime::Runtime,
    running: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl StandIn {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let mut standin = Self {
            addr,
            store: Store::default(),
            runtime,
            running: None,
        };
        standin.serve(listener);
        standin
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = Router::new()
            .route("/ingest", post(ingest::ingest))
            .route("/push.v1.PusherService/Push", post(push::push))
            .with_state(Arc::clone(&self.store));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = self.runtime.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        self.running = Some((tx, handle));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and closes every connection: clients see connection errors.
    pub fn stop(&mut self) {
        if let Some((tx, handle)) = self.running.take() {
            let _ = tx.send(());
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), handle).await });
        }
    }

    /// Listens again on the same address, keeping what was accepted.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "already running");
        let listener = self.runtime.block_on(async {
            for _ in 0..100 {
                if let Ok(listener) = TcpListener::bind(self.addr).await {
                    return listener;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("cannot bind {} again", self.addr);
        });
        self.serve(listener);
    }

    /// Answers the next requests with these statuses (and Retry-After seconds) instead.
    pub fn inject(&self, responses: &[(u16, Option<u64>)]) {
        self.store
            .lock()
            .unwrap()
            .inject
            .extend(responses.iter().copied());
    }

    /// Requires X-Scope-OrgID, like a multi-tenant server.
    pub fn set_multi_tenant(&self, on: bool) {
        self.store.lock().unwrap().multi_tenant = on;
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.store.lock().unwrap().accepted.clone()
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.store.lock().unwrap().requests.clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn headers_of(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Forced responses and tenancy, checked before the request itself.
fn gate(store: &Store, headers: &HeaderMap) -> Option<Response> {
    let mut shared = store.lock().unwrap();
    if let Some((status, retry_after)) = shared.inject.pop_front() {
        let status = StatusCode::from_u16(status).unwrap();
        let mut response =
            Reject::new(status, "injected", format!("injected {status}")).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
        }
        return Some(response);
    }
    if shared.multi_tenant && !headers.contains_key("x-scope-orgid") {
        return Some(
            Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", "no org id").into_response(),
        );
    }
    None
}

fn log(store: &Store, path: &str, response: &Response) {
    store.lock().unwrap().requests.push(Logged {
        path: path.to_string(),
        status: response.status().as_u16(),
    });
}
