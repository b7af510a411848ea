//! The C fixtures of `tests/fixtures/`, compiled the one way every check relies on.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// gcc flags of every fixture: -O0 keeps a frame (and a frame pointer) in every function, the
/// leaf included, so that frame-pointer unwinding sees each call.
pub const CFLAGS: &[&str] = &["-O0", "-g", "-fno-omit-frame-pointer"];

/// `tests/fixtures/`, where the C sources are.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kit lives in tests/kit")
        .join("fixtures")
}

/// Compiles `tests/fixtures/SOURCE.c` into `output` with [`CFLAGS`] and extra gcc arguments
/// (e.g. `-shared`, `-pthread`).
pub fn build(source: &str, output: &Path, extra: &[&str]) -> Result<()> {
    let source = source_dir().join(format!("{source}.c"));
    let result = Command::new("gcc")
        .args(CFLAGS)
        .args(extra)
        .arg("-o")
        .arg(output)
        .arg(&source)
        .output()
        .context("gcc must be installed (cargo xtask setup installs it)")?;
    if !result.status.success() {
        bail!(
            "gcc failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(())
}
