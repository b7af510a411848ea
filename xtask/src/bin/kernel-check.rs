//! The end-to-end checks of `cargo xtask test --kernels`, run inside each QEMU guest (as its
//! init's only job) and on the host itself.
//!
//! A guest holds no cargo, no Go and no test harness, so this is a plain binary that drives
//! the real `profilerd` against the C fixtures and reads its folded output and log lines
//! itself. It prints one `kernel-check: <check> ok|FAIL ...` line per check and a final
//! `kernel-check: result {json}` line that xtask turns into a row of its table.
//!
//! Usage: `kernel-check --profilerd PATH --fixtures DIR --work DIR [--setpriv PATH]
//! [--guest]`. `--guest` allows changing sysctls, which only a throw-away guest should.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// Bound of any one profilerd run; TCG guests are slow, but not this slow.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// A check: runs profilerd against a fixture and judges the outcome.
type Check = fn(&Paths) -> Result<Outcome>;

struct Paths {
    profilerd: PathBuf,
    fixtures: PathBuf,
    work: PathBuf,
    /// util-linux's setpriv (busybox's cannot change uids).
    setpriv: PathBuf,
    guest: bool,
}

/// One check's verdict and the figures it measured.
struct Outcome {
    ok: bool,
    detail: String,
    figures: Map<String, Value>,
}

impl Outcome {
    fn new(ok: bool, detail: String, figures: Value) -> Self {
        let figures = match figures {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Outcome {
            ok,
            detail,
            figures,
        }
    }
}

fn main() -> Result<()> {
    let paths = parse_args()?;
    let _ = fs::remove_dir_all(&paths.work);
    fs::create_dir_all(&paths.work)
        .with_context(|| format!("cannot create {}", paths.work.display()))?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read the kernel release: is /proc mounted?")?;
    let started = Instant::now();

    let mut result = Map::new();
    result.insert("kernel".into(), json!(release.trim()));
    result.insert("notes".into(), json!(host_check(&paths)));

    let checks: [(&str, Check); 5] = [
        ("hot function", hot_function),
        ("kernel frames", kernel_frames),
        ("cgroup filter", cgroup_filter),
        ("triggered profile", triggered_profile),
        ("without root", without_root),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        // A check that cannot even run is a failure of that check, not of the whole driver:
        // the other checks still tell what works on this kernel.
        let outcome = check(&paths)
            .unwrap_or_else(|err| Outcome::new(false, format!("{err:#}"), Value::Null));
        let verdict = if outcome.ok { "ok" } else { "FAIL" };
        println!("kernel-check: {name} {verdict}: {}", outcome.detail);
        if !outcome.ok {
            failed.push(name);
        }
        result.extend(outcome.figures);
    }
    result.insert("failed".into(), json!(failed));
    result.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    println!("kernel-check: result {}", Value::Object(result));
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

fn parse_args() -> Result<Paths> {
    const USAGE: &str =
        "usage: kernel-check --profilerd PATH --fixtures DIR --work DIR [--setpriv PATH] [--guest]";
    let mut profilerd = None;
    let mut fixtures = None;
    let mut work = None;
    let mut setpriv = PathBuf::from("setpriv");
    let mut guest = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--guest" {
            guest = true;
            continue;
        }
        let value = args.next().map(PathBuf::from).context(USAGE)?;
        match flag.as_str() {
            "--profilerd" => profilerd = Some(value),
            "--fixtures" => fixtures = Some(value),
            "--work" => work = Some(value),
            "--setpriv" => setpriv = value,
            _ => bail!("unknown argument {flag}; {USAGE}"),
        }
    }
    Ok(Paths {
        profilerd: profilerd.context(USAGE)?,
        fixtures: fixtures.context(USAGE)?,
        work: work.context(USAGE)?,
        setpriv,
        guest,
    })
}

/// `profilerd check`, echoed; returns its non-ok lines, which name what degrades here.
fn host_check(paths: &Paths) -> Vec<String> {
    let output = Command::new(&paths.profilerd)
        .args(["check", "--listen", "off"])
        .output();
    let Ok(output) = output else {
        return vec!["profilerd check could not start".into()];
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    for line in text.lines() {
        println!("kernel-check: profilerd check: {line}");
    }
    text.lines()
        .filter(|l| l.starts_with("note") || l.starts_with("PROBLEM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A fixture process, killed when dropped.
struct Fixture(Child);

impl Fixture {
    fn spawn(program: &Path, args: &[&str]) -> Result<Self> {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Fixture(child))
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished profilerd run: its stderr, and how long it took to log `marker` (the line it
/// writes once the sampler is attached).
struct Run {
    stderr: String,
    attach: Option<Duration>,
}

/// Runs `profilerd ARGS` to completion with stderr in `WORK/NAME.stderr`, watching for
/// `marker` to time start-up.
fn profilerd(paths: &Paths, name: &str, args: &[&str], marker: &str) -> Result<Run> {
    let stderr_path = paths.work.join(format!("{name}.stderr"));
    let stderr = fs::File::create(&stderr_path)?;
    let started = Instant::now();
    let mut child = Command::new(&paths.profilerd)
        .args(args)
        .current_dir(&paths.work)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", paths.profilerd.display()))?;
    let mut attach = None;
    let status = loop {
        if attach.is_none()
            && fs::read_to_string(&stderr_path).is_ok_and(|text| text.contains(marker))
        {
            attach = Some(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "profilerd {} did not finish within {RUN_LIMIT:?}; stderr:\n{}",
                args.join(" "),
                tail(&fs::read_to_string(&stderr_path).unwrap_or_default(), 20)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    if !status.success() {
        bail!(
            "profilerd {} failed ({status}); stderr:\n{}",
            args.join(" "),
            tail(&stderr, 20)
        );
    }
    Ok(Run { stderr, attach })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One line of `--format folded`: the process name, the frames root first, the count.
struct Folded {
    comm: String,
    frames: Vec<String>,
    count: u64,
}

fn read_folded(path: &Path) -> Result<Vec<Folded>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').context("no count")?;
            let mut frames = stack.split(';').map(str::to_string);
            Ok(Folded {
                comm: frames.next().unwrap_or_default(),
                frames: frames.collect(),
                count: count.parse().context("count is not a number")?,
            })
        })
        .collect::<Result<_>>()
        .with_context(|| format!("{} is not in the folded format", path.display()))
}

fn total(lines: &[Folded]) -> u64 {
    lines.iter().map(|l| l.count).sum()
}

/// `record --pid` of the 3:1 `split` fixture: work_three must hold ~75% of the samples of the
/// two hot callers (the host tests' 60-90% band), under main.
fn hot_function(paths: &Paths) -> Result<Outcome> {
    let fixture = Fixture::spawn(&paths.fixtures.join("split"), &["30"])?;
    let out = paths.work.join("split.folded");
    let pid = fixture.pid();
    let run = profilerd(
        paths,
        "split",
        &[
            "record",
            "--pid",
            &pid,
            "--duration",
            "4s",
            "--format",
            "folded",
            "-o",
            out.to_str().unwrap(),
        ],
        "recording",
    )?;
    drop(fixture);
    let lines = read_folded(&out)?;
    let sum = |name: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l.frames.iter().any(|f| f == name))
            .map(|l| l.count)
            .sum()
    };
    let (three, one) = (sum("work_three"), sum("work_one"));
    let share = three as f64 / (three + one).max(1) as f64;
    let samples = total(&lines);
    let chain = lines.iter().any(|l| {
        let at = |name: &str| l.frames.iter().position(|f| f == name);
        matches!(
            (at("main"), at("work_three"), at("work_unit")),
            (Some(m), Some(t), Some(u)) if m < t && t < u
        )
    });
    let only_split = lines.iter().all(|l| l.comm == "split");
    let attach_ms = run.attach.map(|d| d.as_millis() as u64);
    // What the daemon kept after attaching differs by kernel (CAP_BPF before 6.5).
    let kept = run
        .stderr
        .lines()
        .find(|l| l.contains("dropped every other capability"))
        .and_then(|l| l.split_once("kept="))
        .map(|(_, caps)| caps.trim().to_string());
    let cap_bpf_kept = kept.as_deref().map(|caps| caps.contains("CAP_BPF"));
    // 4 s at 99 Hz of one busy thread is ~396 samples; the host tests accept 150.
    let ok = (0.60..=0.90).contains(&share) && samples >= 150 && chain && only_split;
    Ok(Outcome::new(
        ok,
        format!(
            "work_three {:.1}% ({three} vs {one} samples, {samples} in all), main;work_three;work_unit chain {}, only split {only_split}, attached after {} ms, capabilities kept after attach: {}",
            share * 100.0,
            if chain { "walked" } else { "MISSING" },
            attach_ms.map_or("?".into(), |ms| ms.to_string()),
            kept.as_deref().unwrap_or("(not logged)"),
        ),
        json!({
            "attach_ms": attach_ms,
            "cap_bpf_kept": cap_bpf_kept,
            "work_three_pct": (share * 1000.0).round() / 10.0,
            "split_samples": samples,
        }),
    ))
}

/// `record --pid` of the syscall-heavy `reader`: at least half the samples in the kernel, and
/// a kernel read path (leaf first in the kernel, then read_loop, then main).
fn kernel_frames(paths: &Paths) -> Result<Outcome> {
    let fixture = Fixture::spawn(&paths.fixtures.join("reader"), &["30"])?;
    let out = paths.work.join("reader.folded");
    let pid = fixture.pid();
    profilerd(
        paths,
        "reader",
        &[
            "record",
            "--pid",
            &pid,
            "--duration",
            "3s",
            "--format",
            "folded",
            "-o",
            out.to_str().unwrap(),
        ],
        "recording",
    )?;
    drop(fixture);
    let lines = read_folded(&out)?;
    let is_kernel = |f: &str| f.ends_with("_[k]");
    let in_kernel: Vec<&Folded> = lines
        .iter()
        .filter(|l| l.frames.last().is_some_and(|f| is_kernel(f)))
        .collect();
    let kernel_samples: u64 = in_kernel.iter().map(|l| l.count).sum();
    let samples = total(&lines);
    let names: BTreeSet<&str> = lines
        .iter()
        .flat_map(|l| l.frames.iter())
        .filter(|f| is_kernel(f))
        .map(String::as_str)
        .collect();
    // Root first here: main, read_loop, then only kernel frames down to the leaf.
    let read_path = in_kernel.iter().any(|l| {
        let main = l.frames.iter().position(|f| f == "main");
        let read_loop = l.frames.iter().position(|f| f == "read_loop");
        let first_kernel = l.frames.iter().position(|f| is_kernel(f));
        let kernel_read = l.frames.iter().any(|f| is_kernel(f) && f.contains("read"));
        matches!(
            (main, read_loop, first_kernel),
            (Some(m), Some(r), Some(k)) if m < r && r < k
        ) && kernel_read
            && l.frames[first_kernel.unwrap()..]
                .iter()
                .all(|f| is_kernel(f))
    });
    let share = kernel_samples as f64 / samples.max(1) as f64;
    let ok = kernel_samples * 2 >= samples && samples > 0 && read_path;
    Ok(Outcome::new(
        ok,
        format!(
            "{kernel_samples} of {samples} samples in the kernel ({:.0}%), {} distinct kernel frames, read path under read_loop {}",
            share * 100.0,
            names.len(),
            if read_path { "seen" } else { "MISSING" },
        ),
        json!({
            "kernel_pct": (share * 100.0).round(),
            "kernel_frames": names.len(),
            "kernel_read_path": read_path,
        }),
    ))
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup` in the guests, `/sys/fs/cgroup/unified` on a
/// hybrid host).
fn cgroup2_mount() -> Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .context("no cgroup2 hierarchy is mounted")
}

/// Removes a child cgroup once its processes are gone (they are killed before this runs).
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `record --cgroup` of a child cgroup holding one of two busy processes: only that one
/// appears. The one inside runs under another name, so the folded lines (which carry the
/// process name, not the pid) tell them apart.
fn cgroup_filter(paths: &Paths) -> Result<Outcome> {
    let name = format!("profilerd-kernel-check-{}", std::process::id());
    let group = Cgroup(cgroup2_mount()?.join(&name));
    fs::create_dir(&group.0)
        .with_context(|| format!("cannot create the cgroup {}", group.0.display()))?;
    let inside_binary = paths.work.join("cgsplit");
    fs::copy(paths.fixtures.join("split"), &inside_binary)?;
    let outside = Fixture::spawn(&paths.fixtures.join("split"), &["30"])?;
    let inside = Fixture::spawn(&inside_binary, &["30"])?;
    fs::write(group.0.join("cgroup.procs"), inside.pid())
        .context("cannot move the fixture into the cgroup")?;
    let out = paths.work.join("cgroup.folded");
    let selector = format!("/{name}");
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
    let lines = read_folded(&out)?;
    let count = |comm: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l.comm == comm)
            .map(|l| l.count)
            .sum()
    };
    let (inside, outside) = (count("cgsplit"), count("split"));
    let others = total(&lines) - inside - outside;
    let ok = inside > 50 && outside == 0 && others == 0;
    Ok(Outcome::new(
        ok,
        format!("{inside} samples of the process inside, {outside} of the one outside, {others} of others"),
        json!({ "cgroup_inside": inside, "cgroup_outside": outside + others }),
    ))
}

/// `run` (triggered mode) over the `spike` fixture: a light marker through the warm-up, then
/// a burn. Exactly one CPU profile is kept, with the burn and the seconds before it.
fn triggered_profile(paths: &Paths) -> Result<Outcome> {
    // 12 s light marker (warm-up), 3 s burn, 3 s light, 3 s burn inside the cooldown.
    let fixture = Fixture::spawn(&paths.fixtures.join("spike"), &["12", "3", "3", "3"])?;
    let pid = fixture.pid();
    let run = profilerd(
        paths,
        "trigger",
        &[
            "run",
            "--pid",
            &pid,
            "--pre-trigger",
            "10s",
            "--post-trigger",
            "2s",
            "--upload-interval",
            "5s",
            "--dump-dir",
            "kept",
            "--duration",
            "24s",
            "--listen",
            "off",
        ],
        "triggered mode",
    )?;
    drop(fixture);
    let kept = paths.work.join("kept");
    let mut files: Vec<String> = fs::read_dir(&kept)
        .map(|dir| {
            dir.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let profiles: Vec<&String> = files.iter().filter(|f| f.ends_with(".pb.gz")).collect();
    let fired = run.stderr.matches("trigger fired").count();
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
        .map(|p| fs::read_to_string(kept.join(p.replace(".pb.gz", ".svg"))).unwrap_or_default())
        .unwrap_or_default();
    let burn = svg.contains("burn_cpu");
    let before = svg.contains("pre_spike_marker");
    let ok = profiles.len() == 1
        && profiles[0].starts_with("cpu.")
        && fired == 1
        && samples > 100
        && burn
        && before;
    Ok(Outcome::new(
        ok,
        format!(
            "{} kept ({}), {fired} firing, {samples} samples over {window}, burn_cpu {burn}, pre_spike_marker {before}",
            profiles.len(),
            files.join(" "),
        ),
        json!({
            "trigger_kept": profiles.len(),
            "trigger_samples": samples,
            "trigger_ok": ok,
        }),
    ))
}

/// What a non-root daemon is given: loading and attaching, plus what symbolizing needs.
const NON_ROOT_CAPS: &str =
    "+bpf,+perfmon,+sys_ptrace,+syslog,+dac_read_search,+checkpoint_restore";

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// `record --pid` as uid 65534 holding CAP_BPF and CAP_PERFMON (the README's setcap set-up).
/// Debian's kernels default to perf_event_paranoid 3, where CAP_PERFMON does not open perf
/// events: there profilerd must refuse at start-up naming the sysctl, and (in a guest, where
/// changing it harms nobody) work once it is 2.
fn without_root(paths: &Paths) -> Result<Outcome> {
    let level: i32 = fs::read_to_string(PARANOID)?.trim().parse()?;
    let dir = paths.work.join("non-root");
    fs::create_dir_all(&dir)?;
    // The unprivileged daemon writes its profile here.
    Command::new("chmod").arg("0777").arg(&dir).status()?;
    let record = |name: &str| -> Result<(bool, String, u64)> {
        let fixture = Fixture::spawn(&paths.fixtures.join("split"), &["30"])?;
        let out = dir.join(format!("{name}.folded"));
        let output = Command::new(&paths.setpriv)
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["--inh-caps", NON_ROOT_CAPS, "--ambient-caps", NON_ROOT_CAPS])
            .arg(&paths.profilerd)
            .args(["record", "--pid", &fixture.pid(), "--duration", "2s"])
            .args(["--format", "folded", "-o"])
            .arg(&out)
            .current_dir(&dir)
            .output()
            .with_context(|| format!("cannot start {}", paths.setpriv.display()))?;
        drop(fixture);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let samples = read_folded(&out).map(|l| total(&l)).unwrap_or(0);
        Ok((output.status.success(), stderr, samples))
    };
    if level < 3 {
        let (ok, stderr, samples) = record("paranoid")?;
        let ok = ok && samples > 50;
        return Ok(Outcome::new(
            ok,
            format!(
                "perf_event_paranoid {level}: {samples} samples as uid 65534 with CAP_BPF and CAP_PERFMON{}",
                if ok { String::new() } else { format!("; stderr:\n{}", tail(&stderr, 10)) }
            ),
            json!({ "non_root": if ok { "works" } else { "FAILS" } }),
        ));
    }
    let (refused_ok, refused_stderr, _) = record("paranoid")?;
    let named = !refused_ok && refused_stderr.contains("perf_event_paranoid=2");
    if !paths.guest {
        return Ok(Outcome::new(
            named,
            format!(
                "perf_event_paranoid {level}: refused with the fix named: {named} (not lowered on a host)"
            ),
            json!({ "non_root": if named { "refused at 3, fix named" } else { "FAILS" } }),
        ));
    }
    fs::write(PARANOID, "2")?;
    let lowered = record("lowered");
    fs::write(PARANOID, level.to_string())?;
    let (ok, stderr, samples) = lowered?;
    let ok = named && ok && samples > 50;
    Ok(Outcome::new(
        ok,
        format!(
            "perf_event_paranoid {level}: refused with the fix named: {named}; at 2: {samples} samples as uid 65534 with CAP_BPF and CAP_PERFMON{}",
            if ok {
                String::new()
            } else {
                format!("; stderr:\n{}\n{}", tail(&refused_stderr, 5), tail(&stderr, 10))
            }
        ),
        json!({ "non_root": if ok { "refused at 3, works at 2" } else { "FAILS" } }),
    ))
}
