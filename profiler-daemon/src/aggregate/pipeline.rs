//! The sampling pipeline on one thread: sampler -> drain -> symbolize -> aggregate.
//!
//! `record` and `run` both drive it: wait for the next collect tick (answering new-process
//! notifications meanwhile, so short-lived processes are captured while alive), drain, and
//! take a window whenever they want a profile.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use profiler_common::{Counter, KIND_OFFCPU};

use super::{Aggregator, Window};
use crate::{
    sample::{CounterDelta, Sampler, SamplerConfig, SamplerError},
    symbolize::{Symbols, SymbolsConfig},
    unwind::{LoaderLimits, Unwind, UnwindStats},
};

/// Longest time the pipeline sleeps without checking the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Longest the start waits for the named processes' unwind tables (a few hundred
/// milliseconds for an interpreter and its libraries): beyond it, sampling starts anyway.
const TABLES_BEFORE_START: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub sampler: SamplerConfig,
    pub symbols: SymbolsConfig,
    /// Distinct stacks one window may hold.
    pub max_stacks: usize,
}

/// Where every sample went since start-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Accounting {
    /// Kernel-side counters summed over CPUs and drains.
    pub kernel: CounterDelta,
    /// Samples read out of the counts maps.
    pub drained: u64,
    /// Samples that reached a window (and so a profile).
    pub in_profiles: u64,
    /// Samples dropped because a window hit `max_stacks`.
    pub dropped_stack_limit: u64,
    pub drains: u64,
    pub last_drain: Duration,
    /// Time spent in all drains.
    pub drain_total: Duration,
    /// Fill of the last drained maps.
    pub counts_entries: usize,
    pub stack_entries: usize,
    /// Entries the last drained kernel stack map held.
    pub kernel_stack_entries: usize,
}

impl Accounting {
    /// One line with every counter, for logs and the closing summary.
    pub fn summary(&self) -> String {
        let k = |c: Counter| self.kernel.get(c);
        format!(
            "taken={} idle={} filtered={} recorded={} dropped_map_full={} drained={} in_profiles={} dropped_stack_limit={} user_stack_empty={} user_stack_error={} user_stack_lost={} kernel_stack_error={} kernel_stack_lost={} notify_dropped={} unwind_table_frames={} unwind_fp_frames={} unwind_no_tables={} unwind_depth_limit={} unwind_cache_hits={} unwind_cache_misses={} offcpu_blocked={} offcpu_blocked_full={} offcpu_counted={} offcpu_short={} offcpu_counts_full={}",
            k(Counter::Taken),
            k(Counter::Idle),
            k(Counter::Filtered),
            k(Counter::Recorded),
            k(Counter::DroppedMapFull),
            self.drained,
            self.in_profiles,
            self.dropped_stack_limit,
            k(Counter::UserStackEmpty),
            k(Counter::UserStackError),
            k(Counter::UserStackLost),
            k(Counter::KernelStackError),
            k(Counter::KernelStackLost),
            k(Counter::NotifyDropped),
            k(Counter::UnwindTableFrames),
            k(Counter::UnwindFpFrames),
            k(Counter::UnwindNoTables),
            k(Counter::UnwindDepthLimit),
            k(Counter::UnwindCacheHits),
            k(Counter::UnwindCacheMisses),
            k(Counter::OffCpuBlocked),
            k(Counter::OffCpuBlockedFull),
            k(Counter::OffCpuCounted),
            k(Counter::OffCpuShort),
            k(Counter::OffCpuCountsFull),
        )
    }
}

pub struct Pipeline {
    sampler: Sampler,
    symbols: Symbols,
    /// The unwind table loader; None with `--unwind fp`.
    unwind: Option<Unwind>,
    aggregator: Aggregator,
    pub accounting: Accounting,
    /// When the last drain flipped the kernel maps: the samples of the current window were
    /// all taken before it, so the window ends there, not when it is taken (a slow
    /// collection would otherwise give one window a second's samples in half a second).
    drained_at: Option<SystemTime>,
}

impl Pipeline {
    /// Loads and attaches the sampler; sampling starts now.
    pub fn start(object: &[u8], config: &PipelineConfig) -> Result<Self, SamplerError> {
        let mut sampler = Sampler::load(object, &config.sampler)?;
        let unwind = match sampler.take_unwind_maps() {
            Some(maps) => {
                let limits = LoaderLimits {
                    max_file_bytes: config.symbols.max_symbol_file_bytes,
                    // One file may take half the rows: one huge binary cannot starve the rest.
                    max_file_rows: (maps.sizes.rows / 2) as usize,
                };
                Some(Unwind::start(maps, limits).map_err(SamplerError::Thread)?)
            }
            None => None,
        };
        let mut pipeline = Self {
            sampler,
            unwind,
            symbols: Symbols::new(config.symbols),
            aggregator: Aggregator::new(
                config.sampler.frequency,
                config.max_stacks,
                config.sampler.fault_period.unwrap_or(0),
            ),
            accounting: Accounting::default(),
            drained_at: None,
        };
        // Named processes are read, and their tables built, before sampling starts: their first
        // samples are whole stacks too.
        if pipeline.unwind.is_some() {
            for &pid in &config.sampler.pids {
                pipeline.symbols.track(pid);
            }
            pipeline.load_tables();
            if let Some(unwind) = &pipeline.unwind {
                unwind.wait_idle(TABLES_BEFORE_START);
            }
        }
        pipeline.sampler.attach()?;
        Ok(pipeline)
    }

    pub fn cpus(&self) -> usize {
        self.sampler.cpus()
    }

    /// Sleeps until `deadline` or until `stop` is set, capturing newly announced processes.
    pub fn wait_until(&mut self, deadline: Instant, stop: &AtomicBool) {
        loop {
            self.track_new_processes();
            let now = Instant::now();
            if now >= deadline || stop.load(Ordering::Relaxed) {
                return;
            }
            let timeout = (deadline - now).min(STOP_CHECK);
            let poll = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut fds = [
                poll(self.sampler.notify_fd()),
                // -1 is ignored by poll(2).
                poll(self.sampler.log_fd().unwrap_or(-1)),
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis().max(1) as i32) };
            if fds[1].revents != 0 {
                self.sampler.flush_logs();
            }
        }
    }

    fn track_new_processes(&mut self) {
        for pid in self.sampler.new_processes() {
            self.symbols.track(pid);
        }
        self.load_tables();
    }

    /// Queues the unwind tables of every process whose memory map was just read.
    fn load_tables(&mut self) {
        for pid in self.symbols.take_retracked() {
            if let Some(unwind) = &self.unwind {
                unwind.process(pid, self.symbols.files_of(pid));
            }
        }
    }

    /// The unwind tables' counters; None with `--unwind fp`.
    pub fn unwind_stats(&self) -> Option<UnwindStats> {
        self.unwind.as_ref().map(Unwind::stats)
    }

    /// Drains the kernel maps into the current window.
    pub fn collect(&mut self) -> Result<(), SamplerError> {
        // Announcements made just before the flip belong to samples of this drain.
        self.track_new_processes();
        let flip = SystemTime::now();
        let drained = self.sampler.drain()?;
        self.drained_at = Some(flip);
        let before = self.aggregator.dropped_stack_limit;
        let added = self.aggregator.ingest(&drained, &mut self.symbols);
        let acc = &mut self.accounting;
        acc.kernel.add(&drained.counters);
        acc.drained += drained
            .samples
            .iter()
            .filter(|(key, _)| key.kind != KIND_OFFCPU)
            .map(|(_, c)| c)
            .sum::<u64>();
        acc.in_profiles += added;
        acc.dropped_stack_limit += self.aggregator.dropped_stack_limit - before;
        acc.drains += 1;
        acc.last_drain = drained.duration;
        acc.drain_total += drained.duration;
        acc.counts_entries = drained.counts_entries;
        acc.stack_entries = drained.stack_entries;
        acc.kernel_stack_entries = drained.kernel_stack_entries;
        self.load_tables();
        for pid in self.symbols.evict_exited() {
            self.sampler.forget_process(pid);
            if let Some(unwind) = &self.unwind {
                unwind.exited(pid);
            }
        }
        Ok(())
    }

    /// Changes which processes the kernel samples (a reload).
    pub fn set_filters(
        &mut self,
        pids: &[u32],
        cgroups: &[crate::sample::CgroupSelector],
    ) -> Result<(), SamplerError> {
        self.sampler.set_filters(pids, cgroups)
    }

    /// Ends the current window at the last drain and returns it.
    pub fn take_window(&mut self) -> Window {
        let end = self.drained_at.unwrap_or_else(SystemTime::now);
        self.aggregator.take_window(end)
    }

    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }
}
