//! The off-CPU source (`--profile offcpu`): the stack each thread switched out with, weighted
//! by the nanoseconds until it ran again, against a fixture whose blocked time is known.

use profiler_tests::*;

/// Nanoseconds in a second.
const SECOND: i64 = 1_000_000_000;

#[test]
fn blocked_time_is_counted_under_the_functions_that_blocked() {
    // Two threads blocked nearly all the time: main in nap (nanosleep), the other in
    // block_in_read (read on a pipe main writes to every 100 ms).
    let fixture = Running::spawn(&fixture("blocker"), &["30"]);
    let dir = scratch("offcpu-blocker");
    let cpu = dir.join("cpu.pb.gz");
    let pid = fixture.pid().to_string();
    // Every switch-out sampled: the fixture's blocked time is then counted exactly.
    let extra = ["--profile", "cpu,offcpu", "--offcpu-period", "1"];
    let output = record_pid(&pid, "4s", &extra, &cpu);
    let log = String::from_utf8_lossy(&output.stderr);
    let file = dir.join("cpu.offcpu.pb.gz");
    assert!(file.exists(), "{log}");
    let profile = read_pprof(&file);
    assert_eq!(sample_types(&profile), ["offcpu/nanoseconds"]);
    let stacks = stacks(&profile);
    let blocked = total(&stacks);
    let (napping, reading) = (
        count_with(&stacks, "nap"),
        count_with(&stacks, "block_in_read"),
    );
    eprintln!("blocked {blocked} ns: nap {napping}, block_in_read {reading}\n{log}");
    // Two threads for 4 s, less the blocks still going on at either end (100 ms each).
    assert!(
        (6 * SECOND..=9 * SECOND).contains(&blocked),
        "{blocked} ns blocked, about 8 s expected"
    );
    assert!(
        (napping + reading) * 10 >= blocked * 8,
        "nap and block_in_read hold {} of {blocked} ns",
        napping + reading
    );
    for (function, ns) in [("nap", napping), ("block_in_read", reading)] {
        assert!(ns >= 3 * SECOND, "{function}: {ns} ns of about 4 s");
    }
    // Whole stacks from the entry points down into the kernel's scheduler.
    let nap = stacks.iter().find(|s| s.has("nap")).expect("a nap stack");
    assert!(
        nap.has("main") && nap.has("__libc_start_call_main") && nap.has("schedule"),
        "whole stack: {nap:?}"
    );
    let read = stacks
        .iter()
        .find(|s| s.has("block_in_read"))
        .expect("a block_in_read stack");
    assert!(
        read.has("start_thread") && read.has("schedule"),
        "whole stack: {read:?}"
    );
    assert!(log.contains("offcpu_counted="), "{log}");
    let top = go_pprof(&["-top"], &file);
    assert!(top.contains("Type: offcpu"), "{top}");
    assert!(top.contains("block_in_read"), "{top}");
}
