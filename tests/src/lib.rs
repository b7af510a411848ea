//! Helpers for the end-to-end tests: build C fixtures, run the real `profilerd` binary, read
//! the pprof it writes.
//!
//! The guards, `/proc` readers and scenario judgements are the shared kit's
//! (`profiler-testkit`, also used by the bench and the kernel matrix); this crate adds what
//! only the tests need (the pprof decoder, `go tool pprof`, the Pyroscope stand-in) and turns
//! the kit's errors into panics.
//!
//! The tests need root (they load BPF programs and make cgroups) and a built `profilerd`
//! (`cargo xtask test` builds it before running them).

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

pub use profiler_testkit::{
    perf, procfs, scenario,
    stack::{count_with, total},
    wait_until, Cgroup as TestCgroup, Frame, Running, Stack,
};
pub use profilerd::pprof_proto::Profile;
pub mod browser;
pub mod standin;

use prost::Message;

/// Runs `command` with `input` on its stdin and its stdout and stderr captured; panics naming
/// `what` (the package that installs it) when it cannot start.
pub fn run_with_input(command: &mut Command, input: &[u8], what: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The workspace's target directory, found from this test binary (target/<profile>/deps/x).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// The `profilerd` binary built next to this test binary.
pub fn profilerd() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = profile_dir.join("profilerd");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo xtask test` does)",
        binary.display()
    );
    binary
}

/// The optimized `profilerd` (`target/release`), for tests whose claim is about how fast the
/// shipped build keeps up under load: an unoptimized daemon is several times slower per sample
/// and would measure the build, not the design.
pub fn profilerd_release() -> PathBuf {
    let binary = target_dir().join("release").join("profilerd");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build --release -p profiler-daemon`; `cargo xtask test` does)",
        binary.display()
    );
    binary
}

/// A scratch directory unique to one test, emptied on creation.
pub fn scratch(name: &str) -> PathBuf {
    let dir = target_dir()
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Fixture binaries this test process built already (output name and gcc arguments): each is
/// compiled once per process, not at every call.
static BUILT: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());

/// Compiles `tests/fixtures/NAME.c` with frame pointers everywhere (-O0) and returns the binary.
pub fn fixture(name: &str) -> PathBuf {
    fixture_with(name, name, &[])
}

/// Compiles `tests/fixtures/SOURCE.c` into `OUTPUT` with extra gcc arguments (e.g. `-shared`).
pub fn fixture_with(source: &str, output: &str, extra: &[&str]) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir = target_dir().join("fixtures");
    let binary = out_dir.join(output);
    let key = (
        output.to_string(),
        extra.iter().map(|a| a.to_string()).collect(),
    );
    if !built.contains(&key) {
        std::fs::create_dir_all(&out_dir).expect("fixtures dir");
        profiler_testkit::fixtures::build(source, &binary, extra)
            .unwrap_or_else(|e| panic!("{e:#}"));
        built.push(key);
    }
    binary
}

/// Runs `profilerd ARGS` to completion (bounded by `limit`) and returns its output.
pub fn run_profilerd(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(profilerd())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start profilerd");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait profilerd").is_some() {
            return child.wait_with_output().expect("profilerd output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("profilerd output");
            panic!(
                "profilerd {args:?} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`run_profilerd`], and asserts it succeeded.
pub fn run_ok(args: &[&str], limit: Duration) -> Output {
    let output = run_profilerd(args, limit);
    assert!(
        output.status.success(),
        "profilerd {args:?} failed ({}); stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Decodes a gzipped (or plain) pprof file.
pub fn read_pprof(path: &Path) -> Profile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .expect("gunzip");
        raw
    } else {
        bytes
    };
    Profile::decode(&raw[..]).expect("valid pprof protobuf")
}

/// All samples of a profile as [`Stack`]s, kernel frames marked by their mapping, counted by
/// their first value.
pub fn stacks(profile: &Profile) -> Vec<Stack> {
    stacks_by(profile, 0)
}

/// A profile's sample types, `type/unit` each.
pub fn sample_types(profile: &Profile) -> Vec<String> {
    let s = |i: i64| profile.string_table[i as usize].as_str();
    profile
        .sample_type
        .iter()
        .map(|t| format!("{}/{}", s(t.r#type), s(t.unit)))
        .collect()
}

/// [`stacks`] counted by value `index` (a profile of several sample types), the samples with
/// none of it left out.
pub fn stacks_by(profile: &Profile, index: usize) -> Vec<Stack> {
    let s = |i: i64| profile.string_table[i as usize].clone();
    let functions: HashMap<u64, String> =
        profile.function.iter().map(|f| (f.id, s(f.name))).collect();
    let kernel_mappings: Vec<u64> = profile
        .mapping
        .iter()
        .filter(|m| s(m.filename) == "[kernel.kallsyms]")
        .map(|m| m.id)
        .collect();
    let locations: HashMap<u64, Vec<Frame>> = profile
        .location
        .iter()
        .map(|l| {
            let kernel = kernel_mappings.contains(&l.mapping_id);
            let frames = l
                .line
                .iter()
                .map(|line| Frame {
                    function: functions[&line.function_id].clone(),
                    kernel,
                })
                .collect();
            (l.id, frames)
        })
        .collect();
    profile
        .sample
        .iter()
        .map(|sample| Stack {
            labels: sample.label.iter().map(|l| (s(l.key), s(l.str))).collect(),
            frames: sample
                .location_id
                .iter()
                .flat_map(|id| locations[id].clone())
                .collect(),
            count: sample.value[index],
        })
        .filter(|stack| stack.count != 0)
        .collect()
}

/// `go tool pprof ARGS FILE`, asserting it succeeds; returns stdout.
pub fn go_pprof(args: &[&str], file: &Path) -> String {
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", target_dir())
        .env("PPROF_TMPDIR", target_dir())
        .output()
        .expect("go must be installed (cargo xtask setup installs golang-go)");
    assert!(
        output.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `key=value` counters of profilerd's last "sample accounting:" (record) or "samples:"
/// (run) log line.
pub fn accounting(stderr: &str) -> HashMap<String, u64> {
    procfs::accounting(stderr).unwrap_or_else(|| panic!("no sample accounting line in:\n{stderr}"))
}

/// `GET http://ADDRESS PATH` (10 s at most): the status and the body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    let response = reqwest::blocking::Client::new()
        .get(format!("http://{address}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap_or_else(|err| panic!("GET {path}: {err}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

/// The value of `key=` in the first log line containing `needle`, with that line; panics
/// naming what is missing.
pub fn log_field<'a>(stderr: &'a str, needle: &str, key: &str) -> (&'a str, &'a str) {
    let line = stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` line:\n{stderr}"));
    let value = line
        .split(&format!("{key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    (value, line)
}

/// The value of one sample line (`name{labels}`, whole) of a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `time_nanos` and sample total of every window profile of the `split` fixture `pid` in
/// `dir`, oldest first.
pub fn window_totals(dir: &Path, pid: &str) -> Vec<(i64, i64)> {
    let prefix = format!("split-{pid}.cpu.");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.starts_with(&prefix) && name.ends_with(".pb.gz")
    });
    files.sort();
    files
        .iter()
        .map(|f| {
            let profile = read_pprof(f);
            (
                profile.time_nanos,
                profile.sample.iter().map(|s| s.value[0]).sum(),
            )
        })
        .collect()
}

/// `run --mode continuous --pid PID --server URL` with a 2 s window, a 500 ms collect
/// interval and the spool in `./spool`, then `extra`.
pub fn server_args<'a>(url: &'a str, pid: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--mode",
        "continuous",
        "--pid",
        pid,
        "--server",
        url,
        "--collect-interval",
        "500ms",
        "--upload-interval",
        "2s",
        "--spool-dir",
        "spool",
    ];
    args.extend_from_slice(extra);
    args
}

/// Profiles waiting in a spool dir (`*.spool`).
pub fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
                .count()
        })
        .unwrap_or(0)
}

/// A `profilerd` daemon in the background, stopped with SIGTERM.
pub struct Daemon(profiler_testkit::Daemon);

impl Daemon {
    /// Starts `profilerd ARGS`; its stderr goes to `DIR/NAME.stderr`.
    pub fn start(args: &[&str], dir: &Path, name: &str) -> Self {
        Self::start_under(&[], args, dir, name)
    }

    /// Starts `WRAPPER... profilerd ARGS` (e.g. `prlimit --nofile=1024:1024 --`), where the
    /// wrapper execs the daemon in its own process.
    pub fn start_under(wrapper: &[&str], args: &[&str], dir: &Path, name: &str) -> Self {
        Self::start_binary(&profilerd(), wrapper, args, dir, name)
    }

    /// Starts the optimized build (see [`profilerd_release`]) with `ARGS`.
    pub fn start_release(args: &[&str], dir: &Path, name: &str) -> Self {
        Self::start_binary(&profilerd_release(), &[], args, dir, name)
    }

    fn start_binary(
        binary: &Path,
        wrapper: &[&str],
        args: &[&str],
        dir: &Path,
        name: &str,
    ) -> Self {
        // Tests run one after the other and may overlap a daemon's exit: a free port each.
        let listen: &[&str] = if args.first() == Some(&"run") && !args.contains(&"--listen") {
            &["--listen", "127.0.0.1:0"]
        } else {
            &[]
        };
        let args: Vec<&str> = args.iter().chain(listen).copied().collect();
        let log = dir.join(format!("{name}.stderr"));
        let daemon = match wrapper.split_first() {
            None => profiler_testkit::Daemon::start(binary, &args, dir, &log),
            Some((program, rest)) => {
                let mut full: Vec<&str> = rest.to_vec();
                full.push(binary.to_str().expect("UTF-8 path"));
                full.extend(&args);
                profiler_testkit::Daemon::start(Path::new(program), &full, dir, &log)
            }
        }
        .unwrap_or_else(|e| panic!("start profilerd: {e:#}"));
        Daemon(daemon)
    }

    /// `run --mode continuous --pid PID --upload-interval 2s --dump-dir profiles --duration
    /// DURATION` in `dir`, logging to `DIR/daemon.stderr`.
    pub fn continuous(pid: &str, duration: &str, dir: &Path) -> Self {
        let args = [
            "run",
            "--mode",
            "continuous",
            "--pid",
            pid,
            "--upload-interval",
            "2s",
            "--dump-dir",
            "profiles",
            "--duration",
            duration,
        ];
        Self::start(&args, dir, "daemon")
    }

    pub fn stderr(&self) -> String {
        self.0.stderr()
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// The address of the daemon's HTTP listener, once it has logged it.
    pub fn http_address(&self, limit: Duration) -> String {
        let mut found = None;
        wait_until(limit, || {
            found = self.stderr().lines().find_map(|l| {
                let rest = l.split("HTTP listener on ").nth(1)?;
                // https:// with the TLS of --web-config-file.
                let rest = rest.split_once("://")?.1;
                Some(rest.split('/').next()?.to_string())
            });
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no HTTP listener line; stderr:\n{}", self.stderr()))
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns the daemon's stderr.
    pub fn terminate(self) -> String {
        self.terminate_within(Duration::from_secs(30))
    }

    /// SIGTERM, then asserts a clean exit within `limit`; returns the daemon's stderr.
    pub fn terminate_within(mut self, limit: Duration) -> String {
        self.0.sigterm();
        self.wait_exit(limit)
    }

    /// SIGKILL: nothing is flushed, as after a crash or the OOM killer. Returns the stderr.
    pub fn kill(mut self) -> String {
        self.0.kill();
        self.stderr()
    }

    /// Waits for the daemon to exit on its own (e.g. --duration), asserting success.
    pub fn wait_exit(&mut self, limit: Duration) -> String {
        let status = self
            .0
            .wait(limit, Duration::from_millis(50), |_| {})
            .unwrap_or_else(|e| panic!("{e:#}; stderr:\n{}", self.stderr()));
        let stderr = self.stderr();
        assert!(
            status.success(),
            "profilerd exited with {status}; stderr:\n{stderr}"
        );
        stderr
    }
}

/// `profilerd record --pid PID --duration DURATION EXTRA -o OUT` (must succeed within 60 s).
pub fn record_pid(pid: &str, duration: &str, extra: &[&str], out: &Path) -> Output {
    let out = out.to_str().expect("UTF-8 path");
    let mut args = vec!["record", "--pid", pid, "--duration", duration];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", out]);
    run_ok(&args, Duration::from_secs(60))
}

/// `profilerd record ARGS -o SCRATCH/NAME/cpu.pb.gz` (must succeed), decoded into stacks.
pub fn record_stacks(name: &str, args: &[&str]) -> Vec<Stack> {
    let out = scratch(name).join("cpu.pb.gz");
    let mut full: Vec<&str> = vec!["record"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--output", out.to_str().unwrap()]);
    run_ok(&full, Duration::from_secs(60));
    stacks(&read_pprof(&out))
}

/// Asserts a profile has a fair number of samples and only those of `pid`.
pub fn assert_only_pid(stacks: &[Stack], pid: u32, context: &str) {
    let total = total(stacks);
    assert!(total > 50, "only {total} samples ({context})");
    let pids: Vec<u32> = stacks.iter().map(Stack::pid).collect();
    assert!(
        pids.iter().all(|&p| p == pid),
        "pids {pids:?}, expected only {pid} ({context})"
    );
}
