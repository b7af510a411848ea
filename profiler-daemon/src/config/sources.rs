//! Sample sources beside the CPU sampler, and their rates.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::types::parse_duration;

/// A kind of profile, with the kernel event that samples it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum ProfileKind {
    /// CPU time: `cpu-clock` at --frequency.
    Cpu,
    /// Memory growth: the stacks that first touched pages (the `page-faults` event, one
    /// sample every --memory-period faults, each weighing that many pages).
    Memory,
    /// Off-CPU time: where threads block and for how long (the stack at each switch-out,
    /// weighted by the nanoseconds until the thread runs again, blocks of at least
    /// --offcpu-min-block).
    Offcpu,
    /// Thread creation: the creating thread's stack at each new thread (the `task_newtask`
    /// tracepoint), one count each, as Go's `threadcreate` profile.
    Threads,
}

impl ProfileKind {
    pub fn name(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::Memory => "memory",
            ProfileKind::Offcpu => "offcpu",
            ProfileKind::Threads => "threads",
        }
    }
}

/// `--memory-period`, `--offcpu-*`: the rates and bounds of the sources beside the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
#[command(next_help_heading = "Sources")]
pub struct SourceArgs {
    /// Page faults per memory-growth sample (a fault is a page touched for the first time:
    /// 4 KiB). Higher costs the profiled program less; each sample stands for this many
    /// pages. Touching 1 GiB takes 262144 faults: 2048 samples at the default.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_048_576), value_name = "FAULTS")]
    pub memory_period: u64,
    /// Shortest block the off-CPU profile counts: shorter ones (a thread preempted for a
    /// moment, a lock handed over) cost a stack walk and are dropped.
    #[arg(long, default_value = "1ms", value_parser = parse_duration, value_name = "DURATION")]
    pub offcpu_min_block: Duration,
    /// Threads of the selected processes that may be switched out at once with their stacks
    /// remembered (one kernel map entry, about 100 bytes, each); blocks beyond it are dropped and
    /// counted (`offcpu_blocked_full`).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1_048_576), value_name = "THREADS")]
    pub offcpu_max_blocked: u32,
    /// Context switches per off-CPU sample, counted per CPU over every task: the stacks of
    /// one switch-out in this many are taken, and its block weighs this many times its
    /// duration. The default keeps a program that switches 100000 times a second at about
    /// 98% of its speed (at 11, 96%: each sampled switch-out's walk costs about 1.5 us); 1 takes every one (exact, but that program then loses about a fifth,
    /// as under bpftrace taking stacks at every switch). Odd values keep the sampled
    /// switch-outs from falling on the same task of a two-task alternation.
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u32).range(1..=1_000_000), value_name = "SWITCHES")]
    pub offcpu_period: u32,
}

/// The sources beside the CPU sampler that a command turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sources {
    /// Page faults per memory-growth sample; None: off.
    pub fault_period: Option<u64>,
    /// The off-CPU source's minimum block, blocked-thread bound and period; None: off.
    pub offcpu: Option<(Duration, u32, u32)>,
    /// The thread-creation source.
    pub threads: bool,
}

impl SourceArgs {
    /// Page faults per memory-growth sample when `memory` is among `profiles`; None: the
    /// memory-growth source stays off.
    pub fn fault_period(&self, profiles: &[ProfileKind]) -> Option<u64> {
        profiles
            .contains(&ProfileKind::Memory)
            .then_some(self.memory_period)
    }

    /// The sources `profiles` turn on, with these rates.
    pub fn sources(&self, profiles: &[ProfileKind]) -> Sources {
        Sources {
            fault_period: self.fault_period(profiles),
            offcpu: profiles.contains(&ProfileKind::Offcpu).then_some((
                self.offcpu_min_block,
                self.offcpu_max_blocked,
                self.offcpu_period,
            )),
            threads: profiles.contains(&ProfileKind::Threads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SourceArgs {
        SourceArgs {
            memory_period: 64,
            offcpu_min_block: Duration::from_millis(2),
            offcpu_max_blocked: 100,
            offcpu_period: 4,
        }
    }

    #[test]
    fn each_source_is_on_only_when_its_kind_is_asked() {
        assert_eq!(args().sources(&[ProfileKind::Cpu]), Sources::default());
        assert_eq!(
            args().sources(&[ProfileKind::Cpu, ProfileKind::Offcpu, ProfileKind::Memory]),
            Sources {
                fault_period: Some(64),
                offcpu: Some((Duration::from_millis(2), 100, 4)),
                threads: false,
            }
        );
    }
}
