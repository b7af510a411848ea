//! `profilerd run --server`: profiles reach a Pyroscope server (the stand-in) on both protocols
//! with their labels and credentials; retries, rejections, an outage with a daemon restart, and
//! the splitting of big profiles.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use profiler_tests::{
    standin::{Accepted, StandIn},
    *,
};

const EXIT: Duration = Duration::from_secs(60);

fn cgroup_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string()
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The service name a user should see for the fixture: its systemd unit, else its comm.
fn expected_service(pid: u32) -> String {
    cgroup_of(pid)
        .rsplit('/')
        .find_map(|c| {
            c.strip_suffix(".service")
                .filter(|u| !u.starts_with("user@"))
        })
        .unwrap_or("split")
        .to_string()
}

fn check_process_labels(labels: &BTreeMap<String, String>, pid: u32) {
    let get = |n: &str| labels.get(n).map(String::as_str);
    assert_eq!(get("__name__"), Some("process_cpu"), "{labels:?}");
    assert_eq!(
        get("service_name"),
        Some(expected_service(pid).as_str()),
        "{labels:?}"
    );
    assert_eq!(get("pid"), Some(pid.to_string().as_str()), "{labels:?}");
    assert_eq!(get("comm"), Some("split"), "{labels:?}");
    assert!(
        get("exe").is_some_and(|e| e.ends_with("/fixtures/split")),
        "{labels:?}"
    );
    assert_eq!(get("cgroup"), Some(cgroup_of(pid).as_str()), "{labels:?}");
    assert_eq!(get("hostname"), Some(hostname().as_str()), "{labels:?}");
    assert_eq!(get("region"), Some("eu-west-1"), "{labels:?}");
}

/// Runs the daemon to its exit; asserts the stand-in accepted at least two profiles, each over
/// `protocol` and labelled as the process `pid`. Returns them and the daemon's stderr.
fn delivered(
    standin: &StandIn,
    args: &[&str],
    dir: &Path,
    protocol: &str,
    pid: u32,
) -> (Vec<Accepted>, String) {
    let stderr = Daemon::start(args, dir, "daemon").wait_exit(EXIT);
    let accepted = standin.accepted();
    assert!(
        accepted.len() >= 2,
        "{} profiles accepted; stderr:\n{stderr}",
        accepted.len()
    );
    for profile in &accepted {
        assert_eq!(profile.protocol, protocol);
        check_process_labels(&profile.labels, pid);
    }
    (accepted, stderr)
}

#[test]
fn push_delivers_labelled_profiles_with_basic_auth_and_tenant() {
    let standin = StandIn::start();
    standin.set_multi_tenant(true);
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("pyroscope-push");
    fs::write(dir.join("password"), "pa55word\n").unwrap();
    let url = standin.url();
    let pid = fixture.pid().to_string();
    let args = server_args(
        &url,
        &pid,
        &[
            "--duration",
            "5s",
            "--tag",
            "region=eu-west-1",
            "--basic-auth-user",
            "alice",
            "--basic-auth-password-file",
            "password",
            "--tenant-id",
            "team-a",
            "--header",
            "X-Extra: yes",
        ],
    );
    let (accepted, stderr) = delivered(&standin, &args, &dir, "push", fixture.pid());
    for profile in &accepted {
        assert_eq!(
            profile.headers.get("authorization").map(String::as_str),
            Some("Basic YWxpY2U6cGE1NXdvcmQ=")
        );
        assert_eq!(
            profile.headers.get("x-scope-orgid").map(String::as_str),
            Some("team-a")
        );
        assert_eq!(
            profile.headers.get("x-extra").map(String::as_str),
            Some("yes")
        );
    }
    assert!(accepted
        .iter()
        .any(|p| p.has_function("work_three") && p.has_function("work_one")));
    assert!(
        !dir.join("profiles").exists(),
        "with --server and no --dump-dir no files are written"
    );
    assert!(!stderr.contains("pa55word"), "the password reached the log");
}

#[test]
fn ingest_delivers_labelled_profiles_with_bearer_token() {
    let standin = StandIn::start();
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("pyroscope-ingest");
    fs::write(dir.join("token"), "t0ken").unwrap();
    let url = standin.url();
    let pid = fixture.pid().to_string();
    let args = server_args(
        &url,
        &pid,
        &[
            "--protocol",
            "ingest",
            "--duration",
            "5s",
            "--tag",
            "region=eu-west-1",
            "--bearer-token-file",
            "token",
            "--dump-dir",
            "files",
        ],
    );
    let (accepted, stderr) = delivered(&standin, &args, &dir, "ingest", fixture.pid());
    for profile in &accepted {
        assert_eq!(profile.label("pyroscope_spy"), Some("profilerd"));
        assert_eq!(
            profile.headers.get("authorization").map(String::as_str),
            Some("Bearer t0ken")
        );
        let (from, until) = profile.from_until.unwrap();
        assert!(
            from > 1_700_000_000 && until > from,
            "from {from} until {until}"
        );
    }
    assert!(accepted.iter().any(|p| p.has_function("work_three")));
    // --dump-dir with --server: files too.
    assert!(fs::read_dir(dir.join("files")).unwrap().count() >= accepted.len());
    assert!(!stderr.contains("t0ken"));
}

#[test]
fn rate_limits_and_server_errors_are_retried_bad_requests_are_not() {
    let standin = StandIn::start();
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let url = standin.url();
    let pid = fixture.pid().to_string();

    standin.inject(&[(429, Some(1)), (503, None)]);
    let dir = scratch("pyroscope-retry");
    // Long enough for the retries (Retry-After 1 s, then a backoff) to happen while running.
    let args = server_args(&url, &pid, &["--duration", "6s"]);
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);
    let statuses: Vec<u16> = standin.requests().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..3], [429, 503, 200], "{statuses:?}\n{stderr}");
    assert!(statuses[3..].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(
        standin.accepted().len(),
        statuses.len() - 2,
        "every profile arrived once"
    );

    let before = standin.requests().len();
    let accepted_before = standin.accepted().len();
    standin.inject(&[(400, None)]);
    let dir = scratch("pyroscope-400");
    let args = server_args(&url, &pid, &["--duration", "2500ms"]);
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);
    let statuses: Vec<u16> = standin.requests()[before..]
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses[0], 400, "{statuses:?}");
    assert!(
        statuses[1..].iter().all(|&s| s == 200),
        "the rejected profile was sent again: {statuses:?}"
    );
    assert_eq!(
        standin.accepted().len() - accepted_before,
        statuses.len() - 1
    );
    assert_eq!(
        stderr.matches("server rejected a profile").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("rejected=1"), "{stderr}");
}

#[test]
fn outage_with_daemon_restart_delivers_every_profile_once_in_order() {
    let mut standin = StandIn::start();
    let fixture = Running::spawn(&fixture("split"), &["300"]);
    let dir = scratch("pyroscope-outage");
    let url = standin.url();
    let pid = fixture.pid().to_string();
    let args = server_args(
        &url,
        &pid,
        &[
            "--dump-dir",
            "files",
            "--upload-retries",
            "1",
            "--retry-max-backoff",
            "2s",
            "--upload-timeout",
            "2s",
        ],
    );

    let first = Daemon::start(&args, &dir, "first");
    assert!(
        wait_until(Duration::from_secs(20), || !standin.accepted().is_empty()),
        "nothing delivered before the outage"
    );
    standin.stop();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let stderr = first.terminate();
    assert!(stderr.contains("server unreachable"), "{stderr}");
    let spooled_at_restart = spooled(&dir.join("spool"));
    assert!(
        spooled_at_restart >= 3,
        "{spooled_at_restart} profiles spooled during the outage\n{stderr}"
    );

    let second = Daemon::start(&args, &dir, "second");
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    standin.restart();
    let outage_seconds = outage.elapsed().as_secs_f64();
    assert!(
        wait_until(Duration::from_secs(40), || spooled(&dir.join("spool")) == 0),
        "spool not replayed:\n{}",
        second.stderr()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let stderr = second.terminate();

    let produced = window_totals(&dir.join("files"), &fixture.pid().to_string());
    let accepted: Vec<(i64, i64)> = standin
        .accepted()
        .iter()
        .filter(|a| a.label("pid") == Some(pid.as_str()))
        .map(|a| (a.profile.time_nanos, a.samples()))
        .collect();
    eprintln!(
        "outage {outage_seconds:.1} s: {} profiles produced, {} delivered, {} spooled at the restart",
        produced.len(),
        accepted.len(),
        spooled_at_restart
    );
    let mut unique = accepted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), accepted.len(), "duplicates delivered");
    assert!(
        accepted.windows(2).all(|w| w[0].0 < w[1].0),
        "delivered out of order: {accepted:?}"
    );
    assert_eq!(
        accepted, produced,
        "delivered profiles differ from the ones produced\n{stderr}"
    );
}

#[test]
fn process_with_more_than_16000_stacks_is_split_and_every_sample_arrives() {
    let standin = StandIn::start();
    let fixture = Running::spawn(
        &fixture_with("manystacks", "manystacks", &["-pthread"]),
        &["60"],
    );
    let dir = scratch("pyroscope-split");
    let url = standin.url();
    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--mode",
        "continuous",
        "--pid",
        &pid,
        "--server",
        &url,
        "--frequency",
        "1000",
        "--collect-interval",
        "1s",
        "--upload-interval",
        "14s",
        "--duration",
        "14s",
        "--dump-dir",
        "files",
        "--spool-dir",
        "spool",
    ];
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);

    // The profile, and the window's sidecar for the page.
    let files: Vec<PathBuf> = fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".pb.gz"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let whole = read_pprof(&files[0]);
    let total: i64 = whole.sample.iter().map(|s| s.value[0]).sum();
    assert!(
        whole.sample.len() > 16_000,
        "precondition: only {} distinct stacks in the window",
        whole.sample.len()
    );

    let parts = standin.accepted();
    assert!(parts.len() >= 2, "{} parts; stderr:\n{stderr}", parts.len());
    assert!(parts.iter().all(|p| p.profile.sample.len() <= 16_000));
    assert!(
        parts.iter().all(|p| p.labels == parts[0].labels),
        "parts of one series share their labels"
    );
    let delivered: i64 = parts.iter().map(|p| p.samples()).sum();
    assert_eq!(delivered, total, "samples lost or duplicated in splitting");
    let stacks: usize = parts.iter().map(|p| p.profile.sample.len()).sum();
    assert_eq!(stacks, whole.sample.len());
    assert!(stderr.contains("split=1"), "{stderr}");
}

#[test]
fn spooled_profile_too_old_for_the_server_goes_to_the_dump_dir() {
    use profilerd::export::{Spool, Upload};

    let standin = StandIn::start();
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("pyroscope-too-old");
    let hour_and_a_bit = 3_700_000_000_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let old = Upload {
        seq: 0,
        labels: vec![
            ("__name__".into(), "process_cpu".into()),
            ("comm".into(), "old".into()),
            ("pid".into(), "4242".into()),
            ("service_name".into(), "old".into()),
        ],
        from_nanos: now - hour_and_a_bit,
        until_nanos: now - hour_and_a_bit + 15_000_000_000,
        pprof_gz: vec![0x1f, 0x8b, 0, 0],
    };
    Spool::open(&dir.join("spool"), 1 << 20)
        .unwrap()
        .push(&old)
        .unwrap();

    let url = standin.url();
    let pid = fixture.pid().to_string();
    let args = server_args(&url, &pid, &["--duration", "3s", "--dump-dir", "files"]);
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);
    assert!(
        standin
            .accepted()
            .iter()
            .all(|a| a.label("pid") != Some("4242")),
        "a profile older than 1 h was sent"
    );
    let moved: Vec<String> = fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("old-4242.cpu."))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}\n{stderr}");
    assert_eq!(spooled(&dir.join("spool")), 0);
    assert!(stderr.contains("moved_too_old=1"), "{stderr}");
    assert!(!standin.accepted().is_empty(), "fresh profiles still flow");
}
