//! Start-up checks that turn a missing privilege or a bad target into one clear line.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::{procinfo::cgroup2_mount, sampler::CgroupSelector, watch::CgroupTarget};

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error("profilerd needs root, or CAP_BPF and CAP_PERFMON (missing: {missing}): run it with sudo, or `setcap cap_bpf,cap_perfmon+ep $(command -v profilerd)`")]
    Privileges { missing: String },
    #[error("no process with pid {0}: check it with `ps -p {0}`")]
    NoSuchPid(u32),
    #[error("cgroup {path} does not exist: pass a cgroup2 directory, e.g. {example}")]
    NoSuchCgroup { path: PathBuf, example: String },
    #[error("{path} is not a cgroup2 directory: pass a directory under the cgroup2 mount {mount}")]
    NotCgroup2 { path: PathBuf, mount: String },
    #[error("no cgroup2 hierarchy is mounted, so --cgroup cannot work: mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoCgroup2,
    #[error("kernel.perf_event_paranoid is {level}, a level Debian's and Ubuntu's kernels add above the upstream 2: only CAP_SYS_ADMIN opens perf events there, CAP_PERFMON is not enough: run profilerd as root, or `sysctl -w kernel.perf_event_paranoid=2`")]
    PerfEventsRootOnly { level: i32 },
    #[error("perf events are not available (no /proc/sys/kernel/perf_event_paranoid): profilerd needs a kernel built with CONFIG_PERF_EVENTS")]
    NoPerfEvents,
    #[error("--frequency {requested} Hz is above kernel.perf_event_max_sample_rate ({max}): lower --frequency or `sysctl -w kernel.perf_event_max_sample_rate={requested}`")]
    FrequencyTooHigh { requested: u64, max: u64 },
}

/// Effective capability mask of this process.
fn effective_caps() -> u64 {
    // This thread's: capabilities are per thread, and the main thread drops its own early.
    fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// `kernel.perf_event_paranoid`, when readable.
pub fn perf_event_paranoid() -> Option<i32> {
    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Above the upstream maximum of 2, Debian's and Ubuntu's kernels (patch "perf: Allow further
/// restriction of perf_event_open") refuse perf_event_open to anyone without CAP_SYS_ADMIN.
pub fn perf_events_need_sys_admin(paranoid: Option<i32>) -> bool {
    paranoid.is_some_and(|level| level >= 3)
}

/// Root (CAP_SYS_ADMIN), or CAP_BPF + CAP_PERFMON where the perf_event_paranoid level lets
/// CAP_PERFMON open perf events.
pub fn check_privileges() -> Result<(), PreflightError> {
    check_caps(effective_caps(), perf_event_paranoid())
}

fn check_caps(caps: u64, paranoid: Option<i32>) -> Result<(), PreflightError> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return match paranoid {
            Some(level) if perf_events_need_sys_admin(paranoid) => {
                Err(PreflightError::PerfEventsRootOnly { level })
            }
            _ => Ok(()),
        };
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(PreflightError::Privileges {
        missing: missing.join(", "),
    })
}

pub fn check_perf_events(frequency: u64) -> Result<(), PreflightError> {
    if !Path::new("/proc/sys/kernel/perf_event_paranoid").exists() {
        return Err(PreflightError::NoPerfEvents);
    }
    match crate::sampler::max_sample_rate() {
        Some(max) if frequency > max => Err(PreflightError::FrequencyTooHigh {
            requested: frequency,
            max,
        }),
        _ => Ok(()),
    }
}

pub fn check_pids(pids: &[u32]) -> Result<(), PreflightError> {
    for &pid in pids {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(PreflightError::NoSuchPid(pid));
        }
    }
    Ok(())
}

/// Resolves `--cgroup` arguments to cgroup v2 ids and depths (for the BPF filter) and to
/// directories and paths (for the trigger targets).
pub fn resolve_cgroups(
    paths: &[PathBuf],
) -> Result<Vec<(CgroupSelector, CgroupTarget)>, PreflightError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mount = cgroup2_mount().ok_or(PreflightError::NoCgroup2)?;
    paths
        .iter()
        .map(|path| resolve_cgroup(path, &mount))
        .collect()
}

fn resolve_cgroup(
    path: &Path,
    mount: &Path,
) -> Result<(CgroupSelector, CgroupTarget), PreflightError> {
    // A path under the mount is taken as is; anything else is read relative to the root.
    let full = if path.starts_with(mount) {
        path.to_path_buf()
    } else {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    };
    let candidate = if full.exists() {
        full
    } else if path.exists() {
        path.to_path_buf()
    } else {
        return Err(PreflightError::NoSuchCgroup {
            path: path.to_path_buf(),
            example: format!("{}/system.slice", mount.display()),
        });
    };
    let canonical = candidate.canonicalize().unwrap_or(candidate.clone());
    if !is_cgroup2(&canonical) || !canonical.is_dir() {
        return Err(PreflightError::NotCgroup2 {
            path: path.to_path_buf(),
            mount: mount.display().to_string(),
        });
    }
    let relative = canonical
        .strip_prefix(mount)
        .map_err(|_| PreflightError::NotCgroup2 {
            path: path.to_path_buf(),
            mount: mount.display().to_string(),
        })?;
    let meta = fs::metadata(&canonical).map_err(|_| PreflightError::NoSuchCgroup {
        path: path.to_path_buf(),
        example: format!("{}/system.slice", mount.display()),
    })?;
    let selector = CgroupSelector {
        id: meta.ino(),
        level: relative.components().count() as u32,
    };
    let target = CgroupTarget {
        relative: format!("/{}", relative.display()),
        dir: canonical,
    };
    Ok((selector, target))
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_type as i64 == CGROUP2_SUPER_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_need_root_or_bpf_and_perfmon() {
        assert!(check_caps(1 << CAP_SYS_ADMIN, Some(2)).is_ok());
        assert!(check_caps((1 << CAP_BPF) | (1 << CAP_PERFMON), Some(2)).is_ok());
        let err = check_caps(1 << CAP_BPF, Some(2)).unwrap_err().to_string();
        assert!(
            err.contains("CAP_PERFMON") && !err.contains("missing: CAP_BPF"),
            "{err}"
        );
        let err = check_caps(0, Some(2)).unwrap_err().to_string();
        assert!(
            err.contains("CAP_BPF, CAP_PERFMON") && err.contains("sudo"),
            "{err}"
        );
    }

    #[test]
    fn debian_paranoid_level_3_needs_root() {
        // Seen on Debian's 6.1 and 6.12 kernels: CAP_BPF + CAP_PERFMON got EACCES from
        // perf_event_open at level 3 and worked at level 2.
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        let err = check_caps(caps, Some(3)).unwrap_err().to_string();
        assert!(
            err.contains("CAP_SYS_ADMIN") && err.contains("perf_event_paranoid=2"),
            "{err}"
        );
        assert!(check_caps(1 << CAP_SYS_ADMIN, Some(3)).is_ok());
        assert!(check_caps(caps, None).is_ok());
    }

    #[test]
    fn missing_pid_is_named() {
        let err = check_pids(&[u32::MAX - 1]).unwrap_err().to_string();
        assert!(err.contains(&(u32::MAX - 1).to_string()), "{err}");
        assert!(check_pids(&[std::process::id()]).is_ok());
    }

    #[test]
    fn non_cgroup_paths_are_rejected() {
        let mount = cgroup2_mount().expect("cgroup2 is mounted on every supported host");
        let err = resolve_cgroup(Path::new("/definitely/not/a/cgroup"), &mount).unwrap_err();
        assert!(matches!(err, PreflightError::NoSuchCgroup { .. }), "{err}");
        let err = resolve_cgroup(Path::new("/proc"), &mount).unwrap_err();
        assert!(matches!(err, PreflightError::NotCgroup2 { .. }), "{err}");
        let (root, target) = resolve_cgroup(&mount, &mount).unwrap();
        assert_eq!(root.level, 0);
        assert_eq!(target.relative, "/");
    }
}
