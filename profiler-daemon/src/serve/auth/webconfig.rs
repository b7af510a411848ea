//! `--web-config-file`: the listener's TLS and credentials, in the YAML format of Prometheus'
//! exporter-toolkit (`--web.config.file`), so that a file written for node_exporter works here.
//! In: the file's path. Out: a [`WebConfig`] (a rustls server configuration with the ring
//! provider, the users and their bcrypt hashes, the SHA-256 digests of the accepted bearer
//! tokens), or a one-line [`WebConfigError`] naming the file, the cause and the fix.
//!
//! Keys: `tls_server_config` (`cert_file`, `key_file`, PEM; `client_ca_file` with
//! `client_auth_type` `RequireAndVerifyClientCert` or `VerifyClientCertIfGiven`),
//! `basic_auth_users` (user: bcrypt hash), and profilerd's own `bearer_tokens_sha256` (the
//! SHA-256 digests, in hex, of the tokens accepted in `Authorization: Bearer`). Any other key
//! is an error naming it: exporter-toolkit's TLS version, cipher and `http_server_config`
//! settings are not supported, and a file that sets them would otherwise be served with less
//! than it asks for. Relative paths are relative to the file's directory, as exporter-toolkit
//! resolves them.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    crypto::{ring::default_provider, CryptoProvider},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use thiserror::Error;

use super::verify::Credentials;

/// The exporter-toolkit keys profilerd reads, for messages.
const FORMAT: &str = "Prometheus exporter-toolkit's web config: tls_server_config, basic_auth_users, and bearer_tokens_sha256";

#[derive(Debug, Error)]
pub enum WebConfigError {
    #[error("--web-config-file {path}: cannot read it ({source}): give the path of a readable YAML file")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--web-config-file {path}: {message}: the file is {FORMAT}")]
    Format { path: PathBuf, message: String },
    #[error("--web-config-file {path}: {key}: {message}: {fix}")]
    Value {
        path: PathBuf,
        key: String,
        message: String,
        fix: String,
    },
}

/// What the file says, as read and checked.
pub struct WebConfig {
    /// TLS for every connection; `None`: plain HTTP.
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// Client certificates: required, or checked when given.
    client_certs: Option<ClientAuth>,
    /// Users and tokens every request but `/healthz` must show; `None`: no authentication.
    pub(crate) credentials: Option<Credentials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    bearer_tokens_sha256: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuth {
    Require,
    IfGiven,
}

impl WebConfig {
    /// Reads and checks `path`: every file it names is read and every hash parsed now.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the contents of `path` (relative file names are relative to its
    /// directory).
    pub fn parse(path: &Path, text: &str) -> Result<Self, WebConfigError> {
        let format = |message: String| WebConfigError::Format {
            path: path.to_path_buf(),
            message,
        };
        // An empty file (or one with only comments) turns nothing on, as in exporter-toolkit.
        let file: Option<File> =
            serde_yaml_ng::from_str(text).map_err(|err| format(err.to_string()))?;
        let file = file.unwrap_or(File {
            tls_server_config: None,
            basic_auth_users: None,
            bearer_tokens_sha256: None,
        });
        let dir = path.parent().unwrap_or(Path::new("."));
        let (tls, client_certs) = match &file.tls_server_config {
            Some(tls) => {
                let (config, client) = tls_config(path, dir, tls)?;
                (Some(config), client)
            }
            None => (None, None),
        };
        let users = file.basic_auth_users.unwrap_or_default();
        let tokens = file.bearer_tokens_sha256.unwrap_or_default();
        let credentials = if users.is_empty() && tokens.is_empty() {
            None
        } else {
            Some(
                Credentials::new(users, &tokens).map_err(|(key, message, fix)| {
                    WebConfigError::Value {
                        path: path.to_path_buf(),
                        key,
                        message,
                        fix,
                    }
                })?,
            )
        };
        Ok(Self {
            tls,
            client_certs,
            credentials,
        })
    }

    /// What the listener does with it, for the log: `TLS, client certificates required, 2
    /// users, 1 bearer token`.
    pub fn describe(&self) -> String {
        let mut out = String::from(if self.tls.is_some() { "TLS" } else { "no TLS" });
        match self.client_certs {
            Some(ClientAuth::Require) => out.push_str(", client certificates required"),
            Some(ClientAuth::IfGiven) => out.push_str(", client certificates checked if given"),
            None => {}
        }
        match &self.credentials {
            None => out.push_str(", no authentication"),
            Some(c) => {
                let (users, tokens) = c.counts();
                let plural = |n: usize| if n == 1 { "" } else { "s" };
                let _ = write!(
                    out,
                    ", {users} user{} (basic auth), {tokens} bearer token{}",
                    plural(users),
                    plural(tokens)
                );
            }
        }
        out
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // What is turned on, never the credentials.
        f.write_str(&self.describe())
    }
}

/// A rustls server configuration from `tls_server_config`.
fn tls_config(
    path: &Path,
    dir: &Path,
    tls: &TlsFile,
) -> Result<(Arc<ServerConfig>, Option<ClientAuth>), WebConfigError> {
    let value = |key: &str, message: String, fix: &str| WebConfigError::Value {
        path: path.to_path_buf(),
        key: format!("tls_server_config.{key}"),
        message,
        fix: fix.to_string(),
    };
    let cert_file = dir.join(&tls.cert_file);
    let key_file = dir.join(&tls.key_file);
    let certs = read_pem(&cert_file, |pem| {
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
    })
    .and_then(|certs| match certs.is_empty() {
        true => Err(format!("{} holds no PEM certificate", cert_file.display())),
        false => Ok(certs),
    })
    .map_err(|m| value("cert_file", m, "give a PEM certificate (chain), leaf first"))?;
    let key = read_pem(&key_file, PrivateKeyDer::from_pem_slice).map_err(|m| {
        value(
            "key_file",
            m,
            "give the certificate's PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| value("cert_file", err.to_string(), "report this as a bug"))?;
    let client = client_auth(tls).map_err(|(key, m, fix)| value(key, m, fix))?;
    let builder = match (client, &tls.client_ca_file) {
        (Some(mode), Some(ca)) => {
            let verifier = client_verifier(&dir.join(ca), mode, provider).map_err(|m| {
                value(
                    "client_ca_file",
                    m,
                    "give the PEM certificate of the CA that signs the clients' certificates",
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|err| {
        let message = match err {
            rustls::Error::InconsistentKeys(_) => format!(
                "{} does not match the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
            other => other.to_string(),
        };
        value(
            "key_file",
            message,
            "give the private key of cert_file's certificate",
        )
    })?;
    // hyper serves HTTP/1.1 only: say so, rather than let a client guess.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), client))
}

/// `client_auth_type` and `client_ca_file`, checked together.
fn client_auth(tls: &TlsFile) -> Result<Option<ClientAuth>, (&'static str, String, &'static str)> {
    let mode = match tls.client_auth_type.as_deref() {
        None | Some("NoClientCert") => None,
        Some("RequireAndVerifyClientCert") => Some(ClientAuth::Require),
        Some("VerifyClientCertIfGiven") => Some(ClientAuth::IfGiven),
        Some(other) => {
            return Err((
                "client_auth_type",
                format!("{other:?} is not supported (a client certificate that is not verified proves nothing)"),
                "use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file, or NoClientCert",
            ))
        }
    };
    match (mode, &tls.client_ca_file) {
        (Some(_), None) => Err((
            "client_auth_type",
            "verifying client certificates needs client_ca_file".into(),
            "add client_ca_file: the PEM certificate of the CA that signs the clients' certificates",
        )),
        (None, Some(_)) => Err((
            "client_ca_file",
            "given without client_auth_type, so no client certificate would be asked for".into(),
            "add client_auth_type: RequireAndVerifyClientCert",
        )),
        _ => Ok(mode),
    }
}

fn client_verifier(
    ca_file: &Path,
    mode: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let cas = read_pem(ca_file, |pem| {
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()
    })?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|err| format!("{}: {err}", ca_file.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match mode {
        ClientAuth::Require => builder,
        ClientAuth::IfGiven => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|err| format!("{}: {err}", ca_file.display()))
}

/// Reads `file` and parses its PEM with `parse`; the error names the file.
fn read_pem<T>(
    file: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls_pki_types::pem::Error>,
) -> Result<T, String> {
    let bytes = fs::read(file).map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    parse(&bytes).map_err(|err| match err {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{} holds no PEM item of the expected kind", file.display())
        }
        other => format!("{} is not valid PEM: {other}", file.display()),
    })
}

#[cfg(test)]
mod tests;
