//! The daemon's own numbers for `/metrics`, in the Prometheus text format (version 0.0.4),
//! through the `prometheus-client` crate.
//!
//! In: a [`Snapshot`] that the pipeline thread publishes after every drain (its counts are
//! totals since start-up), the exporter's [`DeliveryStats`] when a server is configured (read
//! when scraped), and the process's own CPU time and RSS (read from `/proc/self/stat` when
//! scraped), the listener's own counts of connections and refused files (read when scraped).
//! Out: [`Metrics::encode`], the text served with [`CONTENT_TYPE`].
//!
//! Every family is registered once, when [`Metrics`] is made. Publishing moves each counter up
//! to its source's total and sets each gauge; it and a scrape take one lock, so that a scrape
//! shows one drain's numbers.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::Duration,
};

use profiler_common::Counter as Kernel;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};
use thiserror::Error;

use super::{files::FileStats, listener::ListenerStats};
use crate::{
    aggregate::Accounting,
    export::{DeliveryStats, SpoolCounts},
    process::procfs::read_own_stat,
    symbolize::{refusal_reasons, SymbolsStats},
    unwind::UnwindStats,
};

/// The `Content-Type` of what [`Metrics::encode`] returns.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Capacities of the kernel maps, for fill ratios.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MapCapacity {
    pub(crate) counts: u32,
    pub(crate) user_stacks: u32,
    pub(crate) kernel_stacks: u32,
}

/// What the pipeline thread knows, as of its last drain.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) accounting: Accounting,
    pub(crate) capacity: MapCapacity,
    pub(crate) symbols: SymbolsStats,
    pub(crate) tracked_processes: u64,
    /// Firings per rule (`cpu`, `mem`, `thread`).
    pub(crate) triggers_fired: std::collections::BTreeMap<&'static str, u64>,
    /// Profiles (pprof files, kept or continuous) written to the dump dir.
    pub(crate) profiles_written: u64,
    /// Files the dump dir removed to stay within its bounds.
    pub(crate) dump_removed: u64,
    /// Temporary and empty files an interrupted write left in the dump dir, removed at start.
    pub(crate) dump_leftovers: u64,
    /// Pre-trigger history held, in bytes.
    pub(crate) history_bytes: u64,
    /// The spool's counters and contents; `None` without a server.
    pub(crate) spool: Option<SpoolCounts>,
    /// The unwind tables' counters; `None` with `--unwind fp`.
    pub(crate) unwind: Option<UnwindStats>,
}

#[derive(Debug, Error)]
pub(crate) enum MetricsError {
    #[error("encoding /metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// One label set per label name; its value is one of the exposition's `&'static str`s.
macro_rules! label_sets {
    ($($set:ident { $label:ident }),* $(,)?) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $set {
            $label: &'static str,
        }
    )*};
}
label_sets!(Outcome { outcome }, Reason { reason }, Map { map });
label_sets!(Lookup { result }, Cache { cache });
label_sets!(Event { event }, Rule { rule }, DirLabel { dir });
mod http;
mod offcpu;
mod pprof;
mod unwind;

/// No label: a family of one series that exists only once it is set (the spool gauges,
/// absent without a server).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Unlabelled {}

const OUTCOMES: [Kernel; 5] = [
    Kernel::Taken,
    Kernel::Idle,
    Kernel::Filtered,
    Kernel::Recorded,
    Kernel::DroppedMapFull,
];
const STACK_PROBLEMS: [Kernel; 5] = [
    Kernel::UserStackEmpty,
    Kernel::UserStackError,
    Kernel::UserStackLost,
    Kernel::KernelStackError,
    Kernel::KernelStackLost,
];
const RULES: [&str; 3] = ["cpu", "mem", "thread"];
/// Upper bounds of the drain duration buckets, in seconds.
const DRAIN_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The registered metrics, each a handle on what the registry encodes.
#[derive(Default)]
struct Families {
    samples: Family<Outcome, Counter>,
    drained: Counter,
    in_profiles: Counter,
    dropped: Family<Reason, Counter>,
    stack_problems: Family<Reason, Counter>,
    notify_dropped: Counter,
    map_entries: Family<Map, U64Gauge>,
    map_capacity: Family<Map, U64Gauge>,
    kernel_lookups: Family<Lookup, Counter>,
    user_lookups: Family<Lookup, Counter>,
    cache_entries: Family<Cache, U64Gauge>,
    cache_dropped: Family<Cache, Counter>,
    symbol_files: U64Gauge,
    files_released: Family<Reason, Counter>,
    symbol_files_refused: Family<Reason, Counter>,
    symbol_bytes: U64Gauge,
    unknown_frames: Counter,
    processes_tracked: U64Gauge,
    processes: Family<Event, Counter>,
    triggers_fired: Family<Rule, Counter>,
    history_bytes: U64Gauge,
    profiles: Family<Event, Counter>,
    spool_profiles: Family<Unlabelled, U64Gauge>,
    spool_bytes: Family<Unlabelled, U64Gauge>,
    server_responses: Family<Event, Counter>,
    spool_corrupt_files: Family<Unlabelled, U64Gauge>,
    leftovers: Family<DirLabel, Counter>,
    http: http::HttpFamilies,
    unwind: unwind::UnwindFamilies,
    offcpu: offcpu::OffCpuFamilies,
    pprof: pprof::PprofFamilies,
}

impl Families {
    /// What happened to the samples, and the kernel maps they came through.
    fn register_samples(&self, r: &mut Registry, drain_duration: &Histogram) {
        r.register(
            "profilerd_samples",
            "Samples by where they went: taken = idle + filtered + recorded + dropped_map_full",
            self.samples.clone(),
        );
        r.register(
            "profilerd_samples_drained",
            "Samples read out of the kernel counts maps",
            self.drained.clone(),
        );
        r.register(
            "profilerd_samples_in_profiles",
            "Samples that reached a profile window",
            self.in_profiles.clone(),
        );
        r.register(
            "profilerd_samples_dropped",
            "Samples dropped in user space, by reason",
            self.dropped.clone(),
        );
        r.register(
            "profilerd_stack_problems",
            "Samples kept without (part of) a stack, by reason",
            self.stack_problems.clone(),
        );
        r.register(
            "profilerd_new_process_notifications_dropped",
            "New-process notifications lost to a full ring buffer",
            self.notify_dropped.clone(),
        );
        r.register(
            "profilerd_map_entries",
            "Entries the last drained kernel map held",
            self.map_entries.clone(),
        );
        r.register(
            "profilerd_map_capacity",
            "Entries each kernel map can hold (--*-map-entries)",
            self.map_capacity.clone(),
        );
        r.register(
            "profilerd_drain_duration_seconds",
            "Time to flip, wait out and empty one map set",
            drain_duration.clone(),
        );
    }

    /// The symbolizer's caches, files and processes.
    fn register_symbols(&self, r: &mut Registry) {
        r.register(
            "profilerd_kernel_symbol_cache",
            "Kernel address lookups by cache result",
            self.kernel_lookups.clone(),
        );
        r.register(
            "profilerd_user_symbol_cache",
            "User address lookups by cache result",
            self.user_lookups.clone(),
        );
        r.register(
            "profilerd_symbol_cache_entries",
            "Names held by the symbol caches (bounded by --max-kernel-symbols, --max-user-symbols)",
            self.cache_entries.clone(),
        );
        r.register(
            "profilerd_symbol_cache_dropped",
            "Names dropped when a full symbol cache was emptied",
            self.cache_dropped.clone(),
        );
        r.register(
        "profilerd_symbol_files",
        "Files mapped by tracked processes whose symbols blazesym may hold (bounded by --max-processes)",
        self.symbol_files.clone(),
    );
        r.register(
        "profilerd_symbol_files_released",
        "Files whose parsed symbols were released: no tracked process maps them any more (exited), or older than --symbol-file-ttl (expired)",
        self.files_released.clone(),
    );
        r.register(
        "profilerd_symbol_files_refused",
        "Mapped files not read, by reason: not_regular (a FIFO, device or directory at its path), replaced (its path names another file now), unreachable, file_bound (over --max-symbol-file-bytes), total_bound (over --max-symbol-bytes), fuse (on a FUSE file system), not_owner (a perf map not owned by its process's user), held_bound (over --max-symbol-files); their frames are named by module and offset",
        self.symbol_files_refused.clone(),
    );
        r.register(
        "profilerd_symbol_bytes",
        "Symbol and debug section bytes of the files the symbolizer may hold parsed (bounded by --max-symbol-bytes)",
        self.symbol_bytes.clone(),
    );
        r.register(
            "profilerd_unknown_frames",
            "Frames no symbol was found for",
            self.unknown_frames.clone(),
        );
        r.register(
            "profilerd_processes_tracked",
            "Processes whose memory maps the symbolizer holds",
            self.processes_tracked.clone(),
        );
        r.register(
        "profilerd_processes",
        "Symbolizer process entries by event: evicted (exited or idle), dropped (--max-processes full)",
        self.processes.clone(),
    );
    }

    /// Triggers, kept profiles and the spool.
    fn register_outputs(&self, r: &mut Registry) {
        r.register(
            "profilerd_triggers_fired",
            "Trigger rule firings, by rule",
            self.triggers_fired.clone(),
        );
        r.register(
            "profilerd_trigger_history_bytes",
            "Drained samples held for the seconds before a trigger",
            self.history_bytes.clone(),
        );
        r.register(
            "profilerd_profiles",
            "Profiles by what happened to them",
            self.profiles.clone(),
        );
        r.register(
            "profilerd_spool_profiles",
            "Profiles waiting in the spool for the server",
            self.spool_profiles.clone(),
        );
        r.register(
            "profilerd_spool_bytes",
            "Bytes of the spool (bounded by --spool-max-bytes)",
            self.spool_bytes.clone(),
        );
        r.register(
            "profilerd_server_responses",
            "Server answers not taken as given: body_truncated (read up to --upload-response-max-bytes), redirect (3xx, not followed, profile rejected), retry_after_capped (Retry-After cut to --retry-max-backoff)",
            self.server_responses.clone(),
        );
        r.register(
            "profilerd_spool_corrupt_files",
            "Empty or unreadable spool files set aside in the spool's corrupt/ for inspection",
            self.spool_corrupt_files.clone(),
        );
        r.register(
            "profilerd_leftover_files_removed",
            "Temporary or empty files an interrupted write left, removed at start, by directory",
            self.leftovers.clone(),
        );
    }
}

impl Families {
    fn apply_samples(&self, s: &Snapshot) {
        let f = self;
        let acc = &s.accounting;
        for counter in OUTCOMES {
            let labels = Outcome {
                outcome: counter.name(),
            };
            advance(&f.samples.get_or_create(&labels), acc.kernel.get(counter));
        }
        advance(&f.drained, acc.drained);
        advance(&f.in_profiles, acc.in_profiles);
        let stack_limit = Reason {
            reason: "stack_limit",
        };
        advance(
            &f.dropped.get_or_create(&stack_limit),
            acc.dropped_stack_limit,
        );
        for counter in STACK_PROBLEMS {
            let labels = Reason {
                reason: counter.name(),
            };
            advance(
                &f.stack_problems.get_or_create(&labels),
                acc.kernel.get(counter),
            );
        }
        advance(&f.notify_dropped, acc.kernel.get(Kernel::NotifyDropped));
        for (map, entries, capacity) in [
            ("counts", acc.counts_entries, s.capacity.counts),
            ("user_stacks", acc.stack_entries, s.capacity.user_stacks),
            (
                "kernel_stacks",
                acc.kernel_stack_entries,
                s.capacity.kernel_stacks,
            ),
        ] {
            f.map_entries
                .get_or_create(&Map { map })
                .set(entries as u64);
            f.map_capacity
                .get_or_create(&Map { map })
                .set(u64::from(capacity));
        }
    }

    fn apply_symbols(&self, s: &Snapshot) {
        let f = self;
        let y = &s.symbols;
        for (family, hits, misses) in [
            (
                &f.kernel_lookups,
                y.kernel_cache_hits,
                y.kernel_cache_misses,
            ),
            (&f.user_lookups, y.user_cache_hits, y.user_cache_misses),
        ] {
            advance(&family.get_or_create(&Lookup { result: "hit" }), hits);
            advance(&family.get_or_create(&Lookup { result: "miss" }), misses);
        }
        for (cache, entries, dropped) in [
            ("kernel", y.kernel_cache_entries, y.kernel_cache_dropped),
            ("user", y.user_cache_entries, y.user_cache_dropped),
        ] {
            f.cache_entries.get_or_create(&Cache { cache }).set(entries);
            advance(&f.cache_dropped.get_or_create(&Cache { cache }), dropped);
        }
        f.symbol_files.set(y.files_cached);
        for (reason, count) in [("exited", y.files_evicted), ("expired", y.files_expired)] {
            advance(&f.files_released.get_or_create(&Reason { reason }), count);
        }
        for (reason, count) in refusal_reasons().into_iter().zip(y.files_refused) {
            advance(
                &f.symbol_files_refused.get_or_create(&Reason { reason }),
                count,
            );
        }
        f.symbol_bytes.set(y.symbol_bytes);
        advance(&f.unknown_frames, y.unknown_frames);
        f.processes_tracked.set(s.tracked_processes);
        for (event, count) in [
            ("evicted", y.processes_evicted),
            ("dropped", y.processes_dropped),
        ] {
            advance(&f.processes.get_or_create(&Event { event }), count);
        }
    }

    fn apply_outputs(&self, s: &Snapshot) {
        let f = self;
        for rule in RULES {
            let fired = s.triggers_fired.get(rule).copied().unwrap_or(0);
            advance(&f.triggers_fired.get_or_create(&Rule { rule }), fired);
        }
        f.history_bytes.set(s.history_bytes);

        let mut profiles = vec![
            ("written", s.profiles_written),
            ("dump_removed", s.dump_removed),
        ];
        let mut leftovers = vec![("dump", s.dump_leftovers)];
        if let Some(spool) = s.spool {
            profiles.extend([
                ("dropped_spool_full", spool.dropped_full),
                ("dropped_spool_corrupt", spool.dropped_corrupt),
                ("spool_corrupt_removed", spool.corrupt_removed),
            ]);
            leftovers.push(("spool", spool.leftovers));
            f.spool_profiles
                .get_or_create(&Unlabelled {})
                .set(spool.files);
            f.spool_bytes.get_or_create(&Unlabelled {}).set(spool.bytes);
            f.spool_corrupt_files
                .get_or_create(&Unlabelled {})
                .set(spool.corrupt_files);
        }
        for (dir, count) in leftovers {
            advance(&f.leftovers.get_or_create(&DirLabel { dir }), count);
        }
        for (event, count) in profiles {
            advance(&f.profiles.get_or_create(&Event { event }), count);
        }
    }
}

/// What publishing and scraping share, behind one lock.
struct State {
    families: Families,
    drain_duration: Histogram,
    /// Drains and their time already in `drain_duration`.
    drains_seen: u64,
    drain_time_seen: Duration,
}

/// Shared between the pipeline (writer) and the listener (reader).
pub struct Metrics {
    registry: Registry,
    state: Mutex<State>,
    delivery: OnceLock<Arc<DeliveryStats>>,
    /// Counted by the listener itself.
    pub(crate) listener: Arc<ListenerStats>,
    pub(crate) files: Arc<FileStats>,
    /// Counted by the `/debug/pprof/` handlers.
    pub(crate) pprof: Arc<crate::serve::pprof::PprofStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let f = Families::default();
        let drain_duration = Histogram::new(DRAIN_BUCKETS);
        // The registry appends "." to each help text, and "_total" to each counter's name.
        f.register_samples(&mut registry, &drain_duration);
        f.register_symbols(&mut registry);
        f.register_outputs(&mut registry);
        f.http.register(&mut registry);
        f.unwind.register(&mut registry);
        f.offcpu.register(&mut registry);
        f.pprof.register(&mut registry);
        let r = &mut registry;
        r.register_collector(Box::new(OwnUsage));
        let mut state = State {
            families: f,
            drain_duration,
            drains_seen: 0,
            drain_time_seen: Duration::ZERO,
        };
        // Every series that exists without a server shows 0 until the first drain.
        state.apply(&Snapshot::default());
        let (listener, files, pprof) = (Arc::default(), Arc::default(), Arc::default());
        state.families.http.apply(&listener, &files);
        state.families.pprof.apply(&pprof);
        Self {
            registry,
            state: Mutex::new(state),
            delivery: OnceLock::new(),
            listener,
            files,
            pprof,
        }
    }
}

impl Metrics {
    /// Takes the pipeline's numbers as of its last drain.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.lock().apply(&snapshot);
    }

    /// Adds the delivery counters (only when a server is configured).
    pub fn set_delivery(&self, stats: Arc<DeliveryStats>) {
        let _ = self.delivery.set(stats);
    }

    /// The text exposition of every metric.
    pub(crate) fn encode(&self) -> Result<String, MetricsError> {
        let state = self.lock();
        if let Some(d) = self.delivery.get() {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let profiles = &state.families.profiles;
            for (event, total) in [
                ("sent", load(&d.sent)),
                ("retried", load(&d.retried)),
                ("split", load(&d.split)),
                ("spooled", load(&d.spooled)),
                ("replayed", load(&d.replayed)),
                ("rejected", load(&d.rejected)),
                ("moved_too_old", load(&d.moved_too_old)),
                ("dropped_spool_error", load(&d.dropped_spool_error)),
            ] {
                advance(&profiles.get_or_create(&Event { event }), total);
            }
            let responses = &state.families.server_responses;
            for (event, total) in [
                ("body_truncated", load(&d.responses_truncated)),
                ("redirect", load(&d.redirects)),
                ("retry_after_capped", load(&d.retry_after_capped)),
            ] {
                advance(&responses.get_or_create(&Event { event }), total);
            }
        }
        state.families.http.apply(&self.listener, &self.files);
        state.families.pprof.apply(&self.pprof);
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        drop(state);
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Sets every metric from `s`.
    fn apply(&mut self, s: &Snapshot) {
        self.families.apply_samples(s);
        self.observe_drains(&s.accounting);
        self.families.apply_symbols(s);
        self.families.apply_outputs(s);
        self.families.unwind.apply(s);
        self.families.offcpu.apply(s);
    }

    /// Observes the drains done since the last publish. The pipeline publishes after every
    /// drain, so that is one drain of `last_drain`; should publishes ever be missed, each
    /// missed drain counts as their mean, which keeps `_sum` and `_count` exact.
    fn observe_drains(&mut self, acc: &Accounting) {
        let new = acc.drains.saturating_sub(self.drains_seen);
        if new == 0 {
            return;
        }
        let time = acc.drain_total.saturating_sub(self.drain_time_seen);
        let each = time.as_secs_f64() / new as f64;
        for _ in 0..new {
            self.drain_duration.observe(each);
        }
        self.drains_seen = acc.drains;
        self.drain_time_seen = acc.drain_total;
    }
}

/// Moves `counter` up to `total`, a count kept elsewhere since start-up. Those only grow; a
/// smaller one (none is expected) leaves the counter where it is, so that it stays monotonic.
fn advance(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

/// `process_cpu_seconds_total` and `process_resident_memory_bytes`, read when scraped and
/// left out when `/proc/self/stat` cannot be read.
#[derive(Debug)]
struct OwnUsage;

impl Collector for OwnUsage {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((cpu_seconds, rss_bytes)) = own_usage() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of the daemon.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(rss_bytes);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the daemon.",
            None,
            rss.metric_type(),
        )?)
    }
}

/// CPU seconds (utime + stime) and RSS bytes of this process.
fn own_usage() -> Option<(f64, u64)> {
    let stat = read_own_stat()?;
    let ticks = stat.utime + stat.stime;
    // SAFETY: sysconf has no memory arguments.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if hz <= 0 || page <= 0 {
        return None;
    }
    Some((ticks as f64 / hz as f64, stat.rss_pages * page as u64))
}

#[cfg(test)]
mod tests;
