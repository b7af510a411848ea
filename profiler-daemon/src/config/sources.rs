//! Sample sources beside the CPU sampler, and their rates.

use clap::{Args, ValueEnum};

/// A kind of profile, with the kernel event that samples it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum ProfileKind {
    /// CPU time: `cpu-clock` at --frequency.
    Cpu,
    /// Memory growth: the stacks that first touched pages (the `page-faults` event, one
    /// sample every --memory-period faults, each weighing that many pages).
    Memory,
}

impl ProfileKind {
    pub fn name(self) -> &'static str {
        match self {
            ProfileKind::Cpu => "cpu",
            ProfileKind::Memory => "memory",
        }
    }
}

/// `--memory-period`: how often the memory-growth source samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
#[command(next_help_heading = "Sources")]
pub struct SourceArgs {
    /// Page faults per memory-growth sample (a fault is a page touched for the first time:
    /// 4 KiB). Higher costs the profiled program less; each sample stands for this many
    /// pages. Touching 1 GiB takes 262144 faults: 2048 samples at the default.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_048_576), value_name = "FAULTS")]
    pub memory_period: u64,
}

impl SourceArgs {
    /// Page faults per memory-growth sample when `memory` is among `profiles`; None: the
    /// memory-growth source stays off.
    pub fn fault_period(&self, profiles: &[ProfileKind]) -> Option<u64> {
        profiles
            .contains(&ProfileKind::Memory)
            .then_some(self.memory_period)
    }
}
