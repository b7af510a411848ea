//! Bad input gets one line naming the cause and the fix, and a non-zero exit.

use std::{path::Path, time::Duration};

use profiler_tests::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs profilerd expecting failure; returns its single error line.
fn one_line_error(args: &[&str]) -> String {
    let output = run_profilerd(args, LIMIT);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{args:?} should fail with exit 1"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?} should print exactly one line, got:\n{stderr}"
    );
    lines[0].to_string()
}

#[test]
fn missing_pid() {
    let line = one_line_error(&["record", "--pid", "999999999", "--duration", "1s"]);
    assert!(line.contains("no process with pid 999999999"), "{line}");
}

#[test]
fn missing_and_non_cgroup2_paths() {
    let line = one_line_error(&["record", "--cgroup", "/no/such/cgroup", "--duration", "1s"]);
    assert!(line.contains("does not exist"), "{line}");
    let line = one_line_error(&["record", "--cgroup", "/proc/self", "--duration", "1s"]);
    assert!(line.contains("not a cgroup2 directory"), "{line}");
}

#[test]
fn unwritable_dump_dir_and_output() {
    let line = one_line_error(&[
        "run",
        "--dump-dir",
        "/proc/profilerd-no",
        "--duration",
        "1s",
    ]);
    assert!(
        line.contains("--dump-dir") && line.contains("/proc/profilerd-no"),
        "{line}"
    );
    let line = one_line_error(&[
        "record",
        "--duration",
        "1s",
        "--output",
        "/proc/profilerd-no/x.pb.gz",
    ]);
    assert!(line.contains("--output"), "{line}");
}

#[test]
fn unprivileged_user_is_told_which_capabilities_are_missing() {
    let output = scenario::as_nobody(Path::new("setpriv"), "-all", None)
        .arg(profilerd())
        .args([
            "record",
            "--duration",
            "1s",
            "--output",
            "/tmp/profilerd-unprivileged.pb.gz",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON") && stderr.contains("root"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_name_the_flag() {
    let output = run_profilerd(&["record", "--frequency", "0"], LIMIT);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--frequency"));
    let output = run_profilerd(&["run", "--upload-interval", "often"], LIMIT);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--upload-interval"));
}

#[test]
fn map_sizes_the_kernel_refuses_name_their_flag() {
    for flag in [
        "--counts-map-entries",
        "--stack-map-entries",
        "--kernel-stack-map-entries",
        "--max-filter-entries",
        "--max-processes",
    ] {
        let line = one_line_error(&["record", "--duration", "1s", flag, "4000000000"]);
        assert!(
            line.starts_with("error: the kernel refused the BPF map ")
                && line.contains(&format!("of {flag} 4000000000 ("))
                && line.contains(&format!(": lower {flag}")),
            "{line}"
        );
    }
}

#[test]
fn bad_server_settings_are_start_up_errors_naming_the_setting() {
    let line = one_line_error(&[
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--tag",
        "bad-name=x",
        "--duration",
        "1s",
    ]);
    assert!(line.contains("bad-name"), "{line}");
    let line = one_line_error(&[
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--tag",
        "pid=1",
        "--duration",
        "1s",
    ]);
    assert!(line.contains("\"pid\"") && line.contains("twice"), "{line}");
    let line = one_line_error(&["run", "--server", "localhost:4040", "--duration", "1s"]);
    assert!(line.contains("--server"), "{line}");
    let line = one_line_error(&[
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--basic-auth-user",
        "u",
        "--duration",
        "1s",
    ]);
    assert!(line.contains("password"), "{line}");
    let line = one_line_error(&[
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--bearer-token-file",
        "/no/such/token",
        "--duration",
        "1s",
    ]);
    assert!(
        line.contains("--bearer-token-file") && line.contains("/no/such/token"),
        "{line}"
    );
    let line = one_line_error(&[
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--header",
        "Authorization: x",
        "--duration",
        "1s",
    ]);
    assert!(line.contains("--header"), "{line}");
    let line = one_line_error(&[
        "run",
        "--server",
        "http://127.0.0.1:9",
        "--spool-dir",
        "/proc/no",
        "--duration",
        "1s",
    ]);
    assert!(line.contains("--spool-dir"), "{line}");
}

#[test]
fn bpf_log_lines_reach_the_daemon_log_once_per_interval() {
    // Thousands of distinct stacks into a 64-entry counts map: the BPF program logs it full.
    let busy = Running::spawn(
        &fixture_with("manystacks", "manystacks", &["-pthread"]),
        &["6"],
    );
    let pid = busy.pid().to_string();
    let out = run_profilerd(
        &[
            "record",
            "--pid",
            &pid,
            "--counts-map-entries",
            "64",
            "--duration",
            "3s",
            "-o",
            scratch("bpf-log").join("cpu.pb.gz").to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("counts map full, samples are being dropped"))
        .collect();
    assert!(!lines.is_empty(), "no BPF log line:\n{stderr}");
    assert!(
        lines[0].contains("bpf"),
        "logged under the bpf target: {}",
        lines[0]
    );
    // At most one line per CPU per drain (3 s at 1 s intervals, plus the last drain).
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(lines.len() <= cpus * 5, "{} lines", lines.len());
    let acc = accounting(&stderr);
    assert!(acc["dropped_map_full"] > 0, "{acc:?}");
}
