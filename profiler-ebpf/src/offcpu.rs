//! The off-CPU source's kernel half: a selected thread's block begins at its switch-out
//! ([`begin_block`], from `sample_switch` after the walk), and ends when `sched_switch` runs it
//! again ([`offcpu_switch_in`]), which counts the nanoseconds in between under its stacks.
//! The stacks live in LRU maps that no generation flip empties: a block may end in a later
//! generation than the one it began in.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_get_current_task},
    macros::{map, raw_tracepoint},
    maps::{HashMap, LruHashMap},
    programs::RawTracePointContext,
};
use profiler_common::{Counter, Counters, OffCpuBlock, SampleKey, Stack};

use crate::{add, bump, counters_index, CONTROL, COUNTERS, COUNTS_0, COUNTS_1};

#[map]
static OFFCPU_BLOCKED: HashMap<u64, OffCpuBlock> = HashMap::with_max_entries(1, 0);
#[map]
static OFFCPU_USER_STACKS: LruHashMap<u64, Stack> = LruHashMap::with_max_entries(1, 0);
#[map]
static OFFCPU_KERNEL_STACKS: LruHashMap<u64, Stack> = LruHashMap::with_max_entries(1, 0);

/// `sched_switch(preempt, prev, next, ...)`: ends the block of `next`, which runs again, and
/// counts its nanoseconds off the CPU under its switch-out stack. Runs before the switch-out
/// of `prev` is sampled, so a thread's block always ends before its next one begins.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn offcpu_switch_in(ctx: RawTracePointContext) -> i32 {
    let next: u64 = ctx.arg(2);
    let Some(block) = OFFCPU_BLOCKED.get_ptr(next) else {
        return 0;
    };
    // SAFETY: a map value, copied before the entry is removed.
    let block = unsafe { *block };
    let _ = OFFCPU_BLOCKED.remove(next);
    let Some(control) = CONTROL.get(0) else {
        return 0;
    };
    let generation = control.generation & 1;
    let Some(counters) = COUNTERS.get_ptr_mut(counters_index::<RawTracePointContext>(generation))
    else {
        return 0;
    };
    // SAFETY: this CPU's value of the raw-tracepoint programs, which do not nest.
    let counters = unsafe { &mut *counters };
    // SAFETY: helper without arguments.
    let blocked = unsafe { bpf_ktime_get_ns() }.saturating_sub(block.start_ns);
    if blocked < u64::from(control.offcpu_min_us) * 1000 {
        bump(counters, Counter::OffCpuShort);
        return 0;
    }
    let counts = if generation == 0 {
        &COUNTS_0
    } else {
        &COUNTS_1
    };
    // One switch-out in `offcpu_period` was sampled: this block stands for that many.
    let weight = u64::from(control.offcpu_period.max(1));
    if add(counts, &block.key, blocked * weight) {
        bump(counters, Counter::OffCpuCounted);
    } else {
        bump(counters, Counter::OffCpuCountsFull);
    }
    0
}

/// `sched_process_free(task)`: a thread that exited switched out for the last time; its block
/// never ends.
#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn offcpu_task_free(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let _ = OFFCPU_BLOCKED.remove(task);
    0
}

/// Stores an off-CPU sample's kernel or user stack under `hash`.
#[inline(always)]
pub(crate) fn store_stack(kernel: bool, hash: u64, scratch: &Stack) -> Result<u64, i32> {
    let stacks = if kernel {
        &OFFCPU_KERNEL_STACKS
    } else {
        &OFFCPU_USER_STACKS
    };
    // Looked up first: the lookup keeps a stack that blocks again and again in the LRU.
    if stacks.get_ptr(hash).is_none() {
        if let Err(err) = stacks.insert(&hash, scratch, 0) {
            return Err(err as i32);
        }
    }
    Ok(hash)
}

/// Remembers that the current task blocked with `key`'s stacks, until it runs again.
#[inline(always)]
pub(crate) fn begin_block(counters: &mut Counters, key: &SampleKey) {
    // SAFETY: helpers without arguments. The task's address names it until it is freed,
    // which [`offcpu_task_free`] sees.
    let (task, start_ns) = unsafe { (bpf_get_current_task(), bpf_ktime_get_ns()) };
    let block = OffCpuBlock {
        key: *key,
        start_ns,
    };
    if OFFCPU_BLOCKED.insert(task, block, 0).is_ok() {
        bump(counters, Counter::OffCpuBlocked);
    } else {
        bump(counters, Counter::OffCpuBlockedFull);
    }
}
