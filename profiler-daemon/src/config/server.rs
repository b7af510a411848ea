//! The flags of the Pyroscope server: where and how profiles are sent, their labels, and the
//! delivery queue, retries and spool.

use std::{path::PathBuf, time::Duration};

use clap::{builder::PossibleValue, Args, ValueEnum};

use super::cli::parse_interval;
use crate::{export::Protocol, types::parse_bytes};

/// `--protocol`: the names and help of [`Protocol`]'s values (the export stage knows no clap).
impl ValueEnum for Protocol {
    fn value_variants<'a>() -> &'a [Self] {
        &[Protocol::Push, Protocol::Ingest]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Protocol::Push => PossibleValue::new("push").help(
                "Connect `push.v1.PusherService/Push` (what Grafana Alloy uses): labels travel as a list",
            ),
            Protocol::Ingest => PossibleValue::new("ingest")
                .help("legacy `POST /ingest?name=app{labels}` (what pyroscope-go and holmes use)"),
        })
    }
}

/// Sending profiles to a Grafana Pyroscope server.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Pyroscope server")]
pub struct ServerArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub labels: LabelArgs,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

impl ServerArgs {
    /// The server's URL, if profiles go to one.
    pub fn url(&self) -> Option<&str> {
        self.client.server.as_deref()
    }
}

/// Where and how uploads are sent: a reload replaces the HTTP client with these.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Pyroscope server")]
pub struct ClientArgs {
    /// Send profiles to this Pyroscope server (e.g. http://pyroscope:4040).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Wire protocol: push (Connect API, labels as a list; what current Grafana Pyroscope and
    /// Alloy use) or ingest (legacy /ingest, labels encoded in the name).
    #[arg(long, value_enum, default_value = "push")]
    pub protocol: Protocol,
    /// HTTP basic auth user; the password comes from --basic-auth-password-file or the
    /// PROFILERD_BASIC_AUTH_PASSWORD environment variable.
    #[arg(long, value_name = "USER")]
    pub basic_auth_user: Option<String>,
    /// File holding the basic auth password.
    #[arg(long, value_name = "FILE")]
    pub basic_auth_password_file: Option<PathBuf>,
    /// File holding a bearer token (or set PROFILERD_BEARER_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,
    /// Tenant id, sent as X-Scope-OrgID (multi-tenant servers).
    #[arg(long, value_name = "ID")]
    pub tenant_id: Option<String>,
    /// Extra HTTP header 'Name: value'; repeatable.
    #[arg(long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
    /// Time limit of one upload request.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    pub upload_timeout: Duration,
    /// Most bytes read of the server's error response (1KiB to 16MiB); the rest is not read,
    /// so a huge or endless body costs no memory.
    #[arg(long, default_value = "64KiB", value_parser = parse_response_bytes, value_name = "SIZE")]
    pub upload_response_max_bytes: u64,
}

fn parse_response_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    if !(1 << 10..=16 << 20).contains(&bytes) {
        return Err(format!("{text:?} is out of range: use 1KiB to 16MiB"));
    }
    Ok(bytes)
}

/// The series labels of every profile sent.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Pyroscope server")]
pub struct LabelArgs {
    /// service_name of every profile (default: the process's systemd unit or container from
    /// its cgroup, else its comm).
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    /// Extra label NAME=VALUE on every profile; repeatable.
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    pub tags: Vec<String>,
}

/// The delivery queue, retries and spool: sized once, at start.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Pyroscope server")]
pub struct DeliveryArgs {
    /// Retries of one profile (connection errors, timeouts, 429, 5xx) before it is spooled.
    #[arg(long, default_value_t = 3)]
    pub upload_retries: u32,
    /// Longest wait between two attempts (exponential backoff with jitter up to this); a
    /// server's longer Retry-After is cut to it, and logged.
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    pub retry_max_backoff: Duration,
    /// Profiles waiting in memory for the server; beyond it they go to the spool.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub upload_queue: u64,
    /// Directory for profiles the server could not take yet; replayed in order when it is back,
    /// also after a restart. Owned by the daemon's user, not writable by group or others
    /// (created 0750); unreadable files are moved into its corrupt/ within --spool-max-bytes.
    #[arg(long, default_value = "spool", value_name = "DIR")]
    pub spool_dir: PathBuf,
    /// Most bytes kept in --spool-dir, corrupt/ included; when full, the files set aside in
    /// corrupt/ and then the oldest profiles are dropped (and counted).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub spool_max_bytes: u64,
}
