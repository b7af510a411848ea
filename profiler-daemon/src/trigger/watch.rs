//! Evaluates the trigger rules once per collection for every target: each sampled process,
//! and each `--cgroup` as a whole.
//!
//! CPU comes from the BPF sample counts (no file read). Named targets (`--pid`, pid sections,
//! cgroups) are watched from the daemon's start, sampled or not; any other process from its
//! first sample, with the collections before it as 0% CPU. `/proc` is read every collection
//! for named processes, and for the others only when they ran in the interval or every
//! [`REFRESH`], so idle processes cost almost nothing.

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    aggregate::Window,
    process::procfs::{read_stat, read_statm_resident, CgroupPaths},
    process::ProcessInfo,
    targets::{section_for, Section},
    trigger::{
        limits::{denominators, CgroupRoots, Denominators, Host},
        rules::{Scene, TargetState, Values},
    },
    types::{CgroupTarget, Metric, Rules},
};

/// How often an idle target's memory and threads are re-read.
const REFRESH: Duration = Duration::from_secs(30);
/// How often cgroup limits are re-read.
const LIMITS_REFRESH: Duration = Duration::from_secs(60);

/// A target of the rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetId {
    Process(u32),
    /// A configured cgroup, watched as a whole. Keyed by the cgroup itself, so that a reload
    /// that adds or removes cgroups keeps the history of the others.
    Cgroup(CgroupTarget),
}

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub rules: Rules,
    pub cores_flag: Option<u64>,
    pub memory_flag: Option<u64>,
    pub frequency: u64,
    /// Whether single processes are targets (no `--cgroup`, or `--pid` given as well).
    pub processes: bool,
    /// Processes named by pid (`--pid`, pid sections): targets from the daemon's start, with
    /// memory and threads read every collection.
    pub pids: BTreeSet<u32>,
    /// A process never watched on its own: the daemon itself, unless named with `--pid`.
    /// Its CPU follows the work the others cause (symbolizing, encoding a kept profile), so
    /// watching it would keep profiles of the profiler, each raising its CPU again.
    pub skip_pid: Option<u32>,
    pub cgroups: Vec<CgroupTarget>,
    /// Most targets tracked at once.
    pub max_targets: usize,
    /// `[[target]]` sections: their processes get the section's rules; a cgroup section is
    /// one target for all its processes.
    pub sections: Vec<Section>,
}

impl WatchConfig {
    /// Every cgroup watched as a whole: `--cgroup`s, then cgroup sections.
    fn watched_cgroups(&self) -> impl Iterator<Item = (&CgroupTarget, String, Rules)> + '_ {
        let global = self
            .cgroups
            .iter()
            .map(|c| (c, c.relative.clone(), self.rules));
        let sections = self.sections.iter().filter_map(|s| {
            s.cgroup()
                .map(|c| (c, s.name.clone(), s.rules(&self.rules)))
        });
        global.chain(sections)
    }
}

struct Entry {
    name: String,
    /// The rules this target is held to (global, or its section's).
    rules: Rules,
    state: TargetState,
    limits: Denominators,
    limits_at: Instant,
    read_at: Option<Instant>,
    rss: u64,
    threads: u64,
}

/// A target as one collection saw it.
struct Seen {
    samples: u64,
    /// Page-fault and thread-creation samples: its memory or its threads changed.
    changes: u64,
    name: String,
    rules: Rules,
    /// The process's start time (clock ticks since boot); None for a cgroup.
    started: Option<u64>,
}

impl Seen {
    fn idle(name: String, rules: Rules) -> Self {
        Self {
            samples: 0,
            changes: 0,
            name,
            rules,
            started: None,
        }
    }
}

/// A rule (or several) fired on a target.
#[derive(Clone, Debug)]
pub struct Firing {
    pub target: TargetId,
    pub name: String,
    pub scenes: Vec<Scene>,
    /// The target's values of the last collections (the rules' history), oldest first, the
    /// firing one last.
    pub recent: Vec<Values>,
    /// The collect interval: how far apart `recent`'s values are.
    pub interval: Duration,
    /// The end of the interval whose values fired the rules.
    pub slice_end: SystemTime,
}

pub struct Watcher {
    config: WatchConfig,
    host: Host,
    roots: CgroupRoots,
    entries: HashMap<TargetId, Entry>,
    /// Targets dropped since the last [`Watcher::take_gone`] (at most one tick's worth).
    gone: Vec<TargetId>,
    /// `/proc` and cgroup files read, for the cost counters.
    pub file_reads: u64,
    /// Targets not tracked because `max_targets` was reached.
    pub dropped_targets: u64,
    /// Collections since the daemon started (reloads included).
    collections: u64,
}

/// RSS in bytes and thread count of a live process.
fn rss_and_threads(pid: u32) -> Option<(u64, u64)> {
    let resident = read_statm_resident(pid)?;
    let threads = read_stat(pid)?.threads;
    Some((resident * crate::process::page_size(), threads))
}

/// Every pid in a cgroup directory and its descendants.
fn cgroup_pids(dir: &PathBuf, out: &mut Vec<u32>, reads: &mut u64) {
    *reads += 1;
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_pids(&entry.path(), out, reads);
            }
        }
    }
}

impl Watcher {
    pub fn new(config: WatchConfig) -> Self {
        Self {
            config,
            host: Host::read(),
            roots: CgroupRoots::discover(),
            entries: HashMap::new(),
            file_reads: 0,
            dropped_targets: 0,
            gone: Vec::new(),
            collections: 0,
        }
    }

    fn limits(&mut self, target: &TargetId) -> Denominators {
        let paths = match target {
            TargetId::Process(pid) => {
                self.file_reads += 1;
                CgroupPaths::of_pid(*pid)
            }
            TargetId::Cgroup(cgroup) => Some(CgroupPaths {
                v2: cgroup.relative.clone(),
                ..Default::default()
            }),
        };
        denominators(
            self.host,
            self.config.cores_flag,
            self.config.memory_flag,
            &self.roots,
            paths.as_ref(),
        )
    }

    /// New rules and targets (a reload). Targets that stay keep their history and cooldowns;
    /// targets no longer configured are dropped.
    pub fn reconfigure(&mut self, config: WatchConfig) {
        let gone = &mut self.gone;
        self.entries.retain(|target, _| {
            let stays = match target {
                TargetId::Process(_) => config.processes,
                TargetId::Cgroup(cgroup) => config.watched_cgroups().any(|(c, _, _)| c == cgroup),
            };
            if !stays {
                gone.push(target.clone());
            }
            stays
        });
        // Limits may depend on --cpu-cores / --memory-limit: re-read them at the next tick.
        let stale = Instant::now()
            .checked_sub(LIMITS_REFRESH * 2)
            .unwrap_or_else(Instant::now);
        for entry in self.entries.values_mut() {
            entry.limits_at = stale;
        }
        self.config = config;
    }

    /// One collection: `slice` holds the samples drained since the previous one.
    pub fn tick(&mut self, slice: &Window, now: Instant) -> Vec<Firing> {
        let interval_ns = slice.duration.as_nanos().max(1) as u64;
        let period_ns = 1_000_000_000 / self.config.frequency.max(1);
        let samples = self.count_samples(slice);
        self.admit(&samples, slice.duration, now);
        let mut firings = Vec::new();
        let mut gone = Vec::new();
        let targets: Vec<TargetId> = self.entries.keys().cloned().collect();
        for target in targets {
            let (sampled, faulted) = samples
                .get(&target)
                .map_or((0, 0), |s| (s.samples, s.changes));
            if !self.refresh(&target, sampled + faulted, now) {
                gone.push(target);
                continue;
            }
            let Some(entry) = self.entries.get_mut(&target) else {
                continue;
            };
            let cpu_ns = sampled * period_ns;
            // CPU time over (interval x cores) in percent; cores in thousandths.
            let cpu = u128::from(cpu_ns) * 100_000
                / (u128::from(interval_ns) * u128::from(entry.limits.millicores));
            let values = Values {
                cpu: cpu as u64,
                mem: entry.rss * 100 / entry.limits.memory,
                thread: entry.threads,
            };
            let scenes = entry.state.observe(values, &entry.rules, now);
            if !scenes.is_empty() {
                firings.push(Firing {
                    target: target.clone(),
                    name: entry.name.clone(),
                    scenes,
                    recent: entry.state.recent(),
                    interval: slice.duration,
                    slice_end: slice.start + slice.duration,
                });
            }
        }
        for target in gone {
            self.entries.remove(&target);
            self.gone.push(target);
        }
        self.collections += 1;
        firings.sort_by(|a, b| a.target.cmp(&b.target));
        firings
    }

    /// A target's values in the last collection, while it is watched.
    pub fn last_values(&self, target: &TargetId) -> Option<Values> {
        self.entries.get(target).map(|e| e.state.last)
    }

    /// Samples per target in `slice`, with each target's name and rules: every sampled
    /// process (or its cgroup section as one), every watched cgroup (0 when idle).
    fn count_samples(&self, slice: &Window) -> HashMap<TargetId, Seen> {
        let global = self.config.rules;
        let mut samples: HashMap<TargetId, Seen> = HashMap::new();
        // CPU samples, then page-fault and thread-creation samples: a process seen only
        // faulting or starting threads is a target too, and its memory and threads are read
        // again.
        let cpu = slice.processes.iter().map(|p| (p, p.samples, 0));
        let changes = slice.memory.iter().chain(&slice.threads);
        for (process, cpu, changed) in cpu.chain(changes.map(|p| (p, 0, p.samples))) {
            let section = section_for(&self.config.sections, &process.info);
            let mut add = |target: TargetId, idle: &dyn Fn() -> Seen| {
                let seen = samples.entry(target).or_insert_with(idle);
                seen.samples += cpu;
                seen.changes += changed;
            };
            match section.and_then(|s| s.cgroup().map(|c| (s, c))) {
                // A cgroup section watches its processes as one.
                Some((section, cgroup)) => add(TargetId::Cgroup(cgroup.clone()), &|| {
                    Seen::idle(section.name.clone(), section.rules(&global))
                }),
                None if self.config.processes && self.config.skip_pid != Some(process.info.pid) => {
                    add(TargetId::Process(process.info.pid), &|| Seen {
                        started: Some(process.info.start_time),
                        ..Seen::idle(
                            format!("{}-{}", process.info.comm, process.info.pid),
                            section.map_or(global, |s| s.rules(&global)),
                        )
                    })
                }
                None => {}
            }
            for cgroup in &self.config.cgroups {
                if cgroup.contains(&process.info.cgroup) {
                    add(TargetId::Cgroup(cgroup.clone()), &|| {
                        Seen::idle(cgroup.relative.clone(), global)
                    });
                }
            }
        }
        for (cgroup, name, rules) in self.config.watched_cgroups() {
            samples
                .entry(TargetId::Cgroup(cgroup.clone()))
                .or_insert_with(|| Seen::idle(name, rules));
        }
        for &pid in &self.config.pids {
            let target = TargetId::Process(pid);
            if samples.contains_key(&target) {
                continue;
            }
            if let Some(entry) = self.entries.get(&target) {
                samples.insert(target, Seen::idle(entry.name.clone(), entry.rules));
            } else if let Some(seen) = self.named_process(pid) {
                samples.insert(target, seen);
            }
        }
        samples
    }

    /// Name and rules of a named process not sampled yet; None when it is not a target of
    /// its own (gone, the daemon itself, or watched with its cgroup section).
    fn named_process(&self, pid: u32) -> Option<Seen> {
        if !self.config.processes || self.config.skip_pid == Some(pid) {
            return None;
        }
        let info = ProcessInfo::read_identity(pid)?;
        let section = section_for(&self.config.sections, &info);
        if section.is_some_and(|s| s.cgroup().is_some()) {
            return None;
        }
        let rules = section.map_or(self.config.rules, |s| s.rules(&self.config.rules));
        Some(Seen {
            started: Some(info.start_time),
            ..Seen::idle(format!("{}-{}", info.comm, pid), rules)
        })
    }

    /// New targets get an entry (up to `max_targets`, the rest counted); known ones take the
    /// rules in force, keeping their history. A new target's history starts with a 0% CPU
    /// point for each collection since the daemon started or, if later, since the process
    /// started: like holmes in the process, which warms up once after its start.
    fn admit(&mut self, samples: &HashMap<TargetId, Seen>, interval: Duration, now: Instant) {
        for (target, seen) in samples {
            let (name, rules) = (&seen.name, &seen.rules);
            if let Some(entry) = self.entries.get_mut(target) {
                // A reload may have changed the rules; the history stays.
                entry.rules = *rules;
                continue;
            }
            if self.entries.len() >= self.config.max_targets {
                self.dropped_targets += 1;
                continue;
            }
            let limits = self.limits(target);
            let entry = Entry {
                name: name.clone(),
                rules: *rules,
                state: TargetState::first_seen_after(self.collections_before(seen, interval)),
                limits,
                limits_at: now,
                read_at: None,
                rss: 0,
                threads: 0,
            };
            self.entries.insert(target.clone(), entry);
        }
    }

    /// Collections before this tick in which `seen` existed and so had no sample: every one
    /// since the daemon's start, or the whole intervals since the process started.
    fn collections_before(&self, seen: &Seen, interval: Duration) -> u64 {
        let Some(age) = seen.started.and_then(crate::process::age) else {
            return self.collections;
        };
        let whole = age.as_nanos() / interval.as_nanos().max(1);
        self.collections.min(whole.min(u128::from(u64::MAX)) as u64)
    }

    /// Re-reads a target's limits when they are old, and its memory and threads when it ran,
    /// faulted pages in, or they are stale. False when the target is gone.
    fn refresh(&mut self, target: &TargetId, events: u64, now: Instant) -> bool {
        let Some((limits_at, read_at)) = self.entries.get(target).map(|e| (e.limits_at, e.read_at))
        else {
            return false;
        };
        if now.duration_since(limits_at) > LIMITS_REFRESH {
            let limits = self.limits(target);
            if let Some(entry) = self.entries.get_mut(target) {
                entry.limits = limits;
                entry.limits_at = now;
            }
        }
        let named = matches!(target, TargetId::Process(pid) if self.config.pids.contains(pid));
        let stale = named || read_at.is_none_or(|t| now.duration_since(t) > REFRESH);
        if events == 0 && !stale {
            return true;
        }
        let read = match target {
            TargetId::Process(pid) => {
                self.file_reads += 2;
                rss_and_threads(*pid)
            }
            TargetId::Cgroup(cgroup) => {
                let mut pids = Vec::new();
                cgroup_pids(&cgroup.dir, &mut pids, &mut self.file_reads);
                self.file_reads += 2 * pids.len() as u64;
                Some(
                    pids.iter()
                        .filter_map(|&p| rss_and_threads(p))
                        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
                )
            }
        };
        match (read, self.entries.get_mut(target)) {
            (Some((rss, threads)), Some(entry)) => {
                entry.rss = rss;
                entry.threads = threads;
                entry.read_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The busiest targets with their current values against the thresholds.
    pub fn status(&self, top: usize) -> String {
        let mut entries: Vec<&Entry> = self.entries.values().collect();
        entries.sort_by_key(|e| std::cmp::Reverse((e.state.last.cpu, e.state.last.mem)));
        // The value, then the history its rule compares with, then the rule's thresholds.
        let against = |e: &Entry, metric: Metric| {
            let (avg, points) = e.state.history(metric);
            match e.rules.get(metric) {
                Some(rule) => format!(
                    "avg {avg} of {points}, min {} diff {} abs {}",
                    rule.min, rule.diff, rule.abs
                ),
                None => format!("avg {avg} of {points}, off"),
            }
        };
        let busiest: Vec<String> = entries
            .iter()
            .take(top)
            .map(|e| {
                format!(
                    "{}: cpu {}% ({}), mem {}% ({}), threads {} ({}){}",
                    e.name,
                    e.state.last.cpu,
                    against(e, Metric::Cpu),
                    e.state.last.mem,
                    against(e, Metric::Mem),
                    e.state.last.thread,
                    against(e, Metric::Thread),
                    if e.state.warmed_up() {
                        ""
                    } else {
                        ", warming up"
                    }
                )
            })
            .collect();
        format!(
            "{} targets watched; busiest: {}",
            self.entries.len(),
            if busiest.is_empty() {
                "none".into()
            } else {
                busiest.join("; ")
            }
        )
    }

    /// The targets found gone since the last call (a process that exited, a cgroup removed):
    /// their entries are dropped, and the captures forget them too.
    pub fn take_gone(&mut self) -> Vec<TargetId> {
        std::mem::take(&mut self.gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_targets_contain_their_descendants_only() {
        let target = CgroupTarget {
            dir: PathBuf::from("/x"),
            relative: "/system.slice/app.service".into(),
        };
        assert!(target.contains("/system.slice/app.service"));
        assert!(target.contains("/system.slice/app.service/worker"));
        assert!(!target.contains("/system.slice/app.service2"));
        assert!(!target.contains("/system.slice"));
        let root = CgroupTarget {
            dir: PathBuf::from("/x"),
            relative: "/".into(),
        };
        assert!(root.contains("/anything"));
    }

    #[test]
    fn own_process_rss_and_threads_are_read() {
        let (rss, threads) = rss_and_threads(std::process::id()).unwrap();
        assert!(rss > 1 << 20);
        assert!(threads >= 1);
    }

    fn window(pids: &[u32]) -> Window {
        busy_window(pids, 5)
    }

    /// One second in which each of `pids` was sampled `samples` times (at 99 Hz).
    fn busy_window(pids: &[u32], samples: u64) -> Window {
        let processes = pids
            .iter()
            .map(|&pid| crate::aggregate::tests::one_frame_profile(pid, "p", "f", samples))
            .collect();
        crate::aggregate::tests::cpu_window(std::time::SystemTime::now(), processes)
    }

    fn config(processes: bool) -> WatchConfig {
        WatchConfig {
            rules: Rules {
                cpu: None,
                mem: None,
                thread: None,
                cpu_max: 0,
            },
            cores_flag: Some(1000),
            memory_flag: Some(1 << 30),
            frequency: 99,
            processes,
            pids: BTreeSet::new(),
            skip_pid: None,
            cgroups: Vec::new(),
            max_targets: 16,
            sections: Vec::new(),
        }
    }

    #[test]
    fn exited_and_unwatched_targets_are_handed_on_as_gone() {
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        let exited_pid = exited.id();
        exited.wait().unwrap();
        let own = std::process::id();
        let mut watcher = Watcher::new(config(true));
        watcher.tick(&window(&[own, exited_pid]), Instant::now());
        assert_eq!(watcher.take_gone(), [TargetId::Process(exited_pid)]);
        assert!(watcher.take_gone().is_empty(), "handed on once");
        // A reload that stops watching single processes drops the one still alive.
        watcher.reconfigure(config(false));
        assert_eq!(watcher.take_gone(), [TargetId::Process(own)]);
    }

    #[test]
    fn the_skipped_process_is_no_target() {
        let own = std::process::id();
        let mut watcher = Watcher::new(WatchConfig {
            skip_pid: Some(own),
            ..config(true)
        });
        watcher.tick(&window(&[own]), Instant::now());
        assert_eq!(watcher.status(5), "0 targets watched; busiest: none");
    }

    #[test]
    fn a_named_process_is_watched_before_its_first_sample() {
        let own = std::process::id();
        let mut watcher = Watcher::new(WatchConfig {
            pids: BTreeSet::from([own]),
            ..config(true)
        });
        watcher.tick(&window(&[]), Instant::now());
        let status = watcher.status(5);
        assert!(status.starts_with("1 targets watched"), "{status}");
        assert!(
            status.contains(&format!("-{own}: cpu 0% (avg 0 of 1, off)")),
            "{status}"
        );
        // Its threads are read although it was not sampled.
        assert!(!status.contains("threads 0 "), "{status}");
    }

    /// A watcher with the test CPU rule, after `collections` collections of no sample.
    fn cpu_watcher_after(collections: usize) -> Watcher {
        let mut watcher = Watcher::new(WatchConfig {
            rules: Rules {
                cpu: Some(crate::types::TEST_RULE),
                ..config(true).rules
            },
            ..config(true)
        });
        for _ in 0..collections {
            assert!(watcher.tick(&window(&[]), Instant::now()).is_empty());
        }
        watcher
    }

    #[test]
    fn a_process_sampled_late_fires_on_its_first_busy_interval() {
        let own = std::process::id();
        let mut watcher = cpu_watcher_after(12);
        // 60 samples at 99 Hz in one second on one core: 60%, over min, under abs.
        let fired = watcher.tick(&busy_window(&[own], 60), Instant::now());
        assert_eq!(fired.len(), 1, "{}", watcher.status(5));
        assert_eq!(fired[0].scenes[0].metric, Metric::Cpu);
        assert_eq!((fired[0].scenes[0].cur, fired[0].scenes[0].avg), (60, 6));
    }

    #[test]
    fn a_process_started_after_the_warm_up_warms_up_from_its_start() {
        let own = std::process::id();
        let mut watcher = cpu_watcher_after(12);
        // A process that started a moment ago and is busy from its first interval: its
        // start-up, not a quiet process that spikes, so it warms up as holmes in it would.
        let uptime = fs::read_to_string("/proc/uptime").unwrap();
        let seconds: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: sysconf has no memory arguments.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let started = (seconds * ticks) as u64;
        let busy = |samples: u64| {
            let mut window = busy_window(&[own], samples);
            window.processes[0].info.start_time = started;
            window
        };
        for _ in 0..9 {
            assert!(watcher.tick(&busy(20), Instant::now()).is_empty());
        }
        assert!(watcher.status(5).contains("warming up"));
        // Warm, then a spike against its own history (20% x 9 and 60%: avg 24).
        let fired = watcher.tick(&busy(60), Instant::now());
        assert_eq!(fired.len(), 1, "{}", watcher.status(5));
        assert_eq!(fired[0].scenes[0].avg, 24);
    }

    #[test]
    fn a_process_seen_only_faulting_pages_in_is_a_target_with_its_memory_read() {
        let own = std::process::id();
        let mut watcher = Watcher::new(config(true));
        let mut faulting = window(&[]);
        faulting.memory = busy_window(&[own], 3).processes;
        watcher.tick(&faulting, Instant::now());
        let status = watcher.status(5);
        // No CPU sample, yet watched, with its threads (and memory) read.
        assert!(status.contains(": cpu 0% "), "{status}");
        assert!(!status.contains("threads 0 "), "{status}");
    }
}
