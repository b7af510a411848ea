//! TLS on an accepted connection (`tls_server_config` of `--web-config-file`). In: the
//! accepted socket and the rustls configuration in force. Out: the encrypted stream, or `None`
//! when the handshake failed or took longer than the header timeout (counted in
//! [`ListenerStats`]): a silent client holds its slot no longer than a silent plain one.
//!
//! A plain HTTP request to the TLS listener gets one 400 line saying to use `https://`, as Go's
//! `net/http` answers it, instead of a TLS alert that `curl http://` shows as an empty reply.

use std::{io, pin::Pin, sync::atomic::Ordering, sync::Arc, time::Duration};

use rustls::ServerConfig;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use super::{ListenerStats, REFUSAL_LINGER};

/// The socket under TLS.
pub(super) type Socket = Pin<Box<TimeoutStream<TcpStream>>>;

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const HANDSHAKE_RECORD: u8 = 0x16;

const PLAIN_BODY: &str = "this listener speaks HTTPS (--web-config-file): use https://\n";

/// Runs the handshake within `timeout`; `None` (counted) when it failed.
pub(super) async fn accept(
    stream: TimeoutStream<TcpStream>,
    config: Arc<ServerConfig>,
    timeout: Duration,
    stats: &ListenerStats,
) -> Option<TlsStream<Socket>> {
    let handshake = async {
        let mut first = [0u8; 1];
        if stream.get_ref().peek(&mut first).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let mut stream: Socket = Box::pin(stream);
        if first[0] != HANDSHAKE_RECORD {
            answer_plain(&mut stream).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP sent to the TLS listener",
            ));
        }
        TlsAcceptor::from(config).accept(stream).await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            stats.tls_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("HTTP listener: TLS handshake failed: {err}");
            None
        }
        Err(_) => {
            stats.tls_timeouts.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// A 400 saying to use `https://`, then the connection closes (after reading what the client
/// sent, briefly: closing with it unread would reset the connection and lose the answer).
async fn answer_plain(stream: &mut Socket) {
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{PLAIN_BODY}",
        PLAIN_BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}
