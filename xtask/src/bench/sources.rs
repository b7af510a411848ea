//! Scenarios 11 and 12: a source beside the CPU sampler under a program that makes its event at
//! a high rate, pinned to CPU 1: the program's throughput with the source on against the
//! same program with no profiler, next to bpftrace taking stacks on the same event.
//! - 11, memory growth: `faulter` (new pages), `--profile cpu,memory`, against
//!   `software:page-faults:128 { @[ustack] = count(); }`; also the in-kernel cost per sample.
//! - 12, off-CPU: `switcher` (two threads handing a byte over through pipes on one CPU,
//!   slowed to 100000 switches a second), `--profile cpu,offcpu` (stacks at one switch in 31),
//!   against `tracepoint:sched:sched_switch { @[kstack, ustack] = count(); }` (stacks at
//!   every switch); also the in-kernel cost per switch.

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
const SWITCH_PERIOD: u64 = 31;

/// One source's workload and peer.
struct Source {
    /// The fixture, which prints its rate on stdout's first word.
    fixture: &'static str,
    /// The fixture's arguments after its seconds.
    args: Vec<String>,
    /// `--profile` with the source on.
    profile: &'static str,
    /// bpftrace's script taking stacks on the same event.
    peer: String,
    /// How the in-kernel cost is measured.
    cost: Cost,
}

/// The in-kernel cost of a source.
enum Cost {
    /// Per run of our program of this name (one run per sample), and of bpftrace's.
    PerRun(&'static str),
    /// Per event: the run time of our programs whose names start with one of `ours`, over the
    /// runs of `count`, which runs at every event; bpftrace's program runs at every event.
    PerEvent {
        ours: &'static [&'static str],
        count: &'static str,
    },
}

/// Runs `fixture SECS ARGS...` on CPU 1; returns the rate it printed.
fn workload(ctx: &Ctx, fixture: &str, args: &[String], secs: u64) -> Result<f64> {
    let output = Command::new("taskset")
        .args(["-c", "1"])
        .arg(ctx.fixture(fixture))
        .arg(secs.to_string())
        .args(args)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {fixture}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("{fixture} printed {text:?}"))
}

/// The workload's rate while `cost` measures a program's cost on another thread.
fn under(
    ctx: &Ctx,
    source: &Source,
    secs: u64,
    cost: impl FnOnce() -> Result<f64> + Send,
) -> Result<(f64, f64)> {
    thread::scope(|scope| {
        let cost = scope.spawn(cost);
        let rate = workload(ctx, source.fixture, &source.args, secs);
        let cost = cost
            .join()
            .map_err(|_| anyhow::anyhow!("cost thread panicked"))?;
        Ok((rate?, cost?))
    })
}

/// Our cost during a run starting now.
fn our_cost(cost: &Cost, secs: u64) -> Result<f64> {
    match cost {
        Cost::PerRun(name) => probe::cost_per_run(name, secs),
        Cost::PerEvent { ours, count } => probe::cost_per_event(
            "our programs",
            &|_, name| ours.iter().any(|p| name.starts_with(p)),
            &|_, name| name.starts_with(count),
            secs,
        ),
    }
}

/// bpftrace's cost (its programs: those not in `before`) during a run starting now.
fn peer_cost(cost: &Cost, before: &HashSet<u64>, secs: u64) -> Result<f64> {
    let new = |id: u64, _: &str| !before.contains(&id);
    match cost {
        Cost::PerRun(_) => probe::cost_per_run_of("of bpftrace", &new, secs),
        Cost::PerEvent { .. } => probe::cost_per_event("bpftrace", &new, &new, secs),
    }
}

/// Per run of the pairs: (our throughput ratio, the peer's), (our cost, the peer's).
type Figures = ((Stat, Stat), (Stat, Stat));

/// The source's throughput ratios, ours and the peer's, and costs per run where measured.
fn measure(ctx: &Ctx, source: &Source, secs: u64) -> Result<Figures> {
    let (mut ratio_ours, mut ratio_peer) = (Vec::new(), Vec::new());
    let (mut cost_ours, mut cost_peer) = (Vec::new(), Vec::new());
    for _ in 0..ctx.pairs {
        let alone = workload(ctx, source.fixture, &source.args, secs)?;
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
        let (rate, cost) = under(ctx, source, secs, || our_cost(&source.cost, secs))?;
        child.wait_with_output()?;
        ratio_ours.push(rate / alone);
        cost_ours.push(cost);

        let before = probe::program_ids()?;
        let guard = probe::bpftrace(&source.peer)?;
        thread::sleep(Duration::from_secs(2));
        let (rate, cost) = under(ctx, source, secs, || peer_cost(&source.cost, &before, secs))?;
        drop(guard);
        ratio_peer.push(rate / alone);
        cost_peer.push(cost);
    }
    Ok((
        (stat(&ratio_ours), stat(&ratio_peer)),
        (stat(&cost_ours), stat(&cost_peer)),
    ))
}

/// A throughput row: the workload's rate with the source on, over its rate alone.
fn throughput_row(figure: &str, peer: &str, ratios: (Stat, Stat), workload: &str) -> Row {
    let (ours, theirs) = ratios;
    Row {
        figure: figure.into(),
        unit: "ratio".into(),
        ours,
        peer: Peer::new(peer, theirs),
        target: format!(">= {THROUGHPUT_TARGET}"),
        result: Verdict::from(ours.median >= THROUGHPUT_TARGET),
        workload: workload.into(),
    }
}

/// Scenario 11.
pub(super) fn faults(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 6);
    let source = Source {
        fixture: "faulter",
        args: Vec::new(),
        profile: "cpu,memory",
        peer: format!("software:page-faults:{PERIOD} {{ @[ustack] = count(); }}"),
        cost: Cost::PerRun(FAULTS),
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

/// Switch-outs a second the off-CPU workload is slowed to (the 100000).
const SWITCHES: f64 = 100_000.0;

/// The `switcher` spin count that makes it switch about [`SWITCHES`] times a second on this
/// machine: its round-trip time is linear in the spin count, measured at two counts.
fn calibrate_spin(ctx: &Ctx) -> Result<u64> {
    const PROBE: u64 = 4000;
    let trip =
        |spin: u64| -> Result<f64> { Ok(1.0 / workload(ctx, "switcher", &[spin.to_string()], 1)?) };
    let (fast, slow) = (trip(0)?, trip(PROBE)?);
    // Two switches per round trip.
    let wanted = 2.0 / SWITCHES;
    let per_spin = (slow - fast).max(1e-12) / PROBE as f64;
    Ok(((wanted - fast) / per_spin).max(0.0) as u64)
}

/// Scenario 12.
pub(super) fn switches(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 6);
    let spin = calibrate_spin(ctx)?;
    let source = Source {
        fixture: "switcher",
        args: vec![spin.to_string()],
        profile: "cpu,offcpu",
        peer: "tracepoint:sched:sched_switch { @[kstack, ustack] = count(); }".into(),
        cost: Cost::PerEvent {
            ours: &["sample_switch", "offcpu_switch"],
            count: "offcpu_switch",
        },
    };
    let (ratios, (cost, peer_cost)) = measure(ctx, &source, secs)?;
    let workload = format!(
        "{secs} s of switcher (tests/fixtures/switcher.c: two threads handing a byte over through two pipes, spinning {spin} iterations before each hand-over: about {SWITCHES} switches a second) on CPU 1; all processes profiled, the stacks of one switch in {SWITCH_PERIOD} (the default --offcpu-period) taken; bpftrace takes them at every switch"
    );
    Ok(vec![
        throughput_row(
            "12a. throughput of a program switching 100000 times a second, off-CPU source on / no profiler",
            "bpftrace sched_switch { @[kstack, ustack] = count(); }",
            ratios,
            &workload,
        ),
        Row {
            figure: "12b. in-kernel cost per context switch (sample_switch + offcpu_switch_in)".into(),
            unit: "ns".into(),
            ours: cost,
            peer: Peer::new("bpftrace sched_switch { @[kstack, ustack] = count(); }", peer_cost),
            target: "report".into(),
            result: Verdict::Report,
            workload,
        },
    ])
}
