//! `cargo xtask bench [--quick]`: profilerd's overhead, memory and accuracy side by side with
//! bpftrace and perf, measured in the same run on the same workloads, alternating ours and the
//! peer's runs. A benchmark, not a test: it never fails on a figure, only when a scenario could
//! not run.
//!
//! One file per scenario (`cost` is 1 and 7, `filtered` 2, `user_cpu` 3, `memory` 4,
//! `startup` 5, `accuracy` 6, `completeness` 8, `unwind_cost` 9, `tables` 10, `sources` 11 and 12); `probe` holds what they measure with, `stats` the arithmetic,
//! `report` the table and the JSON.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
};

use anyhow::{bail, Context, Result};
use profiler_testkit::{fixtures, Running};

mod accuracy;
mod completeness;
mod cost;
mod filtered;
mod memory;
mod probe;
mod report;
mod sources;
mod startup;
mod stats;
mod tables;
mod unwind_cost;
mod user_cpu;

use report::Row;

/// What `cargo xtask bench` runs.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Shorter runs and 2 pairs per comparison.
    #[arg(long)]
    pub quick: bool,
    /// Only these scenarios, e.g. `--only 1,3` (1 to 12; 7 comes with 1). Default: all.
    #[arg(long, value_name = "1,2,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u8).range(1..=12))]
    pub only: Vec<u8>,
    /// Pairs per comparison instead of the default (5, `--quick` 2).
    #[arg(long, value_name = "N", value_parser = above_zero)]
    pub pairs: Option<usize>,
}

impl Options {
    /// Whether scenario `n` runs.
    pub fn wants(&self, n: u8) -> bool {
        self.only.is_empty() || self.only.contains(&n)
    }
}

/// `--pairs`: a whole number above 0.
fn above_zero(text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a whole number above 0".into()),
    }
}

/// The fixtures the scenarios run, with their extra gcc flags.
const FIXTURES: &[(&str, &[&str])] = &[
    ("split", &[]),
    ("manystacks", &["-pthread"]),
    ("idler", &[]),
    ("spawner", &[]),
    ("nofp", &["-O2", "-fomit-frame-pointer"]),
    ("faulter", &["-O2"]),
    ("switcher", &["-O2", "-pthread"]),
];

/// What every scenario works with.
struct Ctx {
    dir: PathBuf,
    fixtures: PathBuf,
    profilerd: PathBuf,
    quick: bool,
    pairs: usize,
}

/// Fixture processes of one measurement, killed (and reaped) when dropped.
#[derive(Default)]
struct Procs(Vec<Running>);

impl Procs {
    /// Starts `program ARGS` with its output discarded; returns its pid.
    fn spawn(&mut self, program: &Path, args: &[&str]) -> Result<u32> {
        let running = Running::command(
            Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = running.pid();
        self.0.push(running);
        Ok(pid)
    }
}

impl Ctx {
    fn fixture(&self, name: &str) -> PathBuf {
        self.fixtures.join(name)
    }

    /// The 3:1 C fixture, burning one CPU until killed; returns its pid.
    fn busy_loop(&self, procs: &mut Procs, cpu: u32) -> Result<u32> {
        let split = self.fixture("split");
        procs.spawn(
            Path::new("taskset"),
            &["-c", &cpu.to_string(), split.to_str().unwrap(), "1000"],
        )
    }

    /// profilerd with its stderr piped (read it with `wait_with_output`).
    fn profilerd(&self, args: &[&str]) -> Result<Child> {
        Command::new(&self.profilerd)
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start profilerd")
    }

    /// `full` seconds, or `quick` with `--quick`.
    fn seconds(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Runs the chosen scenarios; prints the table and writes `target/bench/results.json`
/// (`results-partial.json` for a partial run).
pub fn bench(root: &Path, options: &Options) -> Result<()> {
    let quick = options.quick;
    let dir = root.join("target/bench");
    let fixtures = dir.join("fixtures");
    fs::create_dir_all(&fixtures)?;
    for (name, extra) in FIXTURES {
        fixtures::build(name, &fixtures.join(name), extra)?;
    }
    crate::status(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
    let ctx = Ctx {
        dir,
        fixtures,
        profilerd: root.join("target/release/profilerd"),
        quick,
        pairs: options.pairs.unwrap_or(if quick { 2 } else { 5 }),
    };
    let machine = machine();
    eprintln!(
        "bench: {} pairs per comparison{}; {machine}",
        ctx.pairs,
        if quick { " (--quick)" } else { "" }
    );

    let (mut rows, failures) = run_scenarios(&ctx, options);
    rows.sort_by_key(|r| (number(&r.figure), r.figure.clone()));
    report::print(&rows, quick, &machine);

    // A partial run must not overwrite the figures of a complete one.
    let name = if options.only.is_empty() && options.pairs.is_none() {
        "results.json"
    } else {
        "results-partial.json"
    };
    let path = ctx.dir.join(name);
    report::write_json(&path, &rows, quick, ctx.pairs, &machine)?;
    println!("\nwritten: {}", path.display());
    if !failures.is_empty() {
        bail!("scenarios that could not run: {}", failures.join(", "));
    }
    Ok(())
}

/// Every wanted scenario, in an order that puts the short ones first; returns the rows and
/// the names of the scenarios that could not run.
fn run_scenarios(ctx: &Ctx, options: &Options) -> (Vec<Row>, Vec<String>) {
    let wanted = |n: u8| options.wants(n);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut attempt = |name: &str, title: &str, run: &dyn Fn() -> Result<Vec<Row>>| {
        eprintln!("bench: {title}");
        match run() {
            Ok(r) => rows.extend(r),
            Err(err) => {
                eprintln!("bench: scenario {name} could not run: {err:#}");
                failures.push(name.to_string());
            }
        }
    };
    // Scenario 2's target is a share of scenario 1's figure.
    let full_cost = std::cell::Cell::new(f64::NAN);
    if wanted(1) || wanted(7) || wanted(2) {
        attempt("1+7", "1/7 cost per sample and accounting", &|| {
            let rows = cost::cost_and_accounting(ctx)?;
            full_cost.set(rows.first().map_or(f64::NAN, |r| r.ours.median));
            Ok(rows)
        });
    }
    if wanted(2) {
        attempt("2", "2 filtered sample", &|| {
            Ok(vec![filtered::filtered_cost(ctx, full_cost.get())?])
        });
    }
    if wanted(5) {
        attempt("5", "5 start-up", &|| Ok(vec![startup::startup(ctx)?]));
    }
    if wanted(6) {
        attempt("6", "6 accuracy", &|| Ok(vec![accuracy::accuracy(ctx)?]));
    }
    if wanted(3) {
        attempt("3", "3 user-space CPU", &|| {
            Ok(vec![user_cpu::user_cpu(ctx)?])
        });
    }
    if wanted(8) {
        attempt("8", "8 stack completeness", &|| {
            completeness::completeness(ctx)
        });
    }
    if wanted(9) {
        attempt("9", "9 in-kernel cost with tables", &|| {
            unwind_cost::unwind_cost(ctx)
        });
    }
    if wanted(10) {
        attempt("10", "10 table cost", &|| tables::tables(ctx));
    }
    if wanted(11) {
        attempt("11", "11 memory-growth source", &|| sources::faults(ctx));
    }
    if wanted(12) {
        attempt("12", "12 off-CPU source", &|| sources::switches(ctx));
    }
    if wanted(4) {
        attempt("4", "4 memory", &|| memory::memory(ctx));
    }
    (rows, failures)
}

/// The scenario number a figure starts with (`10d. ...` is 10), for the table's order.
fn number(figure: &str) -> u32 {
    let digits: String = figure.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(u32::MAX)
}

/// CPUs, CPU model and kernel of this machine.
fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}
