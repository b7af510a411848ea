//! Facts about the host the daemon runs on, read from `/proc` and `/sys`: the kernel
//! release, the highest perf sample rate, and a [`Host`] root that tests point at fixture
//! trees.

use std::{fs, path::PathBuf};

/// Where host facts are read from: `/` on the real host, a fixture tree in tests.
#[derive(Clone, Debug)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    pub fn real() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    pub(crate) fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    pub(crate) fn read(&self, absolute: &str) -> Option<String> {
        fs::read_to_string(self.path(absolute)).ok()
    }
}

/// `6.1.0-18-amd64` -> (6, 1).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `kernel.perf_event_max_sample_rate`, when readable.
pub fn max_sample_rate() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()?
        .trim()
        .parse()
        .ok()
}
