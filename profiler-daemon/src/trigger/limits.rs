//! Denominators of the CPU and memory rules: the target's cgroup limits (v2 `cpu.max`,
//! `memory.max`; v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `memory.limit_in_bytes`), capped at
//! the host, else the host's CPUs and RAM. An unlimited quota means "use the host", never
//! "stop triggering".

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::process::procfs::{parse_mounts, read_mountinfo, CgroupPaths, Mount};

/// A v1 memory limit at or above this is the kernel's "unlimited" (page-rounded i64::MAX).
const V1_UNLIMITED: u64 = 1 << 62;

/// Where the cgroup hierarchies are mounted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupRoots {
    pub v2: Option<PathBuf>,
    pub v1_cpu: Option<PathBuf>,
    pub v1_memory: Option<PathBuf>,
}

impl CgroupRoots {
    /// Reads `/proc/self/mountinfo`.
    pub fn discover() -> Self {
        read_mountinfo()
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    pub fn parse(mountinfo: &str) -> Self {
        let mut roots = Self::default();
        for Mount {
            point: mount,
            fstype,
            options,
        } in parse_mounts(mountinfo)
        {
            match fstype {
                "cgroup2" if roots.v2.is_none() => roots.v2 = Some(mount.into()),
                "cgroup" => {
                    let controllers: Vec<&str> = options.split(',').collect();
                    if controllers.contains(&"cpu") && roots.v1_cpu.is_none() {
                        roots.v1_cpu = Some(mount.into());
                    }
                    if controllers.contains(&"memory") && roots.v1_memory.is_none() {
                        roots.v1_memory = Some(mount.into());
                    }
                }
                _ => {}
            }
        }
        roots
    }
}

/// `cpu.max` of cgroup v2 in millicores; `None` when unlimited.
pub fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut fields = text.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period: u64 = fields.next().unwrap_or("100000").parse().ok()?;
    (period > 0).then(|| (quota * 1000 / period).max(1))
}

/// `cpu.cfs_quota_us` / `cpu.cfs_period_us` of cgroup v1 in millicores; `None` for -1.
pub fn parse_v1_quota(quota: &str, period: &str) -> Option<u64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| (quota as u64 * 1000 / period).max(1))
}

/// `memory.max` (v2, `max` = unlimited) or `memory.limit_in_bytes` (v1, huge = unlimited).
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value > 0 && value < V1_UNLIMITED).then_some(value)
}

/// `dir` and its ancestors up to `root`, deepest first.
fn chain(root: &Path, relative: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut current = root.join(relative.trim_start_matches('/'));
    loop {
        dirs.push(current.clone());
        if current == root || !current.pop() || !current.starts_with(root) {
            break;
        }
    }
    dirs
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// The tightest CPU limit on a cgroup and its ancestors, in millicores.
pub fn cpu_limit(roots: &CgroupRoots, paths: &CgroupPaths) -> Option<u64> {
    let mut limits = Vec::new();
    if let Some(v2) = &roots.v2 {
        limits.extend(
            chain(v2, &paths.v2)
                .iter()
                .filter_map(|d| parse_cpu_max(&read(&d.join("cpu.max"))?)),
        );
    }
    if let (Some(root), Some(path)) = (&roots.v1_cpu, &paths.v1_cpu) {
        limits.extend(chain(root, path).iter().filter_map(|d| {
            parse_v1_quota(
                &read(&d.join("cpu.cfs_quota_us"))?,
                &read(&d.join("cpu.cfs_period_us"))?,
            )
        }));
    }
    limits.into_iter().min()
}

/// The tightest memory limit on a cgroup and its ancestors, in bytes.
pub fn memory_limit(roots: &CgroupRoots, paths: &CgroupPaths) -> Option<u64> {
    let mut limits = Vec::new();
    if let Some(v2) = &roots.v2 {
        limits.extend(
            chain(v2, &paths.v2)
                .iter()
                .filter_map(|d| parse_memory_limit(&read(&d.join("memory.max"))?)),
        );
    }
    if let (Some(root), Some(path)) = (&roots.v1_memory, &paths.v1_memory) {
        limits.extend(
            chain(root, path)
                .iter()
                .filter_map(|d| parse_memory_limit(&read(&d.join("memory.limit_in_bytes"))?)),
        );
    }
    limits.into_iter().min()
}

/// The host's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub millicores: u64,
    pub memory: u64,
}

impl Host {
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(1 << 30, |kib| kib * 1024);
        Self {
            millicores: cpus * 1000,
            memory,
        }
    }
}

/// Denominators in force for one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denominators {
    pub millicores: u64,
    pub memory: u64,
}

/// `--cpu-cores` / `--memory-limit` when given, else the cgroup's limits capped at the host,
/// else the host.
pub fn denominators(
    host: Host,
    cores_flag: Option<u64>,
    memory_flag: Option<u64>,
    roots: &CgroupRoots,
    paths: Option<&CgroupPaths>,
) -> Denominators {
    let cgroup_cpu = paths.and_then(|p| cpu_limit(roots, p));
    let cgroup_mem = paths.and_then(|p| memory_limit(roots, p));
    Denominators {
        millicores: cores_flag
            .unwrap_or_else(|| cgroup_cpu.map_or(host.millicores, |c| c.min(host.millicores)))
            .max(1),
        memory: memory_flag
            .unwrap_or_else(|| cgroup_mem.map_or(host.memory, |m| m.min(host.memory)))
            .max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_files_parse() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1500));
        assert_eq!(parse_cpu_max("50000 100000"), Some(500));
        assert_eq!(parse_v1_quota("-1\n", "100000\n"), None);
        assert_eq!(parse_v1_quota("200000", "100000"), Some(2000));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("104857600\n"), Some(100 << 20));
        assert_eq!(
            parse_memory_limit("9223372036854771712\n"),
            None,
            "v1 unlimited"
        );
    }

    #[test]
    fn mountinfo_of_a_hybrid_host() {
        let mountinfo = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        let roots = CgroupRoots::parse(mountinfo);
        assert_eq!(
            roots.v2.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            roots.v1_cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            roots.v1_memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
    }

    fn tree(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-limits-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const HOST: Host = Host {
        millicores: 8000,
        memory: 16 << 30,
    };

    #[test]
    fn v2_limits_of_the_cgroup_and_its_ancestors() {
        let root = tree("v2");
        fs::create_dir_all(root.join("kubepods/pod1")).unwrap();
        fs::write(root.join("kubepods/cpu.max"), "400000 100000\n").unwrap();
        fs::write(root.join("kubepods/pod1/cpu.max"), "max 100000\n").unwrap();
        fs::write(root.join("kubepods/pod1/memory.max"), "104857600\n").unwrap();
        let roots = CgroupRoots {
            v2: Some(root.clone()),
            ..Default::default()
        };
        let paths = CgroupPaths {
            v2: "/kubepods/pod1".into(),
            ..Default::default()
        };
        let d = denominators(HOST, None, None, &roots, Some(&paths));
        assert_eq!(
            d,
            Denominators {
                millicores: 4000,
                memory: 100 << 20
            },
            "the parent's quota applies"
        );
        // Flags win.
        let d = denominators(HOST, Some(2000), Some(1 << 30), &roots, Some(&paths));
        assert_eq!(
            d,
            Denominators {
                millicores: 2000,
                memory: 1 << 30
            }
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_limits_capped_at_the_host_and_unlimited_means_host() {
        let cpu = tree("v1cpu");
        let mem = tree("v1mem");
        fs::create_dir_all(cpu.join("docker/abc")).unwrap();
        fs::create_dir_all(mem.join("docker/abc")).unwrap();
        fs::write(cpu.join("docker/abc/cpu.cfs_quota_us"), "1600000\n").unwrap();
        fs::write(cpu.join("docker/abc/cpu.cfs_period_us"), "100000\n").unwrap();
        fs::write(
            mem.join("docker/abc/memory.limit_in_bytes"),
            format!("{}\n", 64u64 << 30),
        )
        .unwrap();
        let roots = CgroupRoots {
            v2: None,
            v1_cpu: Some(cpu.clone()),
            v1_memory: Some(mem.clone()),
        };
        let paths = CgroupPaths {
            v2: "/".into(),
            v1_cpu: Some("/docker/abc".into()),
            v1_memory: Some("/docker/abc".into()),
        };
        let d = denominators(HOST, None, None, &roots, Some(&paths));
        assert_eq!(
            d, HOST_DENOMINATORS,
            "16 cores and 64 GiB are capped at the host"
        );

        fs::write(cpu.join("docker/abc/cpu.cfs_quota_us"), "-1\n").unwrap();
        fs::write(
            mem.join("docker/abc/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let d = denominators(HOST, None, None, &roots, Some(&paths));
        assert_eq!(d, HOST_DENOMINATORS, "unlimited means the host, never zero");
        fs::write(cpu.join("docker/abc/cpu.cfs_quota_us"), "50000\n").unwrap();
        assert_eq!(
            denominators(HOST, None, None, &roots, Some(&paths)).millicores,
            500
        );
        fs::remove_dir_all(&cpu).unwrap();
        fs::remove_dir_all(&mem).unwrap();
    }

    const HOST_DENOMINATORS: Denominators = Denominators {
        millicores: 8000,
        memory: 16 << 30,
    };
}
