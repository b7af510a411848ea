//! `cargo xtask bench [--quick]`: profilerd's overhead, memory and accuracy side by side with
//! bpftrace and perf, measured in the same run on the same workloads, alternating ours and the
//! peer's runs. A benchmark, not a test: it never fails on a figure, only when a scenario could
//! not run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

const FREQUENCY: u64 = 99;
/// bpftrace's equivalent of our sampler, from the issue.
const BPFTRACE_PROFILE: &str = "profile:hz:99 { @[pid, ustack, kstack] = count(); }";

struct Ctx {
    dir: PathBuf,
    fixtures: PathBuf,
    profilerd: PathBuf,
    quick: bool,
    pairs: usize,
}

/// Median and spread of repeated measurements.
#[derive(Clone, Copy, Debug)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stat(values: &[f64]) -> Stat {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: *v.first().unwrap_or(&f64::NAN),
        max: *v.last().unwrap_or(&f64::NAN),
        n,
    }
}

struct Row {
    figure: String,
    unit: String,
    ours: Stat,
    peer: Option<(String, Stat)>,
    target: String,
    /// None: report only.
    pass: Option<bool>,
    workload: String,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.peer.as_ref().map(|(_, p)| self.ours.median / p.median)
    }
}

/// Children killed (and reaped) when dropped.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Procs {
    fn spawn(&mut self, program: &Path, args: &[&str]) -> Result<u32> {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id();
        self.0.push(child);
        Ok(pid)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn run_checked(cmd: &mut Command) -> Result<std::process::Output> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(output)
}

/// Waits for a child and returns its CPU seconds (user + system) from wait4.
fn wait_cpu(child: Child) -> Result<(f64, std::process::ExitStatus)> {
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: rusage is plain data written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4 failed for pid {pid}");
    }
    std::mem::forget(child);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let exit = std::os::unix::process::ExitStatusExt::from_raw(status);
    Ok((seconds(usage.ru_utime) + seconds(usage.ru_stime), exit))
}

/// Run time and count of the perf-event BPF program called `name`.
fn program_stats(name: &str) -> Result<Option<(u64, u64)>> {
    let output = run_checked(Command::new("bpftool").args(["prog", "show", "-j"]))?;
    let programs: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("bpftool JSON")?;
    Ok(programs.as_array().into_iter().flatten().find_map(|p| {
        (p["type"] == "perf_event" && p["name"] == name).then(|| {
            (
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
            )
        })
    }))
}

/// ns per program run over `[start, start+span]` seconds after launch of `child`.
fn cost_per_run(name: &str, start: Duration, span: Duration) -> Result<f64> {
    thread::sleep(start);
    let (t0, c0) =
        program_stats(name)?.with_context(|| format!("BPF program {name} not loaded"))?;
    thread::sleep(span);
    let (t1, c1) = program_stats(name)?.with_context(|| format!("BPF program {name} gone"))?;
    if c1 <= c0 {
        bail!("program {name} did not run");
    }
    Ok((t1 - t0) as f64 / (c1 - c0) as f64)
}

/// VmRSS, RssAnon and RssFile of a process, in MiB.
fn rss_split(pid: u32) -> Option<[f64; 3]> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    };
    Some([field("VmRSS:")?, field("RssAnon:")?, field("RssFile:")?])
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn bpftrace(script: &str) -> Result<Child> {
    Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start bpftrace")
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

    fn profilerd(&self, args: &[&str]) -> Result<Child> {
        Command::new(&self.profilerd)
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start profilerd")
    }

    /// profilerd with its log in `<name>.log` (a pipe nobody reads would fill and block it).
    fn profilerd_logged(&self, name: &str, args: &[&str]) -> Result<Child> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        Command::new(&self.profilerd)
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start profilerd")
    }

    fn seconds(&self, full: u64, quick: u64) -> u64 {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Scenarios 1 and 7: cost per sample, all processes sampled, and the sample accounting.
    fn cost_and_accounting(&self) -> Result<Vec<Row>> {
        let secs = self.seconds(8, 5);
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        let mut accounting = Vec::new();
        let mut exact = true;
        for _ in 0..self.pairs {
            // One busy loop per CPU: every sample is a full one (no idle CPU in the mix), so
            // both tools' averages describe the same work.
            let mut procs = Procs::default();
            let busy = self.busy_loop(&mut procs, 1)?;
            let other = self.busy_loop(&mut procs, 0)?;
            let out = self.dir.join("cost.pb.gz");
            let ticks0 = cpu_ticks(busy).unwrap_or(0) + cpu_ticks(other).unwrap_or(0);
            let child = self.profilerd(&[
                "record",
                "--duration",
                &format!("{secs}s"),
                "-o",
                out.to_str().unwrap(),
            ])?;
            ours.push(cost_per_run(
                "sample_cpu",
                Duration::from_millis(1500),
                Duration::from_secs(secs - 3),
            )?);
            let output = child.wait_with_output()?;
            let ticks1 = cpu_ticks(busy).unwrap_or(0) + cpu_ticks(other).unwrap_or(0);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let counters = parse_accounting(&stderr)?;
            let get = |k: &str| counters.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
            let dropped = get("idle")
                + get("filtered")
                + get("dropped_map_full")
                + get("dropped_stack_limit");
            exact &= get("taken") == get("in_profiles") + dropped;
            let expected = FREQUENCY as f64 * (ticks1 - ticks0) as f64 / 100.0;
            accounting.push((
                expected,
                get("taken"),
                get("in_profiles"),
                dropped,
                get("idle"),
            ));

            let guard = Procs(vec![bpftrace(BPFTRACE_PROFILE)?]);
            peer.push(cost_per_run(
                "99",
                Duration::from_millis(1500),
                Duration::from_secs(secs - 3),
            )?);
            drop(guard);
        }
        let ours = stat(&ours);
        let peer = stat(&peer);
        let (expected, taken, in_profiles, dropped, idle) = accounting[accounting.len() / 2];
        Ok(vec![
            Row {
                figure: "1. in-kernel cost per sample".into(),
                unit: "ns".into(),
                ours,
                peer: Some(("bpftrace".into(), peer)),
                target: "ratio <= 0.8".into(),
                pass: Some(ours.median / peer.median <= 0.8),
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
                pass: Some(exact),
                workload: format!("the {} runs of scenario 1", self.pairs),
            },
        ])
    }

    /// Scenario 2: a sample the pid filter rejects.
    fn filtered_cost(&self, full_cost: f64) -> Result<Row> {
        let secs = self.seconds(8, 5);
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        for _ in 0..self.pairs {
            // A busy loop on each CPU, as in scenario 1: every sample is one the filter rejects,
            // with no idle-task samples (which cost less) in the average.
            let mut procs = Procs::default();
            self.busy_loop(&mut procs, 1)?;
            self.busy_loop(&mut procs, 0)?;
            let idle = procs.spawn(Path::new("sleep"), &["1000"])?.to_string();
            let out = self.dir.join("filtered.pb.gz");
            let child = self.profilerd(&[
                "record",
                "--pid",
                &idle,
                "--duration",
                &format!("{secs}s"),
                "-o",
                out.to_str().unwrap(),
            ])?;
            ours.push(cost_per_run(
                "sample_cpu",
                Duration::from_millis(1500),
                Duration::from_secs(secs - 3),
            )?);
            child.wait_with_output()?;
            let guard = Procs(vec![bpftrace(&format!(
                "profile:hz:99 /pid == {idle}/ {{ @[pid, ustack, kstack] = count(); }}"
            ))?]);
            peer.push(cost_per_run(
                "99",
                Duration::from_millis(1500),
                Duration::from_secs(secs - 3),
            )?);
            drop(guard);
            drop(procs);
        }
        let ours = stat(&ours);
        Ok(Row {
            figure: "2. cost of a filtered-out sample".into(),
            unit: "ns".into(),
            ours,
            peer: Some(("bpftrace /pid == X/".into(), stat(&peer))),
            target: format!("<= 15% of scenario 1 ({:.0} ns)", full_cost * 0.15),
            pass: Some(ours.median <= full_cost * 0.15),
            workload: format!(
                "{secs} s, --pid of a sleeping process while a C loop pinned to each CPU burns it"
            ),
        })
    }

    /// Scenario 3: user-space CPU of a continuous daemon vs perf record + perf report.
    fn user_cpu(&self) -> Result<Row> {
        let secs = self.seconds(60, 20);
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        let mut share = Vec::new();
        for _ in 0..self.pairs {
            let mut procs = Procs::default();
            for _ in 0..50 {
                procs.spawn(&self.fixture("manystacks"), &["10000", "1"])?;
            }
            let dump = self.dir.join("usercpu-profiles");
            let _ = fs::remove_dir_all(&dump);
            let child = self.profilerd(&[
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

            let data = self.dir.join("perf.data");
            let record = Command::new("perf")
                .args([
                    "record",
                    "-F",
                    "99",
                    "-a",
                    "-g",
                    "-q",
                    "-o",
                    data.to_str().unwrap(),
                    "--",
                    "sleep",
                    &secs.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start perf record")?;
            let (record_cpu, _) = wait_cpu(record)?;
            let report = Command::new("perf")
                .args(["report", "--stdio", "-i", data.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start perf report")?;
            let (report_cpu, _) = wait_cpu(report)?;
            peer.push(record_cpu + report_cpu);
        }
        let ours = stat(&ours);
        let peer = stat(&peer);
        let core = stat(&share).median;
        Ok(Row {
            figure: format!("3. user-space CPU for {secs} s ({core:.2}% of one core)"),
            unit: "CPU s".into(),
            ours,
            peer: Some(("perf record -a -g + perf report".into(), peer)),
            target: "ratio <= 0.5 and < 1% of a core".into(),
            pass: Some(ours.median / peer.median <= 0.5 && core < 1.0),
            workload: "run --mode continuous at 99 Hz; 50 processes with 2^17 distinct call chains each, 2 cores saturated".into(),
        })
    }

    /// Scenario 4: RSS over time with 200 live and 20 new short-lived processes per second.
    fn memory(&self) -> Result<Vec<Row>> {
        let secs = self.seconds(600, 120);
        let mut peaks = (Vec::new(), Vec::new());
        let mut finals = (Vec::new(), Vec::new());
        let mut slopes = Vec::new();
        // Both run at once on one workload: RSS does not depend on the other profiler's
        // presence, and the 10-minute runs then take half the time. Each pair is one run.
        for run in 0..self.pairs {
            let mut procs = Procs::default();
            for _ in 0..200 {
                procs.spawn(&self.fixture("idler"), &[&(secs + 30).to_string()])?;
            }
            let dump = self.dir.join("memory-profiles");
            let _ = fs::remove_dir_all(&dump);
            let mut ours = self.profilerd_logged(
                "memory",
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
            )?;
            let mut peer = bpftrace(BPFTRACE_PROFILE)?;
            // Started last, so that a profiler failing to start leaves no spawner behind.
            // A 50 ms process every 50 ms (20 a second), started by a small C program: the
            // harness is a debug build, and forking from it would make it a busy process whose
            // large debug info the daemon keeps reading, which is not the workload described.
            let spawner = Command::new(self.fixture("spawner"))
                .args([
                    &secs.to_string(),
                    "50",
                    self.fixture("split").to_str().unwrap(),
                    "0.05",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start the spawner fixture")?;
            let pids = [ours.id(), peer.id()];
            let started = Instant::now();
            let mut series = [Vec::new(), Vec::new()];
            // Every second of the run, kept so that a slope or a peak can be explained after
            // the fact: anonymous memory is the daemon's own, file pages are the binaries it
            // reads to symbolize.
            let mut table = String::from(
                "seconds\tprofilerd_rss\tprofilerd_anon\tprofilerd_file\tbpftrace_rss\n",
            );
            while started.elapsed() < Duration::from_secs(secs) {
                let t = started.elapsed().as_secs_f64();
                let split = pids.map(rss_split);
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
            fs::write(self.dir.join(format!("memory-{}.tsv", run + 1)), table)?;
            let spawned: u64 = String::from_utf8_lossy(&spawner.wait_with_output()?.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            for child in [&mut ours, &mut peer] {
                let _ = child.kill();
                let _ = child.wait();
            }
            if series.iter().any(Vec::is_empty) || spawned == 0 {
                bail!("memory scenario measured nothing");
            }
            let [ours, peer] = series;
            let peak = |s: &[(f64, f64)]| s.iter().map(|s| s.1).fold(0.0, f64::max);
            peaks.0.push(peak(&ours));
            peaks.1.push(peak(&peer));
            finals.0.push(ours.last().unwrap().1);
            finals.1.push(peer.last().unwrap().1);
            slopes.push(slope(&interval_means(&ours[ours.len() / 2..])));
        }
        let peak = stat(&peaks.0);
        let slope = stat(&slopes);
        let workload =
            format!("{secs} s; 200 live processes and 20 new short-lived processes per second; profilerd and bpftrace side by side on one workload, one run per pair");
        Ok(vec![
            Row {
                figure: "4a. peak RSS".into(),
                unit: "MiB".into(),
                ours: peak,
                peer: Some(("bpftrace".into(), stat(&peaks.1))),
                target: "<= 64 MiB and below bpftrace".into(),
                pass: Some(peak.median <= 64.0 && peak.median < stat(&peaks.1).median),
                workload: workload.clone(),
            },
            Row {
                figure: "4b. final RSS".into(),
                unit: "MiB".into(),
                ours: stat(&finals.0),
                peer: Some(("bpftrace".into(), stat(&finals.1))),
                target: "report".into(),
                pass: None,
                workload: workload.clone(),
            },
            Row {
                figure: "4c. RSS slope over the second half (15 s means)".into(),
                unit: "MiB/min".into(),
                ours: slope,
                peer: None,
                target: "no upward trend (<= 0.1 MiB/min)".into(),
                pass: Some(slope.median <= 0.1),
                workload,
            },
        ])
    }

    /// Scenario 5: launch to first sample.
    fn startup(&self) -> Result<Row> {
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        let mut procs = Procs::default();
        self.busy_loop(&mut procs, 1)?;
        for _ in 0..self.pairs {
            let out = self.dir.join("startup.pb.gz");
            let started = Instant::now();
            let child =
                self.profilerd(&["record", "--duration", "3s", "-o", out.to_str().unwrap()])?;
            ours.push(first_sample("sample_cpu", started)?);
            child.wait_with_output()?;
            let started = Instant::now();
            let peer_run = Procs(vec![bpftrace(BPFTRACE_PROFILE)?]);
            peer.push(first_sample("99", started)?);
            // Killed and reaped: the next start must not find this program still loaded.
            drop(peer_run);
            thread::sleep(Duration::from_millis(500));
        }
        Ok(Row {
            figure: "5. start-up: launch to first sample".into(),
            unit: "ms".into(),
            ours: stat(&ours),
            peer: Some(("bpftrace".into(), stat(&peer))),
            target: "report".into(),
            pass: None,
            workload: "one busy C loop; first run_cnt > 0 seen by polling bpftool every 10 ms"
                .into(),
        })
    }

    /// Scenario 6: share of the hot function, ours and perf on the same run.
    fn accuracy(&self) -> Result<Row> {
        let secs = self.seconds(10, 6);
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        let mut worst: f64 = 0.0;
        for _ in 0..self.pairs {
            let mut procs = Procs::default();
            let pid = self.busy_loop(&mut procs, 1)?;
            let folded = self.dir.join("accuracy.folded");
            let data = self.dir.join("accuracy.perf.data");
            let perf = Command::new("perf")
                .args([
                    "record",
                    "-F",
                    "99",
                    "-g",
                    "-q",
                    "-p",
                    &pid.to_string(),
                    "-o",
                    data.to_str().unwrap(),
                    "--",
                    "sleep",
                    &secs.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start perf record")?;
            let child = self.profilerd(&[
                "record",
                "--pid",
                &pid.to_string(),
                "--duration",
                &format!("{secs}s"),
                "-o",
                folded.to_str().unwrap(),
            ])?;
            child.wait_with_output()?;
            wait_cpu(perf)?;
            let text = fs::read_to_string(&folded)?;
            let count = |needle: &str| -> f64 {
                text.lines()
                    .filter(|l| l.contains(needle))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            };
            let (three, one) = (count(";work_three;"), count(";work_one;"));
            let ours_share = three / (three + one) * 100.0;
            let script =
                run_checked(Command::new("perf").args(["script", "-i", data.to_str().unwrap()]))?;
            let script = String::from_utf8_lossy(&script.stdout);
            let (mut p3, mut p1) = (0.0, 0.0);
            for sample in script.split("\n\n") {
                if sample.contains("work_three") {
                    p3 += 1.0;
                } else if sample.contains("work_one") {
                    p1 += 1.0;
                }
            }
            let peer_share = p3 / (p3 + p1) * 100.0;
            worst = worst.max((ours_share - peer_share).abs());
            ours.push(ours_share);
            peer.push(peer_share);
        }
        Ok(Row {
            figure: "6. share of work_three (3:1 split)".into(),
            unit: "%".into(),
            ours: stat(&ours),
            peer: Some(("perf record -g, same run".into(), stat(&peer))),
            target: format!("within 3 points (worst pair {worst:.1})"),
            pass: Some(worst <= 3.0),
            workload: format!("{secs} s, --pid of a C fixture pinned to CPU 1, both tools at once"),
        })
    }
}

/// The daemon's upload interval: its RSS rises while a window fills and falls when it is
/// written and trimmed, a sawtooth of this period.
const UPLOAD_INTERVAL_SECS: f64 = 15.0;

/// Mean RSS per whole upload interval, so that the slope describes the trend and not where in
/// the sawtooth the series happens to start and stop.
fn interval_means(series: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut bins: Vec<(f64, f64, usize)> = Vec::new();
    for &(t, rss) in series {
        let bin = (t / UPLOAD_INTERVAL_SECS).floor();
        match bins.last_mut() {
            Some(last) if last.0 == bin => {
                last.1 += rss;
                last.2 += 1;
            }
            _ => bins.push((bin, rss, 1)),
        }
    }
    // Partial intervals at either end would bring the sawtooth back.
    let full = UPLOAD_INTERVAL_SECS as usize - 1;
    bins.into_iter()
        .filter(|b| b.2 >= full)
        .map(|(bin, sum, n)| ((bin + 0.5) * UPLOAD_INTERVAL_SECS, sum / n as f64))
        .collect()
}

/// Least-squares slope in MiB per minute.
fn slope(series: &[(f64, f64)]) -> f64 {
    let n = series.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = series
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = series.iter().fold((0.0, 0.0), |a, p| {
        (a.0 + (p.0 - mx) * (p.1 - my), a.1 + (p.0 - mx).powi(2))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

fn first_sample(name: &str, started: Instant) -> Result<f64> {
    while started.elapsed() < Duration::from_secs(20) {
        if program_stats(name)?.is_some_and(|(_, runs)| runs > 0) {
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
        thread::sleep(Duration::from_millis(10));
    }
    bail!("{name}: no sample within 20 s")
}

fn parse_accounting(stderr: &str) -> Result<Vec<(String, u64)>> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.split_once("sample accounting: ").map(|(_, r)| r))
        .context("profilerd printed no sample accounting")?;
    Ok(line
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

fn fmt(stat: &Stat) -> String {
    if stat.n > 1 {
        format!("{:.1} ({:.1}-{:.1})", stat.median, stat.min, stat.max)
    } else {
        format!("{:.1}", stat.median)
    }
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Runs every scenario; prints the table and writes `target/bench/results.json`.
/// What `cargo xtask bench` runs.
#[derive(Debug, Default)]
pub struct Options {
    /// Shorter runs and 2 pairs per comparison.
    pub quick: bool,
    /// Scenarios to run (1-7); empty: all. 7 is measured with 1.
    pub only: Vec<u8>,
    /// Pairs per comparison instead of the default (5, `--quick` 2).
    pub pairs: Option<usize>,
}

pub fn bench(root: &Path, options: &Options) -> Result<()> {
    let quick = options.quick;
    let wanted = |n: u8| options.only.is_empty() || options.only.contains(&n);
    let dir = root.join("target/bench");
    fs::create_dir_all(&dir)?;
    let fixtures = dir.join("fixtures");
    fs::create_dir_all(&fixtures)?;
    for (name, extra) in [
        ("split", ""),
        ("manystacks", "-pthread"),
        ("idler", ""),
        ("spawner", ""),
    ] {
        let mut cmd = Command::new("gcc");
        cmd.args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(fixtures.join(name))
            .arg(root.join("tests/fixtures").join(format!("{name}.c")));
        if !extra.is_empty() {
            cmd.arg(extra);
        }
        run_checked(&mut cmd)?;
    }
    run_checked(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
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

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut attempt = |name: &str, result: Result<Vec<Row>>, rows: &mut Vec<Row>| match result {
        Ok(r) => rows.extend(r),
        Err(err) => {
            eprintln!("bench: scenario {name} could not run: {err:#}");
            failures.push(name.to_string());
        }
    };
    let mut full_cost = f64::NAN;
    if wanted(1) || wanted(7) || wanted(2) {
        eprintln!("bench: 1/7 cost per sample and accounting");
        attempt("1+7", ctx.cost_and_accounting(), &mut rows);
        full_cost = rows.first().map_or(f64::NAN, |r| r.ours.median);
    }
    if wanted(2) {
        eprintln!("bench: 2 filtered sample");
        attempt(
            "2",
            ctx.filtered_cost(full_cost).map(|r| vec![r]),
            &mut rows,
        );
    }
    if wanted(5) {
        eprintln!("bench: 5 start-up");
        attempt("5", ctx.startup().map(|r| vec![r]), &mut rows);
    }
    if wanted(6) {
        eprintln!("bench: 6 accuracy");
        attempt("6", ctx.accuracy().map(|r| vec![r]), &mut rows);
    }
    if wanted(3) {
        eprintln!("bench: 3 user-space CPU");
        attempt("3", ctx.user_cpu().map(|r| vec![r]), &mut rows);
    }
    if wanted(4) {
        eprintln!("bench: 4 memory");
        attempt("4", ctx.memory(), &mut rows);
    }
    rows.sort_by(|a, b| a.figure.cmp(&b.figure));

    println!(
        "\nprofilerd bench{} on {machine}",
        if quick { " --quick" } else { "" }
    );
    println!("| figure | unit | profilerd | peer | ratio | target | result |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        let peer = row
            .peer
            .as_ref()
            .map_or("-".to_string(), |(name, s)| format!("{}: {}", name, fmt(s)));
        let ratio = row.ratio().map_or("-".to_string(), |r| format!("{r:.2}"));
        let result = match row.pass {
            Some(true) => "pass",
            Some(false) => "miss",
            None => "report",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.figure,
            row.unit,
            fmt(&row.ours),
            peer,
            ratio,
            row.target,
            result
        );
    }
    println!("\nWorkloads:");
    for row in &rows {
        println!("- {}: {}", row.figure, row.workload);
    }

    let mut json = String::from("{\n");
    json.push_str(&format!(
        "  \"machine\": \"{}\",\n  \"quick\": {quick},\n  \"pairs\": {},\n  \"rows\": [\n",
        json_escape(&machine),
        ctx.pairs
    ));
    for (i, row) in rows.iter().enumerate() {
        let peer = row.peer.as_ref().map_or("null".to_string(), |(name, s)| {
            format!(
                "{{\"name\": \"{}\", \"median\": {}, \"min\": {}, \"max\": {}, \"n\": {}}}",
                json_escape(name),
                s.median,
                s.min,
                s.max,
                s.n
            )
        });
        json.push_str(&format!(
            "    {{\"figure\": \"{}\", \"unit\": \"{}\", \"ours\": {{\"median\": {}, \"min\": {}, \"max\": {}, \"n\": {}}}, \"peer\": {peer}, \"ratio\": {}, \"target\": \"{}\", \"result\": \"{}\", \"workload\": \"{}\"}}{}\n",
            json_escape(&row.figure),
            row.unit,
            row.ours.median,
            row.ours.min,
            row.ours.max,
            row.ours.n,
            row.ratio().map_or("null".to_string(), |r| r.to_string()),
            json_escape(&row.target),
            match row.pass { Some(true) => "pass", Some(false) => "miss", None => "report" },
            json_escape(&row.workload),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("  ]\n}\n");
    // A partial run must not overwrite the figures of a complete one.
    let name = if options.only.is_empty() && options.pairs.is_none() {
        "results.json"
    } else {
        "results-partial.json"
    };
    fs::write(ctx.dir.join(name), json.replace("NaN", "null"))?;
    println!("\nwritten: {}", ctx.dir.join(name).display());
    if !failures.is_empty() {
        bail!("scenarios that could not run: {}", failures.join(", "));
    }
    Ok(())
}

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
