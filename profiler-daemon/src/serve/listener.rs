//! The accept loop of `--listen`, with the bounds `axum::serve` lacks: a header-read timeout
//! (hyper's, which runs from the accept and again after each answer, so it also ends a
//! connection idle before or between requests), an idle timeout on writes (a client that
//! stops reading its answer), a connection limit, and a reserve of file descriptors the
//! listener never takes from the pipeline.
//!
//! At the limit, or when free descriptors fall under the reserve, a new connection replaces
//! the one whose socket has been quiet the longest among those with no request being
//! handled: a local user holding every slot with silent connections then delays `/healthz`
//! by nothing, each of their connections lives only until the next one arrives, and a
//! download in progress goes last. When every connection is handling a request the new one
//! gets a 503 and is closed.
//!
//! With `tls_server_config` in `--web-config-file`, each connection first completes a TLS
//! handshake ([`tls`]) within the header timeout, while it already holds its slot: every bound
//! above applies to it, and a silent handshake is the first connection replaced.

use std::{
    collections::HashMap,
    io,
    os::fd::AsRawFd,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::Request, Router};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    task::JoinSet,
};
use tokio_io_timeout::TimeoutStream;
use tower_service::Service;

use super::auth::{verify::Refusal, Security};
use crate::host::descriptors;

mod tls;

/// The listener's bounds (`--listen-*` flags) and its TLS (`--web-config-file`).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Descriptors kept free for the daemon's own files.
    pub descriptor_reserve: u64,
    /// `--web-config-file`: TLS for each connection (and the credentials the routes check).
    pub security: Option<Arc<Security>>,
}

/// What happened to connections, totals since start (`/metrics`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// New connections answered 503 and closed: every connection was busy.
    pub refused: AtomicU64,
    /// Of the evicted and refused, those for want of descriptors rather than the limit.
    pub short_of_descriptors: AtomicU64,
    /// Requests to a loopback listener under a `Host` not its own (DNS rebinding).
    pub host_refused: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_timeouts: AtomicU64,
    /// `accept` failures (EMFILE and the like).
    pub accept_errors: AtomicU64,
    pub open: AtomicU64,
    /// TLS handshakes that failed, plain HTTP sent to the TLS listener included.
    pub tls_failed: AtomicU64,
    /// TLS handshakes not done within the header timeout.
    pub tls_timeouts: AtomicU64,
    /// Requests refused for want of credentials, by [`Refusal::index`].
    pub auth_refused: [AtomicU64; Refusal::ALL.len()],
}

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
    Content-Length: 47\r\nConnection: close\r\n\r\n\
    too many connections to profilerd, retry later\n";

/// Refused connections being answered at once; more are closed without an answer.
const MAX_REFUSING: usize = 16;
/// How long a refused client has to read its 503 before the socket closes (closing it
/// with the request unread would reset the connection and lose the answer).
const REFUSAL_LINGER: Duration = Duration::from_millis(200);

/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of descriptors: the connection stays queued).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One open connection, as the accept loop sees it.
struct Conn {
    /// A request is being handled (its answer not yet made).
    busy: AtomicBool,
    /// Milliseconds since the listener's start at the last byte read or written (or accept).
    last_active: AtomicU64,
    evict: Notify,
}

#[derive(Default)]
struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the connection idle the longest to close; false when all are busy.
    fn evict_oldest_idle(&self) -> bool {
        let conns = self.lock();
        let victim = conns
            .values()
            .filter(|c| !c.busy.load(Ordering::Relaxed))
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        match victim {
            Some(conn) => {
                // Not idle any more: the next eviction picks another one.
                conn.busy.store(true, Ordering::Relaxed);
                conn.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The accept loop and what its connections share.
struct Listener {
    config: ListenerConfig,
    stats: Arc<ListenerStats>,
    table: Arc<Table>,
    started: Instant,
    /// The soft descriptor limit, read once: only the daemon's start changes it.
    descriptor_limit: u64,
    /// Refused connections still being answered.
    refusing: AtomicUsize,
}

impl Listener {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether free descriptors are under the reserve, with `stream` already open.
    fn short_of_descriptors(&self, stream: &TcpStream) -> bool {
        let limit = self.descriptor_limit;
        // The kernel hands out the lowest free number: everything below it is in use.
        let lowest_bound = stream.as_raw_fd() as u64 + 1;
        if lowest_bound + self.config.descriptor_reserve >= limit {
            return true;
        }
        let open = descriptors::open_count().unwrap_or(lowest_bound);
        open + self.config.descriptor_reserve >= limit
    }

    /// Admits `stream`, making room first if needed; false when it was refused.
    fn admit(&self, stream: &TcpStream) -> bool {
        if self.has_room(stream) {
            return true;
        }
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Whether one more connection fits, after replacing the quietest idle one if needed.
    fn has_room(&self, stream: &TcpStream) -> bool {
        let full = self.table.lock().len() >= self.config.max_connections;
        // A full table makes room anyway: no need to count descriptors in /proc then.
        let short = !full && self.short_of_descriptors(stream);
        if !full && !short {
            return true;
        }
        if short {
            self.stats
                .short_of_descriptors
                .fetch_add(1, Ordering::Relaxed);
        }
        self.evict_oldest_idle()
    }

    /// Closes the connection idle the longest, counted; false when none is idle.
    fn evict_oldest_idle(&self) -> bool {
        let evicted = self.table.evict_oldest_idle();
        if evicted {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        evicted
    }

    /// Forgets a connection that ended.
    fn close(&self, id: u64) {
        self.table.lock().remove(&id);
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Answers a refused connection with a 503, then closes it.
    fn refuse(self: &Arc<Self>, mut stream: TcpStream) {
        if self.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                stream.write_all(REFUSED).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 1024];
                while stream.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            })
            .await;
            this.refusing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serves `app` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ListenerConfig,
    stats: Arc<ListenerStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let this = Arc::new(Listener {
        config,
        stats,
        table: Arc::default(),
        started: Instant::now(),
        descriptor_limit: descriptors::soft_limit().unwrap_or(1024),
        refusing: AtomicUsize::new(0),
    });
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        // Finished connections leave the set as they come.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                this.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    this.evict_oldest_idle();
                }
                tracing::debug!("HTTP listener: accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if !this.admit(&stream) {
            this.refuse(stream);
            continue;
        }
        this.stats.accepted.fetch_add(1, Ordering::Relaxed);
        next_id += 1;
        let conn = Arc::new(Conn {
            busy: AtomicBool::new(false),
            last_active: AtomicU64::new(this.now_ms()),
            evict: Notify::new(),
        });
        this.table.lock().insert(next_id, Arc::clone(&conn));
        connections.spawn(connection(
            Arc::clone(&this),
            next_id,
            conn,
            stream,
            app.clone(),
            shutdown.clone(),
        ));
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    });
    let _ = drained.await;
}

/// Serves one connection until it closes, times out, is evicted or the daemon stops.
async fn connection(
    listener: Arc<Listener>,
    id: u64,
    conn: Arc<Conn>,
    stream: TcpStream,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    listener.stats.open.fetch_add(1, Ordering::Relaxed);
    // Only writes: waiting for a request is the header timeout's, and a read timeout would
    // also fire while a slow handler runs (hyper watches the socket for a close meanwhile).
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(listener.config.idle_timeout));
    let io: Pin<Box<dyn Io>> = match listener.config.security.as_deref().and_then(Security::tls) {
        None => Box::pin(stream),
        Some(config) => {
            let (timeout, stats) = (listener.config.header_timeout, &listener.stats);
            let secured = tokio::select! {
                secured = tls::accept(stream, config, timeout, stats) => secured,
                () = conn.evict.notified() => None,
                _ = shutdown.changed() => None,
            };
            match secured {
                Some(stream) => Box::pin(stream),
                None => return listener.close(id),
            }
        }
    };
    let io = TokioIo::new(Activity {
        io,
        conn: Arc::clone(&conn),
        listener: Arc::clone(&listener),
    });
    let service = {
        let conn = Arc::clone(&conn);
        let listener = Arc::clone(&listener);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            conn.busy.store(true, Ordering::Relaxed);
            conn.last_active.store(listener.now_ms(), Ordering::Relaxed);
            let mut app = app.clone();
            let conn = Arc::clone(&conn);
            async move {
                let response = app.call(request.map(Body::new)).await;
                conn.busy.store(false, Ordering::Relaxed);
                response
            }
        })
    };
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(listener.config.header_timeout)
        .serve_connection(io, service);
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = conn.evict.notified() => Ok(()),
        _ = shutdown.changed() => {
            served.as_mut().graceful_shutdown();
            tokio::time::timeout(SHUTDOWN_GRACE, served).await.unwrap_or(Ok(()))
        }
    };
    if let Err(err) = result {
        count_error(&listener.stats, &err);
    }
    listener.close(id);
}

/// What a connection reads and writes: the socket, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send {}

impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// The socket of one connection: each byte read or written marks the connection active, so
/// that a download in progress is the last to be replaced, an attacker's silent sockets first.
struct Activity {
    io: Pin<Box<dyn Io>>,
    conn: Arc<Conn>,
    listener: Arc<Listener>,
}

impl Activity {
    fn progressed<T>(&self, poll: &Poll<io::Result<T>>) {
        if matches!(poll, Poll::Ready(Ok(_))) {
            let now = self.listener.now_ms();
            self.conn.last_active.store(now, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Activity {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = self.io.as_mut().poll_read(cx, buf);
        self.progressed(&poll);
        poll
    }
}

impl AsyncWrite for Activity {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = self.io.as_mut().poll_write(cx, buf);
        self.progressed(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = self.io.as_mut().poll_write_vectored(cx, bufs);
        self.progressed(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

fn count_error(stats: &ListenerStats, err: &hyper::Error) {
    let io_timeout = std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut);
    if io_timeout {
        stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
    } else if err.is_timeout() {
        stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
    } else {
        tracing::debug!("HTTP connection: {err}");
    }
}

#[cfg(test)]
mod tests;
