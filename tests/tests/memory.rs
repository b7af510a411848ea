//! The memory-growth source: stacks sampled on page faults (`record --profile memory`), each
//! sample weighing `--memory-period` pages, read back with `go tool pprof`, and sent by
//! continuous mode as its own profile type (with the off-CPU one beside it).

use std::time::Duration;

use profiler_tests::{
    standin::{Accepted, StandIn},
    *,
};

/// A page, which one fault maps (4 KiB on x86_64).
const PAGE: i64 = 4096;

/// Records the cpu and memory profiles of `pid` for `duration`; returns the memory profile's
/// path and the daemon's log.
fn record_both(pid: u32, duration: &str, name: &str) -> (std::path::PathBuf, String) {
    let dir = scratch(name);
    let cpu = dir.join("cpu.pb.gz");
    let pid = pid.to_string();
    let output = record_pid(&pid, duration, &["--profile", "cpu,memory"], &cpu);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(cpu.exists(), "the cpu profile is written too\n{log}");
    let memory = dir.join("cpu.memory.pb.gz");
    assert!(memory.exists(), "{log}");
    (memory, log)
}

#[test]
fn touching_a_gigabyte_is_a_gigabyte_under_the_function_that_touched_it() {
    // Quiet for 2 s, then 1 GiB touched in touch_memory and kept.
    let fixture = Running::spawn(&fixture("quiet"), &["memory", "2", "1024"]);
    let (file, log) = record_both(fixture.pid(), "5s", "memory-gigabyte");
    let profile = read_pprof(&file);
    assert_eq!(sample_types(&profile), ["faults/count", "memory/bytes"]);
    let stacks = stacks(&profile);
    let faults = total(&stacks);
    let touched = count_with(&stacks, "touch_memory");
    eprintln!("faults {faults}, under touch_memory {touched}\n{log}");
    // Each sample stands for --memory-period (128) faults: 1 GiB is 262144 faults.
    let bytes = faults * PAGE;
    assert!(
        (900 << 20..=1300 << 20).contains(&bytes),
        "{bytes} bytes first touched, 1 GiB expected"
    );
    assert!(
        touched * 10 >= faults * 7,
        "touch_memory has {touched} of {faults} faults"
    );
    let chain = stacks
        .iter()
        .find(|s| s.has("touch_memory"))
        .expect("a touch_memory stack");
    assert!(
        chain.has("main") && chain.has("__libc_start_call_main"),
        "whole stack: {chain:?}"
    );
    // The reference reader takes it, with bytes as the default sample type.
    let top = go_pprof(&["-top"], &file);
    assert!(top.contains("Type: memory"), "{top}");
    assert!(top.contains("touch_memory"), "{top}");
    let by_faults = go_pprof(&["-top", "-sample_index=faults"], &file);
    assert!(by_faults.contains("Type: faults"), "{by_faults}");
}

#[test]
fn a_go_map_that_grows_names_the_function_that_grew_it() {
    let fixture = Running::spawn(&fixture("gogrow"), &["2", "256"]);
    let (file, log) = record_both(fixture.pid(), "5s", "memory-go");
    let stacks = stacks(&read_pprof(&file));
    let faults = total(&stacks);
    let grown = count_with(&stacks, "main.growMap");
    eprintln!("faults {faults}, under main.growMap {grown}\n{log}");
    assert!(faults * PAGE >= 200 << 20, "{faults} faults for 256 MiB");
    // The records are first touched where they are filled in, in main.growMap; the map's own
    // buckets grow under it too (runtime.mapassign, runtime.hashGrow).
    assert!(
        grown * 10 >= faults * 7,
        "main.growMap has {grown} of {faults} faults"
    );
    let chain = stacks
        .iter()
        .find(|s| s.has("main.growMap"))
        .expect("a main.growMap stack");
    assert!(chain.has("main.main"), "whole stack: {chain:?}");
}

#[test]
fn continuous_mode_sends_memory_growth_and_offcpu_as_their_own_profile_types() {
    let standin = StandIn::start();
    let fixture = Running::spawn(&fixture("quiet"), &["memory", "2", "256"]);
    let dir = scratch("memory-continuous");
    let url = standin.url();
    let pid = fixture.pid().to_string();
    let extra = [
        "--duration",
        "5s",
        "--dump-dir",
        "files",
        "--profile",
        "cpu,memory,offcpu",
        "--offcpu-period",
        "1",
    ];
    let args = server_args(&url, &pid, &extra);
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(Duration::from_secs(60));
    let accepted = standin.accepted();
    let memory: Vec<&Accepted> = accepted
        .iter()
        .filter(|p| p.label("__name__") == Some("memory"))
        .collect();
    assert!(!memory.is_empty(), "no memory profile accepted\n{stderr}");
    for profile in &memory {
        assert_eq!(profile.label("pid"), Some(pid.as_str()));
        assert_eq!(profile.label("comm"), Some("quiet"));
        assert_eq!(
            sample_types(&profile.profile),
            ["faults/count", "memory/bytes"]
        );
    }
    assert!(memory.iter().any(|p| p.has_function("touch_memory")));
    // Off-CPU time: quiet sleeps in quiet_wait between its wake-ups.
    let offcpu: Vec<&Accepted> = accepted
        .iter()
        .filter(|p| p.label("__name__") == Some("offcpu"))
        .collect();
    assert!(!offcpu.is_empty(), "no offcpu profile accepted\n{stderr}");
    for profile in &offcpu {
        assert_eq!(sample_types(&profile.profile), ["offcpu/nanoseconds"]);
    }
    assert!(offcpu.iter().any(|p| p.has_function("quiet_wait")));
    // The CPU series goes on as before, and the files are named by kind.
    assert!(accepted
        .iter()
        .any(|p| p.label("__name__") == Some("process_cpu")));
    let files = scenario::file_names(&dir.join("files"));
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("quiet-{pid}.memory."))),
        "{files:?}"
    );
    for kind in ["cpu", "offcpu"] {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("quiet-{pid}.{kind}."))),
            "{files:?}"
        );
    }
}
