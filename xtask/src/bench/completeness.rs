//! Scenario 8: complete user stacks of programs without frame pointers, ours (the `.eh_frame`
//! tables walked in the kernel) against `perf record --call-graph dwarf` on the same process
//! at the same time.

use std::{path::PathBuf, thread, time::Duration};

use anyhow::{bail, Result};
use profiler_testkit::{
    perf::{reaching, Recording},
    stack::read_folded,
};

use super::{
    report::{Peer, Row, Verdict},
    stats::stat,
    Ctx, Procs,
};

/// The workloads of the unwind tests: (name, program, arguments, entry chain).
pub(super) const PYTHON_FIB: &str =
    "def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\nwhile True:\n    f(24)\n";
const PERL_FIB: &str =
    "sub f { my $n = shift; return $n < 2 ? $n : f($n - 1) + f($n - 2) } while (1) { f(20) }";
const SQLITE_CTE: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000000) SELECT count(*) FROM c WHERE x % 7 = 3;";
const C_ENTRY: &[&str] = &["__libc_start_call_main"];

/// One program of the scenario.
struct Workload {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    entries: &'static [&'static str],
}

fn workloads(ctx: &Ctx, secs: u64) -> Vec<Workload> {
    let debian = |name, program: &str, args: &[&str], entries| Workload {
        name,
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        entries,
    };
    vec![
        debian(
            "python3.11",
            "/usr/bin/python3.11",
            &["-c", PYTHON_FIB],
            &["Py_RunMain"],
        ),
        debian("perl", "/usr/bin/perl", &["-e", PERL_FIB], C_ENTRY),
        debian(
            "sqlite3",
            "/usr/bin/sqlite3",
            &[":memory:", SQLITE_CTE],
            C_ENTRY,
        ),
        Workload {
            name: "nofp",
            program: ctx.fixture("nofp"),
            args: vec![(secs + 10).to_string()],
            entries: C_ENTRY,
        },
    ]
}

/// One pair: both profilers on one process at once; returns (ours, perf's) share of samples
/// reaching the entry chain.
fn pair(ctx: &Ctx, workload: &Workload, secs: u64) -> Result<(f64, f64)> {
    let mut procs = Procs::default();
    let args: Vec<&str> = workload.args.iter().map(String::as_str).collect();
    let pid = procs.spawn(&workload.program, &args)?;
    // Past its start-up (python's takes a while on a busy machine).
    thread::sleep(Duration::from_secs(1));
    let data = ctx
        .dir
        .join(format!("completeness-{}.perf.data", workload.name));
    let perf = Recording::start(pid, Duration::from_secs(secs), &data)?;
    let folded = ctx
        .dir
        .join(format!("completeness-{}.folded", workload.name));
    let child = ctx.profilerd(&[
        "record",
        "--pid",
        &pid.to_string(),
        "--duration",
        &format!("{secs}s"),
        "--format",
        "folded",
        "-o",
        folded.to_str().unwrap(),
    ])?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "profilerd record failed on {}: {}",
            workload.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let ours = read_folded(&folded)?;
    let reference = perf.stacks()?;
    if ours.is_empty() || reference.is_empty() {
        bail!("{}: no samples (ours or perf's)", workload.name);
    }
    Ok((
        reaching(&ours, workload.entries) * 100.0,
        reaching(&reference, workload.entries) * 100.0,
    ))
}

/// Scenario 8: one row per program.
pub(super) fn completeness(ctx: &Ctx) -> Result<Vec<Row>> {
    let secs = ctx.seconds(10, 5);
    let mut rows = Vec::new();
    for (letter, workload) in ('a'..).zip(workloads(ctx, secs)) {
        let (mut ours, mut peer, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ctx.pairs {
            let (o, p) = pair(ctx, &workload, secs)?;
            ours.push(o);
            peer.push(p);
            ratios.push(o / p);
        }
        let ratio = stat(&ratios);
        rows.push(Row {
            figure: format!(
                "8{letter}. stack completeness, {}: share of samples reaching {}",
                workload.name,
                workload.entries.join("/")
            ),
            unit: "%".into(),
            ours: stat(&ours),
            peer: Peer::new("perf --call-graph dwarf, same process", stat(&peer)),
            target: format!("ratio >= 0.98 (worst pair {:.3})", ratio.min),
            result: Verdict::from(ratio.median >= 0.98),
            workload: format!(
                "{secs} s, --pid of {} {}, both tools at once, after 1 s of start-up",
                workload.program.display(),
                if workload.name == "nofp" {
                    "(tests/fixtures/nofp.c, -O2 -fomit-frame-pointer)".to_string()
                } else {
                    format!("{:?}", workload.args.join(" "))
                }
            ),
        });
    }
    Ok(rows)
}
