//! The listener's families: its connections (TLS handshakes included), the requests it
//! refused (a `Host` not its own, missing or wrong credentials) and the dump-dir files it did
//! not read. In: the listener's and the file readers' counters, read when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{advance, Event, Reason, U64Gauge};
use crate::serve::{
    auth::verify::Refusal as AuthRefusal,
    files::{FileStats, Refusal, FILE_QUEUE, FILE_WORKERS},
    listener::ListenerStats,
};

#[derive(Default)]
pub(super) struct HttpFamilies {
    connections: Family<Event, Counter>,
    connections_open: U64Gauge,
    descriptor_reserve_hits: Counter,
    host_refused: Counter,
    auth_refused: Family<Reason, Counter>,
    dump_files_refused: Family<Reason, Counter>,
    file_reads_refused: Counter,
}

impl HttpFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "profilerd_http_connections",
            "Listener connections by event: accepted; evicted (idle the longest, closed for a new one at --listen-max-connections or under --listen-descriptor-reserve); refused (503, every connection busy); header_timeout (--listen-header-timeout); idle_timeout (--listen-idle-timeout); accept_error; tls_handshake_failed (plain HTTP to the TLS listener included); tls_handshake_timeout (not done within --listen-header-timeout)",
            self.connections.clone(),
        );
        r.register(
            "profilerd_http_connections_open",
            "Listener connections open (bounded by --listen-max-connections)",
            self.connections_open.clone(),
        );
        r.register(
            "profilerd_http_descriptor_reserve_hits",
            "New connections that found fewer free file descriptors than --listen-descriptor-reserve",
            self.descriptor_reserve_hits.clone(),
        );
        r.register(
            "profilerd_http_host_refused",
            "Requests to a loopback listener refused (403) because their Host was not one of its names or a --listen-host (DNS rebinding)",
            self.host_refused.clone(),
        );
        r.register(
            "profilerd_http_auth_refused",
            "Requests refused for want of the credentials of --web-config-file, by reason: missing (no Authorization, 401), malformed (401), unknown_user (401), wrong_password (401), wrong_token (401), rate_limited (429, too many password checks)",
            self.auth_refused.clone(),
        );
        r.register(
            "profilerd_dump_files_refused",
            "Dump-dir files the page and /profiles/ did not read, by reason: link, not_regular (FIFO, socket, device), not_ours (another owner or a hard link), too_large",
            self.dump_files_refused.clone(),
        );
        r.register(
            "profilerd_http_file_reads_refused",
            format!("Requests for the page or /profiles/ answered 503: {FILE_QUEUE} were already waiting for the {FILE_WORKERS} threads that read the dump dir"),
            self.file_reads_refused.clone(),
        );
    }

    pub(super) fn apply(&self, l: &ListenerStats, files: &FileStats) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (event, total) in [
            ("accepted", load(&l.accepted)),
            ("evicted", load(&l.evicted)),
            ("refused", load(&l.refused)),
            ("header_timeout", load(&l.header_timeouts)),
            ("idle_timeout", load(&l.idle_timeouts)),
            ("accept_error", load(&l.accept_errors)),
            ("tls_handshake_failed", load(&l.tls_failed)),
            ("tls_handshake_timeout", load(&l.tls_timeouts)),
        ] {
            advance(&self.connections.get_or_create(&Event { event }), total);
        }
        self.connections_open.set(load(&l.open));
        advance(&self.descriptor_reserve_hits, load(&l.short_of_descriptors));
        advance(&self.host_refused, load(&l.host_refused));
        for why in AuthRefusal::ALL {
            let labels = Reason { reason: why.name() };
            let total = load(&l.auth_refused[why.index()]);
            advance(&self.auth_refused.get_or_create(&labels), total);
        }
        advance(&self.file_reads_refused, load(&files.queue_full));
        for why in Refusal::ALL {
            let labels = Reason { reason: why.name() };
            advance(
                &self.dump_files_refused.get_or_create(&labels),
                files.refused(why),
            );
        }
    }
}
