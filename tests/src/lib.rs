//! Helpers for the end-to-end tests: build C fixtures, run the real `profilerd` binary, read
//! the pprof it writes.
//!
//! The tests need root (they load BPF programs and make cgroups) and a built `profilerd`
//! (`cargo xtask test` builds it before running them).

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

pub use profilerd::pprof_proto::Profile;
pub mod standin;

use prost::Message;

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

/// A scratch directory unique to one test, emptied on creation.
pub fn scratch(name: &str) -> PathBuf {
    let dir = target_dir()
        .join("e2e")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Compiles `tests/fixtures/NAME.c` with frame pointers everywhere (-O0) and returns the binary.
pub fn fixture(name: &str) -> PathBuf {
    fixture_with(name, name, &[])
}

/// Compiles `tests/fixtures/SOURCE.c` into `OUTPUT` with extra gcc arguments (e.g. `-shared`).
pub fn fixture_with(source: &str, output: &str, extra: &[&str]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{source}.c"));
    let out_dir = target_dir().join("fixtures");
    std::fs::create_dir_all(&out_dir).expect("fixtures dir");
    let binary = out_dir.join(output);
    let output = Command::new("gcc")
        .args(["-O0", "-g", "-fno-omit-frame-pointer"])
        .args(extra)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc must be installed (cargo xtask setup installs it)");
    assert!(
        output.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Running {
    pub fn spawn(program: &Path, args: &[&str]) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Running(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// A decoded sample: its labels and its stack as function names, leaf first (inlined
/// functions expanded), with kernel frames marked by their mapping.
#[derive(Debug, Clone)]
pub struct Stack {
    pub labels: HashMap<String, String>,
    pub frames: Vec<Frame>,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub kernel: bool,
}

impl Stack {
    pub fn pid(&self) -> u32 {
        self.labels["pid"].parse().expect("numeric pid label")
    }

    pub fn has(&self, function: &str) -> bool {
        self.frames.iter().any(|f| f.function == function)
    }

    pub fn leaf_user(&self) -> Option<&str> {
        self.frames
            .iter()
            .find(|f| !f.kernel)
            .map(|f| f.function.as_str())
    }
}

/// All samples of a profile as [`Stack`]s.
pub fn stacks(profile: &Profile) -> Vec<Stack> {
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
            count: sample.value[0],
        })
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

/// Waits until `path` exists with content, up to `limit`.
pub fn wait_for_file(path: &Path, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The `key=value` counters of profilerd's last "sample accounting:" (record) or "samples:"
/// (run) log line.
pub fn accounting(stderr: &str) -> HashMap<String, u64> {
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once("sample accounting: ")
                .or_else(|| l.split_once("samples: taken="))
                .map(|(_, rest)| rest)
        })
        .unwrap_or_else(|| panic!("no sample accounting line in:\n{stderr}"));
    let line = if line.starts_with("taken=") {
        line.to_string()
    } else {
        format!("taken={line}")
    };
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// A `profilerd` daemon in the background, stopped with SIGTERM.
pub struct Daemon {
    child: Child,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Starts `profilerd ARGS`; its stderr goes to `DIR/NAME.stderr`.
    pub fn start(args: &[&str], dir: &Path, name: &str) -> Self {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        // Tests run one after the other and may overlap a daemon's exit: a free port each.
        let listen: &[&str] = if args.first() == Some(&"run") && !args.contains(&"--listen") {
            &["--listen", "127.0.0.1:0"]
        } else {
            &[]
        };
        let child = Command::new(profilerd())
            .args(args)
            .args(listen)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start profilerd");
        Daemon { child, stderr_path }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the daemon's HTTP listener, once it has logged it.
    pub fn http_address(&self, limit: Duration) -> String {
        let mut found = None;
        wait_until(limit, || {
            found = self.stderr().lines().find_map(|l| {
                let rest = l.split("HTTP listener on http://").nth(1)?;
                Some(rest.split('/').next()?.to_string())
            });
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no HTTP listener line; stderr:\n{}", self.stderr()))
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns the daemon's stderr.
    pub fn terminate(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit(Duration::from_secs(30))
    }

    /// Waits for the daemon to exit on its own (e.g. --duration), asserting success.
    pub fn wait_exit(&mut self, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait profilerd") {
                let stderr = self.stderr();
                assert!(
                    status.success(),
                    "profilerd exited with {status}; stderr:\n{stderr}"
                );
                return stderr;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "profilerd did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
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
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    assert!(total > 50, "only {total} samples ({context})");
    let pids: Vec<u32> = stacks.iter().map(Stack::pid).collect();
    assert!(
        pids.iter().all(|&p| p == pid),
        "pids {pids:?}, expected only {pid} ({context})"
    );
}

/// Where the cgroup2 hierarchy is mounted on this host.
pub fn cgroup2_mount() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

/// A child cgroup made for a test (needs root), removed on drop once its processes are gone.
pub struct TestCgroup(pub PathBuf);

impl TestCgroup {
    pub fn create(name: &str) -> Self {
        let path = cgroup2_mount().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&path).expect("create a child cgroup (needs root)");
        TestCgroup(path)
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .expect("move a process into the cgroup");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
