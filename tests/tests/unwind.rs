//! Whole user stacks of code built without frame pointers: profilerd's `.eh_frame` unwinder
//! against `perf record --call-graph dwarf` on the same process at the same time. The share of
//! samples whose stack reaches the program's entry chain must be at least 0.98 of perf's, on a
//! C fixture built `-O2 -fomit-frame-pointer` and on Debian's own `python3.11`, `perl` and
//! `sqlite3` (none of them has frame pointers).

use std::time::Duration;

use perf::{reaching, Recording};
use profiler_tests::*;

/// What a complete user stack of a C program reaches.
const ENTRY: &[&str] = &["__libc_start_call_main"];
/// How long both profilers record, once the target has run for a second (its tables are
/// built at its first sample; until then it is walked with frame pointers).
const RECORD: Duration = Duration::from_secs(5);

/// Records `process` with profilerd and perf at once; returns (ours, perf's) shares of
/// samples reaching `entries`, and our stacks.
fn compare(name: &str, process: &Running, entries: &[&str]) -> (f64, f64, Vec<Stack>) {
    let dir = scratch(name);
    std::thread::sleep(Duration::from_secs(1));
    let perf = Recording::start(process.pid(), RECORD, &dir.join("perf.data"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let out = dir.join("cpu.pb.gz");
    let pid = process.pid().to_string();
    let seconds = format!("{}s", RECORD.as_secs());
    let output = record_pid(&pid, &seconds, &[], &out);
    let ours = stacks(&read_pprof(&out));
    let reference = perf.stacks().unwrap_or_else(|e| panic!("{e:#}"));
    let (share, perf_share) = (reaching(&ours, entries), reaching(&reference, entries));
    eprintln!(
        "{name}: {:.1}% of {} samples reach {entries:?}, perf {:.1}% of {}\n{}",
        share * 100.0,
        total(&ours),
        perf_share * 100.0,
        reference.len(),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|l| l.contains("accounting"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(total(&ours) >= 100, "only {} samples", total(&ours));
    assert!(reference.len() >= 100, "perf took only {}", reference.len());
    (share, perf_share, ours)
}

fn assert_as_complete(name: &str, share: f64, perf_share: f64, ours: &[Stack]) {
    let example = ours
        .iter()
        .max_by_key(|s| s.count)
        .map(|s| {
            let names: Vec<&str> = s.frames.iter().map(|f| f.function.as_str()).collect();
            names.join(" <- ")
        })
        .unwrap_or_default();
    assert!(
        share >= 0.98 * perf_share,
        "{name}: {:.1}% of our samples reach the entry chain, perf's {:.1}%; our commonest stack: {example}",
        share * 100.0,
        perf_share * 100.0
    );
}

#[test]
fn c_without_frame_pointers_reaches_main_as_perf_does() {
    let binary = fixture_with("nofp", "nofp", &["-O2", "-fomit-frame-pointer"]);
    let process = Running::spawn(&binary, &["30"]);
    let (share, perf_share, ours) = compare("unwind-nofp", &process, ENTRY);
    assert_as_complete("nofp", share, perf_share, &ours);
    // The chain is there in order, leaf first, through libc's qsort (no frame pointers).
    for leaf in ["leaf_spin", "compare_slowly"] {
        let stack = ours
            .iter()
            .filter(|s| s.has(leaf))
            .max_by_key(|s| s.count)
            .unwrap_or_else(|| panic!("no sample in {leaf}"));
        let at = |f: &str| {
            stack
                .position(f)
                .unwrap_or_else(|| panic!("{f} missing from {:?}", stack.frames))
        };
        assert!(
            at(leaf) < at("inner_fn")
                && at("inner_fn") < at("middle_fn")
                && at("middle_fn") < at("outer_fn")
                && at("outer_fn") < at("main"),
            "{:?}",
            stack.frames
        );
    }
}

#[test]
fn debian_python_reaches_py_runmain_as_perf_does() {
    let script =
        "def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\nwhile True:\n    f(24)\n";
    let process = Running::spawn(std::path::Path::new("/usr/bin/python3.11"), &["-c", script]);
    let (share, perf_share, ours) = compare("unwind-python", &process, &["Py_RunMain"]);
    assert_as_complete("python3.11", share, perf_share, &ours);
}

#[test]
fn debian_perl_reaches_main_as_perf_does() {
    let script =
        "sub f { my $n = shift; return $n < 2 ? $n : f($n - 1) + f($n - 2) } while (1) { f(20) }";
    let process = Running::spawn(std::path::Path::new("/usr/bin/perl"), &["-e", script]);
    let (share, perf_share, ours) = compare("unwind-perl", &process, ENTRY);
    assert_as_complete("perl", share, perf_share, &ours);
}

#[test]
fn debian_sqlite3_reaches_main_as_perf_does() {
    let query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000000) SELECT count(*) FROM c WHERE x % 7 = 3;";
    let process = Running::spawn(
        std::path::Path::new("/usr/bin/sqlite3"),
        &[":memory:", query],
    );
    let (share, perf_share, ours) = compare("unwind-sqlite3", &process, ENTRY);
    assert_as_complete("sqlite3", share, perf_share, &ours);
}
