//! Generates the pprof types from `proto/profile.proto` and builds the BPF object that the
//! daemon embeds. The BPF build needs the toolchain that `cargo xtask setup` installs (Debian's
//! rustc-web with its bpfel core library, and bpf-linker); without it the build stops with one
//! line saying so.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Debian's rustc-web: the only rustc here with a precompiled `core` for bpfel-unknown-none.
const BPF_RUSTC: &str = "/usr/bin/rustc";
const BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());

    println!("cargo::rerun-if-changed=proto");
    let fds = match protox::compile(
        ["profile.proto", "push.proto"],
        [manifest_dir.join("proto")],
    ) {
        Ok(fds) => fds,
        Err(err) => {
            println!("cargo::error=proto/profile.proto does not compile: {err}");
            return;
        }
    };
    if let Err(err) = prost_build::Config::new().compile_fds(fds) {
        println!("cargo::error=generating pprof types failed: {err}");
        return;
    }

    if let Err(message) = build_bpf(&manifest_dir, &out_dir) {
        println!("cargo::error={message}");
    }
}

fn build_bpf(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let root = manifest_dir.parent().expect("workspace root");
    let ebpf_dir = root.join("profiler-ebpf");
    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join("build.rs"),
        root.join("profiler-common/src"),
        root.join("profiler-common/Cargo.toml"),
    ] {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!("cargo::rerun-if-env-changed=PATH");

    let cargo_bin = cargo_home().join("bin");
    let linker_found =
        find_in_path("bpf-linker").is_some() || cargo_bin.join("bpf-linker").exists();
    if !Path::new(BPF_RUSTC).exists() || !Path::new(BPF_CORE_DIR).exists() || !linker_found {
        return Err(
            "the BPF toolchain (Debian rustc-web, libstd-rust-web-dev-bpf, bpf-linker) is missing: run `cargo xtask setup` first"
                .to_string(),
        );
    }

    // One BPF target directory for every profile of the host build (debug, release, clippy's
    // check): the object does not depend on the host profile, so the second build is a no-op.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map_or_else(|| out_dir.join("bpf-target"), |target| target.join("bpf"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer cargo's settings are for the host build; none of them apply to the BPF build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOC"
            || key == "TARGET"
            || key == "HOST"
            || key == "PROFILE"
            || key == "OUT_DIR"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![cargo_bin];
    paths.extend(env::split_paths(&path));
    cmd.env("PATH", env::join_paths(paths).unwrap())
        .env("RUSTC", BPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-C", "debuginfo=2", "-C", "link-arg=--btf"].join("\x1f"),
        );
    let output = cmd
        .output()
        .map_err(|err| format!("cannot start cargo for the BPF build: {err}"))?;
    if !output.status.success() {
        // Cargo hides a build script's output; surface the compiler's messages.
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo::warning={line}");
        }
        return Err(format!(
            "building profiler-ebpf failed ({}); its messages are above",
            output.status
        ));
    }
    let object = target_dir.join("bpfel-unknown-none/release/profiler");
    std::fs::copy(&object, out_dir.join("profiler.bpf.o"))
        .map_err(|err| format!("cannot copy {}: {err}", object.display()))?;
    Ok(())
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.exists())
}
