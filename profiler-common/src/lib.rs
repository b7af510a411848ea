//! Types and names shared by the BPF sampler (`profiler-ebpf`) and the daemon.
//!
//! Everything here is `repr(C)` plain data: the BPF side writes it into maps, the daemon reads
//! the same bytes back.
#![no_std]

/// Name of the perf-event program in the BPF object.
pub const PROGRAM_NAME: &str = "sample_cpu";

/// Counts of samples per [`SampleKey`] for generation 0 and 1.
pub const COUNTS_MAPS: [&str; 2] = ["COUNTS_0", "COUNTS_1"];
/// Kernel stacks ([`Stack`] keyed by [`SampleKey::kernel_stack`]) for generation 0 and 1.
pub const KERNEL_STACKS_MAPS: [&str; 2] = ["KERNEL_STACKS_0", "KERNEL_STACKS_1"];
/// User stacks ([`Stack`] keyed by [`SampleKey::user_stack`]) for generation 0 and 1.
pub const USER_STACKS_MAPS: [&str; 2] = ["USER_STACKS_0", "USER_STACKS_1"];
/// Per-CPU scratch [`Stack`] the program builds a stack in before storing it.
pub const SCRATCH_MAP: &str = "SCRATCH";
/// Per-CPU flags (one per log event) that limit BPF log lines to one per collect interval.
pub const LOG_GATE_MAP: &str = "LOG_GATE";
/// Number of log events the BPF program can report.
pub const LOG_EVENTS: u32 = 4;
/// Per-CPU [`Counters`], one entry per generation.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Single-entry array holding the current [`Control`].
pub const CONTROL_MAP: &str = "CONTROL";
/// Set of tgids to sample when the pid filter is on.
pub const FILTER_PIDS_MAP: &str = "FILTER_PIDS";
/// Set of cgroup v2 ids to sample (with their descendants) when the cgroup filter is on.
pub const FILTER_CGROUPS_MAP: &str = "FILTER_CGROUPS";
/// tgids the daemon has already been told about (LRU).
pub const KNOWN_PIDS_MAP: &str = "KNOWN_PIDS";
/// Ring buffer of [`NewProcess`] events, so the daemon can capture a process's memory map
/// while it is still alive.
pub const NEW_PROCESS_RING: &str = "NEW_PROCESS";

/// Most tgids the pid filter compares inline (in [`Control::pids`]); more are looked up in
/// [`FILTER_PIDS_MAP`].
pub const INLINE_PIDS: usize = 8;
/// [`Control::pid_count`] when the pid filter uses [`FILTER_PIDS_MAP`].
pub const PIDS_IN_MAP: u32 = u32::MAX;

/// Deepest cgroup level the in-kernel filter walks (bounded loop for the verifier).
pub const MAX_CGROUP_LEVEL: u32 = 32;
/// Frames kept per stack (the kernel's `PERF_MAX_STACK_DEPTH` default).
pub const MAX_STACK_DEPTH: usize = 127;

/// Key of one aggregated sample bucket in the counts maps.
///
/// Stacks are stored in hash maps under a 64-bit hash of their frames (never 0). A stack of 0
/// means the sample has none, and its `*_error` says why (a negated errno; `-EFAULT`: no such
/// stack, as for a kernel thread's user stack or a user-mode sample's kernel stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    pub tgid: u32,
    pub tid: u32,
    pub user_stack: u64,
    pub kernel_stack: u64,
    pub user_stack_error: i32,
    pub kernel_stack_error: i32,
    pub cgroup_id: u64,
}

/// One stack: `len` instruction pointers, leaf first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack {
    pub len: u64,
    pub ips: [u64; MAX_STACK_DEPTH],
}

/// Indices into [`Counters::values`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every time the program ran (every sample the kernel delivered).
    Taken = 0,
    /// Samples of the idle task (pid 0): counted, never profiled.
    Idle = 1,
    /// Samples rejected by the pid / cgroup filter.
    Filtered = 2,
    /// Samples stored in the counts map (the ones that end up in profiles).
    Recorded = 3,
    /// Samples lost because the counts map was full.
    DroppedMapFull = 4,
    /// Samples whose user stack could not be read (error other than "no user memory").
    UserStackError = 5,
    /// Samples whose user stack was lost because the user-stack map was full.
    UserStackLost = 6,
    /// Samples of tasks without user memory (kernel threads): no user stack exists.
    UserStackEmpty = 7,
    /// Samples whose kernel stack could not be read.
    KernelStackError = 8,
    /// Samples whose kernel stack was lost because the kernel-stack map was full.
    KernelStackLost = 9,
    /// New-process notifications lost because the ring buffer was full.
    NotifyDropped = 10,
}

/// Number of counters in [`Counters`].
pub const COUNTER_COUNT: usize = 11;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTER_COUNT] = [
        Counter::Taken,
        Counter::Idle,
        Counter::Filtered,
        Counter::Recorded,
        Counter::DroppedMapFull,
        Counter::UserStackError,
        Counter::UserStackLost,
        Counter::UserStackEmpty,
        Counter::KernelStackError,
        Counter::KernelStackLost,
        Counter::NotifyDropped,
    ];

    /// Stable snake_case name used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Taken => "taken",
            Counter::Idle => "idle",
            Counter::Filtered => "filtered",
            Counter::Recorded => "recorded",
            Counter::DroppedMapFull => "dropped_map_full",
            Counter::UserStackError => "user_stack_error",
            Counter::UserStackLost => "user_stack_lost",
            Counter::UserStackEmpty => "user_stack_empty",
            Counter::KernelStackError => "kernel_stack_error",
            Counter::KernelStackLost => "kernel_stack_lost",
            Counter::NotifyDropped => "notify_dropped",
        }
    }
}

/// Per-CPU sample counters of one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub values: [u64; COUNTER_COUNT],
    /// The tgid of this CPU's last recorded sample. The program asks the known-pids LRU map
    /// only when a sample's tgid differs, which keeps an LRU lookup (and its list update) off
    /// the path of a CPU that keeps sampling one process. Not a counter: the daemon ignores it.
    pub last_tgid: u32,
    pub _pad: u32,
}

/// Control block read by every sample: the generation and the filters, in one cache line so
/// that a filtered-out sample touches as little memory as possible.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Which map set (0 or 1) new samples go to. The daemon flips it and then drains the other.
    pub generation: u32,
    /// 0: no pid filter; 1..=[`INLINE_PIDS`]: that many tgids in `pids`; [`PIDS_IN_MAP`]: the
    /// tgids are in [`FILTER_PIDS_MAP`].
    pub pid_count: u32,
    pub pids: [u32; INLINE_PIDS],
    /// Non-zero: only cgroups in [`FILTER_CGROUPS_MAP`] (and their descendants) are sampled.
    pub cgroup_filter: u32,
    /// Lowest and highest cgroup level (root = 0) of the cgroups in the filter.
    pub cgroup_min_level: u32,
    pub cgroup_max_level: u32,
    pub _pad: u32,
}

/// Sent once per tgid on its first sample (until the daemon forgets the tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewProcess {
    pub tgid: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: all of these are repr(C), Copy, and valid for any bit pattern (no padding).
    unsafe impl aya::Pod for SampleKey {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for Control {}
    unsafe impl aya::Pod for NewProcess {}
    unsafe impl aya::Pod for Stack {}
}
