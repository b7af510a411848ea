//! What the bench measures with: bpftool's run-time statistics of a BPF program, wait4's CPU
//! time of a child, and the bpftrace peer.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use profiler_testkit::Running;
use serde::Deserialize;

use crate::output;

/// Our sampling frequency, and the peers'.
pub const FREQUENCY: u64 = 99;

/// bpftrace's equivalent of our sampler, from the issue.
pub const BPFTRACE_PROFILE: &str = "profile:hz:99 { @[pid, ustack, kstack] = count(); }";

/// Name of our perf-event program; bpftrace's is named after its frequency.
pub const OURS: &str = "sample_cpu";
pub const BPFTRACE: &str = "99";

/// The fields of `bpftool prog show -j` the bench reads.
#[derive(Deserialize)]
struct Program {
    #[serde(default)]
    id: u64,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    run_time_ns: u64,
    #[serde(default)]
    run_cnt: u64,
}

/// Run time (ns) and run count of the perf-event BPF program called `name`.
fn program_stats(name: &str) -> Result<Option<(u64, u64)>> {
    programs_stats(&|_, n| n == name)
}

/// The perf-event BPF programs loaded now: (id, name) each.
pub fn perf_event_programs() -> Result<Vec<(u64, String)>> {
    Ok(perf_programs()?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect())
}

/// Every BPF program loaded now, of any type.
fn programs() -> Result<Vec<Program>> {
    let json = output(Command::new("bpftool").args(["prog", "show", "-j"]))?;
    serde_json::from_str(&json).context("bpftool JSON")
}

fn perf_programs() -> Result<Vec<Program>> {
    Ok(programs()?
        .into_iter()
        .filter(|p| p.kind == "perf_event")
        .collect())
}

/// The ids of every BPF program loaded now.
pub fn program_ids() -> Result<std::collections::HashSet<u64>> {
    Ok(programs()?.into_iter().map(|p| p.id).collect())
}

/// Run time of the programs `cost` picks and run count of the one `count` picks (names).
fn event_stats(
    cost: &dyn Fn(u64, &str) -> bool,
    count: &dyn Fn(u64, &str) -> bool,
) -> Result<Option<(u64, u64)>> {
    let all = programs()?;
    let time: u64 = all
        .iter()
        .filter(|p| cost(p.id, &p.name))
        .map(|p| p.run_time_ns)
        .sum();
    Ok(all
        .iter()
        .find(|p| count(p.id, &p.name))
        .map(|p| (time, p.run_cnt)))
}

/// ns per event during a `secs`-long run starting now (the window of [`cost_per_run`]): the
/// run time of every program `cost` picks (any type: perf-event, tracepoint) over the runs of
/// the one `count` picks, which runs once per event.
pub fn cost_per_event(
    what: &str,
    cost: &dyn Fn(u64, &str) -> bool,
    count: &dyn Fn(u64, &str) -> bool,
    secs: u64,
) -> Result<f64> {
    let span = Duration::from_secs(secs - 3);
    thread::sleep(Duration::from_millis(1500));
    let (t0, c0) = event_stats(cost, count)?.with_context(|| format!("{what} not loaded"))?;
    thread::sleep(span);
    let (t1, c1) = event_stats(cost, count)?.with_context(|| format!("{what} gone"))?;
    if c1 <= c0 {
        bail!("{what} did not run");
    }
    Ok((t1 - t0) as f64 / (c1 - c0) as f64)
}

/// Run time (ns) and run count summed over the perf-event programs that `select` (id, name)
/// picks; None when it picks none.
fn programs_stats(select: &dyn Fn(u64, &str) -> bool) -> Result<Option<(u64, u64)>> {
    let picked: Vec<Program> = perf_programs()?
        .into_iter()
        .filter(|p| select(p.id, &p.name))
        .collect();
    if picked.is_empty() {
        return Ok(None);
    }
    Ok(Some(picked.iter().fold((0, 0), |a, p| {
        (a.0 + p.run_time_ns, a.1 + p.run_cnt)
    })))
}

/// ns per run of program `name` during a `secs`-long run starting now: from 1.5 s in (the
/// start-up is over) to 1.5 s before its end.
pub fn cost_per_run(name: &str, secs: u64) -> Result<f64> {
    cost_per_run_of(name, &|_, n| n == name, secs)
}

/// [`cost_per_run`] of the perf-event programs `select` (id, name) picks (their run times and
/// counts summed), called `what` in errors.
pub fn cost_per_run_of(what: &str, select: &dyn Fn(u64, &str) -> bool, secs: u64) -> Result<f64> {
    let span = Duration::from_secs(secs - 3);
    thread::sleep(Duration::from_millis(1500));
    let (t0, c0) =
        programs_stats(select)?.with_context(|| format!("BPF program {what} not loaded"))?;
    thread::sleep(span);
    let (t1, c1) = programs_stats(select)?.with_context(|| format!("BPF program {what} gone"))?;
    if c1 <= c0 {
        bail!("program {what} did not run");
    }
    Ok((t1 - t0) as f64 / (c1 - c0) as f64)
}

/// The `key=value` fields of profilerd's last `unwind tables:` log line, `None` when it
/// logged none (`--unwind fp`).
pub fn unwind_tables(stderr: &str) -> Option<std::collections::HashMap<String, String>> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.split_once("unwind tables: ").map(|(_, rest)| rest))?;
    Some(
        line.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// A count of an `unwind tables:` field (`rows=53169/2097152` is 53169).
pub fn used(fields: &std::collections::HashMap<String, String>, key: &str) -> f64 {
    fields
        .get(key)
        .and_then(|v| v.split('/').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A Rust `Duration` debug text (`29.9ms`, `812.5µs`, `1.2s`) in milliseconds.
pub fn millis(text: &str) -> f64 {
    let units = [
        ("ns", 1e-6),
        ("µs", 1e-3),
        ("us", 1e-3),
        ("ms", 1.0),
        ("s", 1e3),
    ];
    units
        .iter()
        .find_map(|(unit, scale)| Some(text.strip_suffix(unit)?.parse::<f64>().ok()? * scale))
        .unwrap_or(f64::NAN)
}

/// Milliseconds from `started` to the first run of program `name`, polling every 10 ms.
pub fn first_sample(name: &str, started: Instant) -> Result<f64> {
    while started.elapsed() < Duration::from_secs(20) {
        if program_stats(name)?.is_some_and(|(_, runs)| runs > 0) {
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
        thread::sleep(Duration::from_millis(10));
    }
    bail!("{name}: no sample within 20 s")
}

/// Waits for a child and returns its CPU seconds (user + system) from wait4.
pub fn wait_cpu(child: Child) -> Result<(f64, ExitStatus)> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: rusage is plain data; all zeroes is a valid value that wait4 overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the types wait4 expects.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4 failed for pid {pid}");
    }
    // Reaped by wait4: dropping the Child would not wait again, but forget makes that plain.
    std::mem::forget(child);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let exit = std::os::unix::process::ExitStatusExt::from_raw(status);
    Ok((seconds(usage.ru_utime) + seconds(usage.ru_stime), exit))
}

/// bpftrace running `script`, killed when the guard drops.
pub fn bpftrace(script: &str) -> Result<Running> {
    Running::command(
        Command::new("bpftrace")
            .args(["-e", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .context("cannot start bpftrace")
}

/// `perf ARGS` with its output discarded.
pub fn perf(args: &[&str]) -> Result<Child> {
    Command::new("perf")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start perf {}", args.first().unwrap_or(&"")))
}
