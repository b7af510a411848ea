//! `cargo xtask test [--kernels]`: fmt check, clippy, unit and end-to-end tests, then the
//! kernel matrix.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, cargo_command, kernels, root, setup};

/// Every check, or with `kernels_only` only the kernel matrix.
pub fn test(kernels_only: bool) -> Result<()> {
    setup::setup()?;
    if kernels_only {
        return kernel_matrix();
    }
    cargo(&["fmt", "--all", "--check"]).context("code is not formatted: run `cargo fmt --all`")?;
    // `cargo test` builds the debug daemon with the tests (the daemon's package has
    // integration tests); the tests that measure the daemon under load run the build users
    // deploy.
    cargo(&["build", "--release", "-p", "profiler-daemon"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests share the kernel (perf events, cgroups): one at a time. Every
    // test binary runs even after one fails, so that one failure does not hide the others.
    let (passed, failed) = cargo_test(&[
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ])?;
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
    let mut child = cargo_command()
        .current_dir(root())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += result_count(rest, "passed");
            failed += result_count(rest, "failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed ({status}) before running every test");
    }
    Ok((passed, failed))
}

/// The number before `word` in `ok. 3 passed; 0 failed; ...`.
fn result_count(summary: &str, word: &str) -> u64 {
    summary
        .split(';')
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
}

#[cfg(test)]
mod tests {
    use super::result_count;

    #[test]
    fn counts_of_a_test_result_line() {
        let rest = "ok. 12 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(result_count(rest, "passed"), 12);
        assert_eq!(result_count(rest, "failed"), 1);
        assert_eq!(result_count("FAILED. 0 passed; 3 failed", "failed"), 3);
    }
}
