//! `--web-config-file` on the daemon's listener, as on a Prometheus exporter: TLS with a
//! certificate openssl makes here, a bcrypt user and a bearer token. Plain HTTP to the TLS port
//! gets one 400 line; missing and wrong credentials get a 401 and are counted; the right ones
//! get `/metrics`; `go tool pprof` (the real client) fetches a profile over HTTPS with the user
//! in the URL; SIGHUP re-reads the file; a bad file stops the start with one line.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Duration,
};

use profiler_tests::*;

const START: Duration = Duration::from_secs(30);
const PASSWORD: &str = "s3cret-pass";
const TOKEN: &str = "tok-5d41402abc4b2a76b9719d911017c592";

/// A CA, and a certificate for 127.0.0.1 signed by it, made with Debian's openssl.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (cargo xtask setup installs it)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "openssl {args:?}: {stderr}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=profilerd test CA",
    ];
    openssl(&[&["req", "-x509", "-days", "1"][..], &ec, &ca].concat());
    let csr = [
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    openssl(&[&["req"][..], &ec, &csr].concat());
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-set_serial",
        "2",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}

/// The SHA-256 of `text` in hex, as `sha256sum` writes it.
fn sha256_hex(text: &str) -> String {
    let output = run_with_input(
        &mut Command::new("sha256sum"),
        text.as_bytes(),
        "sha256sum (coreutils)",
    );
    String::from_utf8_lossy(&output.stdout)[..64].to_string()
}

/// `DIR/web.yml` with the certificate (relative paths: relative to the file), `user` and the
/// token.
fn write_web_config(dir: &Path, user: &str) {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let text = format!(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n\
         basic_auth_users:\n  {user}: \"{hash}\"\n\
         bearer_tokens_sha256:\n  - {}\n",
        sha256_hex(TOKEN)
    );
    std::fs::write(dir.join("web.yml"), text).unwrap();
}

/// An HTTPS client that trusts the test CA.
fn client(dir: &Path) -> reqwest::blocking::Client {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

/// `GET https://ADDRESS PATH`: the status, `WWW-Authenticate` and the body.
fn get(
    client: &reqwest::blocking::Client,
    address: &str,
    path: &str,
    auth: Auth,
) -> (u16, String, String) {
    let request = client.get(format!("https://{address}{path}"));
    let request = match auth {
        Auth::None => request,
        Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
        Auth::Bearer(token) => request.bearer_auth(token),
    };
    let response = request
        .send()
        .unwrap_or_else(|err| panic!("GET {path}: {err:?}"));
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, challenge, response.text().unwrap_or_default())
}

/// A plain HTTP request to the TLS port: the whole answer.
fn plain_http(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// Plain HTTP, no credentials, wrong ones and right ones, against `/metrics`.
fn check_refusals(client: &reqwest::blocking::Client, address: &str) {
    let answer = plain_http(address);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");
    let (status, challenge, body) = get(client, address, "/metrics", Auth::None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(challenge, "Basic realm=\"profilerd\"");
    let wrong = Auth::Basic("prometheus", "guess");
    assert_eq!(get(client, address, "/metrics", wrong).0, 401);
    assert_eq!(
        get(client, address, "/metrics", Auth::Bearer("guess")).0,
        401
    );
    let (status, _, body) = get(
        client,
        address,
        "/metrics",
        Auth::Basic("prometheus", PASSWORD),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("profilerd_samples_total"), "{body}");
    let (status, _, body) = get(client, address, "/metrics", Auth::Bearer(TOKEN));
    assert_eq!(status, 200, "{body}");
    // Kubernetes probes send no credentials: /healthz needs none (only TLS).
    assert!(
        wait_until(Duration::from_secs(10), || get(
            client,
            address,
            "/healthz",
            Auth::None
        )
        .0 == 200),
        "/healthz without credentials never answered 200"
    );
    // The refusals above, counted (the /metrics just read came after them).
    let count =
        |series: &str| metric(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"));
    assert_eq!(
        count("profilerd_http_auth_refused_total{reason=\"missing\"}"),
        1.0
    );
    assert_eq!(
        count("profilerd_http_auth_refused_total{reason=\"wrong_password\"}"),
        1.0
    );
    assert_eq!(
        count("profilerd_http_auth_refused_total{reason=\"wrong_token\"}"),
        1.0
    );
    assert!(count("profilerd_http_connections_total{event=\"tls_handshake_failed\"}") >= 1.0);
}

#[test]
fn tls_and_credentials_guard_the_listener_and_go_tool_pprof_gets_through() {
    let target = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("web-auth");
    make_certificates(&dir);
    write_web_config(&dir, "prometheus");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--dump-dir",
        "kept",
        "--web-config-file",
        "web.yml",
    ];
    let daemon = Daemon::start(&args, &dir, "daemon");
    let address = daemon.http_address(START);
    let stderr = daemon.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("HTTP listener on"))
        .unwrap();
    assert!(line.contains(&format!("https://{address}/")), "{line}");
    assert!(
        line.contains("TLS, 1 user (basic auth), 1 bearer token"),
        "{line}"
    );
    let client = client(&dir);
    check_refusals(&client, &address);

    // The real client: the user in the URL is sent as basic auth. `go tool pprof` fetches
    // URLs with its own HTTP client, which ignores -tls_ca (only the standalone pprof reads
    // it): the CA comes from SSL_CERT_FILE, which Go's TLS reads instead of the system's.
    let url = format!(
        "https://prometheus:{PASSWORD}@{address}/debug/pprof/profile?seconds=2&pid={}",
        target.pid()
    );
    let output = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&url)
        .current_dir(&dir)
        .env("HOME", &dir)
        .env("PPROF_TMPDIR", &dir)
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .output()
        .expect("go must be installed (cargo xtask setup installs golang-go)");
    let top = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "go tool pprof: {stderr}");
    assert!(top.contains("work_three"), "{top}\n{stderr}");

    // SIGHUP re-reads the file: another user now, and the old one is refused.
    write_web_config(&dir, "grafana");
    // SAFETY: kill has no memory arguments; the pid is the daemon's, still running.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let rotated = wait_until(Duration::from_secs(5), || {
        get(
            &client,
            &address,
            "/metrics",
            Auth::Basic("grafana", PASSWORD),
        )
        .0 == 200
    });
    assert!(
        rotated,
        "the new user is not accepted:\n{}",
        daemon.stderr()
    );
    let old = Auth::Basic("prometheus", PASSWORD);
    assert_eq!(get(&client, &address, "/metrics", old).0, 401);
    let stderr = daemon.terminate();
    assert!(
        stderr.contains("SIGHUP: web config web.yml re-read: TLS, 1 user"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains(TOKEN),
        "a secret in the log:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_bad_web_config_file_stops_run_and_fails_check_with_one_line() {
    let dir = scratch("web-auth-bad");
    let file = dir.join("web.yml");
    std::fs::write(&file, "basic_auth_user:\n  alice: x\n").unwrap();
    let file = file.to_str().unwrap();
    let run = ["run", "--listen", "127.0.0.1:0", "--web-config-file", file];
    let output = run_profilerd(&run, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: --web-config-file {file}: unknown field `basic_auth_user`"
        )),
        "{stderr}"
    );
    assert!(last.contains("exporter-toolkit"), "{last}");

    let output = run_profilerd(
        &["check", "--web-config-file", file],
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("web config"))
        .unwrap_or_default();
    assert!(line.starts_with("PROBLEM"), "{stdout}");
    assert!(line.contains("unknown field `basic_auth_user`"), "{line}");
}
