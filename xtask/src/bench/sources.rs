//! Scenarios 11 and 12: a source beside the CPU sampler under a program that makes its event as
//! fast as it can, pinned to CPU 1: the program's throughput with the source on against the
//! same program with no profiler, next to bpftrace taking stacks on the same event.
//! - 11, memory growth: `faulter` (new pages), `--profile cpu,memory`, against
//!   `software:page-faults:128 { @[ustack] = count(); }`; also the in-kernel cost per sample.
//! - 12, off-CPU: `switcher` (two threads handing a byte over through pipes on one CPU),
//!   `--profile cpu,offcpu` (one switch-out in 7), against `tracepoint:sched:sched_switch { @[kstack, ustack] =
//!   count(); }` (stacks at every switch, as ours takes them at every switch-out).

use std::{
    collections::HashSet,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{
    probe,
    report::{Peer, Row, Verdict},
    stats::{stat, Stat},
    Ctx,
};

/// Our page-fault program.
const FAULTS: &str = "sample_faults";
/// Faults per sample, ours (the `--memory-period` default) and bpftrace's.
const PERIOD: u64 = 128;
/// The throughput a source may cost the program at most.
const THROUGHPUT_TARGET: f64 = 0.97;
/// The off-CPU source's default `--offcpu-period`, in the workload's description.
const SWITCH_PERIOD: u64 = 7;

/// One source's workload and peer.
struct Source {
    /// The fixture, which prints its rate on stdout's first word.
    fixture: &'static str,
    /// `--profile` with the source on.
    profile: &'static str,
    /// bpftrace's script taking stacks on the same event.
    peer: String,
    /// Our program whose cost per run is measured (None: throughput only).
    program: Option<&'static str>,
}

/// Runs `fixture` on CPU 1 for `secs`; returns the rate it printed.
fn workload(ctx: &Ctx, fixture: &str, secs: u64) -> Result<f64> {
    let output = Command::new("taskset")
        .args(["-c", "1"])
        .arg(ctx.fixture(fixture))
        .arg(secs.to_string())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {fixture}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("{fixture} printed {text:?}"))
}

/// The workload's rate while `cost` measures a program's cost per run on another thread.
fn under(
    ctx: &Ctx,
    fixture: &str,
    secs: u64,
    cost: impl FnOnce() -> Result<f64> + Send,
) -> Result<(f64, f64)> {
    thread::scope(|scope| {
        let cost = scope.spawn(cost);
        let rate = workload(ctx, fixture, secs);
        let cost = cost
            .join()
            .map_err(|_| anyhow::anyhow!("cost thread panicked"))?;
        Ok((rate?, cost?))
    })
}

fn program_ids() -> Result<HashSet<u64>> {
    Ok(probe::perf_event_programs()?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Per run of the pairs: (our throughput ratio, the peer's), (our cost, the peer's).
type Figures = ((Stat, Stat), (Stat, Stat));

/// The source's throughput ratios, ours and the peer's, and costs per run where measured.
fn measure(ctx: &Ctx, source: &Source, secs: u64) -> Result<Figures> {
    let (mut ratio_ours, mut ratio_peer) = (Vec::new(), Vec::new());
    let (mut cost_ours, mut cost_peer) = (Vec::new(), Vec::new());
    let idle = || -> Result<f64> { Ok(0.0) };
    for _ in 0..ctx.pairs {
        let alone = workload(ctx, source.fixture, secs)?;
        let out = ctx.dir.join(format!("{}.pb.gz", source.fixture));
        let child = ctx.profilerd(&[
            "record",
            "--profile",
            source.profile,
            "--duration",
            &format!("{}s", secs + 4),
            "-o",
            out.to_str().unwrap(),
        ])?;
        thread::sleep(Duration::from_secs(2));
        let (rate, cost) = match source.program {
            Some(name) => under(ctx, source.fixture, secs, || {
                probe::cost_per_run(name, secs)
            })?,
            None => under(ctx, source.fixture, secs, idle)?,
        };
        child.wait_with_output()?;
        ratio_ours.push(rate / alone);
        cost_ours.push(cost);

        let before = program_ids()?;
        let guard = probe::bpftrace(&source.peer)?;
        thread::sleep(Duration::from_secs(2));
        let (rate, cost) = match source.program {
            Some(_) => under(ctx, source.fixture, secs, || {
                probe::cost_per_run_of("of bpftrace", &|id, _| !before.contains(&id), secs)
            })?,
            None => under(ctx, source.fixture, secs, idle)?,
        };
        drop(guard);
        ratio_peer.push(rate / alone);
        cost_peer.push(cost);
    }
    Ok((
        (stat(&ratio_ours), stat(&ratio_peer)),
        (stat(&cost_ours), stat(&cost_peer)),
    ))
}

/// A throughput row: the workload's rate with the source on, over its rate alone; the target
/// is [`THROUGHPUT_TARGET`], or with `peer_bound` at least the peer's ratio.
fn throughput_row(
    figure: &str,
    peer: &str,
    ratios: (Stat, Stat),
    workload: &str,
    peer_bound: bool,
) -> Row {
    let (ours, theirs) = ratios;
    let (target, pass) = if peer_bound {
        (
            "report; >= the peer's".to_string(),
            ours.median >= theirs.median,
        )
    } else {
        (
            format!(">= {THROUGHPUT_TARGET}"),
            ours.median >= THROUGHPUT_TARGET,
        )
    };
    Row {
        figure: figure.into(),
        unit: "ratio".into(),
        ours,
        peer: Peer::new(peer, theirs),
        target,
        result: Verdict::from(pass),
        workload: workload.into(),
    }
}

/// Scenario 11.
pub(super) fn faults(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 6);
    let source = Source {
        fixture: "faulter",
        profile: "cpu,memory",
        peer: format!("software:page-faults:{PERIOD} {{ @[ustack] = count(); }}"),
        program: Some(FAULTS),
    };
    let (ratios, (cost, peer_cost)) = measure(ctx, &source, secs)?;
    let workload = format!(
        "{secs} s of faulter (tests/fixtures/faulter.c: 64 MiB mapped, one write per page, unmapped, again) on CPU 1; all processes sampled; 1 page-fault sample every {PERIOD} faults"
    );
    Ok(vec![
        throughput_row(
            "11a. throughput of a page-faulting program, memory-growth source on / no profiler",
            "bpftrace software:page-faults:128",
            ratios,
            &workload,
            false,
        ),
        Row {
            figure: "11b. in-kernel cost per page-fault sample".into(),
            unit: "ns".into(),
            ours: cost,
            peer: Peer::new("bpftrace { @[ustack] = count(); }", peer_cost),
            target: "report".into(),
            result: Verdict::Report,
            workload,
        },
    ])
}

/// Scenario 12.
pub(super) fn switches(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 6);
    let source = Source {
        fixture: "switcher",
        profile: "cpu,offcpu",
        peer: "tracepoint:sched:sched_switch { @[kstack, ustack] = count(); }".into(),
        program: None,
    };
    let (ratios, _) = measure(ctx, &source, secs)?;
    let workload = format!(
        "{secs} s of switcher (tests/fixtures/switcher.c: two threads handing a byte over through two pipes, every hand-over a context switch, about 800000 a second) on CPU 1; all processes profiled, the stacks of one switch-out in {SWITCH_PERIOD} (the default --offcpu-period) taken; bpftrace takes them at every switch"
    );
    Ok(vec![throughput_row(
        "12a. throughput of a context-switching program, off-CPU source on / no profiler",
        "bpftrace sched_switch { @[kstack, ustack] = count(); }",
        ratios,
        &workload,
        true,
    )])
}
