//! What the samples of each source measure: pprof sample types, period and values.

use crate::{
    aggregate::{ProcessProfile, Window},
    process::page_size,
};

/// What a profile's samples measure, and so its sample types, period and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// `cpu-clock` samples at `frequency` Hz: `samples/count` and `cpu/nanoseconds`, as Go's
    /// CPU profiles.
    Cpu { frequency: u64 },
    /// `page-faults` samples, one per `period` faults of a `page`-byte page: `faults/count`
    /// and `memory/bytes` (the resident memory first touched), bytes the default.
    Memory { period: u64, page: u64 },
    /// Off-CPU blocks: each count is nanoseconds a thread spent switched out with the stack;
    /// `offcpu/nanoseconds`, one value.
    OffCpu,
    /// Threads created, one count each under the creating thread's stack: `threads/count`,
    /// as Go's `threadcreate` profile.
    Threads,
}

impl Measure {
    /// The CPU samples of `window`.
    pub fn cpu_of(window: &Window) -> Self {
        Measure::Cpu {
            frequency: window.frequency,
        }
    }

    /// Every source's profiles of `window`, each with what its samples measure.
    pub fn sources_of(window: &Window) -> [(Measure, &[ProcessProfile]); 4] {
        [
            (Measure::cpu_of(window), &window.processes),
            (Measure::memory_of(window), &window.memory),
            (Measure::OffCpu, &window.offcpu),
            (Measure::Threads, &window.threads),
        ]
    }

    /// The profiles of `window` whose samples this measures.
    pub fn profiles_of(self, window: &Window) -> &[ProcessProfile] {
        match self {
            Measure::Cpu { .. } => &window.processes,
            Measure::Memory { .. } => &window.memory,
            Measure::OffCpu => &window.offcpu,
            Measure::Threads => &window.threads,
        }
    }

    /// The page-fault samples of `window`.
    pub fn memory_of(window: &Window) -> Self {
        Measure::Memory {
            period: window.fault_period,
            page: page_size(),
        }
    }

    /// `cpu`, `memory`, `offcpu` or `threads`: the kind's name in file names.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Cpu { .. } => "cpu",
            Measure::Memory { .. } => "memory",
            Measure::OffCpu => "offcpu",
            Measure::Threads => "threads",
        }
    }

    /// What one sample stands for, in the unit of the period type.
    fn period(self) -> i64 {
        match self {
            Measure::Cpu { frequency } => 1_000_000_000 / frequency.max(1) as i64,
            Measure::Memory { period, page } => (period * page) as i64,
            Measure::OffCpu | Measure::Threads => 1,
        }
    }

    /// The sample types, the period type and the period.
    pub(super) fn types(
        self,
    ) -> (
        &'static [(&'static str, &'static str)],
        (&'static str, &'static str),
        i64,
    ) {
        match self {
            Measure::Cpu { .. } => (
                &[("samples", "count"), ("cpu", "nanoseconds")],
                ("cpu", "nanoseconds"),
                self.period(),
            ),
            Measure::Memory { .. } => (
                &[("faults", "count"), ("memory", "bytes")],
                ("memory", "bytes"),
                self.period(),
            ),
            Measure::OffCpu => (
                &[("offcpu", "nanoseconds")],
                ("offcpu", "nanoseconds"),
                self.period(),
            ),
            Measure::Threads => (&[("threads", "count")], ("threads", "count"), self.period()),
        }
    }

    /// The values of a stack sampled `count` times (for off-CPU: blocked `count` ns), one
    /// per sample type.
    pub(super) fn values(self, count: u64) -> Vec<i64> {
        let count = count as i64;
        match self {
            Measure::Cpu { .. } => vec![count, count * self.period()],
            Measure::Memory { period, .. } => vec![count * period as i64, count * self.period()],
            Measure::OffCpu | Measure::Threads => vec![count],
        }
    }
}
