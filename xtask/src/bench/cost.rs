//! Scenarios 1 and 7: the in-kernel cost per sample with every process sampled, next to
//! bpftrace, and the sample accounting of the same runs.

use anyhow::{Context, Result};
use profiler_testkit::procfs;

use super::{
    probe::{self, BPFTRACE_PROFILE, FREQUENCY},
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};

/// One run's accounting: what 99 Hz of the busy CPU time predicts, and the daemon's counters.
#[derive(Clone, Copy)]
struct Accounting {
    expected: f64,
    taken: u64,
    in_profiles: u64,
    dropped: u64,
    idle: u64,
}

impl Accounting {
    /// Whether every sample taken is in a profile or counted as dropped.
    fn exact(&self) -> bool {
        self.taken == self.in_profiles + self.dropped
    }
}

/// One pair: our cost per run with the accounting of that run, then bpftrace's cost.
fn pair(ctx: &Ctx, secs: u64) -> Result<(f64, Accounting, f64)> {
    // One busy loop per CPU: every sample is a full one (no idle CPU in the mix), so both
    // tools' averages describe the same work.
    let mut procs = Procs::default();
    let busy = ctx.busy_loop(&mut procs, 1)?;
    let other = ctx.busy_loop(&mut procs, 0)?;
    let busy_ticks =
        || procfs::cpu_ticks(busy).unwrap_or(0) + procfs::cpu_ticks(other).unwrap_or(0);
    let out = ctx.dir.join("cost.pb.gz");
    let ticks0 = busy_ticks();
    let child = ctx.profilerd(&[
        "record",
        "--duration",
        &format!("{secs}s"),
        "-o",
        out.to_str().unwrap(),
    ])?;
    let ours = probe::cost_per_run(probe::OURS, secs)?;
    let output = child.wait_with_output()?;
    let ticks1 = busy_ticks();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let counters = procfs::accounting(&stderr).context("profilerd printed no sample accounting")?;
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    let accounting = Accounting {
        expected: FREQUENCY as f64 * (ticks1 - ticks0) as f64 / 100.0,
        taken: get("taken"),
        in_profiles: get("in_profiles"),
        dropped: get("idle")
            + get("filtered")
            + get("dropped_map_full")
            + get("dropped_stack_limit"),
        idle: get("idle"),
    };

    let _peer = probe::bpftrace(BPFTRACE_PROFILE)?;
    let peer = probe::cost_per_run(probe::BPFTRACE, secs)?;
    Ok((ours, accounting, peer))
}

/// Scenarios 1 and 7.
pub(super) fn cost_and_accounting(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(8, 5);
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..ctx.pairs {
        let (o, accounting, p) = pair(ctx, secs)?;
        ours.push(o);
        runs.push(accounting);
        peer.push(p);
    }
    let exact = runs.iter().all(Accounting::exact);
    let ours = stat(&ours);
    let peer = stat(&peer);
    let Accounting {
        expected,
        taken,
        in_profiles,
        dropped,
        idle,
    } = runs[runs.len() / 2];
    Ok(vec![
        Row {
            figure: "1. in-kernel cost per sample".into(),
            unit: "ns".into(),
            ours,
            peer: Peer::new("bpftrace", peer),
            target: "ratio <= 0.8".into(),
            result: Verdict::from(ours.median / peer.median <= 0.8),
            workload: format!("{secs} s, all processes, a busy C loop pinned to each CPU; bpftrace: {BPFTRACE_PROFILE}"),
        },
        Row {
            figure: format!(
                "7. accounting: expected {expected:.0} (99 Hz x busy CPU-s), taken {taken}, in profiles {in_profiles}, dropped {dropped} (idle {idle})"
            ),
            unit: "samples".into(),
            ours: stat(&[taken as f64]),
            peer: None,
            target: "taken = in profiles + dropped, exactly".into(),
            result: Verdict::from(exact),
            workload: format!("the {} runs of scenario 1", ctx.pairs),
        },
    ])
}
