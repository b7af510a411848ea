//! Debian's cloud kernel packages: the newest of a series, downloaded and unpacked once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{output, status};

/// A kernel image unpacked from its Debian package.
pub(super) struct Kernel {
    /// The package's version (`6.1.192-2`), which names the upstream release.
    pub version: String,
    pub vmlinuz: PathBuf,
}

/// Numeric parts of a version-like string, for ordering `6.1.0-56` after `6.1.0-9`.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The newest `linux-image-<series>.*-cloud-amd64-unsigned` package apt knows. The names move
/// with every security update, so they are looked up, never written down.
fn newest_package(series: &str) -> Result<Option<String>> {
    let prefix = format!("linux-image-{series}.");
    let found = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!(
            "^linux-image-{}\\..*-cloud-amd64-unsigned$",
            series.replace('.', "\\.")
        ),
    ]))?;
    Ok(found
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .max_by_key(|name| numbers(&name[prefix.len()..]))
        .map(str::to_string))
}

/// The newest kernel of `series`, unpacked under `dir` (downloaded the first time).
pub(super) fn kernel(dir: &Path, series: &str) -> Result<Kernel> {
    let package = match newest_package(series)? {
        Some(package) => package,
        None => {
            // A fresh machine may have no package lists yet.
            status(Command::new("apt-get").args(["update", "-qq"]))?;
            newest_package(series)?.with_context(|| {
                format!("apt knows no linux-image-{series}.*-cloud-amd64-unsigned package: is the Debian 12 (bookworm) archive with its security updates in the apt sources?")
            })?
        }
    };
    let policy = output(Command::new("apt-cache").args(["policy", &package]))?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let unpacked = dir.join(&package);
    let boot = unpacked.join("boot");
    if !boot.is_dir() {
        eprintln!("xtask: downloading {package} {version}");
        download(dir, &package, &unpacked)?;
    }
    let vmlinuz = fs::read_dir(&boot)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    Ok(Kernel { version, vmlinuz })
}

/// Downloads `package` and unpacks it into `unpacked` (atomically: a partial tree is renamed).
fn download(dir: &Path, package: &str, unpacked: &Path) -> Result<()> {
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    // The sandbox user _apt cannot write into target/: root downloads, as apt falls back
    // to anyway, without the warning.
    status(Command::new("apt-get").current_dir(&download).args([
        "-q",
        "-o",
        "APT::Sandbox::User=root",
        "download",
        package,
    ]))?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let partial = dir.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&partial);
    status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, unpacked)?;
    fs::remove_dir_all(&download)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::numbers;

    #[test]
    fn versions_order_by_their_numbers() {
        assert!(numbers("0-56-cloud") > numbers("0-9-cloud"));
        assert_eq!(numbers("1.0-9"), [1, 0, 9]);
    }
}
