//! The daemon's own numbers in the Prometheus text format (version 0.0.4).
//!
//! The pipeline thread publishes a [`Snapshot`] after every drain; the HTTP listener renders
//! the latest one with the delivery counters and the process's own CPU and RSS, read when
//! scraped. Publishing copies a few hundred bytes under a mutex once per collect interval.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{atomic::Ordering, Arc, Mutex, OnceLock},
};

use profiler_common::Counter;

use crate::{aggregate::Accounting, export::DeliveryStats, symbolize::SymbolsStats};

/// Capacities of the kernel maps, for fill ratios.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapCapacity {
    pub counts: u32,
    pub user_stacks: u32,
    pub kernel_stacks: u32,
}

/// What the pipeline thread knows, as of its last drain.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub accounting: Accounting,
    pub capacity: MapCapacity,
    pub symbols: SymbolsStats,
    pub tracked_processes: u64,
    /// Firings per rule (`cpu`, `mem`, `thread`).
    pub triggers_fired: BTreeMap<&'static str, u64>,
    /// Profiles (pprof files, kept or continuous) written to the dump dir.
    pub profiles_written: u64,
    /// Files the dump dir removed to stay within its bounds.
    pub dump_removed: u64,
    /// Pre-trigger history held, in bytes, and samples dropped from it.
    pub history_bytes: u64,
    pub history_dropped: u64,
    /// Spool: (dropped because full, dropped as corrupt, files held, bytes held); `None`
    /// without a server.
    pub spool: Option<(u64, u64, u64, u64)>,
}

/// Shared between the pipeline (writer) and the listener (reader).
#[derive(Default)]
pub struct Metrics {
    snapshot: Mutex<Snapshot>,
    delivery: OnceLock<Arc<DeliveryStats>>,
}

impl Metrics {
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Adds the delivery counters (only when a server is configured).
    pub fn set_delivery(&self, stats: Arc<DeliveryStats>) {
        let _ = self.delivery.set(stats);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(4096);
        let acc = &s.accounting;

        family(
            &mut out,
            "profilerd_samples_total",
            "counter",
            "Samples by where they went: taken = idle + filtered + recorded + dropped_map_full.",
        );
        for counter in [
            Counter::Taken,
            Counter::Idle,
            Counter::Filtered,
            Counter::Recorded,
            Counter::DroppedMapFull,
        ] {
            sample(
                &mut out,
                "profilerd_samples_total",
                &[("outcome", counter.name())],
                acc.kernel.get(counter) as f64,
            );
        }
        family(
            &mut out,
            "profilerd_samples_drained_total",
            "counter",
            "Samples read out of the kernel counts maps.",
        );
        sample(
            &mut out,
            "profilerd_samples_drained_total",
            &[],
            acc.drained as f64,
        );
        family(
            &mut out,
            "profilerd_samples_in_profiles_total",
            "counter",
            "Samples that reached a profile window.",
        );
        sample(
            &mut out,
            "profilerd_samples_in_profiles_total",
            &[],
            acc.in_profiles as f64,
        );
        family(
            &mut out,
            "profilerd_samples_dropped_total",
            "counter",
            "Samples dropped in user space, by reason.",
        );
        sample(
            &mut out,
            "profilerd_samples_dropped_total",
            &[("reason", "stack_limit")],
            acc.dropped_stack_limit as f64,
        );
        family(
            &mut out,
            "profilerd_stack_problems_total",
            "counter",
            "Samples kept without (part of) a stack, by reason.",
        );
        for counter in [
            Counter::UserStackEmpty,
            Counter::UserStackError,
            Counter::UserStackLost,
            Counter::KernelStackError,
            Counter::KernelStackLost,
        ] {
            sample(
                &mut out,
                "profilerd_stack_problems_total",
                &[("reason", counter.name())],
                acc.kernel.get(counter) as f64,
            );
        }
        family(
            &mut out,
            "profilerd_new_process_notifications_dropped_total",
            "counter",
            "New-process notifications lost to a full ring buffer.",
        );
        sample(
            &mut out,
            "profilerd_new_process_notifications_dropped_total",
            &[],
            acc.kernel.get(Counter::NotifyDropped) as f64,
        );

        family(
            &mut out,
            "profilerd_map_entries",
            "gauge",
            "Entries the last drained kernel map held.",
        );
        family(
            &mut out,
            "profilerd_map_capacity",
            "gauge",
            "Entries each kernel map can hold (--*-map-entries).",
        );
        for (map, entries, capacity) in [
            ("counts", acc.counts_entries, s.capacity.counts),
            ("user_stacks", acc.stack_entries, s.capacity.user_stacks),
            (
                "kernel_stacks",
                acc.kernel_stack_entries,
                s.capacity.kernel_stacks,
            ),
        ] {
            sample(
                &mut out,
                "profilerd_map_entries",
                &[("map", map)],
                entries as f64,
            );
            sample(
                &mut out,
                "profilerd_map_capacity",
                &[("map", map)],
                f64::from(capacity),
            );
        }

        family(
            &mut out,
            "profilerd_drain_duration_seconds",
            "summary",
            "Time to flip, wait out and empty one map set.",
        );
        sample(
            &mut out,
            "profilerd_drain_duration_seconds_sum",
            &[],
            acc.drain_total.as_secs_f64(),
        );
        sample(
            &mut out,
            "profilerd_drain_duration_seconds_count",
            &[],
            acc.drains as f64,
        );

        family(
            &mut out,
            "profilerd_kernel_symbol_cache_total",
            "counter",
            "Kernel address lookups by cache result.",
        );
        sample(
            &mut out,
            "profilerd_kernel_symbol_cache_total",
            &[("result", "hit")],
            s.symbols.kernel_cache_hits as f64,
        );
        sample(
            &mut out,
            "profilerd_kernel_symbol_cache_total",
            &[("result", "miss")],
            s.symbols.kernel_cache_misses as f64,
        );
        family(
            &mut out,
            "profilerd_user_symbol_cache_total",
            "counter",
            "User address lookups by cache result.",
        );
        sample(
            &mut out,
            "profilerd_user_symbol_cache_total",
            &[("result", "hit")],
            s.symbols.user_cache_hits as f64,
        );
        sample(
            &mut out,
            "profilerd_user_symbol_cache_total",
            &[("result", "miss")],
            s.symbols.user_cache_misses as f64,
        );
        family(
            &mut out,
            "profilerd_symbol_cache_entries",
            "gauge",
            "Names held by the symbol caches (bounded by --max-kernel-symbols, --max-user-symbols).",
        );
        for (cache, entries) in [
            ("kernel", s.symbols.kernel_cache_entries),
            ("user", s.symbols.user_cache_entries),
        ] {
            sample(
                &mut out,
                "profilerd_symbol_cache_entries",
                &[("cache", cache)],
                entries as f64,
            );
        }
        family(
            &mut out,
            "profilerd_symbol_cache_dropped_total",
            "counter",
            "Names dropped when a full symbol cache was emptied.",
        );
        for (cache, dropped) in [
            ("kernel", s.symbols.kernel_cache_dropped),
            ("user", s.symbols.user_cache_dropped),
        ] {
            sample(
                &mut out,
                "profilerd_symbol_cache_dropped_total",
                &[("cache", cache)],
                dropped as f64,
            );
        }
        family(
            &mut out,
            "profilerd_symbol_files",
            "gauge",
            "Files mapped by tracked processes whose symbols blazesym may hold (bounded by --max-processes).",
        );
        sample(
            &mut out,
            "profilerd_symbol_files",
            &[],
            s.symbols.files_cached as f64,
        );
        family(
            &mut out,
            "profilerd_symbol_files_released_total",
            "counter",
            "Files whose parsed symbols were released: no tracked process maps them any more (exited), or older than --symbol-file-ttl (expired).",
        );
        for (reason, count) in [
            ("exited", s.symbols.files_evicted),
            ("expired", s.symbols.files_expired),
        ] {
            sample(
                &mut out,
                "profilerd_symbol_files_released_total",
                &[("reason", reason)],
                count as f64,
            );
        }
        family(
            &mut out,
            "profilerd_unknown_frames_total",
            "counter",
            "Frames no symbol was found for.",
        );
        sample(
            &mut out,
            "profilerd_unknown_frames_total",
            &[],
            s.symbols.unknown_frames as f64,
        );
        family(
            &mut out,
            "profilerd_processes_tracked",
            "gauge",
            "Processes whose memory maps the symbolizer holds.",
        );
        sample(
            &mut out,
            "profilerd_processes_tracked",
            &[],
            s.tracked_processes as f64,
        );
        family(
            &mut out,
            "profilerd_processes_total",
            "counter",
            "Symbolizer process entries by event: evicted (exited or idle), dropped (--max-processes full).",
        );
        sample(
            &mut out,
            "profilerd_processes_total",
            &[("event", "evicted")],
            s.symbols.processes_evicted as f64,
        );
        sample(
            &mut out,
            "profilerd_processes_total",
            &[("event", "dropped")],
            s.symbols.processes_dropped as f64,
        );

        family(
            &mut out,
            "profilerd_triggers_fired_total",
            "counter",
            "Trigger rule firings, by rule.",
        );
        for rule in ["cpu", "mem", "thread"] {
            let fired = s.triggers_fired.get(rule).copied().unwrap_or(0);
            sample(
                &mut out,
                "profilerd_triggers_fired_total",
                &[("rule", rule)],
                fired as f64,
            );
        }
        family(
            &mut out,
            "profilerd_trigger_history_bytes",
            "gauge",
            "Drained samples held for the seconds before a trigger.",
        );
        sample(
            &mut out,
            "profilerd_trigger_history_bytes",
            &[],
            s.history_bytes as f64,
        );

        family(
            &mut out,
            "profilerd_profiles_total",
            "counter",
            "Profiles by what happened to them.",
        );
        let mut profiles = vec![
            ("written", s.profiles_written),
            ("dump_removed", s.dump_removed),
        ];
        if let Some(d) = self.delivery.get() {
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            profiles.extend([
                ("sent", load(&d.sent)),
                ("retried", load(&d.retried)),
                ("split", load(&d.split)),
                ("spooled", load(&d.spooled)),
                ("replayed", load(&d.replayed)),
                ("rejected", load(&d.rejected)),
                ("moved_too_old", load(&d.moved_too_old)),
                ("dropped_spool_error", load(&d.dropped_spool_error)),
            ]);
        }
        if let Some((full, corrupt, _, _)) = s.spool {
            profiles.extend([
                ("dropped_spool_full", full),
                ("dropped_spool_corrupt", corrupt),
            ]);
        }
        for (event, value) in profiles {
            sample(
                &mut out,
                "profilerd_profiles_total",
                &[("event", event)],
                value as f64,
            );
        }
        if let Some((_, _, files, bytes)) = s.spool {
            family(
                &mut out,
                "profilerd_spool_profiles",
                "gauge",
                "Profiles waiting in the spool for the server.",
            );
            sample(&mut out, "profilerd_spool_profiles", &[], files as f64);
            family(
                &mut out,
                "profilerd_spool_bytes",
                "gauge",
                "Bytes of the spool (bounded by --spool-max-bytes).",
            );
            sample(&mut out, "profilerd_spool_bytes", &[], bytes as f64);
        }

        if let Some((cpu_seconds, rss_bytes)) = own_usage() {
            family(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the daemon.",
            );
            sample(&mut out, "process_cpu_seconds_total", &[], cpu_seconds);
            family(
                &mut out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the daemon.",
            );
            sample(&mut out, "process_resident_memory_bytes", &[], rss_bytes);
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// CPU seconds (utime + stime) and RSS bytes of this process.
fn own_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
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
    Some((ticks as f64 / hz as f64, (rss_pages * page as u64) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_samples() {
        let metrics = Metrics::default();
        let mut snapshot = Snapshot::default();
        snapshot.accounting.drained = 7;
        snapshot.triggers_fired.insert("cpu", 2);
        snapshot.capacity.counts = 16384;
        snapshot.spool = Some((1, 0, 3, 4096));
        metrics.publish(snapshot);
        let text = metrics.render();
        assert!(text.contains("# TYPE profilerd_samples_total counter\n"));
        assert!(text.contains("profilerd_samples_drained_total 7\n"));
        assert!(text.contains("profilerd_triggers_fired_total{rule=\"cpu\"} 2\n"));
        assert!(text.contains("profilerd_map_capacity{map=\"counts\"} 16384\n"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("profilerd_profiles_total{event=\"dropped_spool_full\"} 1\n"));
        assert!(text.contains("profilerd_spool_bytes 4096\n"));
        // Every sample line belongs to a family announced before it.
        let mut announced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                announced.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = name
                    .strip_suffix("_sum")
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|f| announced.contains(*f))
                    .unwrap_or(name);
                assert!(announced.contains(family), "{line}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
