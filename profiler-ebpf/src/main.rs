//! profilerd's sampler: one perf-event program on `cpu-clock`, attached on every online CPU,
//! and the optional sources beside it: `page-faults` (memory growth) and `context-switches`
//! with `sched_switch` (off-CPU time).
//!
//! Every sample lands in exactly one place: the idle counter, the filtered counter, the counts
//! map of the current generation, or the map-full drop counter. The daemon flips the generation
//! before it drains the other map set, so user space never reads a map the kernel still writes.
#![no_std]
#![no_main]

mod offcpu;
mod unwind;

use aya_ebpf::{
    bindings::{BPF_F_SKIP_FIELD_MASK, BPF_F_USER_STACK},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
            bpf_get_current_task_btf, bpf_get_stack, bpf_task_pt_regs,
        },
    },
    macros::{map, perf_event, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, RawTracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use profiler_common::{
    Control, Counter, Counters, NewProcess, SampleKey, Stack, COUNTER_COUNT, KIND_CPU, KIND_MEMORY,
    KIND_OFFCPU, KIND_THREADS, LOG_EVENTS, MAX_CGROUP_LEVEL, MAX_STACK_DEPTH, PIDS_IN_MAP,
};

const EFAULT: i32 = 14;
const EEXIST: i32 = 17;
const ENOMEM: i32 = 12;
const E2BIG: i32 = 7;
const BPF_NOEXIST: u64 = 1;

// Sizes are placeholders: the daemon sets every max_entries at load time from its flags.
#[map]
pub(crate) static COUNTS_0: HashMap<SampleKey, u64> = HashMap::with_max_entries(1, 0);
#[map]
pub(crate) static COUNTS_1: HashMap<SampleKey, u64> = HashMap::with_max_entries(1, 0);
#[map]
static KERNEL_STACKS_0: HashMap<u64, Stack> = HashMap::with_max_entries(1, 0);
#[map]
static KERNEL_STACKS_1: HashMap<u64, Stack> = HashMap::with_max_entries(1, 0);
#[map]
static USER_STACKS_0: HashMap<u64, Stack> = HashMap::with_max_entries(1, 0);
#[map]
static USER_STACKS_1: HashMap<u64, Stack> = HashMap::with_max_entries(1, 0);
#[map]
static SCRATCH: PerCpuArray<Stack> = PerCpuArray::with_max_entries(2, 0);
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(4, 0);
#[map]
pub(crate) static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
#[map]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);
#[map]
static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);
#[map]
static KNOWN_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(1, 0);
#[map]
pub(crate) static NEW_PROCESS: RingBuf = RingBuf::with_byte_size(4096, 0);
/// Per CPU, per [`LogEvent`]: non-zero once the event was logged since the last drain, which
/// resets it. Bounds the log to one line per event, CPU and collect interval.
#[map]
static LOG_GATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(LOG_EVENTS, 0);

/// Conditions worth a log line in the daemon's log (through aya-log).
#[derive(Clone, Copy)]
enum LogEvent {
    CountsFull = 0,
    UserStacksFull = 1,
    KernelStacksFull = 2,
    NotifyFull = 3,
}

/// True the first time `event` happens on this CPU since the daemon last reset the gate.
#[inline(always)]
fn first_since_drain(event: LogEvent) -> bool {
    let Some(flag) = LOG_GATE.get_ptr_mut(event as u32) else {
        return false;
    };
    // SAFETY: this CPU's value; the program is not re-entered on one CPU.
    let flag = unsafe { &mut *flag };
    if *flag != 0 {
        return false;
    }
    *flag = 1;
    true
}

#[perf_event]
pub fn sample_cpu(ctx: PerfEventContext) -> u32 {
    sample_event(&ctx, KIND_CPU)
}

/// Every `period`th page fault (the `page-faults` software event): the stack that first
/// touched a page, the memory-growth profile.
#[perf_event]
pub fn sample_faults(ctx: PerfEventContext) -> u32 {
    sample_event(&ctx, KIND_MEMORY)
}

/// Every switch-out (the `context-switches` software event, which fires in the switching-out
/// task): the stack a thread blocks or is preempted with. The block is counted when the thread
/// runs again ([`offcpu_switch_in`]).
#[perf_event]
pub fn sample_switch(ctx: PerfEventContext) -> u32 {
    sample_event(&ctx, KIND_OFFCPU)
}

/// What a sampling program needs of its context, perf event or raw tracepoint.
pub(crate) trait Source: EbpfContext {
    /// This kind of program's per-CPU scratch stack, unwinder state and counter pair. A
    /// perf-event program may interrupt a tracepoint program on its CPU (from an NMI), never
    /// the other way round, and neither re-enters itself: each kind has its own.
    const SLOT: u32;
    /// Kernel frames to leave out at the top of a kernel stack: a raw tracepoint's own (the
    /// program and `bpf_trace_run`), which say nothing about the event.
    const KERNEL_SKIP: u64;
    /// The registers (rip, rsp, rbp) when the event interrupted user code.
    fn user_mode_registers(&self) -> Option<[u64; 3]>;
    /// Tail-calls this kind's table unwinder; returns only if the call failed.
    fn tail_call_unwinder(&self);
}

impl Source for PerfEventContext {
    const SLOT: u32 = 0;
    const KERNEL_SKIP: u64 = 0;

    #[inline(always)]
    fn user_mode_registers(&self) -> Option<[u64; 3]> {
        #[cfg(bpf_target_arch = "x86_64")]
        {
            // SAFETY: reading the context's register block, which the verifier allows.
            let regs = unsafe { &(*self.ctx).regs };
            (regs.cs & 3 == 3).then_some([regs.rip, regs.rsp, regs.rbp])
        }
        #[cfg(not(bpf_target_arch = "x86_64"))]
        None
    }

    #[inline(always)]
    fn tail_call_unwinder(&self) {
        // SAFETY: the program array holds the unwinder; on failure control comes back here.
        unsafe { unwind::UNWIND_PROGRAMS.tail_call(self, 0) };
    }
}

impl Source for RawTracePointContext {
    const SLOT: u32 = 1;
    const KERNEL_SKIP: u64 = 2;

    /// A tracepoint runs in the kernel: the user registers are the task's saved ones.
    #[inline(always)]
    fn user_mode_registers(&self) -> Option<[u64; 3]> {
        None
    }

    #[inline(always)]
    fn tail_call_unwinder(&self) {
        // SAFETY: as for the perf-event unwinder.
        unsafe { unwind::UNWIND_PROGRAMS_TP.tail_call(self, 0) };
    }
}

/// The [`COUNTERS`] entry of `generation` for programs of kind `C`.
#[inline(always)]
pub(crate) fn counters_index<C: Source>(generation: u32) -> u32 {
    (generation & 1) | C::SLOT << 1
}

/// A new thread (`task_newtask(task, clone_flags)` with `CLONE_THREAD`): the creating
/// thread's stacks, the thread-creation profile (Go's `threadcreate`).
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn sample_thread(ctx: RawTracePointContext) -> i32 {
    const CLONE_THREAD: u64 = 0x0001_0000;
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_THREAD == 0 {
        return 0;
    }
    sample_event(&ctx, KIND_THREADS) as i32
}

#[inline(always)]
fn sample_event<C: Source>(ctx: &C, kind: u32) -> u32 {
    let Some(control) = CONTROL.get(0) else {
        return 0;
    };
    let generation = control.generation & 1;
    let Some(counters) = COUNTERS.get_ptr_mut(counters_index::<C>(generation)) else {
        return 0;
    };
    // SAFETY: per-CPU value of this CPU; a perf-event program is not re-entered on one CPU.
    let counters = unsafe { &mut *counters };
    sample(ctx, control, generation, counters, kind);
    0
}

#[inline(always)]
fn bump(counters: &mut Counters, counter: Counter) {
    let index = counter as usize;
    if index < COUNTER_COUNT {
        counters.values[index] += 1;
    }
}

#[inline(always)]
fn sample<C: Source>(
    ctx: &C,
    control: &Control,
    generation: u32,
    counters: &mut Counters,
    kind: u32,
) {
    bump(counters, Counter::Taken);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if tid == 0 {
        bump(counters, Counter::Idle);
        return;
    }
    if !selected(control, tgid) {
        bump(counters, Counter::Filtered);
        return;
    }

    let user_mode_registers = ctx.user_mode_registers();
    let in_user_mode = user_mode_registers.is_some();
    // The kernel stack first: the user walk may continue in tail calls, which end the sample.
    let (kernel_stack, kernel_stack_error) =
        sample_kernel_stack(ctx, in_user_mode, counters, generation, kind);
    // SAFETY: helper without memory arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let mut key = SampleKey {
        tgid,
        tid,
        user_stack: 0,
        kernel_stack,
        user_stack_error: 0,
        kernel_stack_error,
        cgroup_id,
        kind,
        _pad: 0,
    };
    // Whether the process has tables is the unwinder's first lookup: asking here too would
    // cost every sample a second hash lookup.
    if control.unwind != 0 {
        if let Some(regs) = user_mode_registers.or_else(saved_user_registers) {
            if let Some(state) = unwind::UNWIND_STATE.get_ptr_mut(C::SLOT) {
                // SAFETY: this CPU's value; the program is not re-entered on one CPU.
                let state = unsafe { &mut *state };
                state.rip = regs[0];
                state.rsp = regs[1];
                state.rbp = regs[2];
                state.key = key;
                state.generation = generation;
                state.epoch = unwind::UNWIND_EPOCH.get(0).copied().unwrap_or(0);
                state.cache_mask = control.unwind_cache_mask;
                // Returns only if the tail call failed: then frame pointers, as without tables.
                unwind::start(ctx, state);
            }
        }
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(C::SLOT) else {
        return;
    };
    // SAFETY: per-CPU value of this CPU and program kind, which is not re-entered on one CPU.
    let scratch = unsafe { &mut *scratch };
    let hash = if let Some(regs) = user_mode_registers {
        Ok(walk_frame_pointers(regs, scratch))
    } else {
        copy_stack(ctx, scratch, BPF_F_USER_STACK as u64)
    };
    match hash {
        Ok(hash) => finish_sample(ctx, generation, &mut key, hash, scratch),
        Err(err) => {
            if -err == EFAULT {
                bump(counters, Counter::UserStackEmpty);
            } else {
                bump(counters, Counter::UserStackError);
            }
            key.user_stack_error = err;
            count_sample(ctx, generation, &key);
        }
    }
}

/// The kernel stack's key of a sample, or 0 and why not. A sample that interrupted user mode
/// has no kernel stack; asking the kernel would only cost a callchain buffer round trip to
/// learn that.
#[inline(always)]
fn sample_kernel_stack<C: Source>(
    ctx: &C,
    in_user_mode: bool,
    counters: &mut Counters,
    generation: u32,
    kind: u32,
) -> (u64, i32) {
    if in_user_mode {
        return (0, -EFAULT);
    }
    match take_kernel_stack(ctx, generation, kind) {
        Ok(key) => (key, 0),
        Err(err) => {
            match -err {
                EFAULT => {}
                E2BIG | ENOMEM => {
                    bump(counters, Counter::KernelStackLost);
                    if first_since_drain(LogEvent::KernelStacksFull) {
                        warn!(
                            ctx,
                            "kernel-stack map full, kernel stacks are being lost: raise --kernel-stack-map-entries"
                        );
                    }
                }
                _ => bump(counters, Counter::KernelStackError),
            }
            (0, err)
        }
    }
}

/// Stores the user stack in `scratch` under `hash` and counts the sample under `key`.
#[inline(always)]
fn finish_sample<C: Source>(
    ctx: &C,
    generation: u32,
    key: &mut SampleKey,
    hash: u64,
    scratch: &Stack,
) {
    match store_stack(false, generation, key.kind, hash, scratch) {
        Ok(hash) => key.user_stack = hash,
        Err(err) => {
            key.user_stack_error = err;
            if let Some(counters) = COUNTERS.get_ptr_mut(counters_index::<C>(generation)) {
                // SAFETY: this CPU's value; the program is not re-entered on one CPU.
                let counters = unsafe { &mut *counters };
                match -err {
                    E2BIG | ENOMEM => {
                        bump(counters, Counter::UserStackLost);
                        if first_since_drain(LogEvent::UserStacksFull) {
                            warn!(
                                ctx,
                                "user-stack map full, user stacks are being lost: raise --stack-map-entries"
                            );
                        }
                    }
                    _ => bump(counters, Counter::UserStackError),
                }
            }
        }
    }
    count_sample(ctx, generation, key);
}

/// Adds the sample to the counts map of its generation (an off-CPU sample: begins its block)
/// and announces a new process.
#[inline(always)]
fn count_sample<C: Source>(ctx: &C, generation: u32, key: &SampleKey) {
    let Some(counters) = COUNTERS.get_ptr_mut(counters_index::<C>(generation)) else {
        return;
    };
    // SAFETY: this CPU's value; the program is not re-entered on one CPU.
    let counters = unsafe { &mut *counters };
    if key.kind == KIND_OFFCPU {
        offcpu::begin_block(counters, key);
        notify_new_process(ctx, counters, key.tgid);
        return;
    }
    let counts = if generation & 1 == 0 {
        &COUNTS_0
    } else {
        &COUNTS_1
    };
    if add_one(counts, key) {
        bump(counters, Counter::Recorded);
    } else {
        bump(counters, Counter::DroppedMapFull);
        if first_since_drain(LogEvent::CountsFull) {
            warn!(
                ctx,
                "counts map full, samples are being dropped: raise --counts-map-entries or shorten --collect-interval"
            );
        }
    }
    notify_new_process(ctx, counters, key.tgid);
}

/// The user registers (rip, rsp, rbp) saved at the kernel entry of the current task, for an
/// event in kernel mode. None for a kernel thread, which has no user registers.
#[inline(always)]
fn saved_user_registers() -> Option<[u64; 3]> {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        // SAFETY: helpers without memory arguments; the pt_regs pointer is read only through
        // bpf_probe_read_kernel, which checks it.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
        if regs == 0 {
            return None;
        }
        // x86_64 `struct pt_regs` (a stable ABI): rbp at 32, rip at 128, cs at 136, rsp at 152.
        let read = |offset: u64| unsafe { bpf_probe_read_kernel((regs + offset) as *const u64) };
        let cs = read(136).ok()?;
        if cs & 3 != 3 {
            return None;
        }
        Some([read(128).ok()?, read(152).ok()?, read(32).ok()?])
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    None
}

/// The kernel stack of a sample taken in kernel mode, stored like a user stack. A hash map,
/// not a stack-trace map: the latter has one slot per hash bucket and loses a stack whenever
/// two stacks of one interval share a bucket (a birthday collision, common with hundreds of
/// distinct kernel stacks a second).
#[inline(always)]
fn take_kernel_stack<C: Source>(ctx: &C, generation: u32, kind: u32) -> Result<u64, i32> {
    let Some(scratch) = SCRATCH.get_ptr_mut(C::SLOT) else {
        return Err(-ENOMEM);
    };
    // SAFETY: per-CPU value of this CPU; the user stack was stored before this reuse.
    let scratch = unsafe { &mut *scratch };
    let hash = copy_stack(ctx, scratch, C::KERNEL_SKIP & BPF_F_SKIP_FIELD_MASK as u64)?;
    store_stack(true, generation, kind, hash, scratch)
}

/// Stores a kernel or user stack in the map of its generation, or an off-CPU sample's in the
/// off-CPU map, which no flip empties.
#[inline(always)]
fn store_stack(
    kernel: bool,
    generation: u32,
    kind: u32,
    hash: u64,
    scratch: &Stack,
) -> Result<u64, i32> {
    if kind == KIND_OFFCPU {
        return offcpu::store_stack(kernel, hash, scratch);
    }
    let stacks = match (kernel, generation & 1 == 0) {
        (true, true) => &KERNEL_STACKS_0,
        (true, false) => &KERNEL_STACKS_1,
        (false, true) => &USER_STACKS_0,
        (false, false) => &USER_STACKS_1,
    };
    store(stacks, hash, scratch)
}

/// Stores `scratch` under `hash` unless an equal stack is there already.
#[inline(always)]
fn store(stacks: &HashMap<u64, Stack>, hash: u64, scratch: &Stack) -> Result<u64, i32> {
    if stacks.get_ptr(hash).is_none() {
        if let Err(err) = stacks.insert(&hash, scratch, BPF_NOEXIST) {
            // EEXIST: another CPU stored the same stack first.
            if -(err as i32) != EEXIST {
                return Err(err as i32);
            }
        }
    }
    Ok(hash)
}

/// Walks the user frame-pointer chain from the interrupted registers; returns the stack hash.
#[inline(always)]
pub(crate) fn walk_frame_pointers(regs: [u64; 3], scratch: &mut Stack) -> u64 {
    let (ip, mut fp) = (regs[0], regs[2]);
    scratch.ips[0] = ip;
    let mut hash = mix(HASH_SEED, ip);
    let mut len = 1;
    for i in 1..MAX_STACK_DEPTH {
        if fp < MIN_FRAME_ADDRESS || fp & 7 != 0 {
            break;
        }
        // A frame is [saved frame pointer, return address].
        let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            break;
        };
        let ret = frame[1];
        if ret == 0 {
            break;
        }
        scratch.ips[i] = ret;
        hash = mix(hash, ret);
        len = i + 1;
        if frame[0] == fp {
            break;
        }
        fp = frame[0];
    }
    scratch.len = len as u64;
    finish(hash, len as u64)
}

/// A stack through the kernel's walker (`flags`: `BPF_F_USER_STACK` for the user stack of a
/// sample taken in kernel mode, whose user registers are not in the context; 0 for the kernel
/// stack). Returns the stack hash.
#[inline(always)]
fn copy_stack<C: Source>(ctx: &C, scratch: &mut Stack, flags: u64) -> Result<u64, i32> {
    const BYTES: u32 = (MAX_STACK_DEPTH * 8) as u32;
    // SAFETY: the buffer is this CPU's scratch value, BYTES long.
    let copied =
        unsafe { bpf_get_stack(ctx.as_ptr(), scratch.ips.as_mut_ptr().cast(), BYTES, flags) };
    if copied < 0 {
        return Err(copied as i32);
    }
    let len = (copied as usize / 8).min(MAX_STACK_DEPTH);
    if len == 0 {
        // No user memory (a kernel thread), or nothing walkable.
        return Err(-EFAULT);
    }
    let mut hash = HASH_SEED;
    for i in 0..MAX_STACK_DEPTH {
        if i >= len {
            break;
        }
        hash = mix(hash, scratch.ips[i]);
    }
    scratch.len = len as u64;
    Ok(finish(hash, len as u64))
}

/// Lowest address a frame pointer may hold: the first page is never mapped.
const MIN_FRAME_ADDRESS: u64 = 4096;
const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// One splitmix64 round over `value`: collisions between the at most a few thousand stacks of
/// one collect interval are astronomically unlikely with 64 bits.
#[inline(always)]
fn mix(hash: u64, value: u64) -> u64 {
    let mut x = hash ^ value.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The map key of a stack: its hash with the length mixed in, never 0 (0 means "no stack").
#[inline(always)]
fn finish(hash: u64, len: u64) -> u64 {
    let hash = mix(hash, len);
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// Adds one sample to `key`'s count; false when the map is full.
#[inline(always)]
fn add_one(counts: &HashMap<SampleKey, u64>, key: &SampleKey) -> bool {
    add(counts, key, 1)
}

/// Adds `amount` to `key`'s count; false when the map is full.
#[inline(always)]
pub(crate) fn add(counts: &HashMap<SampleKey, u64>, key: &SampleKey, amount: u64) -> bool {
    // A key holds one tid and one kind, and a thread runs on one CPU at a time, so no other
    // CPU updates the same value concurrently: a plain addition is exact.
    if let Some(count) = counts.get_ptr_mut(key) {
        unsafe { *count += amount };
        return true;
    }
    match counts.insert(key, amount, BPF_NOEXIST) {
        Ok(()) => true,
        Err(_) => {
            // Lost a race with another CPU inserting the same key (the thread migrated).
            if let Some(count) = counts.get_ptr_mut(key) {
                unsafe { *count += amount };
                true
            } else {
                false
            }
        }
    }
}

#[inline(always)]
fn selected(control: &Control, tgid: u32) -> bool {
    let pids_on = control.pid_count != 0;
    let cgroups_on = control.cgroup_filter != 0;
    if !pids_on && !cgroups_on {
        return true;
    }
    if pids_on && pid_selected(control, tgid) {
        return true;
    }
    cgroups_on && in_filtered_cgroup(control)
}

#[inline(always)]
fn pid_selected(control: &Control, tgid: u32) -> bool {
    if control.pid_count == PIDS_IN_MAP {
        return FILTER_PIDS.get_ptr(tgid).is_some();
    }
    // Every slot is compared: unused ones hold 0, which no task sampled here has (the idle
    // task returned earlier). A loop also bounded by pid_count compiled into a down-counter
    // that Linux 6.1's verifier could not tie to the array ("invalid access to map value");
    // a constant bound verifies everywhere.
    control.pids.iter().any(|&pid| pid == tgid)
}

/// True when the current task's cgroup v2, or one of its ancestors, is in the filter set.
#[inline(always)]
fn in_filtered_cgroup(control: &Control) -> bool {
    let (min, max) = (control.cgroup_min_level, control.cgroup_max_level);
    for step in 0..MAX_CGROUP_LEVEL {
        let level = min + step;
        if level > max {
            break;
        }
        // SAFETY: helper without memory arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            // The task's cgroup is shallower than `level`.
            break;
        }
        if FILTER_CGROUPS.get_ptr(id).is_some() {
            return true;
        }
    }
    false
}

#[inline(always)]
fn notify_new_process<C: Source>(ctx: &C, counters: &mut Counters, tgid: u32) {
    // A tgid this CPU sampled last was announced already. The cache can only be wrong when the
    // process exited and its number came round again with nothing else sampled on this CPU in
    // between; the daemon then still symbolizes it at the next drain, only without the early
    // look at its mappings.
    if counters.last_tgid == tgid {
        return;
    }
    counters.last_tgid = tgid;
    if KNOWN_PIDS.get_ptr(tgid).is_some() {
        return;
    }
    if KNOWN_PIDS.insert(tgid, 1, BPF_NOEXIST).is_err() {
        // Another CPU inserted it first and sends the notification.
        return;
    }
    let event = NewProcess {
        tgid,
        reason: profiler_common::REASON_FIRST_SAMPLE,
    };
    if NEW_PROCESS.output::<NewProcess>(&event, 0).is_err() {
        // Forget the tgid so that its next sample tries again.
        counters.last_tgid = 0;
        let _ = KNOWN_PIDS.remove(tgid);
        bump(counters, Counter::NotifyDropped);
        if first_since_drain(LogEvent::NotifyFull) {
            warn!(
                ctx,
                "new-process ring buffer full: short-lived processes may be named late"
            );
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
