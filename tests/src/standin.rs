//! A stand-in for a Grafana Pyroscope server (none can be installed here): a real HTTP server on
//! 127.0.0.1 with both ingestion endpoints, enforcing the server's validation rules
//! (`shared/reference/pyroscope-ingest.md`, sections 1, 2 and 4) with its status codes and
//! error bodies, and recording every profile it accepted.
//!
//! Written from the specification, independently of profilerd's own checks, so that a bug in
//! one does not hide in the other.

use std::{
    collections::{BTreeMap, VecDeque},
    io::Read,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{to_bytes, Bytes},
    extract::{FromRequest, Multipart, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use profilerd::{pprof_proto::Profile, push_proto::PushRequest};
use prost::Message;
use tokio::{net::TcpListener, sync::oneshot};

pub const MAX_PROFILE_BYTES: usize = 4 << 20;
pub const MAX_BODY_BYTES: usize = 256 << 20;
pub const MAX_LABEL_NAMES: usize = 30;
pub const MAX_NAME_LEN: usize = 1024;
pub const MAX_VALUE_LEN: usize = 2048;
pub const MAX_SAMPLES: usize = 16_000;
pub const MAX_STACK_DEPTH: usize = 1000;
pub const MAX_SYMBOL_LEN: usize = 65_535;

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
            .route("/ingest", post(ingest))
            .route("/push.v1.PusherService/Push", post(push))
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

fn gunzip_if_needed(bytes: &[u8], limit: usize) -> Result<Vec<u8>, Reject> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Reject::invalid(format!("bad gzip: {e}")))?;
    Ok(out)
}

/// Section 4: the checks on one pprof profile. Returns the profile (truncated where the server
/// truncates) and whether anything was truncated.
pub fn validate_profile(raw: &[u8]) -> Result<(Profile, bool), Reject> {
    let bytes = gunzip_if_needed(raw, MAX_PROFILE_BYTES)?;
    if bytes.len() > MAX_PROFILE_BYTES {
        return Err(Reject::invalid(format!(
            "uncompressed profile larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    // prost refuses strings that are not UTF-8, as the server does.
    let mut profile = Profile::decode(&bytes[..])
        .map_err(|e| Reject::invalid(format!("malformed profile: {e}")))?;
    let strings = profile.string_table.len() as i64;
    if profile.sample_type.is_empty() {
        return Err(Reject::invalid("malformed profile: no sample_type"));
    }
    if profile.string_table.first().map(String::as_str) != Some("") {
        return Err(Reject::invalid(
            "malformed profile: string_table[0] must be empty",
        ));
    }
    let check = |i: i64, what: &str| -> Result<(), Reject> {
        if i < 0 || i >= strings {
            return Err(Reject::invalid(format!(
                "malformed profile: {what} string index {i} out of range"
            )));
        }
        Ok(())
    };
    for ty in profile.sample_type.iter().chain(profile.period_type.iter()) {
        check(ty.r#type, "value type")?;
        check(ty.unit, "value unit")?;
    }
    for ty in &profile.sample_type {
        if profile.string_table[ty.r#type as usize].contains('-') {
            return Err(Reject::invalid("sample type names may not contain '-'"));
        }
    }
    if profile.sample.len() > MAX_SAMPLES {
        return Err(Reject::invalid(format!(
            "{} samples, at most {MAX_SAMPLES}",
            profile.sample.len()
        )));
    }
    for sample in &profile.sample {
        if sample.value.len() != profile.sample_type.len() {
            return Err(Reject::invalid(
                "sample value count differs from sample_type count",
            ));
        }
        for label in &sample.label {
            check(label.key, "label key")?;
            check(label.str, "label value")?;
            check(label.num_unit, "label unit")?;
        }
    }
    for mapping in &profile.mapping {
        if mapping.id == 0 {
            return Err(Reject::invalid("mapping id 0"));
        }
        check(mapping.filename, "mapping filename")?;
        check(mapping.build_id, "mapping build id")?;
    }
    for location in &profile.location {
        if location.id == 0 {
            return Err(Reject::invalid("location id 0"));
        }
    }
    for function in &profile.function {
        if function.id == 0 {
            return Err(Reject::invalid("function id 0"));
        }
        check(function.name, "function name")?;
        check(function.system_name, "function system name")?;
        check(function.filename, "function filename")?;
    }
    for &comment in &profile.comment {
        check(comment, "comment")?;
    }
    check(profile.drop_frames, "drop_frames")?;
    check(profile.keep_frames, "keep_frames")?;
    if profile.time_nanos != 0 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let hour = 3_600_000_000_000i64;
        if profile.time_nanos <= now - hour || profile.time_nanos >= now + hour / 6 {
            return Err(Reject::invalid(
                "time_nanos outside the ingestion window (now-1h, now+10m)",
            ));
        }
    }
    let mut truncated = false;
    for sample in &mut profile.sample {
        if sample.location_id.len() > MAX_STACK_DEPTH {
            sample.location_id.truncate(MAX_STACK_DEPTH);
            truncated = true;
        }
    }
    for s in &mut profile.string_table {
        if s.len() > MAX_SYMBOL_LEN {
            let mut end = MAX_SYMBOL_LEN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            truncated = true;
        }
    }
    Ok((profile, truncated))
}

fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Section 4's label rules for one series.
fn validate_labels(labels: &[(String, String)]) -> Result<(), Reject> {
    if labels.len() > MAX_LABEL_NAMES {
        return Err(Reject::invalid(format!(
            "{} label names, at most {MAX_LABEL_NAMES}",
            labels.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in labels {
        if name.len() > MAX_NAME_LEN {
            return Err(Reject::invalid(format!(
                "label name longer than {MAX_NAME_LEN}"
            )));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Reject::invalid(format!(
                "label value of {name} longer than {MAX_VALUE_LEN}"
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(Reject::invalid(format!("duplicate label name {name}")));
        }
    }
    Ok(())
}

fn metric_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Section 2: `POST /push.v1.PusherService/Push`.
async fn push(State(store): State<Store>, headers: HeaderMap, body: Bytes) -> Response {
    let response = match gate(&store, &headers) {
        Some(response) => response,
        None => match handle_push(&store, &headers, &body) {
            Ok(()) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/proto")],
                Vec::new(),
            )
                .into_response(),
            Err(reject) => reject.into_response(),
        },
    };
    log(&store, "/push.v1.PusherService/Push", &response);
    response
}

fn handle_push(store: &Store, headers: &HeaderMap, body: &[u8]) -> Result<(), Reject> {
    let body = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        Some(b"gzip") => gunzip_if_needed(body, MAX_BODY_BYTES)?,
        Some(other) => {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unimplemented",
                format!("unknown compression {}", String::from_utf8_lossy(other)),
            ))
        }
        None => body.to_vec(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request = match content_type {
        "application/proto" => PushRequest::decode(&body[..])
            .map_err(|e| Reject::invalid(format!("bad PushRequest: {e}")))?,
        "application/json" => push_from_json(&body)?,
        other => {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unimplemented",
                format!("content type {other:?} is neither application/proto nor application/json"),
            ))
        }
    };
    let mut accepted = Vec::new();
    for series in request.series {
        let labels: Vec<(String, String)> = series
            .labels
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        validate_labels(&labels)?;
        let get = |n: &str| {
            labels
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| v.as_str())
        };
        if get("service_name").is_none_or(str::is_empty) {
            return Err(Reject::invalid("service_name label is required"));
        }
        if !get("__name__").is_some_and(metric_name_ok) {
            return Err(Reject::invalid("__name__ label is missing or invalid"));
        }
        for (name, _) in &labels {
            if name != "__name__" && !is_label_name(name) {
                return Err(Reject::invalid(format!("invalid label name {name:?}")));
            }
        }
        for sample in series.samples {
            let (profile, truncated) = validate_profile(&sample.raw_profile)?;
            accepted.push(Accepted {
                protocol: "push",
                labels: labels.iter().cloned().collect(),
                profile,
                headers: headers_of(headers),
                from_until: None,
                truncated,
            });
        }
    }
    store.lock().unwrap().accepted.extend(accepted);
    Ok(())
}

fn push_from_json(body: &[u8]) -> Result<PushRequest, Reject> {
    use profilerd::push_proto::{LabelPair, RawProfileSeries, RawSample};
    let bad = |m: &str| Reject::invalid(format!("bad JSON PushRequest: {m}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    let mut request = PushRequest::default();
    for series in value["series"].as_array().cloned().unwrap_or_default() {
        let mut out = RawProfileSeries::default();
        for label in series["labels"].as_array().cloned().unwrap_or_default() {
            out.labels.push(LabelPair {
                name: label["name"].as_str().unwrap_or("").to_string(),
                value: label["value"].as_str().unwrap_or("").to_string(),
            });
        }
        for sample in series["samples"].as_array().cloned().unwrap_or_default() {
            let encoded = sample["rawProfile"]
                .as_str()
                .ok_or_else(|| bad("rawProfile missing"))?;
            out.samples.push(RawSample {
                raw_profile: base64_decode(encoded)
                    .ok_or_else(|| bad("rawProfile is not base64"))?,
                id: sample["ID"].as_str().unwrap_or("").to_string(),
            });
        }
        request.series.push(out);
    }
    Ok(request)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Section 1: `app{k=v,...}` parsed and checked; 400 on a bad name.
fn parse_ingest_name(name: &str) -> Result<(String, Vec<(String, String)>), Reject> {
    let bad = |m: String| Reject::invalid(m);
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i..])),
        None => (name, None),
    };
    if app.is_empty()
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
    {
        return Err(bad(format!("invalid application name {app:?}")));
    }
    let mut labels = Vec::new();
    if let Some(rest) = rest {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| bad(format!("unterminated labels in {name:?}")))?;
        for pair in inner.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("label {pair:?} has no value")))?;
            if k == "__name__" {
                return Err(bad("label __name__ is reserved".into()));
            }
            if !is_label_name(k) {
                return Err(bad(format!("invalid label name {k:?}")));
            }
            labels.push((k.to_string(), v.to_string()));
        }
    }
    Ok((app.to_string(), labels))
}

fn parse_time(text: Option<&str>) -> Result<Option<i64>, Reject> {
    match text {
        None => Ok(None),
        Some(t) => t.parse::<i64>().map(Some).map_err(|_| {
            Reject::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_argument",
                format!("bad time {t:?}"),
            )
        }),
    }
}

/// Section 1: `POST /ingest`.
async fn ingest(State(store): State<Store>, request: Request) -> Response {
    let headers = request.headers().clone();
    let response = match gate(&store, &headers) {
        Some(response) => response,
        None => match handle_ingest(&store, request).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(reject) => reject.into_response(),
        },
    };
    log(&store, "/ingest", &response);
    response
}

async fn handle_ingest(store: &Store, request: Request) -> Result<(), Reject> {
    let headers = request.headers().clone();
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .map(|q| url_pairs(q).collect())
        .unwrap_or_default();
    let (app, mut labels) = parse_ingest_name(query.get("name").map(String::as_str).unwrap_or(""))?;
    let unprocessable =
        |m: String| Reject::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument", m);
    let from = parse_time(query.get("from").map(String::as_str))?;
    let until = parse_time(query.get("until").map(String::as_str))?;
    if query.get("format").map(String::as_str) != Some("pprof") {
        return Err(unprocessable(
            "the stand-in implements format=pprof only".into(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let raw = if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| unprocessable(format!("bad multipart body: {e}")))?;
        let mut profile = None;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| unprocessable(e.to_string()))?
        {
            match field.name() {
                Some("profile") => {
                    profile = Some(
                        field
                            .bytes()
                            .await
                            .map_err(|e| unprocessable(e.to_string()))?,
                    )
                }
                Some("prev_profile") => {
                    return Err(unprocessable("prev_profile is not supported".into()))
                }
                _ => {}
            }
        }
        profile.ok_or_else(|| unprocessable("multipart body without a profile field".into()))?
    } else {
        to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "resource_exhausted",
                    "request body too large",
                )
            })?
    };
    let (profile, truncated) = validate_profile(&raw).map_err(|r| Reject {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        ..r
    })?;
    if profile.sample.is_empty() {
        return Ok(());
    }
    let cpu = profile
        .sample_type
        .iter()
        .any(|t| profile.string_table[t.r#type as usize] == "cpu");
    labels.retain(|(name, _)| !name.starts_with("__"));
    if !labels.iter().any(|(n, _)| n == "service_name") {
        labels.push(("service_name".into(), app.clone()));
    }
    if let Some(spy) = query.get("spyName") {
        labels.push(("pyroscope_spy".into(), spy.clone()));
    }
    labels.push((
        "__name__".into(),
        if cpu {
            "process_cpu".into()
        } else {
            app.clone()
        },
    ));
    validate_labels(&labels)?;
    store.lock().unwrap().accepted.push(Accepted {
        protocol: "ingest",
        labels: labels.into_iter().collect(),
        profile,
        headers: headers_of(&headers),
        from_until: Some((from.unwrap_or(0), until.unwrap_or(0))),
        truncated,
    });
    Ok(())
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
