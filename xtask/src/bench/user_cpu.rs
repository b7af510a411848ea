//! Scenario 3: user-space CPU of a continuous daemon, next to `perf record` + `perf report`.

use std::fs;

use anyhow::{bail, Result};

use super::{
    probe::{self, wait_cpu},
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};

/// CPU seconds of `perf record -a -g` over `secs` plus those of `perf report` on its data.
fn perf_cpu(ctx: &Ctx, secs: u64) -> Result<f64> {
    let data = ctx.dir.join("perf.data");
    let data = data.to_str().unwrap();
    let secs = secs.to_string();
    let record = probe::perf(&[
        "record", "-F", "99", "-a", "-g", "-q", "-o", data, "--", "sleep", &secs,
    ])?;
    let (record_cpu, _) = wait_cpu(record)?;
    let (report_cpu, _) = wait_cpu(probe::perf(&["report", "--stdio", "-i", data])?)?;
    Ok(record_cpu + report_cpu)
}

/// Scenario 3.
pub(super) fn user_cpu(ctx: &Ctx) -> Result<Row> {
    let secs = ctx.seconds(60, 20);
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut share = Vec::new();
    for _ in 0..ctx.pairs {
        let mut procs = Procs::default();
        for _ in 0..50 {
            procs.spawn(&ctx.fixture("manystacks"), &["10000", "1"])?;
        }
        let dump = ctx.dir.join("usercpu-profiles");
        let _ = fs::remove_dir_all(&dump);
        let child = ctx.profilerd(&[
            "run",
            "--mode",
            "continuous",
            "--duration",
            &format!("{secs}s"),
            "--dump-dir",
            dump.to_str().unwrap(),
        ])?;
        let (cpu, status) = wait_cpu(child)?;
        if !status.success() {
            bail!("profilerd run failed ({status})");
        }
        ours.push(cpu);
        share.push(cpu / secs as f64 * 100.0);
        peer.push(perf_cpu(ctx, secs)?);
    }
    let ours = stat(&ours);
    let peer = stat(&peer);
    let core = stat(&share).median;
    Ok(Row {
        figure: format!("3. user-space CPU for {secs} s ({core:.2}% of one core)"),
        unit: "CPU s".into(),
        ours,
        peer: Peer::new("perf record -a -g + perf report", peer),
        target: "ratio <= 0.5 and < 1% of a core".into(),
        result: Verdict::from(ours.median / peer.median <= 0.5 && core < 1.0),
        workload: "run --mode continuous at 99 Hz; 50 processes with 2^17 distinct call chains each, 2 cores saturated".into(),
    })
}
