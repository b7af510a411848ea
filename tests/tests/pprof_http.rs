//! `/debug/pprof/` on the daemon's listener, as Go users use `net/http/pprof`: `go tool pprof`
//! fetches `profile?seconds=N&pid=P` over HTTP (the real client) and reads the pprof it gets;
//! bad queries get a 400 with one line, a kind `--profile` did not enable a 404 naming the flag,
//! requests beyond `--pprof-max-requests` a 503, and a client that goes away frees its place.

use std::{io::Write, net::TcpStream, process::Command, time::Duration};

use profiler_tests::*;

const START: Duration = Duration::from_secs(30);

/// `go tool pprof ARGS URL`: its stdout and stderr; it must succeed.
fn pprof_fetch(args: &[&str], url: &str, dir: &std::path::Path) -> (String, String) {
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(url)
        .env("HOME", dir)
        .env("PPROF_TMPDIR", dir)
        .output()
        .expect("go must be installed (cargo xtask setup installs golang-go)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "go tool pprof {url}: {stderr}");
    (stdout, stderr)
}

fn requests(address: &str, outcome: &str) -> f64 {
    let (_, text) = http_get(address, "/metrics");
    metric(
        &text,
        &format!("profilerd_pprof_requests_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no {outcome} requests in\n{text}"))
}

#[test]
fn go_tool_pprof_fetches_a_running_process_profile_over_http() {
    let split = fixture("split");
    let target = Running::spawn(&split, &["60"]);
    let other = Running::spawn(&split, &["60"]);
    let dir = scratch("pprof-http");
    let pid = target.pid().to_string();
    let daemon = Daemon::start(
        &["run", "--listen", "127.0.0.1:0", "--dump-dir", "kept"],
        &dir,
        "daemon",
    );
    let address = daemon.http_address(START);

    let url = format!("http://{address}/debug/pprof/profile?seconds=3&pid={pid}");
    let (top, stderr) = pprof_fetch(&["-top"], &url, &dir);
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(top.contains("work_three"), "{top}");
    // Named after the process's executable, not the kernel's mapping.
    assert!(top.contains("File: split"), "{top}");
    assert!(
        stderr.contains("pprof.split.samples.cpu.001.pb.gz"),
        "{stderr}"
    );
    // Only the selected process: the profile's pid labels.
    let (tags, _) = pprof_fetch(&["-tags"], &url, &dir);
    assert!(tags.contains("pid:"), "{tags}");
    assert!(tags.contains(&pid), "{tags}");
    assert!(!tags.contains(&other.pid().to_string()), "{tags}");

    // Bad queries: 400 with one line naming the parameter and the fix.
    for (query, needle) in [
        ("seconds=0", "out of range"),
        ("seconds=100000", "--pprof-max-seconds"),
        ("pid=abc", "not a process id"),
        ("debug=1", "unknown parameter"),
        ("cgroup=system.slice", "not a cgroup v2 path"),
    ] {
        let (status, body) = http_get(&address, &format!("/debug/pprof/profile?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
        assert_eq!(body.trim_end().lines().count(), 1, "{body}");
    }
    // offcpu is not in run's default --profile.
    let (status, body) = http_get(&address, "/debug/pprof/offcpu?seconds=1");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--profile"), "{body}");
    let (status, index) = http_get(&address, "/debug/pprof/");
    assert_eq!(status, 200);
    assert!(
        index.contains("href=\"/debug/pprof/profile?seconds=30\""),
        "{index}"
    );
    assert!(
        index.contains("href=\"/debug/pprof/threads?seconds=30\""),
        "{index}"
    );
    assert!(index.contains("off (--profile offcpu)"), "{index}");
    assert_eq!(requests(&address, "served"), 2.0);
    assert_eq!(requests(&address, "bad_request"), 5.0);
    assert_eq!(requests(&address, "disabled"), 1.0);
    let stderr = daemon.terminate();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn requests_beyond_the_limit_are_refused_and_a_client_that_leaves_frees_its_place() {
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("pprof-limits");
    let pid = fixture.pid().to_string();
    let daemon = Daemon::start(
        &[
            "run",
            "--mode",
            "continuous",
            "--upload-interval",
            "2s",
            "--collect-interval",
            "500ms",
            "--pid",
            &pid,
            "--listen",
            "127.0.0.1:0",
            "--dump-dir",
            "files",
            "--pprof-max-requests",
            "1",
        ],
        &dir,
        "daemon",
    );
    let address = daemon.http_address(START);

    // A client asks for 30 s, then goes away.
    let mut client = TcpStream::connect(&address).unwrap();
    write!(
        client,
        "GET /debug/pprof/profile?seconds=30 HTTP/1.1\r\nHost: {address}\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = http_get(&address, "/debug/pprof/profile?seconds=1");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--pprof-max-requests"), "{body}");
    drop(client);
    assert!(
        wait_until(Duration::from_secs(5), || requests(&address, "gone") == 1.0),
        "the request of a client that left still holds its place"
    );
    // Its place is free again; continuous mode keeps writing whole windows meanwhile.
    let url = format!("http://{address}/debug/pprof/profile?seconds=2&pid={pid}");
    let (top, _) = pprof_fetch(&["-top"], &url, &dir);
    assert!(top.contains("work_three"), "{top}");
    let (_, text) = http_get(&address, "/metrics");
    assert_eq!(
        metric(&text, "profilerd_pprof_requests_in_flight"),
        Some(0.0),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let stderr = daemon.terminate();
    let windows = window_totals(&dir.join("files"), &pid);
    assert!(windows.len() >= 3, "{windows:?}\n{stderr}");
    // Each window's samples: about 2 s of one busy core at 99 Hz, none lost to the slices
    // taken for the on-demand profiles.
    let full: Vec<i64> = windows[1..windows.len() - 1].iter().map(|w| w.1).collect();
    assert!(
        full.iter().all(|&n| n >= 150),
        "continuous windows lost samples: {full:?}"
    );
}
