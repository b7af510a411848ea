//! A local user against the daemon's HTTP listener and dump dir (issue 16, case 7, the
//! serving parts of case 8 and the `GET /` item of case 11): idle connections at a 1024
//! descriptor limit, a slowloris, a planted sidecar with a symlink to a secret, a hard link,
//! another user's sidecar, a FIFO named like a sidecar, and 9000 planted sidecars; a web page
//! that rebinds its own name to 127.0.0.1 (DNS rebinding).

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::symlink,
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use profiler_testkit::tail;
use profiler_tests::*;
use profilerd::export::KeptSummary;

const START: Duration = Duration::from_secs(30);

/// One GET on a fresh connection, within `limit`; an error is a value (the old listener hung).
fn get(address: &str, path: &str, limit: Duration) -> Result<(u16, String), String> {
    let response = reqwest::blocking::Client::new()
        .get(format!("http://{address}{path}"))
        .timeout(limit)
        .send()
        .map_err(|err| format!("GET {path}: {err}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().unwrap_or_default()))
}

/// The value of one sample line of `/metrics` (0 when absent).
fn metric_at(address: &str, series: &str) -> f64 {
    let (_, text) = get(address, "/metrics", Duration::from_secs(10)).expect("/metrics");
    metric(&text, series).unwrap_or(0.0)
}

fn wait_healthy(address: &str) {
    assert!(
        wait_until(START, || get(address, "/healthz", Duration::from_secs(2))
            .is_ok_and(|(status, _)| status == 200)),
        "healthz never became ok"
    );
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A sidecar as the daemon writes it, for `<base>.pb.gz` and `<base>.svg`.
fn sidecar(base: &str) -> Vec<u8> {
    serde_json::to_vec(&KeptSummary {
        fired_at: "2026-12-01T00:00:00Z".into(),
        fired_unix: now_unix(),
        target: format!("{base}-1"),
        service: "planted".into(),
        trigger: "cpu".into(),
        reasons: vec!["cpu: meet diff trigger condition".into()],
        top: vec![("main".into(), 50.0)],
        samples: 100,
        window_seconds: 15.0,
        pprof: format!("{base}.pb.gz"),
        svg: Some(format!("{base}.svg")),
        ..KeptSummary::default()
    })
    .unwrap()
}

/// This test process holds more than a thousand sockets.
fn raise_own_descriptor_limit(at_least: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < at_least {
            limit.rlim_cur = at_least;
            limit.rlim_max = limit.rlim_max.max(at_least);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

fn pprof_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pb.gz"))
            .count()
    })
}

/// 1100 idle connections to a daemon under `prlimit --nofile=1024:1024` with `extra` flags:
/// `/healthz` answers within 2 s, profiles are still written, and no write fails for want of
/// descriptors. Returns the daemon's `/metrics` sample `line` at the end.
fn idle_connections_at_1024_descriptors(name: &str, extra: &[&str], line: &str) -> f64 {
    raise_own_descriptor_limit(4096);
    let busy = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch(name);
    let pid = busy.pid().to_string();
    let mut args = vec![
        "run",
        "--mode",
        "continuous",
        "--pid",
        &pid,
        "--upload-interval",
        "1s",
        "--dump-dir",
        "profiles",
        "--duration",
        "60s",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        &args,
        &dir,
        "daemon",
    );
    let address = daemon.http_address(START);
    wait_healthy(&address);
    let limits = fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        open_files
            .split_whitespace()
            .filter(|w| *w == "1024")
            .count()
            == 2,
        "{open_files}"
    );

    let socket: SocketAddr = address.parse().unwrap();
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect_timeout(&socket, Duration::from_secs(1)).ok())
        .collect();
    assert!(idle.len() >= 1000, "only {} connected", idle.len());
    thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    let answer = get(&address, "/healthz", Duration::from_secs(2));
    assert!(
        matches!(answer, Ok((200, _))),
        "/healthz with 1100 idle connections: {answer:?} after {:?}",
        started.elapsed()
    );
    let written = pprof_files(&dir.join("profiles"));
    thread::sleep(Duration::from_secs(4));
    let later = pprof_files(&dir.join("profiles"));
    assert!(
        later >= written + 2,
        "profile writes stopped: {written} -> {later}; stderr:\n{}",
        tail(&daemon.stderr(), 20)
    );
    let stderr = daemon.stderr();
    assert!(
        !stderr.contains("Too many open files"),
        "{}",
        tail(&stderr, 20)
    );
    assert!(
        metric_at(
            &address,
            "profilerd_http_connections_total{event=\"evicted\"}"
        ) > 0.0
    );
    let value = metric_at(&address, line);
    drop(idle);
    daemon.terminate();
    drop(busy);
    value
}

#[test]
fn idle_connections_at_a_1024_descriptor_limit_leave_profile_writes_and_healthz_alone() {
    // A connection limit above the descriptor limit: the reserve is what protects the writes.
    let reserve_hits = idle_connections_at_1024_descriptors(
        "hostile-descriptors",
        &["--listen-max-connections", "4096"],
        "profilerd_http_descriptor_reserve_hits_total",
    );
    assert!(reserve_hits > 0.0);
}

#[test]
fn idle_connections_beyond_the_default_connection_limit_replace_each_other() {
    let open = idle_connections_at_1024_descriptors(
        "hostile-connections",
        &[],
        "profilerd_http_connections_open",
    );
    assert!(open <= 128.0, "{open} connections open");
}

/// A daemon watching an idle process, its dump dir `DIR/kept`.
fn daemon_on(dir: &Path, extra: &[&str]) -> (Daemon, Running) {
    daemon_built(dir, extra, Daemon::start)
}

/// [`daemon_on`] with the optimized build, for latencies measured on a busy machine.
fn release_daemon_on(dir: &Path, extra: &[&str]) -> (Daemon, Running) {
    daemon_built(dir, extra, Daemon::start_release)
}

fn daemon_built(
    dir: &Path,
    extra: &[&str],
    start: fn(&[&str], &Path, &str) -> Daemon,
) -> (Daemon, Running) {
    let idler = Running::spawn(&fixture("idler"), &["60"]);
    let pid = idler.pid().to_string();
    let mut args = vec![
        "run",
        "--pid",
        &pid,
        "--dump-dir",
        "kept",
        "--duration",
        "60s",
    ];
    args.extend_from_slice(extra);
    (start(&args, dir, "daemon"), idler)
}

#[test]
fn slowloris_is_cut_by_the_header_timeout() {
    let dir = scratch("hostile-slowloris");
    let (daemon, idler) = daemon_on(&dir, &["--listen-header-timeout", "3s"]);
    let address = daemon.http_address(START);
    wait_healthy(&address);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    let mut cut_after = None;
    // A header byte every second, for at most 10 s.
    for byte in header.iter().take(10) {
        if stream.write_all(&[*byte]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        let closed = match stream.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        if closed {
            cut_after = Some(started.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(900));
    }
    let cut_after = cut_after.expect("the slow header was still open after 10 s");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(6)).contains(&cut_after),
        "{cut_after:?}"
    );
    assert_eq!(
        metric_at(
            &address,
            "profilerd_http_connections_total{event=\"header_timeout\"}"
        ),
        1.0
    );
    daemon.terminate();
    drop(idler);
}

#[test]
fn planted_links_other_users_files_and_a_fifo_give_404_and_hang_nothing() {
    let dir = scratch("hostile-planted");
    let kept = dir.join("kept");
    fs::create_dir_all(&kept).unwrap();
    let secret = dir.join("shadow");
    fs::write(&secret, "root:$6$planted-secret:19000:0:99999:7:::\n").unwrap();
    // A sidecar the daemon would write, its files links to the secret.
    fs::write(kept.join("leak.json"), sidecar("leak")).unwrap();
    symlink(&secret, kept.join("leak.pb.gz")).unwrap();
    symlink(&secret, kept.join("leak.svg")).unwrap();
    // A hard link to a root-owned file.
    fs::write(kept.join("hard.json"), sidecar("hard")).unwrap();
    fs::hard_link(&secret, kept.join("hard.pb.gz")).unwrap();
    // Another user's sidecar naming a regular file.
    fs::write(kept.join("foreign.json"), sidecar("foreign")).unwrap();
    fs::write(kept.join("foreign.pb.gz"), b"pprof").unwrap();
    std::os::unix::fs::lchown(kept.join("foreign.json"), Some(65534), Some(65534)).unwrap();
    // A FIFO named like a sidecar: opening it for reading blocks until a writer comes.
    let fifo = std::ffi::CString::new(kept.join("x.json").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);

    let (daemon, idler) = daemon_on(&dir, &[]);
    let address = daemon.http_address(START);
    wait_healthy(&address);
    let quick = Duration::from_secs(2);
    let page = get(&address, "/", quick).expect("GET / with a FIFO in the dump dir");
    assert_eq!(page.0, 200);
    assert!(page.1.contains("id=\"empty\""), "{}", page.1);
    for name in [
        "leak.pb.gz",
        "leak.svg",
        "hard.pb.gz",
        "foreign.pb.gz",
        "x.json",
    ] {
        let (status, body) = get(&address, &format!("/profiles/{name}"), quick)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(status, 404, "{name}: {body}");
        assert!(!body.contains("planted-secret"), "{name} served the secret");
    }
    assert!(matches!(get(&address, "/healthz", quick), Ok((200, _))));
    for reason in ["link", "not_ours", "not_regular"] {
        let line = format!("profilerd_dump_files_refused_total{{reason=\"{reason}\"}}");
        assert!(metric_at(&address, &line) > 0.0, "{line}");
    }
    let stopping = Instant::now();
    daemon.terminate();
    assert!(stopping.elapsed() < Duration::from_secs(5));
    drop(idler);
}

#[test]
fn nine_thousand_planted_sidecars_do_not_delay_healthz_while_the_page_is_read() {
    let dir = scratch("hostile-sidecars");
    let kept = dir.join("kept");
    fs::create_dir_all(&kept).unwrap();
    for i in 0..9000 {
        let base = format!("cpu.{i}.20261201T000000Z");
        fs::write(kept.join(format!("{base}.json")), sidecar(&base)).unwrap();
        fs::write(kept.join(format!("{base}.pb.gz")), b"pprof").unwrap();
    }
    // The build users deploy: the debug build renders the page several times slower, and
    // three readers then keep both cores of a small machine busy.
    let (daemon, idler) = release_daemon_on(&dir, &[]);
    let address = daemon.http_address(START);
    wait_healthy(&address);

    let readers: Vec<_> = (0..3)
        .map(|_| {
            let address = address.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let mut pages = Vec::new();
                while started.elapsed() < Duration::from_secs(6) {
                    pages.push(get(&address, "/", Duration::from_secs(30)));
                }
                pages
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let asked = Instant::now();
        let answer = get(&address, "/healthz", Duration::from_secs(5));
        latencies.push(asked.elapsed());
        assert!(matches!(answer, Ok((200, _))), "{answer:?}");
        thread::sleep(Duration::from_millis(100));
    }
    latencies.sort();
    let p90 = latencies[latencies.len() * 9 / 10];
    assert!(
        p90 < Duration::from_millis(100),
        "/healthz p90 {p90:?} while the page is read ({latencies:?})"
    );
    let pages: Vec<_> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    let (status, page) = pages
        .into_iter()
        .next()
        .expect("a page")
        .expect("the page answered");
    assert_eq!(status, 200);
    // 500 sidecars read, the first page of them shown.
    assert_eq!(page.matches("<tr class=\"profile\">").count(), 50);
    assert!(page.contains("page 1 of 10"), "{page}");
    assert!(page.contains("id=\"truncated\""));
    daemon.terminate();
    drop(idler);
}

/// The status line of `GET path` sent with `Host: host` on a fresh connection.
fn status_with_host(address: &str, path: &str, host: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn a_rebound_host_name_gets_403_and_the_listeners_own_names_and_allowed_ones_get_through() {
    let dir = scratch("hostile-rebinding");
    let (daemon, _idler) = daemon_on(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen-host",
            "profiler.internal",
        ],
    );
    let address = daemon.http_address(START);
    let port = address.rsplit(':').next().unwrap();
    // A page on evil.example pointed its name at 127.0.0.1: the browser sends its name.
    let refused = status_with_host(&address, "/metrics", &format!("evil.example:{port}"));
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("--listen-host"), "{refused}");
    let pprof = status_with_host(
        &address,
        "/debug/pprof/profile?seconds=1",
        &format!("evil.example:{port}"),
    );
    assert!(pprof.starts_with("HTTP/1.1 403"), "{pprof}");
    for host in [
        address.clone(),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("profiler.internal:{port}"),
    ] {
        let answer = status_with_host(&address, "/metrics", &host);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    assert_eq!(
        metric_at(&address, "profilerd_http_host_refused_total"),
        2.0
    );
    drop(daemon);
}
