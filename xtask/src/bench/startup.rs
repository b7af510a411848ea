//! Scenario 5: launch to first sample, ours and bpftrace's.

use std::{thread, time::Duration, time::Instant};

use anyhow::Result;

use super::{
    probe::{self, BPFTRACE_PROFILE},
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};

/// Scenario 5.
pub(super) fn startup(ctx: &Ctx) -> Result<Row> {
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut procs = Procs::default();
    ctx.busy_loop(&mut procs, 1)?;
    for _ in 0..ctx.pairs {
        let out = ctx.dir.join("startup.pb.gz");
        let started = Instant::now();
        let child = ctx.profilerd(&["record", "--duration", "3s", "-o", out.to_str().unwrap()])?;
        ours.push(probe::first_sample(probe::OURS, started)?);
        child.wait_with_output()?;
        let started = Instant::now();
        let peer_run = probe::bpftrace(BPFTRACE_PROFILE)?;
        peer.push(probe::first_sample(probe::BPFTRACE, started)?);
        // Killed and reaped: the next start must not find this program still loaded.
        drop(peer_run);
        thread::sleep(Duration::from_millis(500));
    }
    Ok(Row {
        figure: "5. start-up: launch to first sample".into(),
        unit: "ms".into(),
        ours: stat(&ours),
        peer: Peer::new("bpftrace", stat(&peer)),
        target: "report".into(),
        result: Verdict::Report,
        workload: "one busy C loop; first run_cnt > 0 seen by polling bpftool every 10 ms".into(),
    })
}
