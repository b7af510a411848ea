//! A misbehaving HTTP server on loopback, for the cases where the Pyroscope server is the
//! attacker (or simply broken): a huge error body, a redirect elsewhere, a `Retry-After` of
//! days. Plain std sockets and a thread per connection; every request is recorded (method,
//! path, headers, body, time) so that a test can tell what the daemon sent and when.
//!
//! It speaks just enough HTTP/1.1 for a client that sends `Content-Length` bodies (reqwest
//! does): no chunked requests, no TLS.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Longest request body read (profiles are far smaller).
const MAX_REQUEST_BODY: usize = 64 << 20;
/// Bytes of the huge body written at a time: it is streamed, never allocated whole.
const BODY_CHUNK: usize = 64 << 10;
/// A connection idle this long is closed, so that no thread outlives its test for long.
const IDLE: Duration = Duration::from_secs(30);

/// How the server answers every request, until [`HostileServer::set`] changes it.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// `status` with a `Content-Length: bytes` body of `x`s, streamed until the client hangs up.
    HugeBody { status: u16, bytes: u64 },
    /// `302 Found` to `location`.
    Redirect { location: String },
    /// `status` (429, 503) with `Retry-After: value` and a short JSON error.
    RetryAfter { status: u16, value: String },
    /// `200 OK`, empty body: a server that works (or has recovered).
    Accept,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request was complete.
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct State {
    behaviour: Behaviour,
    requests: Vec<Request>,
}

/// The server; it stops accepting when dropped.
pub struct HostileServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl HostileServer {
    /// Listens on `127.0.0.1:0` and answers as `behaviour` says.
    pub fn start(behaviour: Behaviour) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            behaviour,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_state, accept_stop) = (Arc::clone(&state), Arc::clone(&stop));
        thread::Builder::new()
            .name("hostile-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = Arc::clone(&accept_state);
                    let _ = thread::Builder::new()
                        .name("hostile-conn".into())
                        .spawn(move || {
                            let _ = serve(stream, &state);
                        });
                }
            })
            .context("spawn the accept thread")?;
        Ok(Self { addr, state, stop })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next requests differently (e.g. [`Behaviour::Accept`]: it recovered).
    pub fn set(&self, behaviour: Behaviour) {
        self.lock().behaviour = behaviour;
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Answers the requests of one connection until the client closes it.
fn serve(stream: TcpStream, state: &Mutex<State>) -> Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let Some(mut request) = read_request(&mut reader)? else {
            return Ok(());
        };
        let behaviour = {
            let state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.behaviour.clone()
        };
        request.status = match &behaviour {
            Behaviour::HugeBody { status, .. } | Behaviour::RetryAfter { status, .. } => *status,
            Behaviour::Redirect { .. } => 302,
            Behaviour::Accept => 200,
        };
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .push(request);
        match behaviour {
            Behaviour::HugeBody { status, bytes } => {
                // Whatever the client did with it (read it all, hung up), this connection
                // is done.
                stream_body(&mut writer, status, bytes);
                return Ok(());
            }
            Behaviour::Redirect { location } => respond(
                &mut writer,
                "302 Found",
                &[("Location", &location)],
                b"redirected\n",
            )?,
            Behaviour::RetryAfter { status, value } => respond(
                &mut writer,
                &format!("{status} Slow Down"),
                &[
                    ("Retry-After", &value),
                    ("Content-Type", "application/json"),
                ],
                br#"{"code":"resource_exhausted","message":"come back later"}"#,
            )?,
            Behaviour::Accept => respond(
                &mut writer,
                "200 OK",
                &[("Content-Type", "application/proto")],
                b"",
            )?,
        }
    }
}

/// One request, `None` when the client closed the connection before sending one.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        bail!("bad request line {line:?}");
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    if find("transfer-encoding").is_some() {
        bail!("chunked requests are not supported");
    }
    let length: usize = find("content-length").map_or(Ok(0), |v| v.parse())?;
    if length > MAX_REQUEST_BODY {
        bail!("request body of {length} bytes");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        status: 0,
    }))
}

fn respond(
    writer: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()?;
    Ok(())
}

/// Writes the head and `bytes` of body, or less if the client hangs up first.
fn stream_body(writer: &mut TcpStream, status: u16, bytes: u64) {
    let head = format!(
        "HTTP/1.1 {status} Error\r\nContent-Type: text/plain\r\nContent-Length: {bytes}\r\n\r\n"
    );
    if writer.write_all(head.as_bytes()).is_err() {
        return;
    }
    let chunk = [b'x'; BODY_CHUNK];
    let mut sent = 0;
    while sent < bytes {
        let n = (bytes - sent).min(BODY_CHUNK as u64) as usize;
        if writer.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
}
