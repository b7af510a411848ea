//! The files under deploy/: the systemd unit passes `systemd-analyze verify` without a
//! warning, and the Kubernetes manifest is consistent with the daemon's flags.

use std::{fs, path::Path, process::Command};

use profiler_tests::*;

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn systemd_unit_verifies_clean() {
    let unit = deploy("profilerd.service");
    // verify checks that ExecStart= exists: point it at the binary under test.
    let dir = scratch("deploy-unit");
    let binary = profilerd();
    let local = unit.replace("/usr/local/bin/profilerd", binary.to_str().unwrap());
    let path = dir.join("profilerd.service");
    fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (cargo xtask setup installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings:\n{stderr}");

    for needed in [
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectory=profilerd",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "--config /etc/profilerd/config.toml",
        "CPUWeight=1000",
        "Nice=-20",
        "LimitNOFILE=65536",
    ] {
        assert!(unit.contains(needed), "unit lacks {needed}");
    }
    assert!(
        !unit.contains("CAP_SYS_ADMIN"),
        "root's catch-all capability"
    );
}

#[test]
fn daemonset_runs_the_daemon_with_what_it_needs() {
    let manifest = deploy("kubernetes/daemonset.yaml");
    for needed in [
        "hostPID: true",
        "drop: [\"ALL\"]",
        "\"BPF\", \"PERFMON\"",
        "args: [\"run\", \"--config\", \"/etc/profilerd/config.toml\"]",
        "containerPort: 7070",
        "limits:",
        "\"SYS_NICE\"]",
        "listen_max_connections = ",
        "listen_header_timeout = ",
        "RLIMIT_NOFILE",
    ] {
        assert!(manifest.contains(needed), "manifest lacks {needed}");
    }
    // The embedded config is a valid config file.
    let config: String = manifest
        .split("config.toml: |\n")
        .nth(1)
        .expect("embedded config")
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let dir = scratch("deploy-daemonset");
    fs::write(dir.join("config.toml"), config).unwrap();
    let out = Command::new(profilerd())
        .args([
            "check",
            "--config",
            "config.toml",
            "--dump-dir",
            "profiles",
            "--spool-dir",
            "spool",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
