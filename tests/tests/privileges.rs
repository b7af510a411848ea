//! Least privilege: once the sampler is attached, no thread of the daemon keeps CAP_BPF,
//! CAP_PERFMON or CAP_SYS_ADMIN, and sampling goes on.

use std::{fs, time::Duration};

use profiler_tests::*;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[test]
fn no_thread_keeps_load_time_capabilities_after_attach() {
    let busy = Running::spawn(&fixture("split"), &["20"]);
    let dir = scratch("privileges");
    let pid = busy.pid().to_string();
    let daemon = Daemon::continuous(&pid, "12s", &dir);
    assert!(
        wait_until(Duration::from_secs(20), || daemon
            .stderr()
            .contains("dropped every other capability")),
        "{}",
        daemon.stderr()
    );
    // Let the main thread finish its own drop, then read every thread's effective set.
    std::thread::sleep(Duration::from_millis(500));
    let tasks = fs::read_dir(format!("/proc/{}/task", daemon.pid())).unwrap();
    let mut threads = 0;
    for task in tasks.filter_map(Result::ok) {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        threads += 1;
        let caps = procfs::cap_eff(&status).expect("CapEff line");
        for (cap, name) in [
            (CAP_BPF, "CAP_BPF"),
            (CAP_PERFMON, "CAP_PERFMON"),
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        ] {
            assert_eq!(
                caps & (1 << cap),
                0,
                "thread {:?} still has {name} (CapEff {caps:016x})",
                task.file_name()
            );
        }
    }
    assert!(threads >= 2, "expected the main and the pipeline thread");
    let mut daemon = daemon;
    let stderr = daemon.wait_exit(Duration::from_secs(30));
    // Draining, symbolizing and writing still work without them.
    let profiles: Vec<_> = fs::read_dir(dir.join("profiles")).unwrap().collect();
    assert!(profiles.len() >= 3, "{stderr}");
    let acc = accounting(&stderr);
    assert!(acc["in_profiles"] > 500, "{acc:?}");
    assert!(
        stderr.contains("CAP_SYS_PTRACE"),
        "the log names what stays: {stderr}"
    );
}
