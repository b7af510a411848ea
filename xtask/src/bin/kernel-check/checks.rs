//! The seven checks, each a scenario of the host's end-to-end tests run against folded output
//! and judged with the same kit functions.

use std::{collections::BTreeSet, fs, process::Command};

use anyhow::{Context, Result};
use profiler_testkit::{
    procfs,
    scenario::{self, reader, spike, split},
    stack::{count_with, read_folded, total, Stack},
    tail, Cgroup, Running,
};

use super::{profilerd, Outcome, Paths, Run};

/// `record --pid PID --duration SECS --format folded -o WORK/NAME.folded` of a fixture
/// process; returns the run and the stacks.
fn record_folded(paths: &Paths, name: &str, pid: u32, secs: &str) -> Result<(Run, Vec<Stack>)> {
    let out = paths.work.join(format!("{name}.folded"));
    let pid = pid.to_string();
    let run = profilerd(
        paths,
        name,
        &[
            "record",
            "--pid",
            &pid,
            "--duration",
            secs,
            "--format",
            "folded",
            "-o",
            out.to_str().unwrap(),
        ],
        "recording",
    )?;
    Ok((run, read_folded(&out)?))
}

/// `record --pid` of the 3:1 `split` fixture: work_three must hold ~75% of the samples of the
/// two hot callers (the host tests' 60-90% band), under main.
pub(super) fn hot_function(paths: &Paths, figures: &mut super::Figures) -> Result<Outcome> {
    let fixture = Running::start(&paths.fixtures.join("split"), &["30"])?;
    let (run, stacks) = record_folded(paths, "split", fixture.pid(), "3s")?;
    drop(fixture);
    let split::Share { share, three, one } = split::share(&stacks);
    let samples = total(&stacks);
    let chain = stacks.iter().any(split::chain_in_order);
    let only_split = stacks.iter().all(|s| s.comm() == Some("split"));
    let attach_ms = run.attach.map(|d| d.as_millis() as u64);
    // What the daemon kept after attaching differs by kernel (CAP_BPF before 6.5).
    let kept = run
        .stderr
        .lines()
        .find(|l| l.contains("dropped every other capability"))
        .and_then(|l| l.split_once("kept="))
        .map(|(_, caps)| caps.trim().to_string());
    let ok = split::SHARE_BAND.contains(&share)
        && samples >= split::MIN_SAMPLES_4S
        && chain
        && only_split;
    figures.attach_ms = attach_ms;
    figures.cap_bpf_kept = kept.as_deref().map(|caps| caps.contains("CAP_BPF"));
    figures.work_three_pct = Some((share * 1000.0).round() / 10.0);
    figures.split_samples = Some(samples);
    Ok(Outcome {
        ok,
        detail: format!(
            "work_three {:.1}% ({three} vs {one} samples, {samples} in all), main;work_three;work_unit chain {}, only split {only_split}, attached after {} ms, capabilities kept after attach: {}",
            share * 100.0,
            if chain { "walked" } else { "MISSING" },
            attach_ms.map_or("?".into(), |ms| ms.to_string()),
            kept.as_deref().unwrap_or("(not logged)"),
        ),
    })
}

/// `record --pid` of `nofp`, built without frame pointers and calling through libc's qsort:
/// the stacks reach main's caller in libc through the `.eh_frame` tables, as on the host.
pub(super) fn table_unwinding(paths: &Paths, figures: &mut super::Figures) -> Result<Outcome> {
    let fixture = Running::start(&paths.fixtures.join("nofp"), &["30"])?;
    let (run, stacks) = record_folded(paths, "nofp", fixture.pid(), "3s")?;
    drop(fixture);
    // Below main: its caller in libc, named `__libc_start_call_main` only where libc's symbol
    // table or debug file is at hand (the guests have neither: `libc.so.6+0x...`).
    let below_main: Vec<Stack> = stacks
        .iter()
        .filter(|s| s.position("main").is_some_and(|at| at + 1 < s.frames.len()))
        .cloned()
        .collect();
    let share = total(&below_main) as f64 / total(&stacks).max(1) as f64;
    let table_frames = procfs::accounting(&run.stderr)
        .and_then(|counters| counters.get("unwind_table_frames").copied())
        .unwrap_or(0);
    let through_qsort = stacks
        .iter()
        .any(|s| s.has("compare_slowly") && s.has("inner_fn") && s.has("main"));
    let samples = total(&stacks);
    figures.unwound_pct = Some((share * 1000.0).round() / 10.0);
    figures.table_frames = Some(table_frames);
    Ok(Outcome {
        ok: share >= 0.95 && through_qsort && table_frames > 0 && samples >= 100,
        detail: format!(
            "{:.1}% of {samples} samples reach main's caller in libc, {table_frames} frames from tables, compare_slowly <- qsort <- inner_fn <- main {}",
            share * 100.0,
            if through_qsort { "walked" } else { "MISSING" },
        ),
    })
}

/// `record --profile cpu,memory,offcpu,threads` of `faulter`, which maps 64 MiB, touches
/// each page in touch_pages, unmaps and starts again, of `blocker`, whose two threads block
/// in nap (nanosleep) and block_in_read (a pipe), and of `threader`, which starts a thread
/// every 10 ms in start_one: the page-fault, switch-out, `sched_switch` and `task_newtask`
/// programs and the raw-tracepoint unwinder load, attach and walk the stacks that grew the
/// memory, that blocked and that created threads. The fixtures run for the whole recording,
/// however long a guest takes to attach (up to 6 s).
/// With transparent huge pages `always` (as in the guests) a fault maps 2 MiB, and zeroing
/// them under TCG leaves only a few hundred faults in 4 s: then every fault is sampled, else
/// the default one in 128.
pub(super) fn sources(paths: &Paths, _: &mut super::Figures) -> Result<Outcome> {
    let thp = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .unwrap_or_default()
        .split_whitespace()
        .find(|w| w.starts_with('['))
        .unwrap_or("[unknown]")
        .to_string();
    let period = if thp == "[always]" { "1" } else { "128" };
    let faulter = Running::start(&paths.fixtures.join("faulter"), &["40"])?;
    let blocker = Running::start(&paths.fixtures.join("blocker"), &["40"])?;
    let threader = Running::start(&paths.fixtures.join("threader"), &["40"])?;
    let out = paths.work.join("sources.folded");
    let (faulter_pid, blocker_pid) = (faulter.pid().to_string(), blocker.pid().to_string());
    let threader_pid = threader.pid().to_string();
    let args = [
        "record",
        "--pid",
        &faulter_pid,
        "--pid",
        &blocker_pid,
        "--pid",
        &threader_pid,
        "--duration",
        "4s",
        "--profile",
        "cpu,memory,offcpu,threads",
        "--memory-period",
        period,
        "--offcpu-period",
        "1",
        "--format",
        "folded",
        "-o",
        out.to_str().unwrap(),
    ];
    profilerd(paths, "sources", &args, "recording")?;
    drop((faulter, blocker, threader));
    let stacks = read_folded(&paths.work.join("sources.memory.folded"))?;
    let samples = total(&stacks);
    let touched = count_with(&stacks, "touch_pages");
    // The blocker's off-CPU time (the threader blocks too, between its threads).
    let stacks: Vec<Stack> = read_folded(&paths.work.join("sources.offcpu.folded"))?
        .into_iter()
        .filter(|s| s.comm() == Some("blocker"))
        .collect();
    let blocked = total(&stacks);
    let under = count_with(&stacks, "nap") + count_with(&stacks, "block_in_read");
    let stacks = read_folded(&paths.work.join("sources.threads.folded"))?;
    let created = total(&stacks);
    let started = stacks
        .iter()
        .filter(|s| s.has("start_one") && s.has("main"))
        .map(|s| s.count)
        .sum::<i64>();
    // Two threads blocked for 4 s: 8 s, less the blocks going on at either end. A thread
    // every 10 ms (slower under TCG) for 4 s.
    let memory_ok = samples >= 20 && touched * 10 >= samples * 7;
    let offcpu_ok = blocked >= 4_000_000_000 && under * 10 >= blocked * 8;
    let threads_ok = created >= 40 && started * 10 >= created * 9;
    let heaviest = stacks
        .iter()
        .max_by_key(|s| s.count)
        .map_or(String::new(), |s| {
            let names: Vec<&str> = s.frames.iter().map(|f| f.function.as_str()).collect();
            names.join(" <- ")
        });
    Ok(Outcome {
        ok: memory_ok && offcpu_ok && threads_ok,
        detail: format!(
            "{touched} of {samples} page-fault samples under touch_pages (one in {period} faults; transparent huge pages {thp}); {:.1} of {:.1} s off the CPU under nap and block_in_read; {started} of {created} threads created under main <- start_one{}",
            under as f64 / 1e9,
            blocked as f64 / 1e9,
            if threads_ok {
                String::new()
            } else {
                format!(" (most: {heaviest})")
            }
        ),
    })
}

/// `record --pid` of the syscall-heavy `reader`: at least half the samples in the kernel, and
/// a kernel read path (leaf first in the kernel, then read_loop, then main).
pub(super) fn kernel_frames(paths: &Paths, figures: &mut super::Figures) -> Result<Outcome> {
    let fixture = Running::start(&paths.fixtures.join("reader"), &["30"])?;
    let (_, stacks) = record_folded(paths, "reader", fixture.pid(), "3s")?;
    drop(fixture);
    let in_kernel = reader::in_kernel(&stacks);
    let kernel_samples: i64 = in_kernel.iter().map(|s| s.count).sum();
    let samples = total(&stacks);
    let names: BTreeSet<&str> = stacks
        .iter()
        .flat_map(|s| &s.frames)
        .filter(|f| f.kernel)
        .map(|f| f.function.as_str())
        .collect();
    let read_path = in_kernel
        .iter()
        .any(|s| reader::is_read_path(s) && reader::read_path_in_order(s));
    let share = kernel_samples as f64 / samples.max(1) as f64;
    let ok = kernel_samples * 2 >= samples && samples > 0 && read_path;
    figures.kernel_pct = Some((share * 100.0).round());
    figures.kernel_frames = Some(names.len());
    figures.kernel_read_path = Some(read_path);
    Ok(Outcome {
        ok,
        detail: format!(
            "{kernel_samples} of {samples} samples in the kernel ({:.0}%), {} distinct kernel frames, read path under read_loop {}",
            share * 100.0,
            names.len(),
            if read_path { "seen" } else { "MISSING" },
        ),
    })
}

/// `record --cgroup` of a child cgroup holding one of two busy processes: only that one
/// appears. The one inside runs under another name, so the folded lines (which carry the
/// process name, not the pid) tell them apart.
pub(super) fn cgroup_filter(paths: &Paths, figures: &mut super::Figures) -> Result<Outcome> {
    let group = Cgroup::make("profilerd-kernel-check")?;
    let inside_binary = paths.work.join("cgsplit");
    fs::copy(paths.fixtures.join("split"), &inside_binary)?;
    let outside = Running::start(&paths.fixtures.join("split"), &["30"])?;
    let inside = Running::start(&inside_binary, &["30"])?;
    group.move_in(inside.pid())?;
    let out = paths.work.join("cgroup.folded");
    let selector = format!("/{}", group.name());
    let run = profilerd(
        paths,
        "cgroup",
        &[
            "record",
            "--cgroup",
            &selector,
            "--duration",
            "3s",
            "--format",
            "folded",
            "-o",
            out.to_str().unwrap(),
        ],
        "recording",
    );
    drop((inside, outside));
    run?;
    let stacks = read_folded(&out)?;
    let count = |comm: &str| -> i64 {
        stacks
            .iter()
            .filter(|s| s.comm() == Some(comm))
            .map(|s| s.count)
            .sum()
    };
    let (inside, outside) = (count("cgsplit"), count("split"));
    let others = total(&stacks) - inside - outside;
    figures.cgroup_inside = Some(inside);
    figures.cgroup_outside = Some(outside + others);
    Ok(Outcome {
        ok: inside > 50 && outside == 0 && others == 0,
        detail: format!("{inside} samples of the process inside, {outside} of the one outside, {others} of others"),
    })
}

/// `run` (triggered mode) over the `spike` fixture: a light marker through the warm-up, then
/// a burn. Exactly one CPU profile is kept, with the burn and the seconds before it.
pub(super) fn triggered_profile(paths: &Paths, figures: &mut super::Figures) -> Result<Outcome> {
    let timing = spike::GUEST;
    let fixture = Running::start(&paths.fixtures.join("spike"), &timing.fixture_args())?;
    let pid = fixture.pid().to_string();
    let mut args = spike::run_args(&pid, timing);
    args.extend(["--listen", "off"]);
    let run = profilerd(paths, "trigger", &args, "triggered mode")?;
    drop(fixture);
    let kept = paths.work.join("kept");
    let files = scenario::file_names(&kept);
    let profiles = scenario::kept_profiles(&kept);
    let fired = spike::firings(&run.stderr);
    let written = run
        .stderr
        .lines()
        .find(|l| l.contains("kept profile written"))
        .unwrap_or_default();
    let field = |key: &str| -> Option<String> {
        written
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    let samples: u64 = field("samples=").and_then(|s| s.parse().ok()).unwrap_or(0);
    let window = field("window=").unwrap_or_default();
    // The flame graph next to the pprof names the functions: the burn and the marker from
    // before the firing.
    let svg = profiles
        .first()
        .map(|p| {
            let svg = p.to_string_lossy().replace(".pb.gz", ".svg");
            fs::read_to_string(svg).unwrap_or_default()
        })
        .unwrap_or_default();
    let (burn, before) = (svg.contains("burn_cpu"), svg.contains("pre_spike_marker"));
    let first_is_cpu = profiles
        .first()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("cpu."));
    let ok = profiles.len() == 1 && first_is_cpu && fired == 1 && samples > 100 && burn && before;
    figures.trigger_kept = Some(profiles.len());
    figures.trigger_samples = Some(samples);
    figures.trigger_ok = Some(ok);
    Ok(Outcome {
        ok,
        detail: format!(
            "{} kept ({}), {fired} firing, {samples} samples over {window}, burn_cpu {burn}, pre_spike_marker {before}",
            profiles.len(),
            files.join(" "),
        ),
    })
}

/// What a non-root daemon is given: loading and attaching, plus what symbolizing needs.
const NON_ROOT_CAPS: &str =
    "+bpf,+perfmon,+sys_ptrace,+syslog,+dac_read_search,+checkpoint_restore";

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// One `record --pid` of `split` as `nobody` with [`NON_ROOT_CAPS`]: whether it exited 0, its
/// stderr and the samples it wrote.
fn record_as_nobody(
    paths: &Paths,
    dir: &std::path::Path,
    name: &str,
) -> Result<(bool, String, i64)> {
    let fixture = Running::start(&paths.fixtures.join("split"), &["30"])?;
    let out = dir.join(format!("{name}.folded"));
    let output = scenario::as_nobody(&paths.setpriv, NON_ROOT_CAPS, Some(NON_ROOT_CAPS))
        .arg(&paths.profilerd)
        .args([
            "record",
            "--pid",
            &fixture.pid().to_string(),
            "--duration",
            "2s",
        ])
        .args(["--format", "folded", "-o"])
        .arg(&out)
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot start {}", paths.setpriv.display()))?;
    drop(fixture);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let samples = read_folded(&out).map(|s| total(&s)).unwrap_or(0);
    Ok((output.status.success(), stderr, samples))
}

/// `record --pid` as uid 65534 holding CAP_BPF and CAP_PERFMON (the README's setcap set-up).
/// Debian's kernels default to perf_event_paranoid 3, where CAP_PERFMON does not open perf
/// events: there profilerd must refuse at start-up naming the sysctl, and (in a guest, where
/// changing it harms nobody) work once it is 2.
pub(super) fn without_root(paths: &Paths, figures: &mut super::Figures) -> Result<Outcome> {
    let level: i32 = fs::read_to_string(PARANOID)?.trim().parse()?;
    let dir = paths.work.join("non-root");
    fs::create_dir_all(&dir)?;
    // The unprivileged daemon writes its profile here.
    Command::new("chmod").arg("0777").arg(&dir).status()?;
    let verdict = |ok: bool, works: &str| {
        if ok {
            works.to_string()
        } else {
            "FAILS".into()
        }
    };
    if level < 3 {
        let (ok, stderr, samples) = record_as_nobody(paths, &dir, "paranoid")?;
        let ok = ok && samples > 50;
        figures.non_root = Some(verdict(ok, "works"));
        return Ok(Outcome {
            ok,
            detail: format!(
                "perf_event_paranoid {level}: {samples} samples as uid 65534 with CAP_BPF and CAP_PERFMON{}",
                if ok { String::new() } else { format!("; stderr:\n{}", tail(&stderr, 10)) }
            ),
        });
    }
    let (refused_ok, refused_stderr, _) = record_as_nobody(paths, &dir, "paranoid")?;
    let named = !refused_ok && refused_stderr.contains("perf_event_paranoid=2");
    if !paths.guest {
        figures.non_root = Some(verdict(named, "refused at 3, fix named"));
        return Ok(Outcome {
            ok: named,
            detail: format!(
                "perf_event_paranoid {level}: refused with the fix named: {named} (not lowered on a host)"
            ),
        });
    }
    fs::write(PARANOID, "2")?;
    let lowered = record_as_nobody(paths, &dir, "lowered");
    fs::write(PARANOID, level.to_string())?;
    let (ok, stderr, samples) = lowered?;
    let ok = named && ok && samples > 50;
    figures.non_root = Some(verdict(ok, "refused at 3, works at 2"));
    Ok(Outcome {
        ok,
        detail: format!(
            "perf_event_paranoid {level}: refused with the fix named: {named}; at 2: {samples} samples as uid 65534 with CAP_BPF and CAP_PERFMON{}",
            if ok {
                String::new()
            } else {
                format!("; stderr:\n{}\n{}", tail(&refused_stderr, 5), tail(&stderr, 10))
            }
        ),
    })
}
