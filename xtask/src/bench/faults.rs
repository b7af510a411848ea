//! Scenario 11: the memory-growth source under a program that faults in new pages as fast as
//! it can (`faulter`, pinned to CPU 1): its throughput with `--profile cpu,memory` against the
//! same program with no profiler, and the in-kernel cost per page-fault sample, each next to
//! bpftrace doing the same (`software:page-faults:128 { @[ustack] = count(); }`).

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
    stats::stat,
    Ctx,
};

/// Our page-fault program.
const FAULTS: &str = "sample_faults";
/// Faults per sample, ours (the `--memory-period` default) and bpftrace's.
const PERIOD: u64 = 128;

/// Runs `faulter` on CPU 1 for `secs`; returns its GiB/s.
fn faulter(ctx: &Ctx, secs: u64) -> Result<f64> {
    let output = Command::new("taskset")
        .args(["-c", "1"])
        .arg(ctx.fixture("faulter"))
        .arg(secs.to_string())
        .stderr(Stdio::null())
        .output()
        .context("cannot run faulter")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("faulter printed {text:?}"))
}

/// The faulter's rate while `cost` measures a program's cost per run on another thread.
fn under(ctx: &Ctx, secs: u64, cost: impl FnOnce() -> Result<f64> + Send) -> Result<(f64, f64)> {
    thread::scope(|scope| {
        let cost = scope.spawn(cost);
        let rate = faulter(ctx, secs);
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

/// Scenario 11.
pub(super) fn faults(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 6);
    let (mut ratio_ours, mut ratio_peer) = (Vec::new(), Vec::new());
    let (mut cost_ours, mut cost_peer) = (Vec::new(), Vec::new());
    for _ in 0..ctx.pairs {
        let alone = faulter(ctx, secs)?;
        let out = ctx.dir.join("faults.pb.gz");
        let child = ctx.profilerd(&[
            "record",
            "--profile",
            "cpu,memory",
            "--duration",
            &format!("{}s", secs + 4),
            "-o",
            out.to_str().unwrap(),
        ])?;
        thread::sleep(Duration::from_secs(2));
        let (rate, cost) = under(ctx, secs, || probe::cost_per_run(FAULTS, secs))?;
        child.wait_with_output()?;
        ratio_ours.push(rate / alone);
        cost_ours.push(cost);

        let before = program_ids()?;
        let guard = probe::bpftrace(&format!(
            "software:page-faults:{PERIOD} {{ @[ustack] = count(); }}"
        ))?;
        thread::sleep(Duration::from_secs(2));
        let (rate, cost) = under(ctx, secs, || {
            probe::cost_per_run_of("of bpftrace", &|id, _| !before.contains(&id), secs)
        })?;
        drop(guard);
        ratio_peer.push(rate / alone);
        cost_peer.push(cost);
    }
    let workload = format!(
        "{secs} s of faulter (tests/fixtures/faulter.c: 64 MiB mapped, one write per page, unmapped, again) on CPU 1; all processes sampled; 1 page-fault sample every {PERIOD} faults"
    );
    let ratio = stat(&ratio_ours);
    let cost = stat(&cost_ours);
    Ok(vec![
        Row {
            figure:
                "11a. throughput of a page-faulting program, memory-growth source on / no profiler"
                    .into(),
            unit: "ratio".into(),
            ours: ratio,
            peer: Peer::new("bpftrace software:page-faults:128", stat(&ratio_peer)),
            target: ">= 0.97".into(),
            result: Verdict::from(ratio.median >= 0.97),
            workload: workload.clone(),
        },
        Row {
            figure: "11b. in-kernel cost per page-fault sample".into(),
            unit: "ns".into(),
            ours: cost,
            peer: Peer::new("bpftrace { @[ustack] = count(); }", stat(&cost_peer)),
            target: "report".into(),
            result: Verdict::Report,
            workload,
        },
    ])
}
