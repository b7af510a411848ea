//! The end-to-end checks of `cargo xtask test --kernels`, run inside each QEMU guest (as its
//! init's only job) and on the host itself.
//!
//! A guest holds no cargo, no Go and no test harness, so this is a plain binary that drives
//! the real `profilerd` against the C fixtures and reads its folded output and log lines with
//! the shared test kit (`profiler-testkit`), judging them as the host's end-to-end tests do.
//! It prints one `kernel-check: <check> ok|FAIL ...` line per check and a final
//! `kernel-check: result {json}` line that xtask turns into a row of its table.
//!
//! `--guest` allows changing sysctls, which only a throw-away guest should.

use std::{
    fs,
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use profiler_testkit::{
    matrix::{Figures, Report, RESULT_PREFIX},
    tail, Daemon,
};

mod checks;

/// Bound of any one profilerd run; TCG guests are slow, but not this slow.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// The kernel matrix's in-guest driver.
#[derive(Parser)]
#[command(name = "kernel-check")]
struct Paths {
    /// The profilerd binary to check.
    #[arg(long, value_name = "PATH")]
    profilerd: PathBuf,
    /// Where the compiled fixtures are.
    #[arg(long, value_name = "DIR")]
    fixtures: PathBuf,
    /// Scratch directory (emptied first).
    #[arg(long, value_name = "DIR")]
    work: PathBuf,
    /// util-linux's setpriv (busybox's cannot change uids).
    #[arg(long, value_name = "PATH", default_value = "setpriv")]
    setpriv: PathBuf,
    /// Running in a throw-away guest: sysctls may be changed.
    #[arg(long)]
    guest: bool,
}

/// One check's verdict; its figures go into the report's [`Figures`].
struct Outcome {
    ok: bool,
    detail: String,
}

/// A check: runs profilerd against a fixture, judges the outcome, sets its figures.
type Check = fn(&Paths, &mut Figures) -> Result<Outcome>;

fn main() -> ExitCode {
    match run(&Paths::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every check; returns whether all passed.
fn run(paths: &Paths) -> Result<bool> {
    let _ = fs::remove_dir_all(&paths.work);
    fs::create_dir_all(&paths.work)
        .with_context(|| format!("cannot create {}", paths.work.display()))?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read the kernel release: is /proc mounted?")?;
    let started = Instant::now();
    let mut report = Report {
        kernel: release.trim().to_string(),
        notes: host_check(paths),
        ..Report::default()
    };
    let checks: [(&str, Check); 7] = [
        ("hot function", checks::hot_function),
        ("table unwinding", checks::table_unwinding),
        ("memory, off-CPU, threads", checks::sources),
        ("kernel frames", checks::kernel_frames),
        ("cgroup filter", checks::cgroup_filter),
        ("triggered profile", checks::triggered_profile),
        ("without root", checks::without_root),
    ];
    for (name, check) in checks {
        // A check that cannot even run is a failure of that check, not of the whole driver:
        // the other checks still tell what works on this kernel.
        let outcome = check(paths, &mut report.figures).unwrap_or_else(|err| Outcome {
            ok: false,
            detail: format!("{err:#}"),
        });
        let verdict = if outcome.ok { "ok" } else { "FAIL" };
        println!("kernel-check: {name} {verdict}: {}", outcome.detail);
        if !outcome.ok {
            report.failed.push(name.to_string());
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&report)?);
    if !report.failed.is_empty() {
        eprintln!("Error: failed: {}", report.failed.join(", "));
    }
    Ok(report.failed.is_empty())
}

/// `profilerd check`, echoed; returns its non-ok lines, which name what degrades here.
fn host_check(paths: &Paths) -> Vec<String> {
    let output = Command::new(&paths.profilerd)
        .args(["check", "--listen", "off"])
        .output();
    let Ok(output) = output else {
        return vec!["profilerd check could not start".into()];
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    for line in text.lines() {
        println!("kernel-check: profilerd check: {line}");
    }
    text.lines()
        .filter(|l| l.starts_with("note") || l.starts_with("PROBLEM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A finished profilerd run: its stderr, and how long it took to log `marker` (the line it
/// writes once the sampler is attached).
struct Run {
    stderr: String,
    attach: Option<Duration>,
}

/// Runs `profilerd ARGS` to completion in the work directory with stderr in
/// `WORK/NAME.stderr`, watching for `marker` to time start-up. Fails unless it exits 0.
fn profilerd(paths: &Paths, name: &str, args: &[&str], marker: &str) -> Result<Run> {
    let log = paths.work.join(format!("{name}.stderr"));
    let started = Instant::now();
    let mut daemon = Daemon::start(&paths.profilerd, args, &paths.work, &log)?;
    let mut attach = None;
    let status = daemon.wait(RUN_LIMIT, Duration::from_millis(10), |d| {
        if attach.is_none() && d.stderr().contains(marker) {
            attach = Some(started.elapsed());
        }
    });
    let stderr = daemon.stderr();
    let status = status.with_context(|| {
        format!(
            "profilerd {}; stderr:\n{}",
            args.join(" "),
            tail(&stderr, 20)
        )
    })?;
    if !status.success() {
        anyhow::bail!(
            "profilerd {} failed ({status}); stderr:\n{}",
            args.join(" "),
            tail(&stderr, 20)
        );
    }
    Ok(Run { stderr, attach })
}
