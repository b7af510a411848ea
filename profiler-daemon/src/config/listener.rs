//! The listener's bounds: what the connections of local users can take from the daemon.

use std::time::Duration;

use clap::Args;

use crate::types::parse_duration;

/// `--listen-*`: sized at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
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
}

/// A listener timeout: 100ms to 1h.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&duration) {
        return Err(format!("{text:?} is out of range: use 100ms to 1h"));
    }
    Ok(duration)
}
