//! Aggregates drained samples per process (tgid) into symbolized stacks with counts. In: the
//! sampler's [`Drained`] maps and a resolver of names. Out: a [`Window`] of
//! [`ProcessProfile`]s, bounded by `--max-stacks`. [`Pipeline`] runs sample -> symbolize ->
//! aggregate on one thread for `record` and `run`.

mod pipeline;

pub use pipeline::{Accounting, Pipeline, PipelineConfig};

use rustc_hash::FxHashMap;
use std::time::{Duration, SystemTime};

use profiler_common::{SampleKey, KIND_MEMORY, KIND_OFFCPU, KIND_THREADS};

use crate::{
    process::ProcessInfo,
    sample::{Drained, StackRef},
    symbolize::{FrameKind, Location, Symbols},
};

/// Names frames: the aggregation stage asks for them, [`Symbols`] or a test double answers.
pub trait Resolve {
    fn process(&mut self, pid: u32) -> ProcessInfo;
    fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Location>;
    fn kernel(&mut self, addrs: &[u64]) -> Vec<Location>;
}

impl Resolve for Symbols {
    fn process(&mut self, pid: u32) -> ProcessInfo {
        Symbols::process(self, pid)
    }
    fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Location> {
        Symbols::user(self, pid, addrs)
    }
    fn kernel(&mut self, addrs: &[u64]) -> Vec<Location> {
        Symbols::kernel(self, addrs)
    }
}

/// The samples of one process over one window.
#[derive(Clone, Debug, Default)]
pub struct ProcessProfile {
    pub info: ProcessInfo,
    pub locations: Vec<Location>,
    /// Stacks as indices into `locations`, leaf first, with their sample counts.
    pub stacks: FxHashMap<Vec<u32>, u64>,
    pub samples: u64,
}

impl ProcessProfile {
    /// Adds `other`'s samples (the same process, another interval) to this profile.
    pub fn merge(&mut self, other: &ProcessProfile) {
        if self.locations.is_empty() && self.stacks.is_empty() {
            self.info = other.info.clone();
        }
        let mut index: FxHashMap<(FrameKind, u64, &str), u32> = FxHashMap::default();
        for (i, location) in self.locations.iter().enumerate() {
            index.insert(
                (location.kind, location.address, location.function()),
                i as u32,
            );
        }
        let mut added = Vec::new();
        let mut remap = Vec::with_capacity(other.locations.len());
        for location in &other.locations {
            let key = (location.kind, location.address, location.function());
            let next = (self.locations.len() + added.len()) as u32;
            let i = *index.entry(key).or_insert_with(|| {
                added.push(location.clone());
                next
            });
            remap.push(i);
        }
        self.locations.extend(added);
        for (stack, count) in &other.stacks {
            let stack: Vec<u32> = stack.iter().map(|&i| remap[i as usize]).collect();
            *self.stacks.entry(stack).or_insert(0) += count;
        }
        self.samples += other.samples;
    }

    /// Rough heap footprint, for the history bound.
    pub fn approx_bytes(&self) -> usize {
        let locations: usize = self.locations.iter().map(|l| 64 + 32 * l.lines.len()).sum();
        let stacks: usize = self.stacks.keys().map(|s| 48 + 4 * s.len()).sum();
        256 + locations + stacks
    }

    /// Stacks as function names, root first (for folded output and tests).
    pub fn folded(&self) -> Vec<(Vec<&str>, u64)> {
        self.stacks
            .iter()
            .map(|(stack, &count)| {
                let names = stack
                    .iter()
                    .rev()
                    .map(|&i| self.locations[i as usize].function())
                    .collect();
                (names, count)
            })
            .collect()
    }
}

/// All process profiles of one window.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: SystemTime,
    pub duration: Duration,
    pub frequency: u64,
    /// CPU profiles (`cpu-clock` samples).
    pub processes: Vec<ProcessProfile>,
    /// Memory-growth profiles (`page-faults` samples), when that source is on.
    pub memory: Vec<ProcessProfile>,
    /// Off-CPU profiles (counts are nanoseconds blocked), when that source is on.
    pub offcpu: Vec<ProcessProfile>,
    /// Thread-creation profiles (one count per thread created), when that source is on.
    pub threads: Vec<ProcessProfile>,
    /// Page faults per memory-growth sample (0: the source is off).
    pub fault_period: u64,
}

impl Window {
    /// Adds the profiles of `later`, the window that follows this one, process by process
    /// and kind by kind; this window then ends where `later` ends.
    pub fn absorb(&mut self, later: Window) {
        for (into, from) in [
            (&mut self.processes, later.processes),
            (&mut self.memory, later.memory),
            (&mut self.offcpu, later.offcpu),
            (&mut self.threads, later.threads),
        ] {
            let mut index: FxHashMap<u32, usize> = into
                .iter()
                .enumerate()
                .map(|(i, p)| (p.info.pid, i))
                .collect();
            for profile in from {
                match index.get(&profile.info.pid) {
                    Some(&i) => into[i].merge(&profile),
                    None => {
                        index.insert(profile.info.pid, into.len());
                        into.push(profile);
                    }
                }
            }
        }
        let end = later.start + later.duration;
        self.duration = end.duration_since(self.start).unwrap_or(self.duration);
        if later.fault_period != 0 {
            self.fault_period = later.fault_period;
        }
    }

    /// CPU samples.
    pub fn samples(&self) -> u64 {
        self.processes.iter().map(|p| p.samples).sum()
    }

    /// Memory-growth samples.
    pub fn memory_samples(&self) -> u64 {
        self.memory.iter().map(|p| p.samples).sum()
    }
}

#[derive(Default)]
struct ProcessAgg {
    profile: ProcessProfile,
    index: FxHashMap<(FrameKind, u64), u32>,
    pseudo: FxHashMap<&'static str, u32>,
}

impl ProcessAgg {
    fn pseudo(&mut self, name: &'static str, kind: FrameKind) -> u32 {
        let locations = &mut self.profile.locations;
        *self.pseudo.entry(name).or_insert_with(|| {
            locations.push(Location {
                kind,
                address: 0,
                vma: None,
                lines: vec![crate::symbolize::Line {
                    function: name.into(),
                    file: None,
                    line: 0,
                }],
            });
            (locations.len() - 1) as u32
        })
    }
}

/// Per-window aggregation with a bound on distinct stacks.
pub struct Aggregator {
    frequency: u64,
    max_stacks: usize,
    window_start: SystemTime,
    /// Per process and kind of sample ([`profiler_common::KIND_CPU`], ...).
    processes: FxHashMap<(u32, u32), ProcessAgg>,
    stacks: usize,
    /// Page faults per memory-growth sample (0: none are taken).
    fault_period: u64,
    /// Samples dropped because the window already held `max_stacks` distinct stacks (an
    /// off-CPU bucket counts as one).
    pub dropped_stack_limit: u64,
}

impl Aggregator {
    pub fn new(frequency: u64, max_stacks: usize, fault_period: u64) -> Self {
        Self {
            frequency,
            max_stacks,
            window_start: SystemTime::now(),
            processes: FxHashMap::default(),
            stacks: 0,
            fault_period,
            dropped_stack_limit: 0,
        }
    }

    /// Adds one drain's samples; returns how many samples were added (off-CPU buckets, whose
    /// counts are nanoseconds, are not samples).
    pub fn ingest(&mut self, drained: &Drained, resolver: &mut impl Resolve) -> u64 {
        let mut by_pid: FxHashMap<(u32, u32), Vec<&(SampleKey, u64)>> = FxHashMap::default();
        for sample in &drained.samples {
            let kind = sample.0.kind;
            by_pid
                .entry((sample.0.tgid, kind))
                .or_default()
                .push(sample);
        }
        let mut added = 0;
        for ((pid, kind), samples) in by_pid {
            let agg = self
                .processes
                .entry((pid, kind))
                .or_insert_with(|| ProcessAgg {
                    profile: ProcessProfile {
                        info: resolver.process(pid),
                        ..Default::default()
                    },
                    ..Default::default()
                });
            resolve_new_addresses(agg, pid, &samples, drained, resolver);
            // An off-CPU count is nanoseconds, not samples: one bucket counts as one.
            let samples_of = |count: u64| if kind == KIND_OFFCPU { 0 } else { count };
            for (key, count) in samples {
                let stack = build_stack(agg, key, drained);
                let known = agg.profile.stacks.contains_key(&stack);
                if !known && self.stacks >= self.max_stacks {
                    self.dropped_stack_limit += samples_of(*count).max(1);
                    continue;
                }
                if !known {
                    self.stacks += 1;
                }
                *agg.profile.stacks.entry(stack).or_insert(0) += count;
                agg.profile.samples += count;
                added += samples_of(*count);
            }
        }
        added
    }

    /// Ends the window at `end` and starts the next one.
    pub fn take_window(&mut self, end: SystemTime) -> Window {
        let start = std::mem::replace(&mut self.window_start, end);
        let (mut processes, mut memory) = (Vec::new(), Vec::new());
        let (mut offcpu, mut threads) = (Vec::new(), Vec::new());
        for ((_, kind), agg) in self.processes.drain() {
            match kind {
                KIND_MEMORY => memory.push(agg.profile),
                KIND_OFFCPU => offcpu.push(agg.profile),
                KIND_THREADS => threads.push(agg.profile),
                _ => processes.push(agg.profile),
            }
        }
        for profiles in [&mut processes, &mut memory, &mut offcpu, &mut threads] {
            profiles.sort_by_key(|p| p.info.pid);
        }
        self.stacks = 0;
        Window {
            start,
            duration: end.duration_since(start).unwrap_or_default(),
            frequency: self.frequency,
            processes,
            memory,
            offcpu,
            threads,
            fault_period: self.fault_period,
        }
    }

    /// Samples held in the current window.
    #[cfg(test)]
    pub fn pending_samples(&self) -> u64 {
        self.processes.values().map(|p| p.profile.samples).sum()
    }
}

/// Symbolizes, in one batch per kind, the addresses this window has not named yet.
fn resolve_new_addresses(
    agg: &mut ProcessAgg,
    pid: u32,
    samples: &[&(SampleKey, u64)],
    drained: &Drained,
    resolver: &mut impl Resolve,
) {
    let mut user = Vec::new();
    let mut kernel = Vec::new();
    for (key, _) in samples {
        for (stack, kind, out) in [
            (drained.user_stack(key), FrameKind::User, &mut user),
            (drained.kernel_stack(key), FrameKind::Kernel, &mut kernel),
        ] {
            if let StackRef::Ips(ips) = stack {
                out.extend(
                    lookup_addresses(kind, ips).filter(|ip| !agg.index.contains_key(&(kind, *ip))),
                );
            }
        }
    }
    for (kind, mut addrs) in [(FrameKind::User, user), (FrameKind::Kernel, kernel)] {
        addrs.sort_unstable();
        addrs.dedup();
        let locations = match kind {
            FrameKind::User => resolver.user(pid, &addrs),
            FrameKind::Kernel => resolver.kernel(&addrs),
        };
        for location in locations {
            agg.profile.locations.push(location);
            let index = (agg.profile.locations.len() - 1) as u32;
            let location = &agg.profile.locations[index as usize];
            agg.index.insert((location.kind, location.address), index);
        }
    }
}

/// The addresses a stack's frames are named by. Above the leaf, a user frame's address is a
/// return address, which may already be the next line, inlined function or even function
/// (after a call that does not return): its call instruction, one byte earlier, is what the
/// frame was executing, as perf and pprof name it.
fn lookup_addresses(kind: FrameKind, ips: &[u64]) -> impl Iterator<Item = u64> + '_ {
    ips.iter().enumerate().map(move |(i, &ip)| match kind {
        FrameKind::User if i > 0 => ip.saturating_sub(1),
        _ => ip,
    })
}

/// The stack of one sample as location indices, leaf (kernel) first.
fn build_stack(agg: &mut ProcessAgg, key: &SampleKey, drained: &Drained) -> Vec<u32> {
    let mut stack = Vec::new();
    for (found, kind) in [
        (drained.kernel_stack(key), FrameKind::Kernel),
        (drained.user_stack(key), FrameKind::User),
    ] {
        let name = match (found, kind) {
            (StackRef::Absent, _) => continue,
            (StackRef::Ips(ips), _) => {
                stack.extend(
                    lookup_addresses(kind, ips)
                        .filter_map(|ip| agg.index.get(&(kind, ip)).copied()),
                );
                continue;
            }
            (StackRef::Lost, _) => "[stack lost]",
            (StackRef::Unavailable, FrameKind::User) => "[user stack unavailable]",
            (StackRef::Unavailable, FrameKind::Kernel) => "[kernel stack unavailable]",
        };
        stack.push(agg.pseudo(name, kind));
    }
    if stack.is_empty() {
        stack.push(agg.pseudo("[no stack]", FrameKind::User));
    }
    stack
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::symbolize::Line;

    /// A process profile of `samples` samples in one stack of one frame, `function`.
    pub(crate) fn one_frame_profile(
        pid: u32,
        comm: &str,
        function: &str,
        samples: u64,
    ) -> ProcessProfile {
        ProcessProfile {
            info: ProcessInfo {
                pid,
                comm: comm.into(),
                ..Default::default()
            },
            locations: vec![loc(FrameKind::User, 1, function.to_string())],
            stacks: [(vec![0], samples)].into_iter().collect(),
            samples,
        }
    }

    /// A one-second window at 99 Hz from `start` holding the CPU profiles `processes`.
    pub(crate) fn cpu_window(start: SystemTime, processes: Vec<ProcessProfile>) -> Window {
        Window {
            start,
            duration: Duration::from_secs(1),
            frequency: 99,
            processes,
            memory: Vec::new(),
            offcpu: Vec::new(),
            threads: Vec::new(),
            fault_period: 0,
        }
    }

    /// `-EFAULT`: the task had no stack of that kind (kernel thread, or a sample taken in
    /// user mode for the kernel stack).
    const NO_STACK: i32 = -libc::EFAULT;

    /// Names every address `fn_<hex>` (kernel: `k_<hex>`), so tests need no real binaries.
    pub(crate) struct FakeResolver {
        pub user_calls: usize,
    }

    fn loc(kind: FrameKind, address: u64, name: String) -> Location {
        Location {
            kind,
            address,
            vma: None,
            lines: vec![Line {
                function: Arc::from(name),
                file: None,
                line: 0,
            }],
        }
    }

    impl Resolve for FakeResolver {
        fn process(&mut self, pid: u32) -> ProcessInfo {
            ProcessInfo {
                pid,
                comm: format!("comm{pid}"),
                ..Default::default()
            }
        }
        fn user(&mut self, _pid: u32, addrs: &[u64]) -> Vec<Location> {
            self.user_calls += 1;
            addrs
                .iter()
                .map(|&a| loc(FrameKind::User, a, format!("fn_{a:x}")))
                .collect()
        }
        fn kernel(&mut self, addrs: &[u64]) -> Vec<Location> {
            addrs
                .iter()
                .map(|&a| loc(FrameKind::Kernel, a, format!("k_{a:x}")))
                .collect()
        }
    }

    /// A key whose stacks are `user` and `kernel`: an id > 0, or a negated errno (< 0).
    fn key(tgid: u32, user: i32, kernel: i32) -> SampleKey {
        let stack = |id: i32| if id > 0 { id as u64 } else { 0 };
        let error = |id: i32| if id > 0 { 0 } else { id };
        SampleKey {
            tgid,
            tid: tgid,
            user_stack: stack(user),
            kernel_stack: stack(kernel),
            user_stack_error: error(user),
            kernel_stack_error: error(kernel),
            cgroup_id: 1,
            ..SampleKey::default()
        }
    }

    /// A batch holding each stack under its id, as a user and as a kernel stack.
    pub(crate) fn drained(samples: Vec<(SampleKey, u64)>, stacks: &[(i32, &[u64])]) -> Drained {
        let by_id: std::collections::HashMap<u64, Vec<u64>> = stacks
            .iter()
            .map(|(id, ips)| (*id as u64, ips.to_vec()))
            .collect();
        Drained {
            samples,
            user_stacks: by_id.clone(),
            kernel_stacks: by_id,
            ..Default::default()
        }
    }

    #[test]
    fn kernel_frames_sit_below_user_frames_and_counts_add_up() {
        let mut agg = Aggregator::new(99, 100, 0);
        let mut resolver = FakeResolver { user_calls: 0 };
        let batch = drained(
            vec![(key(7, 1, 2), 3), (key(7, 1, NO_STACK), 5)],
            &[(1, &[0x10, 0x20]), (2, &[0xff00])],
        );
        assert_eq!(agg.ingest(&batch, &mut resolver), 8);
        let window = agg.take_window(SystemTime::now());
        assert_eq!(window.processes.len(), 1);
        let profile = &window.processes[0];
        assert_eq!(profile.info.comm, "comm7");
        assert_eq!(profile.samples, 8);
        let mut folded = profile.folded();
        folded.sort();
        assert_eq!(
            folded,
            vec![
                // The caller's return address 0x20 is named by its call, at 0x1f.
                (vec!["fn_1f", "fn_10"], 5),
                (vec!["fn_1f", "fn_10", "k_ff00"], 3),
            ]
        );
    }

    #[test]
    fn merging_intervals_adds_counts_and_unifies_locations() {
        let mut agg = Aggregator::new(99, 100, 0);
        let mut resolver = FakeResolver { user_calls: 0 };
        agg.ingest(
            &drained(vec![(key(7, 1, NO_STACK), 2)], &[(1, &[0x10, 0x20])]),
            &mut resolver,
        );
        let first = agg.take_window(SystemTime::now());
        agg.ingest(
            &drained(
                vec![(key(7, 1, NO_STACK), 3), (key(7, 2, NO_STACK), 1)],
                &[(1, &[0x10, 0x20]), (2, &[0x30, 0x20])],
            ),
            &mut resolver,
        );
        let second = agg.take_window(SystemTime::now());
        let mut merged = ProcessProfile::default();
        merged.merge(&first.processes[0]);
        merged.merge(&second.processes[0]);
        assert_eq!(merged.info.comm, "comm7");
        assert_eq!(merged.samples, 6);
        assert_eq!(merged.locations.len(), 3, "0x10, 0x20, 0x30 once each");
        let mut folded = merged.folded();
        folded.sort();
        assert_eq!(
            folded,
            vec![(vec!["fn_1f", "fn_10"], 5), (vec!["fn_1f", "fn_30"], 1)]
        );
    }

    #[test]
    fn addresses_are_symbolized_once_per_window() {
        let mut agg = Aggregator::new(99, 100, 0);
        let mut resolver = FakeResolver { user_calls: 0 };
        let batch = drained(vec![(key(7, 1, NO_STACK), 1)], &[(1, &[0x10])]);
        agg.ingest(&batch, &mut resolver);
        agg.ingest(&batch, &mut resolver);
        assert_eq!(resolver.user_calls, 2, "second batch asks for nothing new");
        let window = agg.take_window(SystemTime::now());
        assert_eq!(window.processes[0].locations.len(), 1);
        assert_eq!(window.processes[0].samples, 2);
    }

    #[test]
    fn failed_and_lost_stacks_become_pseudo_frames() {
        let mut agg = Aggregator::new(99, 100, 0);
        let mut resolver = FakeResolver { user_calls: 0 };
        let batch = drained(
            vec![
                (key(1, -libc::EEXIST, NO_STACK), 2),
                (key(1, 9, NO_STACK), 1),
            ],
            &[],
        );
        agg.ingest(&batch, &mut resolver);
        let window = agg.take_window(SystemTime::now());
        let mut folded = window.processes[0].folded();
        folded.sort();
        assert_eq!(
            folded,
            vec![
                (vec!["[stack lost]"], 1),
                (vec!["[user stack unavailable]"], 2)
            ]
        );
    }

    #[test]
    fn stack_limit_drops_new_stacks_and_counts_them() {
        let mut agg = Aggregator::new(99, 1, 0);
        let mut resolver = FakeResolver { user_calls: 0 };
        let batch = drained(
            vec![(key(1, 1, NO_STACK), 4), (key(2, 2, NO_STACK), 6)],
            &[(1, &[0x1]), (2, &[0x2])],
        );
        let added = agg.ingest(&batch, &mut resolver);
        assert_eq!(added + agg.dropped_stack_limit, 10);
        assert!(agg.dropped_stack_limit == 4 || agg.dropped_stack_limit == 6);
        // A new window starts empty.
        agg.take_window(SystemTime::now());
        assert_eq!(agg.pending_samples(), 0);
    }
}
