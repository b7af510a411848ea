//! `run --mode triggered`: holmes rules on real processes keep exactly the profiles they should,
//! with the seconds before the trigger.

use std::{
    path::{Path, PathBuf},
    sync::{RwLock, RwLockReadGuard},
    time::Duration,
};

use profiler_tests::*;
use scenario::{kept_profiles as kept, spike};

const EXIT: Duration = Duration::from_secs(90);

/// The idle-host test watches every process, so the other tests' bursts would be its
/// triggers: it runs alone, the others side by side.
static HOST: RwLock<()> = RwLock::new(());

fn beside_others() -> RwLockReadGuard<'static, ()> {
    HOST.read().unwrap_or_else(|e| e.into_inner())
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Checks a kept profile's window (pre- plus post-trigger) spans at least `seconds`: it
/// reaches back before the firing.
fn assert_window_reaches_back(profile: &Profile, seconds: i64) {
    assert!(
        profile.duration_nanos >= seconds * 1_000_000_000,
        "pre + post trigger window: {} ns",
        profile.duration_nanos
    );
}

/// Runs the daemon to completion and checks it kept exactly one `<metric>.*` profile; returns
/// the file and the "trigger fired" log line.
fn one_kept(args: &[&str], dir: &Path, metric: &str) -> (PathBuf, String) {
    let stderr = Daemon::start(args, dir, "daemon").wait_exit(EXIT);
    let files = kept(&dir.join("kept"));
    assert_eq!(files.len(), 1, "{files:?}\n{stderr}");
    assert!(
        file_name(&files[0]).starts_with(&format!("{metric}.")),
        "{files:?}"
    );
    let fired = stderr
        .lines()
        .find(|l| l.contains("trigger fired"))
        .expect("a trigger line");
    assert!(fired.contains(&format!("trigger=\"{metric}\"")), "{fired}");
    (files[0].clone(), fired.to_string())
}

#[test]
fn cpu_spike_keeps_one_profile_with_the_seconds_before_it() {
    let _host = beside_others();
    // 9 s light marker (warm-up), 2 s burn, 2 s light, 2 s burn inside the cooldown.
    let fixture = Running::spawn(&fixture("spike"), &spike::HOST.fixture_args());
    let dir = scratch("trigger-cpu");
    let pid = fixture.pid().to_string();
    let args = spike::run_args(&pid, spike::HOST);
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);

    assert!(
        stderr.contains("triggered mode: watching each process of pids"),
        "start-up line:\n{stderr}"
    );
    assert!(
        stderr.contains("status: ") && stderr.contains("cpu "),
        "status line:\n{stderr}"
    );
    let files = kept(&dir.join("kept"));
    assert_eq!(
        files.len(),
        1,
        "exactly one kept profile: {files:?}\n{stderr}"
    );
    let name = file_name(&files[0]);
    assert!(name.starts_with("cpu."), "{name}");
    assert!(
        dir.join("kept")
            .join(name.replace(".pb.gz", ".svg"))
            .exists(),
        "flame graph next to it"
    );
    assert_eq!(
        spike::firings(&stderr),
        1,
        "second spike inside the cooldown:\n{stderr}"
    );
    let fired = stderr
        .lines()
        .find(|l| l.contains("trigger fired"))
        .unwrap();
    assert!(
        fired.contains("trigger=\"cpu\"") || fired.contains("trigger=cpu"),
        "{fired}"
    );
    assert!(
        fired.contains("meet diff trigger condition") || fired.contains("curVal > ruleAbs"),
        "{fired}"
    );
    eprintln!("{fired}");
    eprintln!(
        "{}",
        stderr
            .lines()
            .find(|l| l.contains("kept profile written"))
            .unwrap()
    );
    assert_written_early(&stderr);

    let profile = read_pprof(&files[0]);
    let stacks = stacks(&profile);
    let burn = count_with(&stacks, "burn_cpu");
    let before = count_with(&stacks, "pre_spike_marker");
    assert!(burn > 100, "the spike's function: {burn} samples");
    assert!(
        before > 0,
        "samples from before the trigger (pre_spike_marker) are kept"
    );
    assert_window_reaches_back(&profile, 4);
    let comments: Vec<&str> = profile
        .comment
        .iter()
        .map(|&c| profile.string_table[c as usize].as_str())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.starts_with("cpu trigger: ") && c.contains("cur ") && c.contains("avg ")),
        "{comments:?}"
    );
    let top = go_pprof(&["-top"], &files[0]);
    assert!(top.contains("burn_cpu"), "{top}");
    assert_time_labels(&files[0]);
}

/// The kept profile was on disk at the firing's own tick, within a second of it, before it
/// was completed.
fn assert_written_early(stderr: &str) {
    let (after, started) = log_field(stderr, "kept profile started", "on_disk_after");
    assert!(
        after.ends_with("ms") || after.ends_with("µs") || after.ends_with("ns"),
        "the first write took {after}: {started}"
    );
}

/// Each sample says when it was taken: `-tagfocus=phase=before` shows the seconds before the
/// firing alone.
fn assert_time_labels(file: &Path) {
    let tags = go_pprof(&["-tags"], file);
    assert!(
        ["phase", "before", "after", "offset"]
            .iter()
            .all(|t| tags.contains(t)),
        "{tags}"
    );
    let before = go_pprof(&["-top", "-tagfocus=phase=before"], file);
    assert!(before.contains("pre_spike_marker"), "{before}");
}

#[test]
fn a_quiet_process_that_spikes_keeps_one_cpu_profile() {
    let _host = beside_others();
    // Never sampled for 8 s (a few microseconds every 100 ms), then one core for 3 s: 50% of
    // --cpu-cores 2 against a history of 0% intervals, watched from the daemon's start (10
    // collections of 500 ms warm it up).
    let fixture = Running::spawn(&fixture("quiet"), &["cpu", "8", "3"]);
    let dir = scratch("trigger-quiet");
    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--pid",
        &pid,
        "--cpu-trigger",
        "10,25,60,1m",
        "--cpu-cores",
        "2",
        "--mem-trigger",
        "off",
        "--thread-trigger",
        "off",
        "--collect-interval",
        "500ms",
        "--pre-trigger",
        "5s",
        "--post-trigger",
        "1s",
        "--upload-interval",
        "2s",
        "--dump-dir",
        "kept",
        "--duration",
        "13s",
        "--profile",
        "cpu,offcpu",
        "--offcpu-period",
        "1",
    ];
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);
    let files = kept(&dir.join("kept"));
    assert_eq!(files.len(), 1, "{files:?}\n{stderr}");
    assert!(file_name(&files[0]).starts_with("cpu."), "{files:?}");
    let fired = stderr
        .lines()
        .find(|l| l.contains("trigger fired"))
        .expect("a trigger line");
    assert!(fired.contains("meet diff trigger condition"), "{fired}");
    // Before the spike the status line shows the target at 0% with the history it is
    // compared with, warm since the daemon's tenth collection (at 5 s).
    let quiet = format!("quiet-{pid}: cpu 0% (avg 0 of 10, min 10 diff 25 abs 60)");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&quiet) && !l.contains("warming up")),
        "{quiet}\n{stderr}"
    );

    let profile = read_pprof(&files[0]);
    // CPU time is the default sample type (the last); off-CPU time is kept beside it.
    assert_eq!(
        sample_types(&profile),
        ["offcpu/nanoseconds", "samples/count", "cpu/nanoseconds"]
    );
    let stacks = stacks_by(&profile, 1);
    let burn = count_with(&stacks, "burn_cpu");
    assert!(
        burn * 2 >= total(&stacks),
        "burn_cpu {burn} of {} samples",
        total(&stacks)
    );
    // Before the spike, the quiet process slept in quiet_wait: nearly all of its off-CPU time.
    let offcpu = stacks_by(&profile, 0);
    let waiting = count_with(&offcpu, "quiet_wait");
    assert!(
        waiting * 10 >= total(&offcpu) * 8 && waiting >= 3_000_000_000,
        "quiet_wait has {waiting} of {} ns off the CPU",
        total(&offcpu)
    );
    // The kept window reaches back before the firing, into the quiet seconds.
    assert_window_reaches_back(&profile, 5);
}

#[test]
fn a_quiet_process_that_touches_a_gigabyte_keeps_one_memory_profile() {
    let _host = beside_others();
    // Quiet for 8 s, then 1 GiB touched in touch_memory: 50% of --memory-limit 2GiB against
    // a history of near 0%, read every collection because the pid is named.
    let fixture = Running::spawn(&fixture("quiet"), &["memory", "8", "1024"]);
    let dir = scratch("trigger-quiet-memory");
    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--pid",
        &pid,
        "--memory-limit",
        "2GiB",
        "--cpu-trigger",
        "off",
        "--thread-trigger",
        "off",
        "--collect-interval",
        "500ms",
        "--pre-trigger",
        "5s",
        "--post-trigger",
        "1s",
        "--dump-dir",
        "kept",
        "--duration",
        "12s",
    ];
    let (file, fired) = one_kept(&args, &dir, "mem");
    eprintln!("{fired}");
    let profile = read_pprof(&file);
    let top = go_pprof(&["-top"], &file);
    assert!(top.contains("Type: memory"), "{top}");
    // Bytes (the default sample type, the last value) under touch_memory.
    let bytes = |function: Option<&str>| -> i64 {
        stacks_by(&profile, profile.sample_type.len() - 1)
            .iter()
            .filter(|s| function.is_none_or(|f| s.has(f)))
            .map(|s| s.count)
            .sum()
    };
    let (touched, all) = (bytes(Some("touch_memory")), bytes(None));
    assert!(
        touched * 10 >= all * 7,
        "touch_memory has {touched} of {all} bytes"
    );
    assert!(touched >= 900 << 20, "{touched} bytes under touch_memory");
    // The window reaches back before the firing, into the quiet seconds.
    assert_window_reaches_back(&profile, 5);
}

#[test]
fn memory_growth_past_a_small_limit_fires_the_mem_rule() {
    let _host = beside_others();
    let fixture = Running::spawn(&fixture("grow"), &["mem", "6", "90", "4"]);
    let dir = scratch("trigger-mem");
    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--pid",
        &pid,
        "--memory-limit",
        "100MiB",
        "--cpu-trigger",
        "off",
        "--thread-trigger",
        "off",
        "--collect-interval",
        "500ms",
        "--post-trigger",
        "1s",
        "--dump-dir",
        "kept",
        "--duration",
        "10s",
    ];
    let (file, fired) = one_kept(&args, &dir, "mem");
    // Over abs once the 90 MiB are in place, or the diff rule while the memset is still
    // running: either way the mem rule fired on the growth.
    assert!(
        fired.contains("curVal > ruleAbs") || fired.contains("meet diff trigger condition"),
        "{fired}"
    );
    // The kept profile answers with the memory-growth profile (the default sample type,
    // bytes first touched, most under grow_memory), and holds the CPU profile of the same
    // window too.
    let profile = read_pprof(&file);
    let name = |i: i64| profile.string_table[i as usize].as_str();
    let types: Vec<&str> = profile.sample_type.iter().map(|t| name(t.r#type)).collect();
    assert_eq!(types, ["samples", "cpu", "faults", "memory"]);
    let faults = stacks_by(&profile, 2);
    let all = total(&faults);
    let grown = count_with(&faults, "grow_memory");
    assert!(
        grown * 10 >= all * 7,
        "grow_memory has {grown} of {all} faults"
    );
    assert!(stacks(&profile).iter().any(|s| s.has("light_work")));
    let top = go_pprof(&["-top"], &file);
    assert!(
        top.contains("Type: memory") && top.contains("grow_memory"),
        "{top}"
    );
}

#[test]
fn starting_many_threads_fires_the_thread_rule() {
    let _host = beside_others();
    let fixture = Running::spawn(
        &fixture_with("grow", "grow", &["-pthread"]),
        &["threads", "6", "300", "4"],
    );
    let dir = scratch("trigger-thread");
    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--pid",
        &pid,
        "--thread-trigger",
        "10,25,40,0,1h",
        "--cpu-trigger",
        "off",
        "--mem-trigger",
        "off",
        "--collect-interval",
        "500ms",
        "--pre-trigger",
        "5s",
        "--post-trigger",
        "1s",
        "--dump-dir",
        "kept",
        "--duration",
        "10s",
        "--profile",
        "cpu,threads",
    ];
    let (file, _) = one_kept(&args, &dir, "thread");
    // The kept profile answers with the thread-creation profile (the default sample type):
    // 300 threads from start_threads; the CPU profile of the window is beside it.
    let profile = read_pprof(&file);
    assert_eq!(
        sample_types(&profile),
        ["samples/count", "cpu/nanoseconds", "threads/count"]
    );
    let created = stacks_by(&profile, 2);
    let started = count_with(&created, "start_threads");
    assert!(
        started * 10 >= total(&created) * 9 && started >= 270,
        "start_threads created {started} of {} threads",
        total(&created)
    );
    assert!(stacks(&profile).iter().any(|s| s.has("light_work")));
    // The window reaches back before the firing, into the light work before the threads.
    assert_window_reaches_back(&profile, 5);
    let top = go_pprof(&["-top"], &file);
    assert!(
        top.contains("Type: threads") && top.contains("start_threads"),
        "{top}"
    );
}

#[test]
fn cgroup_target_fires_on_the_sum_of_processes_below_the_threshold_alone() {
    let _host = beside_others();
    let group = TestCgroup::create("profilerd-trigger");
    let first = Running::spawn(&fixture("split"), &["60"]);
    let second = Running::spawn(&fixture("split"), &["60"]);
    group.add(first.pid());
    group.add(second.pid());
    let dir = scratch("trigger-cgroup");
    let (a, b) = (first.pid().to_string(), second.pid().to_string());
    // Only abs fires (diff 1000%): each process is at ~50% of 2 cores, the cgroup at ~100%.
    let args = [
        "run",
        "--pid",
        &a,
        "--pid",
        &b,
        "--cgroup",
        group.0.to_str().unwrap(),
        "--cpu-cores",
        "2",
        "--cpu-trigger",
        "10,1000,70,1m",
        "--mem-trigger",
        "off",
        "--thread-trigger",
        "off",
        "--collect-interval",
        "500ms",
        "--post-trigger",
        "1s",
        "--dump-dir",
        "kept",
        "--duration",
        "8s",
    ];
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);
    let files = kept(&dir.join("kept"));
    assert_eq!(files.len(), 1, "only the cgroup fires: {files:?}\n{stderr}");
    let fired: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("trigger fired"))
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert!(
        fired[0].contains("profilerd-trigger-"),
        "the cgroup target fired: {}",
        fired[0]
    );
    let pids: std::collections::BTreeSet<u32> = stacks(&read_pprof(&files[0]))
        .iter()
        .map(Stack::pid)
        .collect();
    assert_eq!(
        pids,
        [first.pid(), second.pid()].into_iter().collect(),
        "both processes in the kept profile"
    );
    drop(first);
    drop(second);
}

#[test]
fn idle_host_in_triggered_mode_writes_nothing() {
    let _alone = HOST.write().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("trigger-idle");
    let args = [
        "run",
        "--dump-dir",
        "kept",
        "--duration",
        "8s",
        "--collect-interval",
        "500ms",
        "--upload-interval",
        "5s",
    ];
    let mut daemon = Daemon::start(&args, &dir, "daemon");
    let own = format!(" profilerd-{}:", daemon.pid());
    let stderr = daemon.wait_exit(EXIT);
    assert!(
        stderr.contains("triggered mode: watching each process of all processes"),
        "{stderr}"
    );
    assert!(stderr.contains("status: "), "{stderr}");
    // Its own work (symbolizing, encoding) is no reason to keep a profile of the daemon.
    assert!(
        !stderr.contains(&own),
        "the daemon watched itself\n{stderr}"
    );
    let files = kept(&dir.join("kept"));
    assert!(files.is_empty(), "an idle host kept {files:?}\n{stderr}");
}
