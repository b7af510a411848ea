//! `--config FILE` and `profilerd check` on this host: settings from the file apply, flags
//! override them, mistakes are named with their line, and check reports every requirement.

use std::{fs, path::Path, process::Command, time::Duration};

use profiler_tests::*;

fn profilerd_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(profilerd())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("start profilerd")
}

#[test]
fn file_settings_apply_and_flags_override_them() {
    let busy = Running::spawn(&fixture("split"), &["20"]);
    let dir = scratch("config-apply");
    fs::write(
        dir.join("profilerd.toml"),
        format!(
            "# continuous profiles of one process\n\
             mode = \"continuous\"\n\
             frequency = 49\n\
             pid = [{}]\n\
             upload_interval = \"2s\"\n\
             dump_dir = \"from-file\"\n\
             duration = \"5s\"\n",
            busy.pid()
        ),
    )
    .unwrap();
    let stderr = Daemon::start(
        &["run", "--config", "profilerd.toml", "--frequency", "29"],
        &dir,
        "daemon",
    )
    .wait_exit(Duration::from_secs(60));
    assert!(
        stderr.contains("continuous mode") && stderr.contains("frequency=29"),
        "the flag wins over the file's frequency:\n{stderr}"
    );
    let files = fs::read_dir(dir.join("from-file"))
        .expect("the file's dump_dir was used")
        .count();
    assert!(files >= 1, "no profile in from-file/");
}

#[test]
fn a_bad_key_or_value_is_named_with_its_line() {
    let dir = scratch("config-bad");
    fs::write(dir.join("typo.toml"), "frequency = 99\n\nfrequncy = 10\n").unwrap();
    let out = profilerd_in(&dir, &["run", "--config", "typo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: typo.toml:3: unknown key `frequncy`: not a flag of `profilerd run` (did you mean `frequency`?)"
    );

    fs::write(
        dir.join("value.toml"),
        "mode = \"triggered\"\ncpu_trigger = \"10,25\"\n",
    )
    .unwrap();
    let out = profilerd_in(&dir, &["check", "--config", "value.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: value.toml:2: key `cpu_trigger`: invalid value '10,25'"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let out = profilerd_in(&dir, &["run", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read config file missing.toml"),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_requirement_of_this_host() {
    let dir = scratch("config-check");
    let out = profilerd_in(&dir, &["check", "--dump-dir", "profiles"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for name in [
        "kernel",
        "btf",
        "privileges",
        "perf events",
        "sample rate",
        "cgroups",
        "dump dir",
        "targets",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.get(8..).is_some_and(|rest| rest.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} line:\n{stdout}"));
        assert!(
            line.starts_with("ok ") || line.starts_with("note "),
            "{line}"
        );
    }
    assert!(stdout.contains("profilerd check: ready"), "{stdout}");
    // check creates nothing.
    assert!(!dir.join("profiles").exists());
}

#[test]
fn check_names_an_unreachable_server_and_fails() {
    let dir = scratch("config-check-server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    fs::write(
        dir.join("server.toml"),
        format!("server = \"http://127.0.0.1:{port}\"\ntag = {{ region = \"eu\" }}\n"),
    )
    .unwrap();
    let out = profilerd_in(&dir, &["check", "--config", "server.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("PROBLEM") && l.contains("server"))
        .unwrap_or_else(|| panic!("no server problem:\n{stdout}"));
    assert!(line.contains("cannot connect to 127.0.0.1"), "{line}");
    assert!(stdout.contains("server config"), "{stdout}");
    assert!(stdout.contains("1 problem of"), "{stdout}");
}

#[test]
fn the_shipped_default_config_checks_clean() {
    let dir = scratch("config-default");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.toml");
    // Its state paths are /var/lib/profilerd; point them here so the check needs no install.
    let out = profilerd_in(
        &dir,
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--dump-dir",
            "profiles",
            "--spool-dir",
            "spool",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn target_sections_give_their_processes_rules_and_names() {
    // Two copies of the spike fixture under different names, both burning 6 s in (after the
    // rules' warm-up of 10 collections of 500 ms). The section for `quiet` turns its CPU rule off; the one for `spike`
    // names its service and adds a tag.
    let loud = Running::spawn(&fixture("spike"), &["6", "3", "0", "0"]);
    let quiet = Running::spawn(&fixture_with("spike", "quiet", &[]), &["6", "3", "0", "0"]);
    let dir = scratch("config-sections");
    fs::write(
        dir.join("profilerd.toml"),
        format!(
            "pid = [{}, {}]\n\
             collect_interval = \"500ms\"\npre_trigger = \"5s\"\npost_trigger = \"1s\"\n\
             dump_dir = \"kept\"\nduration = \"11s\"\n\
             \n\
             [[target]]\n\
             process = \"quiet\"\n\
             cpu_trigger = \"off\"\n\
             \n\
             [[target]]\n\
             name = \"loud one\"\n\
             process = \"spi*\"\n\
             service_name = \"spiky\"\n\
             tags = {{ team = \"perf\" }}\n",
            loud.pid(),
            quiet.pid()
        ),
    )
    .unwrap();
    let check = profilerd_in(&dir, &["check", "--config", "profilerd.toml"]);
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("[[target]] sections: process quiet, loud one"),
        "{stdout}"
    );
    let stderr = Daemon::start(&["run", "--config", "profilerd.toml"], &dir, "daemon")
        .wait_exit(Duration::from_secs(60));
    let fired: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("trigger fired"))
        .collect();
    assert_eq!(fired.len(), 1, "only the loud process fires:\n{stderr}");
    assert!(
        fired[0].contains(&format!("target=spike-{}", loud.pid())),
        "{}",
        fired[0]
    );
    let sidecars: Vec<serde_json::Value> = fs::read_dir(dir.join("kept"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .map(|e| serde_json::from_slice(&fs::read(e.path()).unwrap()).unwrap())
        .collect();
    assert_eq!(sidecars.len(), 1);
    assert_eq!(sidecars[0]["service"], "spiky", "{}", sidecars[0]);
}
