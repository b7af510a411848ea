//! The off-CPU source: a perf-event program on the `context-switches` software event takes the
//! stacks of a selected thread as it switches out and remembers the block; a raw tracepoint on
//! `sched_switch` counts the block's nanoseconds when the thread runs again, and one on
//! `sched_process_free` forgets threads that exited while switched out.
//!
//! A block may end in a later generation than the one it began in, so its stacks are kept in
//! LRU maps that no flip empties; a drain reads the ones its off-CPU samples name.

use std::{collections::HashMap as StdHashMap, time::Duration};

use aya::{
    maps::{HashMap, MapData},
    programs::perf_event::{SamplePolicy, SoftwareEvent},
    Ebpf,
};
use profiler_common::{
    SampleKey, Stack, KIND_OFFCPU, OFFCPU_BLOCKED_MAP, OFFCPU_FREE_PROGRAM_NAME,
    OFFCPU_KERNEL_STACKS_MAP, OFFCPU_PROGRAM_NAME, OFFCPU_USER_STACKS_MAP,
    OFFCPU_WAKE_PROGRAM_NAME,
};

use super::{
    attach_software, error::classify_source, raw, stack_ips, take, SamplerConfig, SamplerError,
};

/// The off-CPU source's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Shorter blocks are not counted (a thread preempted for a moment, a futex hand-over).
    pub min_block: Duration,
    /// Threads that may be switched out at once with their stacks remembered
    /// (`--offcpu-max-blocked`); more are not counted, and counted as dropped.
    pub max_blocked: u32,
    /// Context switches of a CPU per sample (`--offcpu-period`).
    pub period: u32,
}

impl OffCpuConfig {
    /// The minimum block in the control block's microseconds.
    pub(super) fn min_block_us(&self) -> u32 {
        u32::try_from(self.min_block.as_micros()).unwrap_or(u32::MAX)
    }
}

/// Map sizes of the off-CPU source; one entry each when it is off (a map cannot be empty).
pub(super) fn map_sizes(config: &SamplerConfig) -> [(&'static str, &'static str, u32); 3] {
    let on = config.offcpu.is_some();
    let size = |entries: u32| if on { entries } else { 1 };
    [
        (
            OFFCPU_BLOCKED_MAP,
            "--offcpu-max-blocked",
            size(config.offcpu.map_or(1, |c| c.max_blocked)),
        ),
        (
            OFFCPU_USER_STACKS_MAP,
            "--stack-map-entries",
            size(config.stack_map_entries),
        ),
        (
            OFFCPU_KERNEL_STACKS_MAP,
            "--kernel-stack-map-entries",
            size(config.kernel_stack_map_entries),
        ),
    ]
}

/// The off-CPU source: its stack maps, read at each drain, and the switch period it attaches
/// with.
pub(super) struct OffCpu {
    user: HashMap<MapData, u64, Stack>,
    kernel: HashMap<MapData, u64, Stack>,
    period: u32,
}

impl OffCpu {
    pub(super) fn take(ebpf: &mut Ebpf, period: u32) -> Result<Self, SamplerError> {
        Ok(Self {
            user: take(ebpf, OFFCPU_USER_STACKS_MAP)?,
            kernel: take(ebpf, OFFCPU_KERNEL_STACKS_MAP)?,
            period,
        })
    }

    /// Attaches the switch-out program to `context-switches` on every online CPU, one switch in
    /// `period`, then the tracepoints that end and forget blocks. The kernel counts the switches
    /// in between without running the program: a switch it skips costs next to nothing.
    pub(super) fn attach(&self, ebpf: &mut Ebpf) -> Result<(), SamplerError> {
        let event = SoftwareEvent::ContextSwitches;
        attach_software(
            ebpf,
            OFFCPU_PROGRAM_NAME,
            event,
            SamplePolicy::Period(u64::from(self.period)),
            &|err| classify_source(err, SamplerError::OffCpuUnavailable),
        )?;
        for (name, tracepoint) in [
            (OFFCPU_WAKE_PROGRAM_NAME, "sched_switch"),
            (OFFCPU_FREE_PROGRAM_NAME, "sched_process_free"),
        ] {
            raw::attach(ebpf, name, tracepoint, SamplerError::OffCpuUnavailable)?;
        }
        Ok(())
    }

    /// Adds the stacks of the off-CPU samples among `samples` to the drained stacks. A stack
    /// the LRU evicted before this drain stays missing: the sample shows it as lost.
    pub(super) fn resolve(
        &self,
        samples: &[(SampleKey, u64)],
        user_stacks: &mut StdHashMap<u64, Vec<u64>>,
        kernel_stacks: &mut StdHashMap<u64, Vec<u64>>,
    ) {
        for (key, _) in samples.iter().filter(|(key, _)| key.kind == KIND_OFFCPU) {
            for (hash, map, out) in [
                (key.user_stack, &self.user, &mut *user_stacks),
                (key.kernel_stack, &self.kernel, &mut *kernel_stacks),
            ] {
                if hash != 0 && !out.contains_key(&hash) {
                    if let Ok(stack) = map.get(&hash, 0) {
                        out.insert(hash, stack_ips(&stack));
                    }
                }
            }
        }
    }
}
