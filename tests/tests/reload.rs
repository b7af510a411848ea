//! SIGHUP reload of `run --config FILE`: a new rule applies to a target without losing its
//! trigger history; new server settings deliver the profiles spooled while the old server was
//! down; an invalid file keeps the running configuration.

use std::{fs, path::Path, time::Duration};

use profiler_tests::{standin::StandIn, *};

fn sighup(daemon: &Daemon) {
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
}

fn wait_log(daemon: &Daemon, text: &str, limit: Duration) {
    assert!(
        wait_until(limit, || daemon.stderr().contains(text)),
        "no {text:?} in the log:\n{}",
        daemon.stderr()
    );
}

fn kept_profiles(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".pb.gz"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_reloaded_rule_fires_on_history_from_before_the_reload() {
    // 8 s of a light marker, then a 3 s burn.
    let fixture = Running::spawn(&fixture("spike"), &["8", "3", "0", "0"]);
    let dir = scratch("reload-rule");
    let pid = fixture.pid();
    let config = |cpu: &str| {
        format!(
            "pid = [{pid}]\ncpu_trigger = \"{cpu}\"\nmem_trigger = \"off\"\nthread_trigger = \"off\"\n\
             collect_interval = \"500ms\"\npre_trigger = \"7s\"\npost_trigger = \"1s\"\n\
             dump_dir = \"kept\"\nduration = \"13s\"\n"
        )
    };
    fs::write(dir.join("profilerd.toml"), config("off")).unwrap();
    let mut daemon = Daemon::start(&["run", "--config", "profilerd.toml"], &dir, "daemon");
    // 6 s in: the target's history holds 10+ intervals (the warm-up) of the light marker.
    std::thread::sleep(Duration::from_secs(6));
    fs::write(dir.join("profilerd.toml"), config("10,25,70,1m")).unwrap();
    sighup(&daemon);
    wait_log(&daemon, "reload: applied rules", Duration::from_secs(5));

    let stderr = daemon.wait_exit(Duration::from_secs(60));
    // Without the history from before the reload the rule would still be warming up (10
    // intervals) when the burn starts 2 s later, and would fire on abs or not at all.
    let fired = stderr
        .lines()
        .find(|l| l.contains("trigger fired"))
        .unwrap_or_else(|| panic!("the reloaded rule never fired:\n{stderr}"));
    assert!(fired.contains("trigger=\"cpu\""), "{fired}");
    assert!(
        fired.contains("meet diff trigger condition")
            || fired.contains("meet abs trigger condition"),
        "{fired}"
    );
    let kept = kept_profiles(&dir.join("kept"));
    assert_eq!(kept.len(), 1, "{kept:?}\n{stderr}");
    // The kept window reaches back before the reload: the light marker ran then.
    let stacks = stacks(&read_pprof(&dir.join("kept").join(&kept[0])));
    assert!(
        stacks.iter().any(|s| s.has("pre_spike_marker")),
        "no sample from before the burn"
    );
}

#[test]
fn reloaded_server_settings_deliver_what_was_spooled_meanwhile() {
    let busy = Running::spawn(&fixture("split"), &["40"]);
    let dir = scratch("reload-server");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |url: &str| {
        format!(
            "mode = \"continuous\"\npid = [{}]\nserver = \"{url}\"\nspool_dir = \"spool\"\n\
             upload_interval = \"2s\"\nupload_retries = 0\nupload_timeout = \"1s\"\nretry_max_backoff = \"2s\"\n\
             tag = {{ stage = \"before\" }}\n",
            busy.pid()
        )
    };
    fs::write(
        dir.join("profilerd.toml"),
        config(&format!("http://127.0.0.1:{dead}")),
    )
    .unwrap();
    let daemon = Daemon::start(&["run", "--config", "profilerd.toml"], &dir, "daemon");
    let spooled = || {
        fs::read_dir(dir.join("spool"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || spooled() >= 2),
        "nothing spooled while the server was down:\n{}",
        daemon.stderr()
    );

    let standin = StandIn::start();
    let new = config(&standin.url()).replace("\"before\"", "\"after\"");
    fs::write(dir.join("profilerd.toml"), new).unwrap();
    sighup(&daemon);
    wait_log(
        &daemon,
        "reload: applied tags, server",
        Duration::from_secs(5),
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            let accepted = standin.accepted();
            accepted.iter().any(|a| a.label("stage") == Some("before"))
                && accepted.iter().any(|a| a.label("stage") == Some("after"))
        }),
        "the new server did not get both the spooled and the new profiles: {:?}\n{}",
        standin
            .accepted()
            .iter()
            .map(|a| a.labels.clone())
            .collect::<Vec<_>>(),
        daemon.stderr()
    );
    let stderr = daemon.terminate();
    assert!(
        stderr.contains("delivery uses the reloaded server settings"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_reload_keeps_the_running_configuration() {
    let busy = Running::spawn(&fixture("split"), &["30"]);
    let dir = scratch("reload-invalid");
    fs::write(
        dir.join("profilerd.toml"),
        format!(
            "mode = \"continuous\"\npid = [{}]\nupload_interval = \"2s\"\ndump_dir = \"profiles\"\n",
            busy.pid()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&["run", "--config", "profilerd.toml"], &dir, "daemon");
    wait_log(&daemon, "continuous mode", Duration::from_secs(20));
    let address = daemon.http_address(Duration::from_secs(5));
    let healthy = || http_get(&address, "/healthz").0 == 200;
    assert!(wait_until(Duration::from_secs(10), healthy));
    // A misspelt key, and a duration past any range (it once panicked the main thread).
    for (text, logged) in [
        (
            "mode = \"continuous\"\n\nupload_intervall = \"1s\"\n",
            "profilerd.toml:3: unknown key `upload_intervall`",
        ),
        (
            "mode = \"continuous\"\nupload_interval = \"99999999999999999999s\"\n",
            "profilerd.toml:2: key `upload_interval`",
        ),
    ] {
        fs::write(dir.join("profilerd.toml"), text).unwrap();
        sighup(&daemon);
        wait_log(
            &daemon,
            &format!("SIGHUP: the new configuration is invalid, the running one stays: {logged}"),
            Duration::from_secs(5),
        );
        assert!(healthy(), "{}", daemon.stderr());
    }
    // Still profiling the same process on the same schedule.
    let count = || kept_profiles(&dir.join("profiles")).len();
    let before = count();
    assert!(
        wait_until(Duration::from_secs(10), || count() >= before + 2),
        "no profiles after the invalid reloads:\n{}",
        daemon.stderr()
    );
    let stderr = daemon.terminate_within(Duration::from_secs(2));
    assert!(!stderr.contains("reload: applied"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
