//! DNS rebinding: a web page on another site can point its own name at 127.0.0.1 and have a
//! browser on this host send requests to a loopback listener, with that name in `Host`. A
//! loopback listener answers only requests whose `Host` is one of its own names (its address,
//! `127.0.0.1`, `localhost`, `[::1]`, with its port) or a name the operator allowed with
//! `--listen-host`; others get a 403 naming the flag. A listener on another address (a
//! DaemonSet's pod address) is reached by names the daemon cannot know, and is not checked.
//! In: each request's `Host`. Out: the request, or a 403.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::WebState;

/// The `Host` values a listener on `addr` answers, lowercase; `None`: any (not loopback).
pub fn allowed_hosts(addr: SocketAddr, extra: &[String]) -> Option<Vec<String>> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let port = addr.port();
    let mut names: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|h| format!("{h}:{port}"))
        .collect();
    names.push(addr.to_string());
    for name in extra {
        let name = name.trim().to_ascii_lowercase();
        // `name:port` as given; a bare name (or a bracketed IPv6 address) with the port.
        let has_port = name.rsplit_once(':').is_some_and(|(host, p)| {
            !host.is_empty()
                && !host.ends_with(':')
                && p.parse::<u16>().is_ok()
                && (!host.contains(':') || host.ends_with(']'))
        });
        names.push(if has_port {
            name
        } else {
            format!("{name}:{port}")
        });
    }
    // Port 80 goes without it in `Host`.
    if port == 80 {
        let bare: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_suffix(":80").map(str::to_string))
            .collect();
        names.extend(bare);
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// Refuses a request to a loopback listener under a `Host` that is not one of its names. A
/// request without `Host` (HTTP/1.0) is not from a browser and passes.
pub(super) async fn check_host(
    State(state): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    if let (Some(allowed), Some(host)) = (&state.allowed_hosts, request.headers().get(header::HOST))
    {
        let host = String::from_utf8_lossy(host.as_bytes()).to_ascii_lowercase();
        if !allowed.contains(&host) {
            state
                .metrics
                .listener
                .host_refused
                .fetch_add(1, Ordering::Relaxed);
            let own = state
                .address
                .map_or_else(String::new, |a| format!(" (http://{a}/)"));
            let line = format!(
                "Host {host:?} is not a name of this listener{own}: use its address, or allow the name with --listen-host\n"
            );
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                line,
            )
                .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_listener_answers_its_own_names_and_the_allowed_ones() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let extra = ["Profiler.Internal".to_string(), "box:8080".to_string()];
        let names = allowed_hosts(addr, &extra).unwrap();
        for name in [
            "127.0.0.1:7070",
            "localhost:7070",
            "[::1]:7070",
            "profiler.internal:7070",
            "box:8080",
        ] {
            assert!(names.contains(&name.to_string()), "{name}: {names:?}");
        }
        assert!(!names.contains(&"evil.example:7070".to_string()));
        assert!(!names.contains(&"localhost".to_string()));
        let on_80 = allowed_hosts("127.0.0.1:80".parse().unwrap(), &[]).unwrap();
        assert!(on_80.contains(&"localhost".to_string()), "{on_80:?}");
        assert_eq!(allowed_hosts("0.0.0.0:7070".parse().unwrap(), &[]), None);
        assert_eq!(allowed_hosts("10.0.0.5:7070".parse().unwrap(), &[]), None);
    }
}
