//! `profilerd run --server` against a server that misbehaves (the kit's `HostileServer` on
//! loopback), the cases 4 to 6 of the hardening issue: a 300 MB error body, a redirect to
//! another address, and `Retry-After` waits of days. In each the daemon stays small, keeps
//! draining and answering `/healthz`, exits on SIGTERM within 2 s, and loses or duplicates
//! no profile it did not count.

use std::{
    collections::HashMap,
    io::Read,
    path::PathBuf,
    time::{Duration, Instant},
};

use profiler_testkit::hostile::{Behaviour, HostileServer, Request};
use profiler_tests::*;
use profilerd::push_proto::PushRequest;
use prost::Message;

const START: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(2);
/// Peak RSS allowed: the daemon needs a few tens of MiB; the old client took 633 MiB to
/// read the 300 MB body.
const MAX_HWM_MIB: f64 = 100.0;
/// What a loaded 2-core machine adds to a timer.
const SLACK: Duration = Duration::from_millis(1500);

/// The `split` fixture, and a daemon sending its profiles to a server.
struct Against {
    fixture: Running,
    dir: PathBuf,
    pid: String,
    daemon: Daemon,
    address: String,
}

/// Starts the fixture and a daemon sending to `server` with `extra` flags, and waits for the
/// server's second request.
fn against(server: &HostileServer, name: &str, extra: &[&str]) -> Against {
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch(name);
    let url = server.url();
    let pid = fixture.pid().to_string();
    let daemon = Daemon::start(&server_args(&url, &pid, extra), &dir, "daemon");
    let address = daemon.http_address(START);
    assert!(
        wait_until(START, || server.requests().len() >= 2),
        "{} requests:\n{}",
        server.requests().len(),
        daemon.stderr()
    );
    Against {
        fixture,
        dir,
        pid,
        daemon,
        address,
    }
}

/// A series' value, 0 when absent (a counter not moved yet).
fn metric_or_zero(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or(0.0)
}

/// The counters of the line the delivery task logs when it has stopped.
fn delivery(stderr: &str) -> HashMap<String, u64> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.split_once("delivery stopped: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no delivery stopped line in:\n{stderr}"));
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The daemon still drains (its sample count moves) and `/healthz` says ok.
fn assert_working(daemon: &Daemon, address: &str) {
    let taken = || accounting(&daemon.stderr())["taken"];
    let before = taken();
    assert!(
        wait_until(Duration::from_secs(10), || taken() > before),
        "no drain since taken={before}:\n{}",
        daemon.stderr()
    );
    let (status, body) = http_get(address, "/healthz");
    assert_eq!(status, 200, "/healthz: {body}");
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .expect("gzip body");
    raw
}

/// `time_nanos` and sample total of each profile of `pid` the server answered 200 to.
fn delivered(requests: &[Request], pid: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for request in requests.iter().filter(|r| r.status == 200) {
        let push = PushRequest::decode(&gunzip(&request.body)[..]).expect("PushRequest");
        for series in push.series {
            if !series
                .labels
                .iter()
                .any(|l| l.name == "pid" && l.value == pid)
            {
                continue;
            }
            for sample in series.samples {
                let profile = Profile::decode(&gunzip(&sample.raw_profile)[..]).expect("pprof");
                let total = profile.sample.iter().map(|s| s.value[0]).sum();
                out.push((profile.time_nanos, total));
            }
        }
    }
    out
}

#[test]
fn error_body_of_300_mb_is_read_up_to_the_bound() {
    let server = HostileServer::start(Behaviour::HugeBody {
        status: 500,
        bytes: 300 << 20,
    })
    .unwrap();
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("hostile-huge-body");
    let url = server.url();
    let pid = fixture.pid().to_string();
    let daemon = Daemon::start(
        &server_args(
            &url,
            &pid,
            &["--upload-retries", "1", "--retry-max-backoff", "1s"],
        ),
        &dir,
        "daemon",
    );
    let address = daemon.http_address(START);
    assert!(
        wait_until(START, || server.requests().len() >= 4),
        "{} requests:\n{}",
        server.requests().len(),
        daemon.stderr()
    );
    let hwm = procfs::peak_rss_mib(daemon.pid()).unwrap();
    eprintln!("peak RSS {hwm:.1} MiB");
    assert!(
        hwm < MAX_HWM_MIB,
        "peak RSS {hwm:.0} MiB after {} answers of 300 MB",
        server.requests().len()
    );
    assert_working(&daemon, &address);
    let (_, metrics) = http_get(&address, "/metrics");
    assert!(
        metric_or_zero(
            &metrics,
            r#"profilerd_server_responses_total{event="body_truncated"}"#
        ) >= 4.0,
        "{metrics}"
    );
    let stderr = daemon.terminate_within(STOP);
    let quoted = stderr
        .lines()
        .find(|l| l.contains("HTTP 500: xxx"))
        .unwrap_or_else(|| panic!("no line quotes the body:\n{stderr}"));
    assert!(quoted.len() < 1000, "{quoted}");
    assert!(stderr.len() < 1 << 20, "{} bytes of log", stderr.len());
    let counts = delivery(&stderr);
    assert_eq!(counts["sent"], 0, "{stderr}");
    assert!(counts["responses_truncated"] >= 4, "{stderr}");
}

#[test]
fn redirect_is_refused_and_nothing_reaches_its_target() {
    let target = HostileServer::start(Behaviour::Accept).unwrap();
    let location = format!("{}/push.v1.PusherService/Push", target.url());
    let server = HostileServer::start(Behaviour::Redirect {
        location: location.clone(),
    })
    .unwrap();
    let extra = ["--tenant-id", "team-a", "--header", "X-Secret: s3cret"];
    let Against {
        fixture: _fixture,
        dir: _,
        pid: _,
        daemon,
        address,
    } = against(&server, "hostile-redirect", &extra);
    assert_working(&daemon, &address);
    let (_, metrics) = http_get(&address, "/metrics");
    assert_eq!(
        metric_or_zero(&metrics, r#"profilerd_profiles_total{event="sent"}"#),
        0.0,
        "{metrics}"
    );
    assert!(
        metric_or_zero(
            &metrics,
            r#"profilerd_server_responses_total{event="redirect"}"#
        ) >= 2.0,
        "{metrics}"
    );
    let stderr = daemon.terminate_within(STOP);

    let leaked: Vec<String> = target
        .requests()
        .iter()
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.headers))
        .collect();
    assert!(leaked.is_empty(), "the redirect target got {leaked:?}");
    let requests = server.requests();
    assert!(requests
        .iter()
        .all(|r| r.method == "POST" && r.header("x-scope-orgid") == Some("team-a")));
    let counts = delivery(&stderr);
    assert_eq!(counts["sent"], 0, "{stderr}");
    assert_eq!(counts["redirects"], requests.len() as u64, "{stderr}");
    assert_eq!(counts["rejected"], requests.len() as u64, "{stderr}");
    let explained: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&location) && l.contains("point --server at the final address"))
        .collect();
    assert_eq!(explained.len(), 1, "{stderr}");
}

#[test]
fn retry_after_999999_is_capped_logged_and_waits_in_the_spool() {
    let server = HostileServer::start(Behaviour::RetryAfter {
        status: 429,
        value: "999999".into(),
    })
    .unwrap();
    let fixture = Running::spawn(&fixture("split"), &["120"]);
    let dir = scratch("hostile-retry-after");
    let url = server.url();
    let pid = fixture.pid().to_string();
    let extra = ["--retry-max-backoff", "2s", "--dump-dir", "files"];
    let args = server_args(&url, &pid, &extra);

    let first = Daemon::start(&args, &dir, "first");
    let address = first.http_address(START);
    assert!(
        wait_until(START, || server.requests().len() >= 3),
        "no retry within the cap: {} requests\n{}",
        server.requests().len(),
        first.stderr()
    );
    let requests = server.requests();
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap <= Duration::from_secs(2) + SLACK,
            "retried after {gap:?}"
        );
    }
    let stderr = first.stderr();
    assert!(
        stderr.lines().any(|l| l.contains("Retry-After: 999999")
            && l.contains("waiting")
            && l.contains("--retry-max-backoff")),
        "{stderr}"
    );
    assert_working(&first, &address);
    let (_, metrics) = http_get(&address, "/metrics");
    assert!(
        metric_or_zero(
            &metrics,
            r#"profilerd_server_responses_total{event="retry_after_capped"}"#
        ) >= 2.0,
        "{metrics}"
    );
    // Every profile made while the server says "later" waits on disk, not in memory.
    let (files, spool) = (dir.join("files"), dir.join("spool"));
    assert!(
        wait_until(START, || {
            let made = window_totals(&files, &pid).len();
            made >= 3 && spooled(&spool) == made
        }),
        "{} profiles made, {} spooled\n{}",
        window_totals(&files, &pid).len(),
        spooled(&spool),
        first.stderr()
    );
    first.kill();
    let at_kill = window_totals(&files, &pid).len();
    assert_eq!(spooled(&spool), at_kill, "profiles lost to kill -9");

    server.set(Behaviour::Accept);
    let second = Daemon::start(&args, &dir, "second");
    assert!(
        wait_until(START, || spooled(&spool) == 0
            && delivered(&server.requests(), &pid).len() > at_kill),
        "spool not delivered after the server recovered:\n{}",
        second.stderr()
    );
    let stderr = second.terminate_within(STOP);
    assert_eq!(
        delivered(&server.requests(), &pid),
        window_totals(&files, &pid),
        "delivered profiles differ from the ones made (lost, duplicated or reordered)\n{stderr}"
    );
}

#[test]
fn retry_after_as_a_far_date_is_capped_and_delivery_resumes_when_the_server_recovers() {
    let server = HostileServer::start(Behaviour::RetryAfter {
        status: 503,
        value: "Fri, 31 Dec 2100 23:59:59 GMT".into(),
    })
    .unwrap();
    let extra = ["--retry-max-backoff", "2s", "--dump-dir", "files"];
    let Against {
        fixture: _fixture,
        dir,
        pid,
        daemon,
        address,
    } = against(&server, "hostile-retry-date", &extra);
    server.set(Behaviour::Accept);
    let recovered = Instant::now();
    assert!(
        wait_until(START, || server.requests().iter().any(|r| r.status == 200)),
        "nothing sent after the server recovered:\n{}",
        daemon.stderr()
    );
    let first_ok = server
        .requests()
        .into_iter()
        .find(|r| r.status == 200)
        .unwrap();
    assert!(
        first_ok.at - recovered <= Duration::from_secs(2) + SLACK,
        "first delivery {:?} after the recovery",
        first_ok.at - recovered
    );
    let spool = dir.join("spool");
    assert!(
        wait_until(START, || spooled(&spool) == 0),
        "{}",
        daemon.stderr()
    );
    assert_working(&daemon, &address);
    let stderr = daemon.terminate_within(STOP);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("Retry-After: Fri, 31 Dec 2100 23:59:59 GMT")
                && l.contains("--retry-max-backoff")),
        "{stderr}"
    );
    assert_eq!(
        delivered(&server.requests(), &pid),
        window_totals(&dir.join("files"), &pid),
        "delivered profiles differ from the ones made\n{stderr}"
    );
}
