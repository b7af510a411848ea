//! Which processes are sampled and watched: `--pid`, `--cgroup` and the `[[target]]`
//! sections resolved on this host into the kernel filter (pids, cgroup ids and depths) and
//! the cgroups watched as a whole.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::section::{Section, SectionError, SectionSpec, Selector};
use crate::{process::cgroup2_mount, sample::CgroupSelector, types::CgroupTarget};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, Error)]
pub enum SelectError {
    #[error("no process with pid {0}: check it with `ps -p {0}`")]
    NoSuchPid(u32),
    #[error("cgroup {path} does not exist: pass a cgroup2 directory, e.g. {example}")]
    NoSuchCgroup { path: PathBuf, example: String },
    #[error("{path} is not a cgroup2 directory: pass a directory under the cgroup2 mount {mount}")]
    NotCgroup2 { path: PathBuf, mount: String },
    #[error("no cgroup2 hierarchy is mounted, so --cgroup cannot work: mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`")]
    NoCgroup2,
    #[error("[[target]] {name} (line {line}): {error}")]
    Section {
        name: String,
        line: usize,
        error: SectionError<Box<SelectError>>,
    },
}

/// What the kernel filter holds and what the watcher watches.
pub struct Targets {
    pub pids: Vec<u32>,
    pub selectors: Vec<CgroupSelector>,
    /// `--cgroup`s, watched as a whole.
    pub cgroup_targets: Vec<CgroupTarget>,
    pub sections: Vec<Section>,
}

/// Resolves `--pid`, `--cgroup` and the `[[target]]` sections on this host. With a filter
/// (`--pid` or `--cgroup`), the sections' pids and cgroups join it; process and executable
/// patterns cannot be filtered in the kernel and match only inside it.
pub fn resolve_targets(
    wanted_pids: &[u32],
    cgroups: &[PathBuf],
    specs: &[SectionSpec],
) -> Result<Targets, SelectError> {
    check_pids(wanted_pids)?;
    let (mut selectors, cgroup_targets): (Vec<_>, Vec<_>) =
        resolve_cgroups(cgroups)?.into_iter().unzip();
    let mut pids = wanted_pids.to_vec();
    let filtered = !pids.is_empty() || !selectors.is_empty();
    let mut sections = Vec::new();
    for spec in specs {
        let mut selector = None;
        let section = Section::resolve(spec, |path| {
            let (found, cgroup) = resolve_cgroups(std::slice::from_ref(path))
                .map_err(Box::new)?
                .remove(0);
            selector = Some(found);
            Ok::<_, Box<SelectError>>(cgroup)
        })
        .map_err(|error| SelectError::Section {
            name: spec.display_name(),
            line: spec.line,
            error,
        })?;
        if filtered {
            match &section.selector {
                Selector::Pids(more) => pids.extend(more),
                Selector::Cgroup(_) => selectors.extend(selector),
                Selector::Process(_) | Selector::Exe(_) => tracing::warn!(
                    "[[target]] {}: --pid/--cgroup limit sampling, so it matches only processes they select",
                    section.name
                ),
            }
        }
        sections.push(section);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(Targets {
        pids,
        selectors,
        cgroup_targets,
        sections,
    })
}
pub fn check_pids(pids: &[u32]) -> Result<(), SelectError> {
    for &pid in pids {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(SelectError::NoSuchPid(pid));
        }
    }
    Ok(())
}

/// Resolves `--cgroup` arguments to cgroup v2 ids and depths (for the BPF filter) and to
/// directories and paths (for the trigger targets).
pub fn resolve_cgroups(
    paths: &[PathBuf],
) -> Result<Vec<(CgroupSelector, CgroupTarget)>, SelectError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mount = cgroup2_mount().ok_or(SelectError::NoCgroup2)?;
    paths
        .iter()
        .map(|path| resolve_cgroup(path, &mount))
        .collect()
}

fn resolve_cgroup(
    path: &Path,
    mount: &Path,
) -> Result<(CgroupSelector, CgroupTarget), SelectError> {
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
        return Err(SelectError::NoSuchCgroup {
            path: path.to_path_buf(),
            example: format!("{}/system.slice", mount.display()),
        });
    };
    let canonical = candidate.canonicalize().unwrap_or(candidate.clone());
    if !is_cgroup2(&canonical) || !canonical.is_dir() {
        return Err(SelectError::NotCgroup2 {
            path: path.to_path_buf(),
            mount: mount.display().to_string(),
        });
    }
    let relative = canonical
        .strip_prefix(mount)
        .map_err(|_| SelectError::NotCgroup2 {
            path: path.to_path_buf(),
            mount: mount.display().to_string(),
        })?;
    let meta = fs::metadata(&canonical).map_err(|_| SelectError::NoSuchCgroup {
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
    fn missing_pid_is_named() {
        let err = check_pids(&[u32::MAX - 1]).unwrap_err().to_string();
        assert!(err.contains(&(u32::MAX - 1).to_string()), "{err}");
        assert!(check_pids(&[std::process::id()]).is_ok());
    }

    #[test]
    fn non_cgroup_paths_are_rejected() {
        let mount = cgroup2_mount().expect("cgroup2 is mounted on every supported host");
        let err = resolve_cgroup(Path::new("/definitely/not/a/cgroup"), &mount).unwrap_err();
        assert!(matches!(err, SelectError::NoSuchCgroup { .. }), "{err}");
        let err = resolve_cgroup(Path::new("/proc"), &mount).unwrap_err();
        assert!(matches!(err, SelectError::NotCgroup2 { .. }), "{err}");
        let (root, target) = resolve_cgroup(&mount, &mount).unwrap();
        assert_eq!(root.level, 0);
        assert_eq!(target.relative, "/");
    }
}
