//! Sends profiles to a Grafana Pyroscope server, over `/ingest` or the Connect push API.

use std::{
    fmt,
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use flate2::{write::GzEncoder, Compression};
use prost::Message;
use reqwest::{
    header::{
        HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, LOCATION,
    },
    redirect, StatusCode, Url,
};
use thiserror::Error;

pub use super::response::RetryAfter;
use super::response::{excerpt, header_excerpt, read_bounded, retry_after, server_message};
use crate::push_proto as push;

/// `spyName` of `/ingest` requests, which the server turns into the `pyroscope_spy` label.
pub const SPY_NAME: &str = "profilerd";
const PUSH_PATH: &str = "push.v1.PusherService/Push";
const TENANT_HEADER: &str = "X-Scope-OrgID";

/// Wire protocol to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Connect `push.v1.PusherService/Push` (what Grafana Alloy uses): labels travel as a list
    Push,
    /// legacy `POST /ingest?name=app{labels}` (what pyroscope-go and holmes use)
    Ingest,
}

/// Credentials; never printed.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("none"),
            Auth::Basic { user, .. } => write!(f, "basic(user={user}, password=<redacted>)"),
            Auth::Bearer(_) => f.write_str("bearer(<redacted>)"),
        }
    }
}

#[derive(Debug, Error)]
pub enum ServerConfigError {
    #[error("--server {0:?} is not an http(s) URL: use e.g. http://pyroscope:4040")]
    BadUrl(String),
    #[error("cannot read {flag} {path}: {source}")]
    SecretFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    EmptySecret(&'static str),
    #[error("{origin} holds a control character at byte {at}: a secret is one line of printable text, rewrite it without one")]
    ControlInSecret { origin: String, at: usize },
    #[error("--basic-auth-user holds a character an HTTP header cannot carry: use printable text")]
    BadCredentials,
    #[error("--basic-auth-user needs a password: pass --basic-auth-password-file or set PROFILERD_BASIC_AUTH_PASSWORD")]
    MissingPassword,
    #[error("--header {0:?} is not 'Name: value'")]
    BadHeader(String),
    #[error("--header {0:?} would override what profilerd sets itself: use --basic-auth-user, --bearer-token-file or --tenant-id")]
    ReservedHeader(String),
    #[error("--tenant-id {0:?} is not a valid header value")]
    BadTenant(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// Everything needed to reach the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub url: Url,
    pub protocol: Protocol,
    pub timeout: Duration,
    pub auth: Auth,
    pub tenant: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Most bytes read of a response body (`--upload-response-max-bytes`).
    pub max_response_bytes: usize,
}

/// Reads a secret from a file (trailing newline removed), else from an environment variable.
pub fn read_secret(
    flag: &'static str,
    file: Option<&PathBuf>,
    env: &'static str,
) -> Result<Option<String>, ServerConfigError> {
    let (value, origin) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| ServerConfigError::SecretFile {
                flag,
                path: path.clone(),
                source,
            })?,
            format!("{flag} {}", path.display()),
        ),
        None => match std::env::var(env) {
            Ok(value) => (value, env.to_string()),
            Err(_) => return Ok(None),
        },
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        return Err(ServerConfigError::EmptySecret(flag));
    }
    if let Some(at) = value.find(|c: char| c.is_control()) {
        return Err(ServerConfigError::ControlInSecret { origin, at });
    }
    Ok(Some(value))
}

/// Parses `--server`.
pub fn parse_url(text: &str) -> Result<Url, ServerConfigError> {
    let url = Url::parse(text).map_err(|_| ServerConfigError::BadUrl(text.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ServerConfigError::BadUrl(text.to_string()));
    }
    Ok(url)
}

/// Parses `--header 'Name: value'`, refusing the headers profilerd sets itself.
pub fn parse_header(text: &str) -> Result<(String, String), ServerConfigError> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| ServerConfigError::BadHeader(text.into()))?;
    let (name, value) = (name.trim(), value.trim());
    if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
        return Err(ServerConfigError::BadHeader(text.into()));
    }
    let lower = name.to_ascii_lowercase();
    if [
        "authorization",
        "x-scope-orgid",
        "content-type",
        "content-encoding",
        "content-length",
    ]
    .contains(&lower.as_str())
    {
        return Err(ServerConfigError::ReservedHeader(name.into()));
    }
    Ok((name.to_string(), value.to_string()))
}

/// One profile to deliver, as queued, spooled and sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    /// Order of creation; the spool sends in this order.
    pub seq: u64,
    /// `__name__` first, then the series labels.
    pub labels: Vec<(String, String)>,
    pub from_nanos: i64,
    pub until_nanos: i64,
    /// gzipped pprof.
    pub pprof_gz: Vec<u8>,
}

impl Upload {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth trying again: connection failure, timeout, 408, 429, 5xx.
    Retryable {
        cause: String,
        retry_after: Option<RetryAfter>,
        /// The body was longer than the bound and read only up to it.
        truncated: bool,
    },
    /// The server refused the profile for good (other 4xx).
    Rejected {
        status: u16,
        message: String,
        truncated: bool,
    },
    /// A 3xx: never followed, since the request would lose its body (a 302 turns a POST
    /// into a GET) and take the credentials to an address the operator did not name.
    Redirected {
        status: u16,
        /// The `Location` header, as an excerpt ("none" when absent).
        location: String,
    },
}

impl SendError {
    /// Whether the server's answer was cut at `--upload-response-max-bytes`.
    pub fn truncated(&self) -> bool {
        match self {
            SendError::Retryable { truncated, .. } | SendError::Rejected { truncated, .. } => {
                *truncated
            }
            SendError::Redirected { .. } => false,
        }
    }
}

/// HTTP client for one server.
pub struct Client {
    http: reqwest::Client,
    config: ServerConfig,
    endpoint: Url,
}

impl Client {
    pub fn new(config: ServerConfig) -> Result<Self, ServerConfigError> {
        let mut headers = HeaderMap::new();
        match &config.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let token = base64(format!("{user}:{password}").as_bytes());
                headers.insert(AUTHORIZATION, sensitive(&format!("Basic {token}"))?);
            }
            Auth::Bearer(token) => {
                headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
            }
        }
        if let Some(tenant) = &config.tenant {
            let value = HeaderValue::from_str(tenant)
                .map_err(|_| ServerConfigError::BadTenant(tenant.clone()))?;
            headers.insert(TENANT_HEADER, value);
        }
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ServerConfigError::BadHeader(name.clone()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ServerConfigError::BadHeader(value.clone()))?;
            headers.append(name, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .redirect(redirect::Policy::none())
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("profilerd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ServerConfigError::Client)?;
        let path = match config.protocol {
            Protocol::Push => PUSH_PATH,
            Protocol::Ingest => "ingest",
        };
        let base = config.url.as_str().trim_end_matches('/');
        let endpoint = Url::parse(&format!("{base}/{path}"))
            .map_err(|_| ServerConfigError::BadUrl(base.into()))?;
        Ok(Self {
            http,
            config,
            endpoint,
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// One attempt to deliver `upload`.
    pub async fn send(&self, upload: &Upload) -> Result<(), SendError> {
        let request = match self.config.protocol {
            Protocol::Push => self
                .http
                .post(self.endpoint.clone())
                .header(CONTENT_TYPE, "application/proto")
                .header(CONTENT_ENCODING, "gzip")
                .header("Connect-Protocol-Version", "1")
                .body(gzip(&push_request(upload).encode_to_vec())),
            Protocol::Ingest => self
                .http
                .post(self.endpoint.clone())
                .query(&[
                    ("name", ingest_name(upload)),
                    ("from", (upload.from_nanos / 1_000_000_000).to_string()),
                    (
                        "until",
                        (upload.until_nanos / 1_000_000_000)
                            .max(upload.from_nanos / 1_000_000_000 + 1)
                            .to_string(),
                    ),
                    ("format", "pprof".to_string()),
                    ("spyName", SPY_NAME.to_string()),
                ])
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(upload.pprof_gz.clone()),
        };
        let response = request.send().await.map_err(|err| SendError::Retryable {
            cause: describe_transport_error(&err),
            retry_after: None,
            truncated: false,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            return Err(SendError::Redirected {
                status: status.as_u16(),
                location: header_excerpt(response.headers(), LOCATION)
                    .unwrap_or_else(|| "none".into()),
            });
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = read_bounded(response, self.config.max_response_bytes).await;
        let message = server_message(&String::from_utf8_lossy(&body.bytes));
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(SendError::Retryable {
                cause: format!("HTTP {}: {message}", status.as_u16()),
                retry_after,
                truncated: body.truncated,
            });
        }
        Err(SendError::Rejected {
            status: status.as_u16(),
            message,
            truncated: body.truncated,
        })
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, ServerConfigError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| ServerConfigError::BadCredentials)?;
    value.set_sensitive(true);
    Ok(value)
}

fn describe_transport_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "cannot connect".to_string()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            text = format!("{text}: {e}");
            source = e.source();
        }
        excerpt(&text)
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// The Connect push request for one upload (one series, one sample).
pub fn push_request(upload: &Upload) -> push::PushRequest {
    push::PushRequest {
        series: vec![push::RawProfileSeries {
            labels: upload
                .labels
                .iter()
                .map(|(name, value)| push::LabelPair {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            samples: vec![push::RawSample {
                raw_profile: upload.pprof_gz.clone(),
                id: sample_id(upload),
            }],
        }],
    }
}

/// A UUID-formatted id, unique per upload (derived from its sequence number and time).
fn sample_id(upload: &Upload) -> String {
    let a = upload.from_nanos as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let b = upload.seq.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ upload.until_nanos as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// `/ingest`'s `name`: `service{k=v,...}` with the characters the key parser splits on
/// replaced in values.
pub fn ingest_name(upload: &Upload) -> String {
    let service = upload.label("service_name").unwrap_or("unknown");
    let labels: Vec<String> = upload
        .labels
        .iter()
        .filter(|(name, _)| name != "__name__" && name != "service_name")
        .map(|(name, value)| {
            let value: String = value
                .chars()
                .map(|c| {
                    if matches!(c, ',' | '{' | '}' | '=') {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            format!("{name}={value}")
        })
        .collect();
    format!(
        "{}{{{}}}",
        crate::targets::sanitize_service_name(service),
        labels.join(",")
    )
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> Upload {
        Upload {
            seq: 3,
            labels: vec![
                ("__name__".into(), "process_cpu".into()),
                ("cgroup".into(), "/system.slice/a,b.service".into()),
                ("pid".into(), "42".into()),
                ("service_name".into(), "my app".into()),
            ],
            from_nanos: 1_700_000_000_000_000_000,
            until_nanos: 1_700_000_015_000_000_000,
            pprof_gz: vec![1, 2, 3],
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pa55"), "dXNlcjpwYTU1");
    }

    #[test]
    fn ingest_name_is_app_with_labels() {
        assert_eq!(
            ingest_name(&upload()),
            "my_app{cgroup=/system.slice/a_b.service,pid=42}"
        );
    }

    #[test]
    fn push_request_carries_all_labels_and_the_profile() {
        let request = push_request(&upload());
        let series = &request.series[0];
        assert_eq!(series.labels.len(), 4);
        assert_eq!(series.labels[0].name, "__name__");
        assert_eq!(series.samples[0].raw_profile, vec![1, 2, 3]);
        let id = &series.samples[0].id;
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }

    #[test]
    fn headers_and_urls_are_checked() {
        assert_eq!(
            parse_header("X-Env: prod").unwrap(),
            ("X-Env".into(), "prod".into())
        );
        assert!(matches!(
            parse_header("no colon"),
            Err(ServerConfigError::BadHeader(_))
        ));
        assert!(matches!(
            parse_header("Authorization: x"),
            Err(ServerConfigError::ReservedHeader(_))
        ));
        assert!(matches!(
            parse_header("x-scope-orgid: t"),
            Err(ServerConfigError::ReservedHeader(_))
        ));
        assert!(parse_url("http://127.0.0.1:4040").is_ok());
        assert!(matches!(
            parse_url("ftp://x"),
            Err(ServerConfigError::BadUrl(_))
        ));
        assert!(matches!(
            parse_url("localhost:4040"),
            Err(ServerConfigError::BadUrl(_))
        ));
    }

    #[test]
    fn secrets_come_from_files_without_trailing_newline_and_are_never_printed() {
        let path = std::env::temp_dir().join(format!("profilerd-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let secret =
            read_secret("--bearer-token-file", Some(&path), "PROFILERD_TEST_UNSET").unwrap();
        assert_eq!(secret.as_deref(), Some("s3cret"));
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret("--bearer-token-file", Some(&path), "PROFILERD_TEST_UNSET").is_err());
        // A control character is named as the file's, not as a --header's.
        std::fs::write(&path, "s3c\u{1b}ret\n").unwrap();
        let err = read_secret("--bearer-token-file", Some(&path), "PROFILERD_TEST_UNSET")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "--bearer-token-file {} holds a control character at byte 3: a secret is one line of printable text, rewrite it without one",
                path.display()
            )
        );
        assert!(!err.contains("s3c"));
        std::fs::remove_file(&path).unwrap();
        let auth = Auth::Basic {
            user: "u".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(!format!("{:?}", Auth::Bearer("s3cret".into())).contains("s3cret"));
    }
}
