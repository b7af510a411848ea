//! profilerd's sampler: one perf-event program on `cpu-clock`, attached on every online CPU.
//!
//! Every sample lands in exactly one place: the idle counter, the filtered counter, the counts
//! map of the current generation, or the map-full drop counter. The daemon flips the generation
//! before it drains the other map set, so user space never reads a map the kernel still writes.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
    },
    macros::{map, perf_event},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{tracing::StackIdContext, PerfEventContext},
};
use profiler_common::{
    Control, Counter, Counters, NewProcess, SampleKey, COUNTER_COUNT, INLINE_PIDS,
    MAX_CGROUP_LEVEL, PIDS_IN_MAP,
};

const EFAULT: i32 = 14;
const EEXIST: i32 = 17;
const ENOMEM: i32 = 12;
const BPF_NOEXIST: u64 = 1;

// Sizes are placeholders: the daemon sets every max_entries at load time from its flags.
#[map]
static COUNTS_0: HashMap<SampleKey, u64> = HashMap::with_max_entries(1, 0);
#[map]
static COUNTS_1: HashMap<SampleKey, u64> = HashMap::with_max_entries(1, 0);
#[map]
static STACKS_0: StackTrace = StackTrace::with_max_entries(1, 0);
#[map]
static STACKS_1: StackTrace = StackTrace::with_max_entries(1, 0);
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(2, 0);
#[map]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
#[map]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);
#[map]
static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);
#[map]
static KNOWN_PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(1, 0);
#[map]
static NEW_PROCESS: RingBuf = RingBuf::with_byte_size(4096, 0);

#[perf_event]
pub fn sample_cpu(ctx: PerfEventContext) -> u32 {
    let Some(control) = CONTROL.get(0) else {
        return 0;
    };
    let generation = control.generation & 1;
    let Some(counters) = COUNTERS.get_ptr_mut(generation) else {
        return 0;
    };
    // SAFETY: per-CPU value of this CPU; a perf-event program is not re-entered on one CPU.
    let counters = unsafe { &mut *counters };
    if generation == 0 {
        sample(&ctx, control, counters, &COUNTS_0, &STACKS_0);
    } else {
        sample(&ctx, control, counters, &COUNTS_1, &STACKS_1);
    }
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
fn sample(
    ctx: &PerfEventContext,
    control: &Control,
    counters: &mut Counters,
    counts: &HashMap<SampleKey, u64>,
    stacks: &StackTrace,
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

    let user_stack_id = match ctx.get_stackid(stacks, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(err) => {
            match -err {
                EFAULT => bump(counters, Counter::UserStackEmpty),
                EEXIST | ENOMEM => bump(counters, Counter::UserStackCollision),
                _ => bump(counters, Counter::UserStackError),
            }
            err
        }
    };
    let kernel_stack_id = match ctx.get_stackid(stacks, 0) {
        Ok(id) => id as i32,
        Err(err) => {
            match -err {
                // Interrupted in user mode: there is no kernel stack to take.
                EFAULT => {}
                EEXIST | ENOMEM => bump(counters, Counter::KernelStackCollision),
                _ => bump(counters, Counter::KernelStackError),
            }
            err
        }
    };
    // SAFETY: helper without memory arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let key = SampleKey {
        tgid,
        tid,
        user_stack_id,
        kernel_stack_id,
        cgroup_id,
    };

    if add_one(counts, &key) {
        bump(counters, Counter::Recorded);
    } else {
        bump(counters, Counter::DroppedMapFull);
    }
    notify_new_process(counters, tgid);
}

/// Adds one sample to `key`'s count; false when the map is full.
#[inline(always)]
fn add_one(counts: &HashMap<SampleKey, u64>, key: &SampleKey) -> bool {
    // A key holds one tid, and a thread runs on one CPU at a time, so no other CPU updates the
    // same value concurrently: a plain increment is exact.
    if let Some(count) = counts.get_ptr_mut(key) {
        unsafe { *count += 1 };
        return true;
    }
    match counts.insert(key, 1, BPF_NOEXIST) {
        Ok(()) => true,
        Err(_) => {
            // Lost a race with another CPU inserting the same key (the thread migrated).
            if let Some(count) = counts.get_ptr_mut(key) {
                unsafe { *count += 1 };
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
    let count = control.pid_count as usize;
    for i in 0..INLINE_PIDS {
        if i >= count {
            break;
        }
        if control.pids[i] == tgid {
            return true;
        }
    }
    false
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
fn notify_new_process(counters: &mut Counters, tgid: u32) {
    if KNOWN_PIDS.get_ptr(tgid).is_some() {
        return;
    }
    if KNOWN_PIDS.insert(tgid, 1, BPF_NOEXIST).is_err() {
        // Another CPU inserted it first and sends the notification.
        return;
    }
    let event = NewProcess { tgid, _pad: 0 };
    if NEW_PROCESS.output::<NewProcess>(&event, 0).is_err() {
        // Forget the tgid so that its next sample tries again.
        let _ = KNOWN_PIDS.remove(tgid);
        bump(counters, Counter::NotifyDropped);
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
