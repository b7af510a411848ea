//! Project tasks: `cargo xtask setup | build | run | test | bench`.
//!
//! `setup` installs exactly what is missing on a Debian 12 host (the BPF toolchain, the
//! reference pprof reader) and is quick when everything is present; every other task runs it
//! first, so the README's two commands work on a fresh machine.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod kernels;
mod setup;
mod test;

/// profilerd's project tasks.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (Debian packages, bpf-linker).
    Setup,
    /// Setup, then build everything.
    Build,
    /// Setup, build release, run `profilerd run` (default: --dump-dir profiles).
    Run {
        /// Arguments passed on to `profilerd run`, instead of the default.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, then fmt check, clippy, unit and end-to-end tests, then the kernel matrix
    /// (6.1 and 6.12 under QEMU, and this host's kernel).
    Test {
        /// Only the kernel matrix.
        #[arg(long)]
        kernels: bool,
    },
    /// Setup (with bpftrace, perf, bpftool), build release, run the benchmarks side by side
    /// with bpftrace and perf.
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Build => setup::setup().and_then(|()| cargo(&["build", "--workspace"])),
        Task::Run { args } => run(&args),
        Task::Test { kernels } => test::test(kernels),
        Task::Bench(options) => bench_task(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Peers and tools the benchmarks need besides the build's packages (clang, libelf-dev,
/// zlib1g-dev and pkg-config build lightswitch).
const BENCH_PACKAGES: &[&str] = &[
    "bpftrace",
    "linux-perf",
    "bpftool",
    "clang",
    "libelf-dev",
    "zlib1g-dev",
    "pkg-config",
];

fn bench_task(options: &bench::Options) -> Result<()> {
    setup::setup()?;
    setup::install(BENCH_PACKAGES)?;
    // lightswitch 0.7, the peer of scenario 9 (`.eh_frame` unwinding in BPF); its default
    // libbpf-rs-static feature fails to link here.
    if options.wants(9) {
        setup::cargo_install_peer("lightswitch", &["--no-default-features"], 5);
    }
    cargo(&["build", "--release", "-p", "profiler-daemon"])?;
    bench::bench(&root(), options)
}

fn run(extra: &[String]) -> Result<()> {
    setup::setup()?;
    cargo(&["build", "--release", "-p", "profiler-daemon"])?;
    let binary = root().join("target/release/profilerd");
    let mut args: Vec<String> = vec!["run".into()];
    if extra.is_empty() {
        args.extend([
            "--dump-dir".into(),
            root().join("profiles").display().to_string(),
        ]);
    } else {
        args.extend(extra.iter().cloned());
    }
    eprintln!(
        "xtask: {} {} (Ctrl-C flushes and stops)",
        binary.display(),
        args.join(" ")
    );
    status(Command::new(binary).args(&args))
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace root")
        .to_path_buf()
}

/// Runs a command that must succeed.
fn status(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// The cargo that runs xtask.
fn cargo_command() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // A clean clone in CI builds everything once: incremental state would only cost time and
    // disk there. Developers keep it (their second build is the one that counts).
    if env::var_os("CI").is_some() && env::var_os("CARGO_INCREMENTAL").is_none() {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// `cargo ARGS` in the workspace root, which must succeed.
fn cargo(args: &[&str]) -> Result<()> {
    status(cargo_command().current_dir(root()).args(args))
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
