//! Types and names shared by the BPF sampler (`profiler-ebpf`) and the daemon.
//!
//! Everything here is `repr(C)` plain data: the BPF side writes it into maps, the daemon reads
//! the same bytes back.
#![no_std]

/// Name of the perf-event program in the BPF object.
pub const PROGRAM_NAME: &str = "sample_cpu";
/// Name of the page-fault program (the memory-growth source).
pub const FAULTS_PROGRAM_NAME: &str = "sample_faults";
/// Name of the raw tracepoint program on `task_newtask` (the thread-creation source).
pub const THREADS_PROGRAM_NAME: &str = "sample_thread";
/// Name of the switch-out program (the off-CPU source), on the `context-switches` event.
pub const OFFCPU_PROGRAM_NAME: &str = "sample_switch";
/// Name of the raw tracepoint program on `sched_switch` that ends a thread's block when it
/// runs again.
pub const OFFCPU_WAKE_PROGRAM_NAME: &str = "offcpu_switch_in";
/// Name of the raw tracepoint program on `sched_process_free` that forgets a thread that
/// blocked for the last time (it exited).
pub const OFFCPU_FREE_PROGRAM_NAME: &str = "offcpu_task_free";
/// Per blocked thread (keyed by its `task_struct` address): [`OffCpuBlock`].
pub const OFFCPU_BLOCKED_MAP: &str = "OFFCPU_BLOCKED";
/// Switch-out user stacks ([`Stack`] by hash), LRU and never flipped: a block may end in a
/// later generation than the one it started in.
pub const OFFCPU_USER_STACKS_MAP: &str = "OFFCPU_USER_STACKS";
/// Switch-out kernel stacks, as [`OFFCPU_USER_STACKS_MAP`].
pub const OFFCPU_KERNEL_STACKS_MAP: &str = "OFFCPU_KERNEL_STACKS";

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
/// Per-CPU [`Counters`]: generation 0 and 1 of the perf-event programs, then of the
/// raw-tracepoint programs (entry `generation | 2`), which a perf-event program may interrupt.
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    pub tgid: u32,
    pub tid: u32,
    pub user_stack: u64,
    pub kernel_stack: u64,
    pub user_stack_error: i32,
    pub kernel_stack_error: i32,
    pub cgroup_id: u64,
    /// What the sample counts: [`KIND_CPU`], [`KIND_MEMORY`] or [`KIND_OFFCPU`].
    pub kind: u32,
    pub _pad: u32,
}

/// A `cpu-clock` sample: one per 1/frequency s of CPU time.
pub const KIND_CPU: u32 = 0;
/// A `page-faults` sample: one per `period` page faults, each the first touch of a page.
pub const KIND_MEMORY: u32 = 1;
/// Off-CPU time: the stack a thread switched out with; its count is the nanoseconds until it
/// ran again (blocks of at least [`Control::offcpu_min_us`]), its stacks are in the
/// `OFFCPU_*_STACKS` maps.
pub const KIND_OFFCPU: u32 = 2;
/// A thread created (`task_newtask` with `CLONE_THREAD`): the creating thread's stacks, one
/// count per thread.
pub const KIND_THREADS: u32 = 3;

/// A thread switched out and not yet back: the sample it will count, and since when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuBlock {
    pub key: SampleKey,
    pub start_ns: u64,
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
    /// User frames unwound with a row of an unwind table.
    UnwindTableFrames = 11,
    /// User frames of a process with tables walked with frame pointers instead: no table for
    /// the address (JIT or anonymous code, a file without CFI) or a rule the unwinder cannot
    /// apply.
    UnwindFpFrames = 12,
    /// Samples of processes whose tables were not loaded (yet, or at all: over a bound, or
    /// unwinding off): walked with frame pointers only.
    UnwindNoTables = 13,
    /// User stacks cut at [`MAX_STACK_DEPTH`] frames by the table unwinder.
    UnwindDepthLimit = 14,
    /// Frames whose row came from this CPU's row cache ([`UNWIND_ROW_CACHE_MAP`]).
    UnwindCacheHits = 15,
    /// Frames whose row was searched in the tables and then cached, evicting the entry that
    /// held its cache slot.
    UnwindCacheMisses = 16,
    /// Switch-outs of selected threads whose stacks were taken: blocks begun (the off-CPU
    /// source's `recorded`).
    OffCpuBlocked = 17,
    /// Switch-outs lost because [`OFFCPU_BLOCKED_MAP`] was full.
    OffCpuBlockedFull = 18,
    /// Blocks that ended and were counted (at least the minimum block time).
    OffCpuCounted = 19,
    /// Blocks that ended shorter than the minimum block time: not counted.
    OffCpuShort = 20,
    /// Blocks lost because the counts map was full when they ended.
    OffCpuCountsFull = 21,
}

/// Number of counters in [`Counters`].
pub const COUNTER_COUNT: usize = 22;

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
        Counter::UnwindTableFrames,
        Counter::UnwindFpFrames,
        Counter::UnwindNoTables,
        Counter::UnwindDepthLimit,
        Counter::UnwindCacheHits,
        Counter::UnwindCacheMisses,
        Counter::OffCpuBlocked,
        Counter::OffCpuBlockedFull,
        Counter::OffCpuCounted,
        Counter::OffCpuShort,
        Counter::OffCpuCountsFull,
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
            Counter::UnwindTableFrames => "unwind_table_frames",
            Counter::UnwindFpFrames => "unwind_fp_frames",
            Counter::UnwindNoTables => "unwind_no_tables",
            Counter::UnwindDepthLimit => "unwind_depth_limit",
            Counter::UnwindCacheHits => "unwind_cache_hits",
            Counter::UnwindCacheMisses => "unwind_cache_misses",
            Counter::OffCpuBlocked => "offcpu_blocked",
            Counter::OffCpuBlockedFull => "offcpu_blocked_full",
            Counter::OffCpuCounted => "offcpu_counted",
            Counter::OffCpuShort => "offcpu_short",
            Counter::OffCpuCountsFull => "offcpu_counts_full",
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
    /// Non-zero: user stacks of processes with tables are unwound with them.
    pub unwind: u32,
    /// Entries of the per-CPU row cache minus one (a power of two minus one).
    pub unwind_cache_mask: u32,
    /// Shortest block, in microseconds, that the off-CPU source counts.
    pub offcpu_min_us: u32,
    /// Context switches per off-CPU sample (the `context-switches` event's period, counted
    /// over every task of a CPU): each counted block weighs this many times its nanoseconds.
    pub offcpu_period: u32,
}

/// Sent once per tgid on its first sample (until the daemon forgets the tgid), and when the
/// unwinder met code outside the process's mapping list ([`NewProcess::reason`]
/// [`REASON_MAP_CHANGED`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewProcess {
    pub tgid: u32,
    pub reason: u32,
}

/// [`NewProcess::reason`]: the first sample of the tgid.
pub const REASON_FIRST_SAMPLE: u32 = 0;
/// [`NewProcess::reason`]: its memory map changed (code outside the known mappings ran).
pub const REASON_MAP_CHANGED: u32 = 1;

/// Unwind rows of every file with a table ([`UnwindRow`]), one array shared by all files.
pub const UNWIND_ROWS_MAP: &str = "UNWIND_ROWS";
/// Page index: an array of [`UnwindPage`]s. Each file's table owns a contiguous range of it,
/// one slot per 64 KiB of its code from its first page with rows to its last, so the
/// unwinder finds a page by indexing, not hashing.
pub const UNWIND_PAGES_MAP: &str = "UNWIND_PAGES";
/// Per tgid: its executable file mappings that have tables ([`UnwindMappings`]).
pub const UNWIND_MAPPINGS_MAP: &str = "UNWIND_MAPPINGS";
/// Per-CPU [`UnwindState`] carried from one tail call of the unwinder to the next.
pub const UNWIND_STATE_MAP: &str = "UNWIND_STATE";
/// Per tgid: the requests to read its memory map again ([`UnwindRefresh`]), LRU.
pub const UNWIND_REFRESH_MAP: &str = "UNWIND_REFRESH";
/// Most map re-reads the unwinder asks for one process (its code outside every mapping of
/// its list: mapped after its list was made, or JIT code, which no re-read helps).
pub const UNWIND_MAX_REFRESHES: u32 = 4;
/// Nanoseconds between two such requests for one process.
pub const UNWIND_REFRESH_GAP_NS: u64 = 200_000_000;

/// Per CPU: the rows the unwinder found last ([`UnwindCacheEntry`]), a direct-mapped cache
/// indexed by a hash of [`unwind_cache_key`]. A hit skips the page lookup and the row search,
/// which are most of a table step's cost (the same callers are walked sample after sample).
pub const UNWIND_ROW_CACHE_MAP: &str = "UNWIND_ROW_CACHE";
/// Single-entry array: the tables' epoch, bumped by the daemon whenever a table's page slots
/// are freed, so that no cached row outlives the table it came from.
pub const UNWIND_EPOCH_MAP: &str = "UNWIND_EPOCH";
/// Bits of a page slot index in a row cache key: `--unwind-pages` is at most 2^24.
pub const UNWIND_SLOT_BITS: u32 = 24;

/// The row cache key of address `low` (within its page) of page slot `slot` at `epoch`; never
/// 0, the key of an empty entry.
#[inline(always)]
pub const fn unwind_cache_key(epoch: u32, slot: u32, low: u64) -> u64 {
    const EPOCH_BITS: u32 = 63 - UNWIND_SLOT_BITS - UNWIND_PAGE_BITS;
    let epoch = (epoch as u64) & ((1 << EPOCH_BITS) - 1);
    let slot = (slot as u64) & ((1 << UNWIND_SLOT_BITS) - 1);
    1 << 63 | epoch << (UNWIND_SLOT_BITS + UNWIND_PAGE_BITS) | slot << UNWIND_PAGE_BITS | low
}

/// The row cache entry of `key`, given the cache's size minus one.
#[inline(always)]
pub const fn unwind_cache_index(key: u64, mask: u32) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 & mask
}

/// One entry of the row cache: the row of `key` (0: empty).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindCacheEntry {
    pub key: u64,
    pub row: UnwindRow,
}

/// Program array holding the unwinder program, which tail-calls itself for depth.
pub const UNWIND_PROGRAMS_MAP: &str = "UNWIND_PROGRAMS";
/// Name of the unwinder program (tail-called from [`PROGRAM_NAME`]).
pub const UNWIND_PROGRAM_NAME: &str = "unwind_user";
/// Program array holding the raw-tracepoint unwinder, tail-called by [`THREADS_PROGRAM_NAME`].
pub const UNWIND_PROGRAMS_TP_MAP: &str = "UNWIND_PROGRAMS_TP";
/// Name of the raw-tracepoint unwinder program.
pub const UNWIND_TP_PROGRAM_NAME: &str = "unwind_user_tp";

/// Bits of the file address below the page number: each page indexes 64 KiB of code, so a
/// row stores only the low 16 bits of its address and a search never spans more than one
/// page's rows.
pub const UNWIND_PAGE_BITS: u32 = 16;
/// Most executable mappings with tables per process (more fall back to frame pointers).
pub const UNWIND_MAX_MAPPINGS: usize = 128;
/// Steps of the binary search over one process's mappings (2^7 = [`UNWIND_MAX_MAPPINGS`]).
pub const UNWIND_MAPPING_STEPS: u32 = 7;
/// Steps of the binary search over one page's rows: a page holds at most one row per byte,
/// 2^[`UNWIND_PAGE_BITS`].
pub const UNWIND_ROW_STEPS: u32 = UNWIND_PAGE_BITS;

/// How to find the canonical frame address (CFA) at a row's addresses (x86_64).
pub mod cfa {
    /// No rule this unwinder can apply (a DWARF expression, an unusual register): the frame
    /// is walked with frame pointers instead, and counted.
    pub const UNSUPPORTED: u8 = 0;
    /// CFA = rsp + offset.
    pub const RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const RBP: u8 = 2;
    /// The PLT's expression: CFA = rsp + offset + (8 if (rip & 15) >= 11).
    pub const PLT: u8 = 3;
    /// The outermost frame (return address undefined: `_start`, a thread's start) or a
    /// signal trampoline: the walk ends here, cleanly.
    pub const END: u8 = 4;
}

/// How to recover the caller's rbp at a row's addresses.
pub mod rbp {
    /// rbp still holds the caller's value.
    pub const SAME: u8 = 0;
    /// The caller's rbp was saved at CFA + offset.
    pub const AT_CFA: u8 = 1;
    /// Not recoverable by this unwinder: the caller's rbp is unknown from here on.
    pub const UNSUPPORTED: u8 = 2;
}

/// One row of an unwind table: from `pc_low` (the low [`UNWIND_PAGE_BITS`] of the file
/// address) to the next row, the CFA is `cfa_rule` + `cfa_offset`, the return address is at
/// CFA - 8 and the caller's rbp follows `rbp_rule` + `rbp_offset`. 8 bytes: an arm64 row would
/// add a link-register rule in `rbp_rule`'s high bits without growing it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    pub pc_low: u16,
    pub cfa_offset: u16,
    pub rbp_offset: i16,
    pub cfa_rule: u8,
    pub rbp_rule: u8,
}

/// The rows of one page: `rows` rows from `first` in [`UNWIND_ROWS_MAP`], sorted by `pc_low`,
/// the first at `pc_low` 0 (the row in force where the page starts). `rows` 0: no rows (a gap
/// between functions, or a slot not in use).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindPage {
    pub first: u32,
    pub rows: u32,
}

/// One executable file mapping with a table: address `a` in `start..end` is in page
/// `(a - bias) >> 16` of the file's table, whose `page_count` pages are at `page_first` in
/// [`UNWIND_PAGES_MAP`]. `bias` is the mapping's load bias plus the file address of the
/// table's first page (a multiple of 64 KiB, so `a - bias` keeps the row's `pc_low`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    pub page_first: u32,
    pub page_count: u32,
}

/// A process's mappings with tables, sorted by `start`; `count` of them are valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindMappings {
    pub count: u32,
    pub _pad: u32,
    pub mappings: [UnwindMapping; UNWIND_MAX_MAPPINGS],
}

impl Default for UnwindMappings {
    fn default() -> Self {
        Self {
            count: 0,
            _pad: 0,
            mappings: [UnwindMapping::default(); UNWIND_MAX_MAPPINGS],
        }
    }
}

/// The unwinder's registers and progress between tail calls, and the sample it belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindState {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    /// Frames in the scratch stack so far.
    pub len: u64,
    pub hash: u64,
    /// The sample's key, with the user stack still to be filled in.
    pub key: SampleKey,
    /// The map set the sample belongs to (the generation when it was taken).
    pub generation: u32,
    pub tail_calls: u32,
    /// Non-zero once this sample asked for its process's map to be read again.
    pub refresh_asked: u32,
    /// The tables' epoch when the sample was taken ([`UNWIND_EPOCH_MAP`]).
    pub epoch: u32,
    /// [`Control::unwind_cache_mask`].
    pub cache_mask: u32,
    /// The mapping index the last frame was found in: the next frame, often in the same
    /// file, is looked for there first (any value is checked before use).
    pub mapping_hint: u32,
}

/// The unwinder's map re-read requests of one process: how many, the last one's time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRefresh {
    pub last_ns: u64,
    pub count: u32,
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
    unsafe impl aya::Pod for OffCpuBlock {}
    unsafe impl aya::Pod for UnwindRow {}
    unsafe impl aya::Pod for UnwindPage {}
    unsafe impl aya::Pod for UnwindMapping {}
    unsafe impl aya::Pod for UnwindMappings {}
    unsafe impl aya::Pod for UnwindCacheEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_cache_keys_tell_epochs_slots_and_addresses_apart_and_are_never_empty() {
        let low_max = (1 << UNWIND_PAGE_BITS) - 1;
        let slot_max = (1 << UNWIND_SLOT_BITS) - 1;
        let keys = [
            unwind_cache_key(0, 0, 0),
            unwind_cache_key(0, 0, 1),
            unwind_cache_key(0, 0, low_max),
            unwind_cache_key(0, 1, 0),
            unwind_cache_key(0, slot_max, low_max),
            unwind_cache_key(1, 0, 0),
            unwind_cache_key(1, slot_max, low_max),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert_ne!(*a, 0, "key {i} is the empty entry's");
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn row_cache_index_stays_within_the_mask() {
        for mask in [63, 1023, 65535] {
            for slot in 0..64 {
                for low in [0, 1, 0x1234, 0xffff] {
                    let key = unwind_cache_key(7, slot, low);
                    assert!(unwind_cache_index(key, mask) <= mask);
                }
            }
        }
    }
}
