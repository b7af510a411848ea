//! A cgroup chosen as a target (`--cgroup` or a `[[target]]` section), watched as a whole.

use std::path::PathBuf;

/// A `--cgroup` watched as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupTarget {
    /// The directory under the cgroup2 mount.
    pub dir: PathBuf,
    /// Its path relative to the cgroup2 root, as in `/proc/PID/cgroup` (`/system.slice/x`).
    pub relative: String,
}

impl CgroupTarget {
    /// Whether a process in cgroup `path` belongs to this target (itself or below it).
    pub fn contains(&self, path: &str) -> bool {
        let root = self.relative.trim_end_matches('/');
        root.is_empty()
            || path == root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}
