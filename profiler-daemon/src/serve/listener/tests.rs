//! The accept loop against real loopback sockets: slowloris, silent connections over the
//! limit, busy connections, a client that does not read, and the descriptor reserve.

use std::time::Duration;

use axum::routing::get;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{sleep, timeout, Instant},
};

use super::*;

const CONFIG: ListenerConfig = ListenerConfig {
    max_connections: 8,
    header_timeout: Duration::from_millis(500),
    idle_timeout: Duration::from_millis(400),
    descriptor_reserve: 16,
    security: None,
};

struct Running {
    address: std::net::SocketAddr,
    stats: Arc<ListenerStats>,
    _stop: watch::Sender<bool>,
}

async fn start(config: ListenerConfig) -> Running {
    let app = Router::new()
        .route("/ok", get(|| async { "ok\n" }))
        .route(
            "/slow",
            get(|| async {
                sleep(Duration::from_secs(2)).await;
                "slow\n"
            }),
        )
        .route("/big", get(|| async { vec![b'x'; 64 << 20] }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stats = Arc::new(ListenerStats::default());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, app, config, Arc::clone(&stats), stopped));
    Running {
        address,
        stats,
        _stop: stop,
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Sends one GET and reads the whole answer (the server closes after it).
async fn get_once(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    answer
}

/// Whether the server closed `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + limit;
    loop {
        match timeout(deadline - Instant::now(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slowloris_is_cut_by_the_header_timeout() {
    let server = start(CONFIG).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let started = Instant::now();
    // One header byte every 150 ms: each read succeeds, so only the header timeout ends it.
    let mut cut = false;
    for byte in b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if stream.write_all(&[*byte]).await.is_err()
            || closed_within(&mut stream, Duration::from_millis(150)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(load(&server.stats.header_timeouts), 1);
    assert!(get_once(server.address, "/ok").await.ends_with("ok\n"));
}

#[tokio::test]
async fn at_the_limit_a_new_connection_replaces_the_oldest_idle_one() {
    let server = start(ListenerConfig {
        max_connections: 3,
        header_timeout: Duration::from_secs(30),
        ..CONFIG
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(server.address).await.unwrap());
        // Accepted in this order, so the first is the oldest.
        sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let answer = get_once(server.address, "/ok").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(closed_within(&mut silent[0], Duration::from_secs(1)).await);
    assert!(!closed_within(&mut silent[2], Duration::from_millis(200)).await);
    assert_eq!(load(&server.stats.evicted), 1);
    assert_eq!(load(&server.stats.refused), 0);
}

#[tokio::test]
async fn when_every_connection_is_busy_a_new_one_gets_a_503() {
    let server = start(ListenerConfig {
        max_connections: 1,
        ..CONFIG
    })
    .await;
    let address = server.address;
    let busy = tokio::spawn(async move { get_once(address, "/slow").await });
    sleep(Duration::from_millis(300)).await;
    let answer = get_once(server.address, "/ok").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"));
    assert_eq!(load(&server.stats.refused), 1);
    assert!(busy.await.unwrap().ends_with("slow\n"));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_by_the_idle_timeout() {
    let server = start(CONFIG).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // 64 MiB do not fit the socket buffers: the server's write waits on us, and we wait.
    let started = Instant::now();
    while load(&server.stats.idle_timeouts) == 0 && started.elapsed() < Duration::from_secs(5) {
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(load(&server.stats.idle_timeouts), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(load(&server.stats.open), 0);
}

#[tokio::test]
async fn under_the_descriptor_reserve_connections_make_room_or_are_refused() {
    // A reserve as large as the limit: every accept finds too few free descriptors.
    let limit = descriptors::soft_limit().unwrap();
    let server = start(ListenerConfig {
        descriptor_reserve: limit,
        ..CONFIG
    })
    .await;
    let answer = get_once(server.address, "/ok").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(load(&server.stats.refused), 1);
    assert_eq!(load(&server.stats.short_of_descriptors), 1);
    assert_eq!(load(&server.stats.accepted), 0);
}

#[tokio::test]
async fn a_download_in_progress_goes_after_the_silent_connections() {
    let server = start(ListenerConfig {
        max_connections: 2,
        idle_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_secs(30),
        ..CONFIG
    })
    .await;
    let mut download = TcpStream::connect(server.address).await.unwrap();
    sleep(Duration::from_millis(50)).await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    download
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0;
    // The download's handler has returned; its body is still being sent.
    while received < 4 << 20 {
        received += download.read(&mut buf).await.unwrap();
    }
    // The silent connection was accepted later but has been quiet since: it goes.
    let answer = get_once(server.address, "/ok").await;
    assert!(answer.ends_with("ok\n"), "{answer}");
    assert!(closed_within(&mut silent, Duration::from_secs(1)).await);
    loop {
        match download.read(&mut buf).await.unwrap() {
            0 => break,
            n => received += n,
        }
    }
    assert!(received > 64 << 20, "{received} bytes");
    assert_eq!(load(&server.stats.evicted), 1);
}

/// A web config file with the test certificates (tests/data/web/), no credentials, and
/// `extra` keys of `tls_server_config`.
fn tls_security(extra: &str) -> Arc<Security> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/web");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yml");
    let text = format!(
        "tls_server_config:\n  cert_file: {0}/cert.pem\n  key_file: {0}/key.pem\n{extra}",
        data.display()
    );
    std::fs::write(&file, text).unwrap();
    Arc::new(Security::load(&file).unwrap())
}

/// A TLS connection that trusts the test CA, with the test client certificate if `client`,
/// that has sent `GET /ok`.
async fn try_tls_connect(
    address: std::net::SocketAddr,
    client: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/web");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(data.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if client {
        let chain = CertificateDer::pem_file_iter(data.join("client.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(data.join("client-key.pem")).unwrap();
        builder
            .with_client_auth_cert(chain.map(Result::unwrap).collect(), key)
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    // Under TLS 1.3 a refused client certificate shows after the handshake, in the answer.
    tls.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    Ok(tls)
}

async fn tls_connect(address: std::net::SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    try_tls_connect(address, false).await.unwrap()
}

/// The whole answer on a TLS connection (a missing close_notify is no error here).
async fn tls_answer(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut answer = Vec::new();
    let _ = timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn with_tls_each_connection_shakes_hands_within_the_header_timeout() {
    let server = start(ListenerConfig {
        security: Some(tls_security("")),
        ..CONFIG
    })
    .await;
    let answer = tls_answer(&mut tls_connect(server.address).await).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );

    // Plain HTTP gets one line saying what to use, as from Go's net/http.
    let answer = get_once(server.address, "/ok").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.ends_with("use https://\n"), "{answer}");

    // A silent client, and one that stops within its ClientHello, hold their slot no longer
    // than the header timeout (500 ms).
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let mut stalled = TcpStream::connect(server.address).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(2)).await);
    assert!(closed_within(&mut stalled, Duration::from_secs(2)).await);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(load(&server.stats.tls_failed), 1);
    assert_eq!(load(&server.stats.tls_timeouts), 2);
    sleep(Duration::from_millis(100)).await;
    assert_eq!(load(&server.stats.open), 0);
}

#[tokio::test]
async fn client_certificates_signed_by_the_ca_are_required_when_asked_for() {
    let ca = format!("{}/tests/data/web/ca.pem", env!("CARGO_MANIFEST_DIR"));
    let extra = format!("  client_ca_file: {ca}\n  client_auth_type: RequireAndVerifyClientCert\n");
    let server = start(ListenerConfig {
        security: Some(tls_security(&extra)),
        ..CONFIG
    })
    .await;
    let mut with = try_tls_connect(server.address, true).await.unwrap();
    let answer = tls_answer(&mut with).await;
    assert!(answer.ends_with("ok\n"), "{answer}");
    let answer = match try_tls_connect(server.address, false).await {
        Ok(mut without) => tls_answer(&mut without).await,
        Err(_) => String::new(),
    };
    assert!(!answer.contains("ok"), "{answer}");
    sleep(Duration::from_millis(100)).await;
    assert_eq!(load(&server.stats.tls_failed), 1);
}
