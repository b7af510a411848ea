//! Kernel frames appear under the user frames of a syscall-heavy process.

use profiler_tests::*;

#[test]
fn syscall_heavy_process_shows_kernel_read_path_under_user_frames() {
    let fixture = Running::spawn(&fixture("reader"), &["30"]);
    let dir = scratch("kernel-stacks");
    let out = dir.join("cpu.pb.gz");
    let pid = fixture.pid().to_string();
    record_pid(&pid, "3s", &[], &out);

    let stacks = stacks(&read_pprof(&out));
    let total = total(&stacks);
    let in_kernel = scenario::reader::in_kernel(&stacks);
    let kernel_samples: i64 = in_kernel.iter().map(|s| s.count).sum();
    assert!(
        kernel_samples * 2 >= total,
        "only {kernel_samples} of {total} samples in the kernel"
    );

    // Leaf first: kernel frames, then the user frames that made the syscall.
    let read_path = in_kernel
        .iter()
        .find(|s| scenario::reader::is_read_path(s))
        .unwrap_or_else(|| panic!("no kernel read path under read_loop: {in_kernel:#?}"));
    assert!(
        read_path.has("main"),
        "main above read_loop: {read_path:#?}"
    );
    assert!(
        scenario::reader::read_path_in_order(read_path),
        "kernel frames must sit below user frames, read_loop below main: {read_path:#?}"
    );
}
