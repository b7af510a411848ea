//! The C (and C++, and Go) fixtures of `tests/fixtures/`, compiled the one way every check
//! relies on.

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
/// (e.g. `-shared`, `-pthread`); where there is no `SOURCE.c` but a `SOURCE.cc`, compiles
/// that with g++ and the same flags; where there is a `SOURCE.go`, builds that with Debian's
/// Go (frame pointers, `.debug_frame`, no `.eh_frame`: Go's own defaults; `extra` are
/// `go build` arguments then).
pub fn build(source: &str, output: &Path, extra: &[&str]) -> Result<()> {
    let go = source_dir().join(format!("{source}.go"));
    if go.exists() {
        return build_go(&go, output, extra);
    }
    let c = source_dir().join(format!("{source}.c"));
    let cc = source_dir().join(format!("{source}.cc"));
    let (compiler, source) = if !c.exists() && cc.exists() {
        ("g++", cc)
    } else {
        ("gcc", c)
    };
    let mut command = Command::new(compiler);
    command
        .args(CFLAGS)
        .args(extra)
        .arg("-o")
        .arg(output)
        .arg(&source);
    run(&mut command, compiler, &source, "it")
}

fn build_go(source: &Path, output: &Path, extra: &[&str]) -> Result<()> {
    // Go's build cache beside the output (the tests may run without a HOME).
    let cache = output.with_file_name("go-cache");
    let mut command = Command::new("go");
    command
        .arg("build")
        .args(extra)
        .arg("-o")
        .arg(output)
        .arg(source)
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("path"))
        .env("GO111MODULE", "off");
    run(&mut command, "go", source, "golang-go")
}

/// Runs a fixture's build; its stderr in the error when it fails.
fn run(command: &mut Command, tool: &str, source: &Path, package: &str) -> Result<()> {
    let result = command.output().with_context(|| {
        format!("{tool} must be installed (cargo xtask setup installs {package})")
    })?;
    if !result.status.success() {
        bail!(
            "{tool} failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(())
}
