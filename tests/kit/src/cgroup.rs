//! Child cgroups made for a check (they need root), removed when their guard drops.

use std::{fs, path::PathBuf, thread, time::Duration};

use anyhow::{Context, Result};

/// Where the cgroup2 hierarchy is mounted: `/sys/fs/cgroup` in the guests and on most hosts,
/// `/sys/fs/cgroup/unified` on a hybrid one.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("cannot read mountinfo")?;
    text.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .context("no cgroup2 hierarchy is mounted")
}

/// A child cgroup, removed on drop once its processes are gone (kill them first).
pub struct Cgroup(pub PathBuf);

impl Cgroup {
    /// Creates `<cgroup2 mount>/<prefix>-<pid of this process>`.
    pub fn make(prefix: &str) -> Result<Self> {
        let path = cgroup2_mount()?.join(format!("{prefix}-{}", std::process::id()));
        fs::create_dir(&path)
            .with_context(|| format!("cannot create the cgroup {} (needs root)", path.display()))?;
        Ok(Cgroup(path))
    }

    /// A child cgroup with the CPU controller and `weight` (cgroup v2 `cpu.weight`, 1 to
    /// 10000, default 100), like a systemd unit's `CPUWeight=`: in the cgroup2 hierarchy when
    /// it has the controller, else in cgroup v1's `cpu` hierarchy (a hybrid host), as
    /// `cpu.shares` (weight x 1024 / 100).
    pub fn make_cpu(prefix: &str, weight: u64) -> Result<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        let v2 = cgroup2_mount()?;
        let has_cpu = |file: &str| {
            fs::read_to_string(v2.join(file))
                .is_ok_and(|c| c.split_whitespace().any(|name| name == "cpu"))
        };
        let (path, file, value) = if has_cpu("cgroup.controllers") {
            if !has_cpu("cgroup.subtree_control") {
                fs::write(v2.join("cgroup.subtree_control"), "+cpu")
                    .context("cannot enable the cpu controller for child cgroups")?;
            }
            (v2.join(name), "cpu.weight", weight)
        } else {
            let v1 = PathBuf::from("/sys/fs/cgroup/cpu");
            anyhow::ensure!(
                v1.join("cpu.shares").exists(),
                "no cpu controller in cgroup v2 or v1"
            );
            (v1.join(name), "cpu.shares", weight * 1024 / 100)
        };
        fs::create_dir(&path)
            .with_context(|| format!("cannot create the cgroup {} (needs root)", path.display()))?;
        let group = Cgroup(path);
        fs::write(group.0.join(file), value.to_string())
            .with_context(|| format!("cannot set {file} of {}", group.0.display()))?;
        Ok(group)
    }

    /// Like [`Cgroup::make`], for tests: panics when it cannot.
    pub fn create(prefix: &str) -> Self {
        Self::make(prefix).unwrap_or_else(|e| panic!("create a child cgroup: {e:#}"))
    }

    /// The cgroup's name, its last path component.
    pub fn name(&self) -> String {
        self.0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Moves a process into the cgroup.
    pub fn move_in(&self, pid: u32) -> Result<()> {
        fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .context("cannot move a process into the cgroup")
    }

    /// Like [`Cgroup::move_in`], for tests: panics when it cannot.
    pub fn add(&self, pid: u32) {
        self.move_in(pid).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}
