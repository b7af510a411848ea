//! Scenario 4: RSS over time with 200 live and 20 new short-lived processes per second, ours
//! and bpftrace's side by side on one workload.

use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use profiler_testkit::{procfs, Daemon};

use super::{
    probe::{self, BPFTRACE_PROFILE},
    report::{Peer, Row, Verdict},
    stats::{interval_means, slope, stat, UPLOAD_INTERVAL_SECS},
    Ctx, Procs,
};

/// RSS per second of a profilerd and a bpftrace run: (seconds, MiB) each.
type Series = [Vec<(f64, f64)>; 2];

/// Samples the RSS of `pids` (ours, the peer's) every second for `secs`; returns both series
/// and a TSV table of our RSS split (anonymous memory is the daemon's own, file pages are the
/// binaries it reads to symbolize) beside the peer's RSS.
fn sample_rss(pids: [u32; 2], secs: u64) -> (Series, String) {
    let started = Instant::now();
    let mut series = [Vec::new(), Vec::new()];
    let mut table =
        String::from("seconds\tprofilerd_rss\tprofilerd_anon\tprofilerd_file\tbpftrace_rss\n");
    while started.elapsed() < Duration::from_secs(secs) {
        let t = started.elapsed().as_secs_f64();
        let split = pids.map(procfs::rss_split);
        for (split, series) in split.iter().zip(series.iter_mut()) {
            if let Some(split) = split {
                series.push((t, split[0]));
            }
        }
        if let [Some(o), Some(p)] = split {
            table.push_str(&format!(
                "{t:.1}\t{:.2}\t{:.2}\t{:.2}\t{:.2}\n",
                o[0], o[1], o[2], p[0]
            ));
        }
        thread::sleep(Duration::from_secs(1));
    }
    (series, table)
}

/// One run (it is one pair): both profilers over the workload; returns the RSS series.
fn run(ctx: &Ctx, secs: u64, number: usize) -> Result<Series> {
    let mut procs = Procs::default();
    for _ in 0..200 {
        procs.spawn(&ctx.fixture("idler"), &[&(secs + 30).to_string()])?;
    }
    let dump = ctx.dir.join("memory-profiles");
    let _ = fs::remove_dir_all(&dump);
    let mut ours = Daemon::start(
        &ctx.profilerd,
        &[
            "run",
            "--mode",
            "continuous",
            "--duration",
            &format!("{secs}s"),
            "--upload-interval",
            &format!("{UPLOAD_INTERVAL_SECS}s"),
            "--dump-dir",
            dump.to_str().unwrap(),
        ],
        &ctx.dir,
        &ctx.dir.join("memory.log"),
    )?;
    let peer = probe::bpftrace(BPFTRACE_PROFILE)?;
    // Started last, so that a profiler failing to start leaves no spawner behind.
    // A 50 ms process every 50 ms (20 a second), started by a small C program: forking from
    // the harness would make it a busy process whose debug info the daemon keeps reading,
    // which is not the workload described.
    let spawner = Command::new(ctx.fixture("spawner"))
        .args([
            &secs.to_string(),
            "50",
            ctx.fixture("split").to_str().unwrap(),
            "0.05",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the spawner fixture")?;
    let (series, table) = sample_rss([ours.pid(), peer.pid()], secs);
    fs::write(ctx.dir.join(format!("memory-{number}.tsv")), table)?;
    let spawned: u64 = String::from_utf8_lossy(&spawner.wait_with_output()?.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    ours.kill();
    drop(peer);
    if series.iter().any(Vec::is_empty) || spawned == 0 {
        bail!("memory scenario measured nothing");
    }
    Ok(series)
}

/// Scenario 4.
pub(super) fn memory(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(600, 120);
    let mut peaks = (Vec::new(), Vec::new());
    let mut finals = (Vec::new(), Vec::new());
    let mut slopes = Vec::new();
    // Both run at once on one workload: RSS does not depend on the other profiler's
    // presence, and the 10-minute runs then take half the time. Each pair is one run.
    for number in 1..=ctx.pairs {
        let [ours, peer] = run(ctx, secs, number)?;
        let peak = |s: &[(f64, f64)]| s.iter().map(|s| s.1).fold(0.0, f64::max);
        let last = |s: &[(f64, f64)]| s.last().map_or(f64::NAN, |p| p.1);
        peaks.0.push(peak(&ours));
        peaks.1.push(peak(&peer));
        finals.0.push(last(&ours));
        finals.1.push(last(&peer));
        slopes.push(slope(&interval_means(&ours[ours.len() / 2..])));
    }
    let peak = stat(&peaks.0);
    let peer_peak = stat(&peaks.1);
    let slope = stat(&slopes);
    let workload =
        format!("{secs} s; 200 live processes and 20 new short-lived processes per second; profilerd and bpftrace side by side on one workload, one run per pair");
    Ok(vec![
        Row {
            figure: "4a. peak RSS".into(),
            unit: "MiB".into(),
            ours: peak,
            peer: Peer::new("bpftrace", peer_peak),
            target: "<= 64 MiB and below bpftrace".into(),
            result: Verdict::from(peak.median <= 64.0 && peak.median < peer_peak.median),
            workload: workload.clone(),
        },
        Row {
            figure: "4b. final RSS".into(),
            unit: "MiB".into(),
            ours: stat(&finals.0),
            peer: Peer::new("bpftrace", stat(&finals.1)),
            target: "report".into(),
            result: Verdict::Report,
            workload: workload.clone(),
        },
        Row {
            figure: "4c. RSS slope over the second half (15 s means)".into(),
            unit: "MiB/min".into(),
            ours: slope,
            peer: None,
            target: "no upward trend (<= 0.1 MiB/min)".into(),
            result: Verdict::from(slope.median <= 0.1),
            workload,
        },
    ])
}
