//! `cargo xtask setup`: the Debian packages and the `bpf-linker` the build and the tests need,
//! installed only when missing.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use crate::{cargo_command, status};

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
    (
        "openssl",
        "makes the CA and certificate of the TLS listener test (tests/web_auth.rs)",
    ),
    (
        "g++",
        "compiles the C++ fixture of the unwind tests (gcc does not pull it in)",
    ),
    (
        "linux-perf",
        "`perf record --call-graph dwarf`, the reference for whole stacks in the unwind tests",
    ),
    (
        "python3.11-minimal",
        "Debian's /usr/bin/python3.11 (no frame pointers), profiled by the unwind tests",
    ),
    (
        "sqlite3",
        "Debian's sqlite3 (no frame pointers), profiled by the unwind tests",
    ),
    (
        "util-linux",
        "setpriv and prlimit, used by the privilege and hostile_local tests",
    ),
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
        "chromium-driver",
        "WebDriver for Chromium: the page tests click, type and read the DOM through it",
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

/// Installs the missing packages of [`PACKAGES`], then bpf-linker if it is not there.
pub fn setup() -> Result<()> {
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
        status(
            cargo_command()
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

/// Installs the Debian packages of `packages` that are missing.
pub fn install(packages: &[&str]) -> Result<()> {
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

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// `cargo install NAME ARGS` unless `NAME` is already in [`cargo_bin`]; a peer the bench
/// can do without, so a failure is reported (the scenario says why it has no peer figure).
pub fn cargo_install_peer(name: &str, args: &[&str], minutes: u32) {
    if cargo_bin().join(name).exists() {
        return;
    }
    eprintln!("xtask: installing {name} with cargo (about {minutes} minutes)");
    let result = status(cargo_command().args(["install", name]).args(args));
    if let Err(err) = result {
        eprintln!("xtask: installing {name} failed, the bench runs without it: {err:#}");
    }
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}
