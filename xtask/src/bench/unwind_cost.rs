//! Scenario 9: the in-kernel cost per sample of a busy program without frame pointers
//! (Debian's python3.11), ours walking the `.eh_frame` tables against lightswitch (also
//! `.eh_frame` unwinding in BPF), and ours with `--unwind fp` beside it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use profiler_testkit::Running;

use super::{
    completeness::PYTHON_FIB,
    probe::{self, OURS},
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};

/// A prime: lightswitch takes no other frequency, and ours runs at it too here.
const FREQUENCY: &str = "97";

/// One python3.11 fib loop pinned to each CPU (every sample is a full one); returns the pids.
fn pythons(procs: &mut Procs) -> Result<Vec<u32>> {
    (0..2)
        .map(|cpu| {
            procs.spawn(
                Path::new("taskset"),
                &[
                    "-c",
                    &cpu.to_string(),
                    "/usr/bin/python3.11",
                    "-c",
                    PYTHON_FIB,
                ],
            )
        })
        .collect()
}

/// Our cost per run with `--pid` of `pids` and the extra arguments.
fn ours(ctx: &Ctx, pids: &[u32], extra: &[&str], secs: u64) -> Result<f64> {
    let out = ctx.dir.join("unwind-cost.folded");
    let mut args = vec![
        "record".to_string(),
        "--frequency".into(),
        FREQUENCY.into(),
        "--duration".into(),
        format!("{secs}s"),
        "--format".into(),
        "folded".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    for pid in pids {
        args.extend(["--pid".to_string(), pid.to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Only this daemon's program: another profilerd (a test run) may be loaded beside it.
    let before = program_ids()?;
    let child = ctx.profilerd(&args)?;
    let cost = probe::cost_per_run_of(
        OURS,
        &|id, name| name == OURS && !before.contains(&id),
        secs,
    );
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "profilerd record {extra:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    cost
}

/// Ids of the perf-event programs loaded now.
fn program_ids() -> Result<Vec<u64>> {
    Ok(probe::perf_event_programs()?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// lightswitch needs debugfs and tracefs: mounts them when they are not.
fn mount_tracing() -> Result<()> {
    let tracing = Path::new("/sys/kernel/debug/tracing");
    if !tracing.join("events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "debugfs", "nodev", "/sys/kernel/debug"])
            .status();
    }
    if !tracing.join("events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/debug/tracing"])
            .status();
    }
    if !tracing.join("events").exists() {
        bail!("cannot mount debugfs and tracefs at /sys/kernel/debug");
    }
    Ok(())
}

/// lightswitch's cost per run on `pids`: the perf-event programs that appear when it starts.
fn lightswitch(ctx: &Ctx, binary: &Path, pids: &[u32], secs: u64) -> Result<f64> {
    mount_tracing()?;
    let before = program_ids()?;
    let log = fs::File::create(ctx.dir.join("lightswitch.log"))?;
    let mut command = Command::new(binary);
    command.current_dir(&ctx.dir);
    for pid in pids {
        command.args(["--pids", &pid.to_string()]);
    }
    command
        .args(["--sample-freq", FREQUENCY, "--duration", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(log);
    let running = Running::command(&mut command).context("cannot start lightswitch")?;
    let cost = probe::cost_per_run_of(
        "of lightswitch",
        &|id, name| !before.contains(&id) && name != OURS,
        secs,
    );
    drop(running);
    cost.with_context(|| {
        let log = fs::read_to_string(ctx.dir.join("lightswitch.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        format!("lightswitch: {}", tail.join(" / "))
    })
}

/// Where the bench's setup installs lightswitch, if it is there.
fn lightswitch_binary() -> Option<PathBuf> {
    let binary = crate::setup::cargo_bin().join("lightswitch");
    binary.exists().then_some(binary)
}

/// Scenario 9: tables against lightswitch, and frame pointers against tables.
pub(super) fn unwind_cost(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 5);
    let (mut tables, mut fp, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    let mut why_not = lightswitch_binary()
        .is_none()
        .then(|| "lightswitch is not installed (its cargo install failed in setup)".to_string());
    for _ in 0..ctx.pairs {
        let mut procs = Procs::default();
        let pids = pythons(&mut procs)?;
        tables.push(ours(ctx, &pids, &[], secs)?);
        fp.push(ours(ctx, &pids, &["--unwind", "fp"], secs)?);
        if let (None, Some(binary)) = (&why_not, lightswitch_binary()) {
            match lightswitch(ctx, &binary, &pids, secs) {
                Ok(cost) => peer.push(cost),
                Err(err) => why_not = Some(format!("{err:#}")),
            }
        }
    }
    let (tables, fp) = (stat(&tables), stat(&fp));
    let workload = format!(
        "{secs} s at {FREQUENCY} Hz, --pid of two python3.11 fib loops (Debian's, no frame pointers), one pinned to each CPU; tail-called unwinder time included"
    );
    let first = match &why_not {
        None => {
            let peer = stat(&peer);
            Row {
                figure: "9a. in-kernel cost per sample, .eh_frame tables".into(),
                unit: "ns".into(),
                ours: tables,
                peer: Peer::new("lightswitch", peer),
                target: "ratio <= 0.8".into(),
                result: Verdict::from(tables.median / peer.median <= 0.8),
                workload: format!(
                    "{workload}; lightswitch --pids .. --sample-freq {FREQUENCY} --duration {secs}"
                ),
            }
        }
        Some(why) => Row {
            figure: "9a. in-kernel cost per sample, .eh_frame tables (no lightswitch figure)"
                .into(),
            unit: "ns".into(),
            ours: tables,
            peer: None,
            target: "ratio to lightswitch <= 0.8: not measured".into(),
            result: Verdict::Report,
            workload: format!("{workload}; lightswitch could not run: {why}"),
        },
    };
    Ok(vec![
        first,
        Row {
            figure: "9b. in-kernel cost per sample, --unwind fp (frame pointers)".into(),
            unit: "ns".into(),
            ours: fp,
            peer: Peer::new("profilerd with tables (9a)", tables),
            target: "report".into(),
            result: Verdict::Report,
            workload: format!("{workload}; same processes as 9a, run after it"),
        },
    ])
}
