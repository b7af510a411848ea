//! The exposition against the output saved before prometheus-client: the same names, help,
//! types, labels and values.

use super::*;

/// A snapshot with a distinct value in every field, and delivery counters.
fn known() -> Metrics {
    let metrics = Metrics::default();
    let mut s = Snapshot::default();
    for (i, v) in s.accounting.kernel.0.iter_mut().enumerate() {
        *v = 1000 + i as u64;
    }
    s.accounting.drained = 2001;
    s.accounting.in_profiles = 2002;
    s.accounting.dropped_stack_limit = 2003;
    s.accounting.drains = 4;
    s.accounting.last_drain = Duration::from_millis(250);
    s.accounting.drain_total = Duration::from_secs(1);
    s.accounting.counts_entries = 3001;
    s.accounting.stack_entries = 3002;
    s.accounting.kernel_stack_entries = 3003;
    s.capacity = MapCapacity {
        counts: 4001,
        user_stacks: 4002,
        kernel_stacks: 4003,
    };
    s.symbols = SymbolsStats {
        processes_tracked: 5001,
        processes_evicted: 5002,
        processes_dropped: 5003,
        kernel_cache_hits: 5004,
        kernel_cache_misses: 5005,
        user_cache_hits: 5006,
        user_cache_misses: 5007,
        kernel_cache_entries: 5008,
        kernel_cache_dropped: 5009,
        user_cache_entries: 5010,
        user_cache_dropped: 5011,
        unknown_frames: 5012,
        files_cached: 5013,
        files_evicted: 5014,
        files_expired: 5015,
        files_refused: [5016, 5017, 5018, 5019, 5020, 5022, 5023, 5024],
        symbol_bytes: 5021,
    };
    s.tracked_processes = 6001;
    s.triggers_fired.insert("cpu", 7001);
    s.triggers_fired.insert("mem", 7002);
    s.profiles_written = 8001;
    s.dump_removed = 8002;
    s.history_bytes = 8003;
    s.dump_leftovers = 8004;
    s.spool = Some(SpoolCounts {
        dropped_full: 9001,
        dropped_corrupt: 9002,
        files: 9003,
        bytes: 9004,
        corrupt_removed: 9005,
        leftovers: 9006,
        corrupt_files: 9007,
    });
    s.unwind = Some(UnwindStats {
        files: 11001,
        rows: 11002,
        rows_capacity: 11003,
        pages: 11004,
        pages_capacity: 11005,
        processes: 11006,
        processes_capacity: 11007,
        built: 11008,
        build_time: Duration::from_secs(1),
        files_failed: 11009,
        files_dropped: 11010,
        processes_dropped: 11011,
        mappings_dropped: 11012,
        jobs_dropped: 11013,
        write_errors: 11014,
    });
    let d = DeliveryStats::default();
    for (i, c) in [
        &d.sent,
        &d.retried,
        &d.spooled,
        &d.replayed,
        &d.split,
        &d.rejected,
        &d.moved_too_old,
        &d.dropped_spool_error,
        &d.responses_truncated,
        &d.redirects,
        &d.retry_after_capped,
    ]
    .into_iter()
    .enumerate()
    {
        c.store(10001 + i as u64, Ordering::Relaxed);
    }
    metrics.set_delivery(Arc::new(d));
    metrics.publish(s);
    metrics
}

/// What the hand-written encoder rendered before prometheus-client, for [`known`] and
/// for a [`Metrics::default`] without a server (`process_*` samples, which vary, left out).
const BEFORE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/metrics-before.prom"
));
const BEFORE_DEFAULT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/metrics-before-default.prom"
));

fn samples(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
        .filter(|l| !l.starts_with("profilerd_drain_duration_seconds"))
        .collect();
    lines.sort_unstable();
    lines
}

/// The same families in the same order with the same HELP, and the same samples; the
/// drain duration is a histogram now (it was a summary without quantiles: the same _sum
/// and _count). Returns the drain duration's lines.
fn assert_like_before<'t>(text: &'t str, before: &str) -> Vec<&'t str> {
    let headers = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| l.replace("seconds summary", "seconds histogram"))
            .collect()
    };
    assert_eq!(headers(text), headers(before), "{text}");
    assert_eq!(samples(text), samples(before), "{text}");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    // Every sample follows its own family's TYPE (the hand-written one broke this once).
    let mut family = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap();
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| *f == family))
                .unwrap_or(name);
            assert_eq!(base, family, "{line}");
        }
    }
    let value = |name: &str| -> f64 {
        let line = text.lines().rev().take(4).find(|l| l.starts_with(name));
        let line = line.unwrap_or_else(|| panic!("{name} at the end of {text}"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert!(value("process_cpu_seconds_total ") >= 0.0);
    assert!(value("process_resident_memory_bytes ") > 1e5);
    text.lines()
        .filter(|l| l.starts_with("profilerd_drain_duration_seconds"))
        .collect()
}

fn drain_lines(observed: &[f64]) -> Vec<String> {
    let mut lines: Vec<String> = DRAIN_BUCKETS
        .iter()
        .map(|le| {
            let count = observed.iter().filter(|v| *v <= le).count();
            format!("profilerd_drain_duration_seconds_bucket{{le=\"{le}\"}} {count}")
        })
        .collect();
    let sum = observed.iter().fold(0.0, |sum, v| sum + v);
    lines.extend([
        format!(
            "profilerd_drain_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            observed.len()
        ),
        format!("profilerd_drain_duration_seconds_sum {sum:?}"),
        format!("profilerd_drain_duration_seconds_count {}", observed.len()),
    ]);
    lines
}

#[test]
fn exposition_keeps_every_family_label_and_value_of_the_hand_written_one() {
    let text = known().encode().unwrap();
    assert_eq!(assert_like_before(&text, BEFORE), drain_lines(&[0.25; 4]));
}

#[test]
fn without_a_server_or_a_drain_too() {
    let text = Metrics::default().encode().unwrap();
    assert_eq!(assert_like_before(&text, BEFORE_DEFAULT), drain_lines(&[]));
}

#[test]
fn counters_never_go_back_and_drains_are_observed_once() {
    let metrics = known();
    let mut later = Snapshot::default();
    later.accounting.drains = 5;
    later.accounting.drain_total = Duration::from_millis(1002);
    later.accounting.counts_entries = 7;
    metrics.publish(later);
    let text = metrics.encode().unwrap();
    for line in [
        "profilerd_samples_drained_total 2001",
        "profilerd_map_entries{map=\"counts\"} 7",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    let drains: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("profilerd_drain"))
        .collect();
    assert_eq!(drains, drain_lines(&[0.25, 0.25, 0.25, 0.25, 0.002]));
}
