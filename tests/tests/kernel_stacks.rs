//! Kernel frames appear under the user frames of a syscall-heavy process.

use std::time::Duration;

use profiler_tests::*;

#[test]
fn syscall_heavy_process_shows_kernel_read_path_under_user_frames() {
    let fixture = Running::spawn(&fixture("reader"), &["30"]);
    let dir = scratch("kernel-stacks");
    let out = dir.join("cpu.pb.gz");
    let pid = fixture.pid().to_string();
    run_ok(
        &[
            "record",
            "--pid",
            &pid,
            "--duration",
            "3s",
            "-o",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );

    let stacks = stacks(&read_pprof(&out));
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    let in_kernel: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.frames.first().is_some_and(|f| f.kernel))
        .collect();
    let kernel_samples: i64 = in_kernel.iter().map(|s| s.count).sum();
    assert!(
        kernel_samples * 2 >= total,
        "only {kernel_samples} of {total} samples in the kernel"
    );

    // Leaf first: kernel frames, then the user frames that made the syscall.
    let read_path = in_kernel
        .iter()
        .find(|s| {
            s.frames
                .iter()
                .any(|f| f.kernel && f.function.contains("read"))
                && s.has("read_loop")
        })
        .unwrap_or_else(|| panic!("no kernel read path under read_loop: {in_kernel:#?}"));
    let last_kernel = read_path.frames.iter().rposition(|f| f.kernel).unwrap();
    let first_user = read_path.frames.iter().position(|f| !f.kernel).unwrap();
    assert!(
        last_kernel < first_user,
        "kernel frames must sit below user frames: {read_path:#?}"
    );
    let read_loop = read_path
        .frames
        .iter()
        .position(|f| f.function == "read_loop")
        .unwrap();
    let main = read_path
        .frames
        .iter()
        .position(|f| f.function == "main")
        .expect("main above read_loop");
    assert!(read_loop < main);
}
