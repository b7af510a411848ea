//! The thread-creation source (`--profile threads`): the creating thread's stack at each new
//! thread, one count each, against a fixture that starts a known number of threads from a
//! known function.

use profiler_tests::*;

#[test]
fn every_thread_created_is_counted_under_the_function_that_created_it() {
    // Light work for 2 s, then 300 sleeping threads from start_threads.
    let fixture = Running::spawn(
        &fixture_with("grow", "grow", &["-pthread"]),
        &["threads", "2", "300", "6"],
    );
    let dir = scratch("threads-created");
    let cpu = dir.join("cpu.pb.gz");
    let pid = fixture.pid().to_string();
    let output = record_pid(&pid, "5s", &["--profile", "cpu,threads"], &cpu);
    let log = String::from_utf8_lossy(&output.stderr);
    let file = dir.join("cpu.threads.pb.gz");
    assert!(file.exists(), "{log}");
    let profile = read_pprof(&file);
    assert_eq!(sample_types(&profile), ["threads/count"]);
    let stacks = stacks(&profile);
    // Every creation is an event, not a sample: exactly 300.
    assert_eq!(total(&stacks), 300, "{stacks:?}\n{log}");
    let started = count_with(&stacks, "start_threads");
    assert!(
        started * 10 >= 300 * 9,
        "start_threads created {started} of 300"
    );
    // The whole chain: from the program's entry through pthread_create into the kernel.
    let chain = stacks
        .iter()
        .find(|s| s.has("start_threads"))
        .expect("a start_threads stack");
    assert!(
        chain.has("__libc_start_call_main") && chain.has("clone3") && chain.has("copy_process"),
        "whole stack: {chain:?}"
    );
    let top = go_pprof(&["-top"], &file);
    assert!(top.contains("Type: threads"), "{top}");
    assert!(top.contains("start_threads"), "{top}");
}
