//! Whole user stacks of code built without frame pointers: profilerd's `.eh_frame` unwinder
//! against `perf record --call-graph dwarf` on the same process at the same time. The share of
//! samples whose stack reaches the program's entry chain must be at least 0.98 of perf's, on a
//! C fixture built `-O2 -fomit-frame-pointer` and on Debian's own `python3.11`, `perl` and
//! `sqlite3` (none of them has frame pointers); on C++ with exceptions and inlining, a library
//! loaded with `dlopen` after the recording started, PIE and non-PIE executables, and a process
//! whose binary only exists in its own mount namespace. A short-lived process gets its tables
//! after its first sample (the samples before are counted), and a frame-pointer fixture and a
//! Go one keep their whole chains with tables on and with `--unwind fp`; `.debug_frame` is
//! read from the file or its separate debug file.

use std::time::Duration;

use perf::{reaching, Recording};
use profiler_tests::*;

/// What a complete user stack of a C program reaches.
const ENTRY: &[&str] = &["__libc_start_call_main"];
/// How long both profilers record, once the target has run for a second (its tables are
/// built at its first sample; until then it is walked with frame pointers).
const RECORD: Duration = Duration::from_secs(3);

/// Runs two comparisons at the same time, each with its own perf and profilerd: a test that
/// compares two programs or two settings waits for one recording, not two.
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let first = scope.spawn(a);
        let second = b();
        let first = first
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (first, second)
    })
}

/// Records `process` with profilerd and perf at once; returns (ours, perf's) shares of
/// samples reaching `entries`, and our stacks.
fn compare(name: &str, process: &Running, entries: &[&str]) -> (f64, f64, Vec<Stack>) {
    compare_with(name, process, entries, &[])
}

/// [`compare`] with `extra` arguments to `profilerd record`.
fn compare_with(
    name: &str,
    process: &Running,
    entries: &[&str],
    extra: &[&str],
) -> (f64, f64, Vec<Stack>) {
    let dir = scratch(name);
    std::thread::sleep(Duration::from_secs(1));
    let perf = Recording::start(process.pid(), RECORD, &dir.join("perf.data"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let out = dir.join("cpu.pb.gz");
    let pid = process.pid().to_string();
    let seconds = format!("{}s", RECORD.as_secs());
    let output = record_pid(&pid, &seconds, extra, &out);
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

/// The commonest stacks that do not reach `entries`, one line each, for failure messages.
fn incomplete(stacks: &[Stack], entries: &[&str]) -> String {
    let mut short: Vec<&Stack> = stacks
        .iter()
        .filter(|s| !entries.iter().any(|e| s.has(e)))
        .collect();
    short.sort_by_key(|s| -s.count);
    let line = |s: &&Stack| {
        let names: Vec<&str> = s.frames.iter().map(|f| f.function.as_str()).collect();
        let pid = s.labels.get("pid").map(String::as_str).unwrap_or("?");
        format!("{} x pid {pid}: {}", s.count, names.join(" <- "))
    };
    short
        .iter()
        .take(5)
        .map(line)
        .collect::<Vec<_>>()
        .join("\n")
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
        "{name}: {:.1}% of our samples reach the entry chain, perf's {:.1}%; our commonest stack: {example}; commonest incomplete:\n{}",
        share * 100.0,
        perf_share * 100.0,
        incomplete(ours, ENTRY)
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
        assert_chain(&ours, &[leaf, "inner_fn", "middle_fn", "outer_fn", "main"]);
    }
}

/// Asserts the commonest stack holding `chain[0]` and `chain[1]` holds the whole `chain`, in
/// order, leaf first.
fn assert_chain(ours: &[Stack], chain: &[&str]) {
    let stack = ours
        .iter()
        .filter(|s| s.has(chain[0]) && s.has(chain[1]))
        .max_by_key(|s| s.count)
        .unwrap_or_else(|| panic!("no sample in {}", chain[0]));
    let at = |f: &str| {
        stack
            .position(f)
            .unwrap_or_else(|| panic!("{f} missing from {:?}", stack.frames))
    };
    assert!(
        chain.windows(2).all(|w| at(w[0]) < at(w[1])),
        "not in the order {chain:?}: {:?}",
        stack.frames
    );
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

/// The stacks of each window profile in `dir` whose name starts with `prefix`, oldest first.
fn windows_of(dir: &std::path::Path, prefix: &str) -> Vec<Vec<Stack>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.starts_with(prefix) && name.ends_with(".pb.gz")
    });
    files.sort();
    files.iter().map(|f| stacks(&read_pprof(f))).collect()
}

/// The fixture built `-O2 -fomit-frame-pointer`, as `output` with `extra` flags.
fn nofp(output: &str, extra: &[&str]) -> std::path::PathBuf {
    let flags: Vec<&str> = ["-O2", "-fomit-frame-pointer"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    fixture_with("nofp", output, &flags)
}

#[test]
fn cpp_with_exceptions_and_inlining_reaches_main_as_perf_does() {
    let binary = fixture_with("nofp_cpp", "nofp_cpp", &["-O2", "-fomit-frame-pointer"]);
    let process = Running::spawn(&binary, &["30"]);
    let (share, perf_share, ours) = compare("unwind-cpp", &process, ENTRY);
    assert_as_complete("nofp_cpp", share, perf_share, &ours);
    // Through the recursion, the frame with the try block and the inlined mix_step.
    assert_chain(
        &ours,
        &[
            "mix_step",
            "cpp_burn(int)",
            "cpp_descend(int, int)",
            "cpp_catcher(int)",
        ],
    );
    assert_chain(
        &ours,
        &[
            "cpp_burn(int)",
            "cpp_catcher(int)",
            "cpp_outer(double)",
            "main",
        ],
    );
    let deep = ours
        .iter()
        .filter(|s| s.has("cpp_burn(int)"))
        .max_by_key(|s| s.count)
        .map(|s| {
            s.frames
                .iter()
                .filter(|f| f.function == "cpp_descend(int, int)")
                .count()
        });
    assert_eq!(
        deep,
        Some(7),
        "cpp_descend recurses 6 deep below the catcher"
    );
}

/// `-fno-asynchronous-unwind-tables -g`: the program's own functions are described in
/// `.debug_frame` only, `.eh_frame` holds just the start files' FDEs.
const DEBUG_FRAME_ONLY: [&str; 3] = [
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-g",
];

/// A copy of a program whose debug sections went to a separate debug file under
/// `/usr/lib/debug/.build-id/`, where the symbolizer (and Debian's `-dbgsym` packages) put
/// them; removed again on drop.
struct SplitDebug {
    program: std::path::PathBuf,
    debug_file: std::path::PathBuf,
}

impl SplitDebug {
    fn new(binary: &std::path::Path, output: &str) -> Self {
        let program = binary.with_file_name(output);
        let id = build_id(binary);
        let debug_file = std::path::PathBuf::from(format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        ));
        std::fs::create_dir_all(debug_file.parent().unwrap()).expect("debug directory");
        let objcopy = |args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new("objcopy")
                .args(args)
                .status()
                .expect("run objcopy");
            assert!(status.success(), "objcopy {args:?}: {status}");
        };
        objcopy(&[
            "--only-keep-debug".as_ref(),
            binary.as_ref(),
            debug_file.as_ref(),
        ]);
        objcopy(&["--strip-debug".as_ref(), binary.as_ref(), program.as_ref()]);
        Self {
            program,
            debug_file,
        }
    }
}

impl Drop for SplitDebug {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.debug_file);
    }
}

/// The GNU build id of an ELF file, in hex, as `readelf -n` prints it.
fn build_id(binary: &std::path::Path) -> String {
    let out = std::process::Command::new("readelf")
        .arg("-n")
        .arg(binary)
        .output()
        .expect("run readelf");
    let notes = String::from_utf8_lossy(&out.stdout);
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build id in {}", binary.display()))
        .to_string()
}

/// Whether `section` is among the sections of `binary` with data in the file.
fn has_section(binary: &std::path::Path, section: &str) -> bool {
    let out = std::process::Command::new("readelf")
        .args(["-SW"])
        .arg(binary)
        .output()
        .expect("run readelf");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.contains(&format!(" {section} ")) && !l.contains("NOBITS"))
}

#[test]
fn debug_frame_in_the_file_or_in_its_debug_file_reaches_main() {
    let binary = nofp("nofp_debug_frame", &DEBUG_FRAME_ONLY);
    assert!(has_section(&binary, ".debug_frame"), "no .debug_frame");
    let split = SplitDebug::new(&binary, "nofp_debug_file");
    assert!(!has_section(&split.program, ".debug_frame"));
    assert!(has_section(&split.debug_file, ".debug_frame"));
    let in_file = Running::spawn(&binary, &["30"]);
    let in_debug_file = Running::spawn(&split.program, &["30"]);
    let results = both(
        || compare("unwind-debug_frame", &in_file, ENTRY),
        || compare("unwind-debug_file", &in_debug_file, ENTRY),
    );
    for (name, (share, perf_share, ours)) in [("debug_frame", results.0), ("debug_file", results.1)]
    {
        assert_as_complete(name, share, perf_share, &ours);
        assert_chain(
            &ours,
            &["leaf_spin", "inner_fn", "middle_fn", "outer_fn", "main"],
        );
    }
}

#[test]
fn pie_and_non_pie_executables_reach_main_as_perf_does() {
    let spawn = |output: &str, flags: [&str; 2], e_type: u8| {
        let binary = nofp(output, &flags);
        // e_type: ET_EXEC (2) without PIE, ET_DYN (3) with it.
        let elf = std::fs::read(&binary).expect("read the fixture");
        assert_eq!(elf[16], e_type, "{output}");
        Running::spawn(&binary, &["30"])
    };
    let pie = spawn("nofp_pie", ["-pie", "-fPIE"], 3);
    let nopie = spawn("nofp_nopie", ["-no-pie", "-fno-PIE"], 2);
    let results = both(
        || compare("unwind-nofp_pie", &pie, ENTRY),
        || compare("unwind-nofp_nopie", &nopie, ENTRY),
    );
    for (output, (share, perf_share, ours)) in [("nofp_pie", results.0), ("nofp_nopie", results.1)]
    {
        assert_as_complete(output, share, perf_share, &ours);
        assert_chain(&ours, &["leaf_spin", "inner_fn", "outer_fn", "main"]);
    }
}

#[test]
fn library_dlopened_after_the_recording_started_reaches_main() {
    let flags = ["-O2", "-fomit-frame-pointer"];
    let library = fixture_with(
        "libhot",
        "libhot_nofp.so",
        &[&flags[..], &["-shared", "-fPIC"]].concat(),
    );
    let program = fixture_with("dlopen", "dlopen_nofp", &[&flags[..], &["-ldl"]].concat());
    let process = Running::spawn(&program, &[library.to_str().unwrap(), "30", "3"]);
    let dir = scratch("unwind-dlopen");
    let pid = process.pid().to_string();
    // 3 s in warm_up (the daemon starts meanwhile), then the dlopen. 2 s windows; perf takes
    // 3 s within the last two, long after the library's first samples.
    let daemon = Daemon::continuous(&pid, "10s", &dir);
    std::thread::sleep(Duration::from_secs(6));
    let reference = Recording::start(
        process.pid(),
        Duration::from_secs(3),
        &dir.join("perf.data"),
    )
    .and_then(Recording::stacks)
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut daemon = daemon;
    let stderr = daemon.wait_exit(Duration::from_secs(30));
    eprintln!("{:?}", accounting(&stderr));
    let windows = windows_of(&dir.join("profiles"), &format!("dlopen_nofp-{pid}.cpu."));
    assert!(windows.len() >= 4, "only {} windows", windows.len());
    let ours: Vec<Stack> = windows.concat();
    let last: Vec<Stack> = windows[windows.len() - 2..].concat();
    let hot = |stacks: &[Stack]| -> Vec<Stack> {
        stacks
            .iter()
            .filter(|s| s.has("hot_in_library"))
            .cloned()
            .collect()
    };
    let (ours_hot, last_hot, perf_hot) = (hot(&ours), hot(&last), hot(&reference));
    let warm = count_with(&ours, "warm_up");
    assert!(
        warm > 20,
        "sampled before the dlopen: only {warm} samples in warm_up"
    );
    assert!(
        total(&ours_hot) > 200,
        "only {} samples in the library",
        total(&ours_hot)
    );
    assert!(
        perf_hot.len() > 100,
        "perf took only {} in the library",
        perf_hot.len()
    );
    let (share, perf_share) = (reaching(&ours_hot, ENTRY), reaching(&perf_hot, ENTRY));
    let last_share = reaching(&last_hot, ENTRY);
    eprintln!(
        "dlopen: {:.1}% of {} library samples reach main's caller, {:.1}% of {} in the last 4 s, perf {:.1}% of {}",
        share * 100.0,
        total(&ours_hot),
        last_share * 100.0,
        total(&last_hot),
        perf_share * 100.0,
        perf_hot.len()
    );
    // Once the library's table is loaded, as complete as perf; the first samples after the
    // dlopen may precede it, but they are few.
    assert!(
        last_share >= 0.98 * perf_share && share >= 0.8,
        "{:.1}% in the last 4 s, {:.1}% in all, perf's {:.1}%; commonest incomplete:\n{}",
        last_share * 100.0,
        share * 100.0,
        perf_share * 100.0,
        incomplete(&last_hot, ENTRY)
    );
    assert_chain(
        &ours_hot,
        &["hot_in_library", "main", "__libc_start_call_main"],
    );
}

#[test]
fn process_in_another_mount_namespace_reaches_main_as_perf_does() {
    let binary = nofp("nofp", &[]);
    let dir = scratch("unwind-mntns");
    let private = dir.join("private");
    std::fs::create_dir_all(&private).expect("mount point");
    // The binary exists only in the namespace's tmpfs; the shell execs it (same pid).
    let script = format!(
        "mount -t tmpfs none {p} && cp {b} {p}/nofp && exec {p}/nofp 30",
        p = private.display(),
        b = binary.display()
    );
    let mut command = std::process::Command::new("unshare");
    command.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let process = Running::command(&mut command).expect("unshare");
    let exe = format!("/proc/{}/exe", process.pid());
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("private/nofp"))
        }),
        "the fixture did not start in its namespace"
    );
    assert!(
        !private.join("nofp").exists(),
        "the binary is visible outside the namespace"
    );
    let (share, perf_share, ours) = compare("unwind-mntns", &process, ENTRY);
    // perf does not find the file in the namespace (0% in our runs): the bar is explicit.
    assert_as_complete("nofp in a mount namespace", share, perf_share, &ours);
    assert!(share >= 0.98, "{:.1}% reach main's caller", share * 100.0);
    assert_chain(&ours, &["leaf_spin", "inner_fn", "outer_fn", "main"]);
}

/// What [`short_lived_runs`] returns.
type ShortLived = (Vec<Stack>, std::collections::HashMap<String, u64>);

/// [`record_short_lived_runs`], once for the tests that judge it.
fn short_lived_runs() -> &'static ShortLived {
    static RUNS: std::sync::OnceLock<ShortLived> = std::sync::OnceLock::new();
    RUNS.get_or_init(|| record_short_lived_runs("unwind-short"))
}

/// Ten runs of the fixture for 300 ms each (each a new process, found by its first sample),
/// recorded by cgroup: the samples in the fixture's own code and the accounting counters.
fn record_short_lived_runs(name: &str) -> ShortLived {
    let binary = nofp("nofp", &[]);
    let group = TestCgroup::create(name);
    let dir = scratch(name);
    let out = dir.join("cpu.pb.gz");
    let cgroup = format!("/{}", group.name());
    let out_arg = out.to_str().unwrap();
    let args = [
        "record",
        "--cgroup",
        &cgroup,
        "--duration",
        "8s",
        "-o",
        out_arg,
    ];
    // The optimized build, as users run it: how soon a new process has its tables depends on
    // the symbolizer's and loader's speed (libc's DWARF from libc6-dbg, where installed).
    let mut daemon = Daemon::start_release(&args, &dir, "record");
    std::thread::sleep(Duration::from_secs(2));
    let script = format!(
        "echo $$ > {}/cgroup.procs && for i in 1 2 3 4 5 6 7 8 9 10; do {} 0.3; done",
        group.0.display(),
        binary.display()
    );
    let mut runs = Running::spawn(std::path::Path::new("sh"), &["-c", &script]);
    let status = runs.0.wait().expect("wait for the runs");
    assert!(status.success(), "the runs failed: {status}");
    let stderr = daemon.wait_exit(Duration::from_secs(30));
    let counters = accounting(&stderr);
    let program: Vec<Stack> = stacks(&read_pprof(&out))
        .into_iter()
        .filter(|s| s.has("leaf_spin") || s.has("compare_slowly"))
        .collect();
    let pids: std::collections::HashSet<u32> = program.iter().map(Stack::pid).collect();
    eprintln!(
        "{name}: {} samples of {} processes, {:.1}% reach main, {:.1}% main's caller; {counters:?}",
        total(&program),
        pids.len(),
        reaching(&program, &["main"]) * 100.0,
        reaching(&program, ENTRY) * 100.0,
    );
    assert!(
        pids.len() >= 8,
        "only {} of the 10 runs sampled",
        pids.len()
    );
    assert!(total(&program) >= 100, "only {} samples", total(&program));
    (program, counters)
}

/// Most samples reach main; the rest were walked before the process's tables and are counted.
#[test]
fn short_lived_processes_get_tables_after_their_first_sample() {
    let (program, counters) = short_lived_runs();
    let share = reaching(program, &["main"]);
    let short = program
        .iter()
        .filter(|s| !s.has("main"))
        .map(|s| s.count)
        .sum::<i64>() as u64;
    assert!(share >= 0.8, "only {:.1}% reach main", share * 100.0);
    // What did not reach it was walked before its tables: counted, not lost silently.
    assert!(
        short <= counters["unwind_no_tables"],
        "{short} stacks short of main, {} counted without tables; commonest:\n{}",
        counters["unwind_no_tables"],
        incomplete(program, &["main"])
    );
}

/// A process first sampled in ld.so, before libc is mapped, got a mapping list without libc
/// (one or two of the ten runs): its stacks stopped at the first libc frame, unnamed
/// (`main <- [unknown] 0x7f..249`, which is `__libc_start_call_main`), and were not counted in
/// `unwind_no_tables`. The unwinder now asks for a map re-read when it meets code outside the
/// list, so libc gets its table and its names while the process lives.
#[test]
fn short_lived_processes_unwind_and_name_libc_below_main() {
    let (program, _) = short_lived_runs();
    let through_main: Vec<Stack> = program.iter().filter(|s| s.has("main")).cloned().collect();
    let named = reaching(&through_main, ENTRY);
    assert!(
        named >= 0.98,
        "{:.1}% of {} stacks through main name its caller; commonest without:\n{}",
        named * 100.0,
        total(&through_main),
        incomplete(&through_main, ENTRY)
    );
}

#[test]
fn frame_pointer_fixture_keeps_its_chain_with_tables_and_with_fp() {
    let binary = fixture("split");
    let process = Running::spawn(&binary, &["60"]);
    let ((share, perf_share, ours), (fp_share, fp_perf_share, fp)) = both(
        || compare("unwind-split", &process, ENTRY),
        || compare_with("unwind-split-fp", &process, &["main"], &["--unwind", "fp"]),
    );
    assert_as_complete("split", share, perf_share, &ours);
    assert_chain(
        &ours,
        &["work_unit", "work_three", "main", "__libc_start_call_main"],
    );
    let perf_share = fp_perf_share;
    assert!(
        fp_share >= 0.98 * perf_share,
        "--unwind fp: {:.1}% reach main",
        fp_share * 100.0
    );
    assert_chain(&fp, &["work_unit", "work_three", "main"]);
    assert_chain(&fp, &["work_unit", "work_one", "main"]);
}

#[test]
fn go_fixture_keeps_its_chain_with_tables_and_with_fp() {
    let binary = fixture("gohot");
    let process = Running::spawn(&binary, &["60"]);
    // perf's DWARF unwinder has no CFI for Go code (no .eh_frame): today's frame-pointer walk
    // is the reference.
    let entry = &["runtime.main"];
    let ((share, _, ours), (fp_share, _, fp)) = both(
        || compare("unwind-go", &process, entry),
        || compare_with("unwind-go-fp", &process, entry, &["--unwind", "fp"]),
    );
    assert!(
        share >= 0.98 * fp_share && fp_share >= 0.9,
        "{:.1}% of our samples reach runtime.main with tables, {:.1}% with --unwind fp; commonest incomplete:\n{}",
        share * 100.0,
        fp_share * 100.0,
        incomplete(&ours, entry)
    );
    for stacks in [&ours, &fp] {
        assert_chain(
            stacks,
            &[
                "main.leaf",
                "main.middle",
                "main.outer",
                "main.main",
                "runtime.main",
            ],
        );
    }
}
