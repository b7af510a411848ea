//! The listener: its address (`--listen`), its bounds, what the connections of local users
//! can take from the daemon, and its TLS and credentials (`--web-config-file`).

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::types::parse_duration;

/// `--listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<std::net::SocketAddr>);

/// `--listen`: an address, a host name and port, or `off`.
pub(super) fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.trim() == "off" {
        return Ok(Listen(None));
    }
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(Listen(Some(addr)));
    }
    // A host name (`localhost:7070`): its first IPv4 address, else its first address.
    let bad = || {
        format!(
            "{text:?} is not ADDR:PORT (e.g. 127.0.0.1:7070, [::1]:7070, localhost:7070) or off"
        )
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|err| format!("{text:?}: cannot resolve {host:?} ({err}): give an address such as 127.0.0.1:{port}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(|addr| Listen(Some(*addr)))
        .ok_or_else(|| {
            format!("{text:?}: {host:?} has no address: give one such as 127.0.0.1:{port}")
        })
}

/// `--listen-*`: sized at start; `--web-config-file`, re-read on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(next_help_heading = "Listener")]
pub struct ListenerArgs {
    /// Connections the listener holds at once. At the limit a new connection replaces the
    /// one whose socket has been quiet the longest; when every one is handling a request it
    /// gets a 503.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65_536), value_name = "N")]
    pub listen_max_connections: u64,
    /// Time a client has to send a complete request header; also the longest a kept-alive
    /// connection may sit idle between two requests.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, value_name = "DURATION")]
    pub listen_header_timeout: Duration,
    /// Longest an answer's write may make no progress (a client that stops reading it);
    /// before and between requests --listen-header-timeout applies.
    #[arg(long, default_value = "60s", value_parser = parse_timeout, value_name = "DURATION")]
    pub listen_idle_timeout: Duration,
    /// File descriptors kept free for the daemon's own files (profiles, /proc, the symbolizer's
    /// binaries): with fewer free, a new connection replaces an idle one or is refused. The
    /// daemon raises its soft RLIMIT_NOFILE to the hard limit at start; at most half of it is
    /// kept.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=1_048_576), value_name = "N")]
    pub listen_descriptor_reserve: u64,
    /// Longest `seconds=` a /debug/pprof/ profile may ask for.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600), value_name = "SECONDS")]
    pub pprof_max_seconds: u64,
    /// /debug/pprof/ profiles collected at once; more are answered 503. Each holds the
    /// samples of the processes it selected until it is answered.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64), value_name = "N")]
    pub pprof_max_requests: u64,
    /// YAML file that turns on TLS and authentication for the listener, in the format of
    /// Prometheus exporters' --web.config.file: `tls_server_config` (`cert_file`, `key_file`;
    /// `client_ca_file` with `client_auth_type: RequireAndVerifyClientCert`),
    /// `basic_auth_users` (user: bcrypt hash, e.g. from `htpasswd -nBC 10 USER`), and
    /// `bearer_tokens_sha256` (SHA-256 hex digests of accepted bearer tokens). Relative paths
    /// in it are relative to its directory. Every route but /healthz then needs credentials.
    /// SIGHUP re-reads it (certificate rotation); a bad file stops the start.
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// A listener timeout: 100ms to 1h.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&duration) {
        return Err(format!("{text:?} is out of range: use 100ms to 1h"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Command};

    #[test]
    fn listener_defaults() {
        use clap::Parser;
        let Command::Run(args) = Cli::try_parse_from(["profilerd", "run"]).unwrap().command else {
            panic!("run expected")
        };
        assert_eq!(
            args.listener,
            ListenerArgs {
                listen_max_connections: 128,
                listen_header_timeout: Duration::from_secs(10),
                listen_idle_timeout: Duration::from_secs(60),
                listen_descriptor_reserve: 256,
                pprof_max_seconds: 300,
                pprof_max_requests: 4,
                web_config_file: None,
            }
        );
    }

    #[test]
    fn listen_takes_an_address_a_host_name_or_off() {
        let addr = |t: &str| parse_listen(t).map(|l| l.0.map(|a| a.to_string()));
        assert_eq!(addr("127.0.0.1:7070"), Ok(Some("127.0.0.1:7070".into())));
        assert_eq!(addr("[::1]:7070"), Ok(Some("[::1]:7070".into())));
        assert_eq!(addr("localhost:7070"), Ok(Some("127.0.0.1:7070".into())));
        assert_eq!(addr("off"), Ok(None));
        for bad in ["localhost", "localhost:x", ":7070", "7070"] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains("localhost:7070"), "{bad}: {err}");
        }
    }
}
