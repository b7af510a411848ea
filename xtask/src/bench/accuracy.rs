//! Scenario 6: the hot function's share, ours and perf's on the same run.

use anyhow::Result;
use profiler_testkit::{scenario::split, stack::read_folded};

use super::{
    probe::{self, wait_cpu},
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};
use crate::output;

/// `work_three`'s share (%) of the samples of `perf script` that hold either hot caller.
fn perf_share(script: &str) -> f64 {
    let (mut three, mut one) = (0.0, 0.0);
    for sample in script.split("\n\n") {
        if sample.contains("work_three") {
            three += 1.0;
        } else if sample.contains("work_one") {
            one += 1.0;
        }
    }
    three / (three + one) * 100.0
}

/// One pair: both tools on one run of the fixture; returns (ours, perf's) share.
fn pair(ctx: &Ctx, secs: u64) -> Result<(f64, f64)> {
    let mut procs = Procs::default();
    let pid = ctx.busy_loop(&mut procs, 1)?.to_string();
    let folded = ctx.dir.join("accuracy.folded");
    let data = ctx.dir.join("accuracy.perf.data");
    let data = data.to_str().unwrap();
    let perf = probe::perf(&[
        "record",
        "-F",
        "99",
        "-g",
        "-q",
        "-p",
        &pid,
        "-o",
        data,
        "--",
        "sleep",
        &secs.to_string(),
    ])?;
    let child = ctx.profilerd(&[
        "record",
        "--pid",
        &pid,
        "--duration",
        &format!("{secs}s"),
        "-o",
        folded.to_str().unwrap(),
    ])?;
    child.wait_with_output()?;
    wait_cpu(perf)?;
    // The share the end-to-end tests and the kernel matrix judge: samples with either hot
    // caller anywhere in the stack, the leaf included (as perf's count below).
    let ours = split::share(&read_folded(&folded)?).share * 100.0;
    let script = output(std::process::Command::new("perf").args(["script", "-i", data]))?;
    Ok((ours, perf_share(&script)))
}

/// Scenario 6.
pub(super) fn accuracy(ctx: &Ctx) -> Result<Row> {
    let secs = ctx.seconds(10, 6);
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut worst: f64 = 0.0;
    for _ in 0..ctx.pairs {
        let (ours_share, peer_share) = pair(ctx, secs)?;
        worst = worst.max((ours_share - peer_share).abs());
        ours.push(ours_share);
        peer.push(peer_share);
    }
    Ok(Row {
        figure: "6. share of work_three (3:1 split)".into(),
        unit: "%".into(),
        ours: stat(&ours),
        peer: Peer::new("perf record -g, same run", stat(&peer)),
        target: format!("within 3 points (worst pair {worst:.1})"),
        result: Verdict::from(worst <= 3.0),
        workload: format!("{secs} s, --pid of a C fixture pinned to CPU 1, both tools at once"),
    })
}
