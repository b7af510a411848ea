//! `cargo xtask test --kernels`: the end-to-end checks of `kernel-check` on the kernels users
//! run. Debian's cloud kernels for 6.1 and 6.12 boot under QEMU (TCG: the host's /dev/kvm is a
//! nested software hypervisor that stock kernels stall under) from an initramfs that holds
//! the release `profilerd`, the C fixtures and the driver; the host's own kernel runs the same
//! driver directly.
//!
//! `fetch` finds and unpacks the kernels, `initramfs` packs the guest, `qemu` boots it (and
//! runs the host's row), `table` prints the result.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Result};
use profiler_testkit::{fixtures, matrix::Report};

mod fetch;
mod initramfs;
mod qemu;
mod table;

/// Kernel series booted under QEMU: Debian 12's own kernel and its backported one.
const SERIES: &[&str] = &["6.1", "6.12"];

/// Fixtures the driver runs, built as the tests build them.
const FIXTURES: &[&str] = &[
    "split", "reader", "spike", "nofp", "faulter", "blocker", "threader",
];

/// util-linux's setpriv, for the check as a non-root user (installed by setup: util-linux).
const SETPRIV: &str = "/usr/bin/setpriv";

/// Console lines shown when a guest fails.
const TAIL_LINES: usize = 40;

/// Runs the matrix: every guest, then the host. Fails when any row fails.
pub fn kernels(root: &Path) -> Result<()> {
    let started = Instant::now();
    let dir = root.join("target/kernels");
    fs::create_dir_all(&dir)?;
    let fixtures = build_fixtures(&dir)?;
    let initramfs = initramfs::build(root, &dir, &fixtures)?;

    // Fetched one after the other (one download at a time), booted at once: a guest spends
    // most of its minute waiting on its fixtures' timed phases, so two overlap well on two
    // cores (the matrix took 150 s of CI time booted one after the other).
    let kernels: Vec<(&str, Result<fetch::Kernel>)> = SERIES
        .iter()
        .map(|series| (*series, fetch::kernel(&dir, series)))
        .collect();
    let mut rows: Vec<Row> = std::thread::scope(|scope| {
        let guests: Vec<_> = kernels
            .iter()
            .map(|(series, kernel)| {
                let (dir, initramfs) = (&dir, &initramfs);
                scope.spawn(move || match kernel {
                    Ok(kernel) => qemu::boot(dir, kernel, initramfs),
                    Err(err) => Row::failed(format!("{series} (not fetched)"), format!("{err:#}")),
                })
            })
            .collect();
        guests
            .into_iter()
            .zip(SERIES)
            .map(|(guest, series)| {
                guest.join().unwrap_or_else(|_| {
                    Row::failed(series.to_string(), "the guest's thread panicked".into())
                })
            })
            .collect()
    });
    rows.push(qemu::host(root, &dir, &fixtures));

    let wall = started.elapsed();
    table::print(&rows);
    println!("kernel matrix: {:.0} s wall time", wall.as_secs_f64());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// One kernel's line of the table.
struct Row {
    kernel: String,
    pass: bool,
    result: Option<Report>,
    seconds: f64,
    problem: Option<String>,
}

impl Row {
    fn failed(kernel: String, problem: String) -> Self {
        Row {
            kernel,
            pass: false,
            result: None,
            seconds: 0.0,
            problem: Some(problem),
        }
    }
}

/// Compiles the driver's fixtures into `DIR/fixtures`.
fn build_fixtures(dir: &Path) -> Result<PathBuf> {
    let out = dir.join("fixtures");
    fs::create_dir_all(&out)?;
    for name in FIXTURES {
        // `nofp` is the unwinder's: no frame pointers anywhere, as distribution binaries.
        let extra: &[&str] = match *name {
            "nofp" => &["-O2", "-fomit-frame-pointer"],
            _ => &[],
        };
        fixtures::build(name, &out.join(name), extra)?;
    }
    Ok(out)
}
