//! Scenario 2: the cost of a sample the pid filter rejects, next to bpftrace's `/pid == X/`.

use std::path::Path;

use anyhow::Result;

use super::{
    probe,
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};

/// Scenario 2; its target is a share of scenario 1's `full_cost`.
pub(super) fn filtered_cost(ctx: &Ctx, full_cost: f64) -> Result<Row> {
    let secs = ctx.seconds(8, 5);
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for _ in 0..ctx.pairs {
        // A busy loop on each CPU, as in scenario 1: every sample is one the filter rejects,
        // with no idle-task samples (which cost less) in the average.
        let mut procs = Procs::default();
        ctx.busy_loop(&mut procs, 1)?;
        ctx.busy_loop(&mut procs, 0)?;
        let idle = procs.spawn(Path::new("sleep"), &["1000"])?.to_string();
        let out = ctx.dir.join("filtered.pb.gz");
        let child = ctx.profilerd(&[
            "record",
            "--pid",
            &idle,
            "--duration",
            &format!("{secs}s"),
            "-o",
            out.to_str().unwrap(),
        ])?;
        ours.push(probe::cost_per_run(probe::OURS, secs)?);
        child.wait_with_output()?;
        let guard = probe::bpftrace(&format!(
            "profile:hz:99 /pid == {idle}/ {{ @[pid, ustack, kstack] = count(); }}"
        ))?;
        peer.push(probe::cost_per_run(probe::BPFTRACE, secs)?);
        drop(guard);
        drop(procs);
    }
    let ours = stat(&ours);
    Ok(Row {
        figure: "2. cost of a filtered-out sample".into(),
        unit: "ns".into(),
        ours,
        peer: Peer::new("bpftrace /pid == X/", stat(&peer)),
        target: format!("<= 15% of scenario 1 ({:.0} ns)", full_cost * 0.15),
        result: Verdict::from(ours.median <= full_cost * 0.15),
        workload: format!(
            "{secs} s, --pid of a sleeping process while a C loop pinned to each CPU burns it"
        ),
    })
}
