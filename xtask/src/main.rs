//! Project tasks: `cargo xtask setup | build | run | test`.
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

/// Debian packages the build and the tests need, with what each is for.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "rustc with LLVM 22 that compiles the BPF crate",
    ),
    (
        "libstd-rust-web-dev-bpf",
        "precompiled core library for bpfel-unknown-none",
    ),
    ("llvm-22-dev", "LLVM that bpf-linker links against"),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    ("libzstd-dev", "needed to link bpf-linker against LLVM 22"),
    (
        "golang-go",
        "`go tool pprof`, the reference pprof reader used by the tests",
    ),
    ("gcc", "compiles the C test fixtures"),
    ("util-linux", "setpriv, used by the privilege tests"),
    (
        "systemd",
        "`systemd-analyze verify` of deploy/profilerd.service in the tests",
    ),
    (
        "python3-prometheus-client",
        "the Prometheus text parser that reads /metrics in the tests",
    ),
    (
        "chromium",
        "headless browser that renders the local page in the tests",
    ),
    (
        "qemu-system-x86",
        "boots the 6.1 and 6.12 kernels of the kernel matrix (test --kernels)",
    ),
    (
        "busybox-static",
        "the shell and tools of the kernel matrix's initramfs",
    ),
    ("cpio", "packs the kernel matrix's initramfs"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup().and_then(|()| cargo(&["build", "--workspace"])),
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 setup   install what is missing (Debian packages, bpf-linker)\n  \
                 build   setup, then build everything\n  \
                 run     setup, build release, run `profilerd run` (extra args are passed on;\n          \
                 default: --dump-dir profiles)\n  \
                 test    setup, build, then fmt check, clippy, unit and end-to-end tests, then the\n          \
                 kernel matrix (6.1 and 6.12 under QEMU, and this host's kernel);\n          \
                 [--kernels] only the kernel matrix\n  \
                 bench   setup (with bpftrace, perf, bpftool), build release, run the benchmarks\n          \
                 side by side with bpftrace and perf. [--quick] shorter runs, 2 pairs;\n          \
                 [--only 1,3] some scenarios (7 comes with 1); [--pairs N] pairs per comparison"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

mod bench;
mod kernels;

/// Peers and tools the benchmarks need besides the build's packages.
const BENCH_PACKAGES: &[&str] = &["bpftrace", "linux-perf", "bpftool"];

fn bench(args: &[String]) -> Result<()> {
    const USAGE: &str = "usage: cargo xtask bench [--quick] [--only 1,2,3,4,5,6,7] [--pairs N]";
    let mut options = bench::Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--only" => {
                let list = args.next().with_context(|| USAGE)?;
                for item in list.split(',') {
                    let n: u8 = item
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| (1..=7).contains(n))
                        .with_context(|| format!("--only {list}: scenarios are 1 to 7; {USAGE}"))?;
                    options.only.push(n);
                }
            }
            "--pairs" => {
                let n = args.next().with_context(|| USAGE)?;
                options.pairs = Some(
                    n.parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .with_context(|| format!("--pairs {n}: a number above 0; {USAGE}"))?,
                );
            }
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    setup()?;
    install(BENCH_PACKAGES)?;
    cargo(&["build", "--release", "-p", "profiler-daemon"])?;
    bench::bench(&root(), &options)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

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

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    status(Command::new(cargo).current_dir(root()).args(args))
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the Debian packages of `packages` that are missing.
fn install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: setup must run as root on Debian 12")?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
    .context("installing Debian packages failed")
}

fn setup() -> Result<()> {
    for (package, why) in PACKAGES.iter().filter(|(p, _)| !is_installed(p)) {
        eprintln!("xtask: missing {package}: {why}");
    }
    install(&PACKAGES.iter().map(|(p, _)| *p).collect::<Vec<_>>())?;

    let linker = cargo_bin().join("bpf-linker");
    let linker_ok = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false);
    if !linker_ok {
        eprintln!(
            "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
        let path = format!(
            "/usr/lib/llvm-22/bin:{}",
            env::var("PATH").unwrap_or_default()
        );
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        status(
            Command::new(cargo)
                .env("PATH", path)
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                ])
                .args(["--no-default-features", "--features", "llvm-22"]),
        )
        .context("installing bpf-linker failed")?;
    }
    Ok(())
}

fn run(extra: &[String]) -> Result<()> {
    setup()?;
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

fn test(args: &[String]) -> Result<()> {
    let kernels_only = match args {
        [] => false,
        [flag] if flag == "--kernels" => true,
        _ => bail!("usage: cargo xtask test [--kernels]"),
    };
    setup()?;
    if kernels_only {
        return kernel_matrix();
    }
    cargo(&["fmt", "--all", "--check"]).context("code is not formatted: run `cargo fmt --all`")?;
    cargo(&["build", "--workspace", "--bins"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests share the kernel (perf events, cgroups): one at a time.
    let (passed, failed) = cargo_test(&["test", "--workspace", "--", "--test-threads=1"])?;
    println!("tests: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    kernel_matrix()
}

/// Release builds of the daemon and the in-guest driver, then every kernel of the matrix.
fn kernel_matrix() -> Result<()> {
    cargo(&["build", "--release", "-p", "profiler-daemon"])?;
    cargo(&["build", "--release", "-p", "xtask", "--bin", "kernel-check"])?;
    kernels::kernels(&root())
}

/// Runs `cargo test`, echoing its output, and sums the `test result:` lines of every binary.
fn cargo_test(args: &[&str]) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(root())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed ({status}) before running every test");
    }
    Ok((passed, failed))
}
