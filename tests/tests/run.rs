//! `profilerd run`: one pprof per process per upload interval, flushed on SIGTERM.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use profiler_tests::*;

fn profiles_of(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".pb.gz")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn run_writes_per_process_files_each_interval_and_flushes_on_sigterm() {
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("run");
    let mut daemon = Command::new(profilerd())
        .args([
            "run",
            "--mode",
            "continuous",
            "--pid",
            &fixture.pid().to_string(),
            "--collect-interval",
            "500ms",
        ])
        .args([
            "--upload-interval",
            "2s",
            "--dump-dir",
            dir.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start profilerd run");
    let prefix = format!("split-{}.cpu.", fixture.pid());

    let started = Instant::now();
    while profiles_of(&dir, &prefix).len() < 2 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = profiles_of(&dir, &prefix);
    assert!(
        before.len() >= 2,
        "expected two interval files, have {before:?}"
    );

    // SIGTERM mid-window: the partial window is written, then the daemon exits 0.
    std::thread::sleep(Duration::from_millis(700));
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "profilerd did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = {
        use std::io::Read;
        let mut text = String::new();
        daemon
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    let after = profiles_of(&dir, &prefix);
    assert!(
        after.len() > before.len(),
        "no flushed file after SIGTERM: {after:?}\n{stderr}"
    );

    for file in &after {
        let stacks = stacks(&read_pprof(file));
        assert!(!stacks.is_empty(), "{} is empty", file.display());
        assert!(stacks.iter().all(|s| s.pid() == fixture.pid()));
        assert!(
            stacks.iter().any(|s| s.has("work_unit")),
            "{} lacks the hot function",
            file.display()
        );
    }
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // One file per interval: the last one is readable by the reference reader too.
    let top = go_pprof(&["-top"], after.last().unwrap());
    assert!(top.contains("work_unit"), "{top}");
}
