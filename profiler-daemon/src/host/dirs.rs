//! The directories the daemon writes (dump dir, spool): owned by the daemon's user and not
//! writable by group or others. The daemon runs as root; anyone else who can write in such a
//! directory can plant a link or a file at a name the daemon writes or serves, and so make
//! root write through it or serve it. Such a directory is refused at start with the fix; a
//! missing one is created that way.

use std::{
    fs::{self, DirBuilder},
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Mode of the directories the daemon creates: its own user writes, its group may read.
pub const PRIVATE_DIR_MODE: u32 = 0o750;

/// Which directory, for the messages: its name and the flag that chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirKind {
    Dump,
    Spool,
}

impl DirKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dump => "dump dir",
            Self::Spool => "spool dir",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Self::Dump => "--dump-dir",
            Self::Spool => "--spool-dir",
        }
    }
}

#[derive(Debug, Error)]
pub enum DirError {
    #[error("{what} {p} is {problem}, so other users could plant links or files the daemon would write through or serve: run `chown {owner} {p} && chmod 0750 {p}` or pass another {flag}", what = .kind.name(), p = .path.display(), flag = .kind.flag(), owner = daemon_owner())]
    NotPrivate {
        kind: DirKind,
        path: PathBuf,
        problem: String,
    },
    /// A link someone else made at the directory's name: changing what it points to would
    /// hand the daemon's owner and mode to a directory of their choosing.
    #[error("{what} {p} is a symbolic link owned by uid {owner}, not the daemon's uid {euid}: remove the link (`rm {p}`) or pass another {flag}", what = .kind.name(), p = .path.display(), flag = .kind.flag())]
    ForeignLink {
        kind: DirKind,
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("{what} {p} is not a directory: pass a directory to {flag}", what = .kind.name(), p = .path.display(), flag = .kind.flag())]
    NotADirectory { kind: DirKind, path: PathBuf },
    #[error("{what} {p} is not usable ({source}): pass a writable {flag} or fix its permissions", what = .kind.name(), p = .path.display(), flag = .kind.flag())]
    Unusable {
        kind: DirKind,
        path: PathBuf,
        source: io::Error,
    },
}

/// `user:group` of the daemon for the `chown` of the fix.
fn daemon_owner() -> String {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 && gid == 0 {
        "root:root".to_string()
    } else {
        format!("{uid}:{gid}")
    }
}

/// What makes a directory with this owner and mode unsafe for a daemon running as `euid`;
/// `None` when it is owned by `euid` and not writable by group or others.
pub fn private_dir_problem(owner: u32, mode: u32, euid: u32) -> Option<String> {
    let mode = mode & 0o7777;
    let other_owner = owner != euid;
    let shared = mode & 0o022 != 0;
    match (other_owner, shared) {
        (false, false) => None,
        (true, false) => Some(format!(
            "owned by uid {owner}, not the daemon's uid {euid} (mode {mode:04o})"
        )),
        (false, true) => Some(format!(
            "writable by group or others (mode {mode:04o}, owner uid {owner})"
        )),
        (true, true) => Some(format!(
            "owned by uid {owner}, not the daemon's uid {euid}, and writable by group or others (mode {mode:04o})"
        )),
    }
}

/// Checks an existing directory: a directory, owned by the daemon's user, not writable by
/// group or others.
pub fn check_private_dir(kind: DirKind, dir: &Path) -> Result<(), DirError> {
    let meta = fs::metadata(dir).map_err(|source| DirError::Unusable {
        kind,
        path: dir.to_path_buf(),
        source,
    })?;
    check_metadata(kind, dir, &meta)
}

/// A link at the directory's own name must be the daemon's: a link another user planted
/// (`/tmp/profiles -> /var/lib/foo`) would point the daemon's writes, clean-ups and pages at a
/// directory of the user's choosing. The target is then checked as any directory.
fn check_link(kind: DirKind, dir: &Path, euid: u32) -> Result<(), DirError> {
    let Ok(link) = fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if !link.file_type().is_symlink() || link.uid() == euid {
        return Ok(());
    }
    Err(DirError::ForeignLink {
        kind,
        path: dir.to_path_buf(),
        owner: link.uid(),
        euid,
    })
}

fn check_metadata(kind: DirKind, dir: &Path, meta: &fs::Metadata) -> Result<(), DirError> {
    if !meta.is_dir() {
        return Err(DirError::NotADirectory {
            kind,
            path: dir.to_path_buf(),
        });
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    check_link(kind, dir, euid)?;
    match private_dir_problem(meta.uid(), meta.mode(), euid) {
        None => Ok(()),
        Some(problem) => Err(DirError::NotPrivate {
            kind,
            path: dir.to_path_buf(),
            problem,
        }),
    }
}

/// Creates `dir` (mode 0750, parents as the umask says) when it is missing, then checks it as
/// [`check_private_dir`] does. An existing directory is never changed: its owner or mode may
/// be what another user relies on, so the operator decides.
pub fn ensure_private_dir(kind: DirKind, dir: &Path) -> Result<(), DirError> {
    let unusable = |source| DirError::Unusable {
        kind,
        path: dir.to_path_buf(),
        source,
    };
    match fs::metadata(dir) {
        Ok(meta) => return check_metadata(kind, dir, &meta),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(unusable(err)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(unusable)?;
    }
    match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        // Made by someone else meanwhile: checked like any existing directory.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(unusable(err)),
    }
    check_private_dir(kind, dir)
}

/// Like [`ensure_private_dir`] for a directory inside one the daemon checked already (the
/// spool's `corrupt/`): a link there is refused rather than followed.
pub fn ensure_private_subdir(kind: DirKind, dir: &Path) -> Result<(), DirError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) => check_metadata(kind, dir, &meta),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .mode(PRIVATE_DIR_MODE)
                .create(dir)
                .map_err(|source| DirError::Unusable {
                    kind,
                    path: dir.to_path_buf(),
                    source,
                })?;
            check_private_dir(kind, dir)
        }
        Err(source) => Err(DirError::Unusable {
            kind,
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-dirs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn only_the_daemons_own_unshared_directory_is_private() {
        assert_eq!(private_dir_problem(0, 0o40750, 0), None);
        assert_eq!(private_dir_problem(0, 0o700, 0), None);
        assert_eq!(private_dir_problem(1000, 0o755, 1000), None);
        let other = private_dir_problem(65534, 0o750, 0).unwrap();
        assert!(
            other.contains("uid 65534") && other.contains("0750"),
            "{other}"
        );
        let shared = private_dir_problem(0, 0o40777, 0).unwrap();
        assert!(shared.contains("mode 0777"), "{shared}");
        assert!(private_dir_problem(0, 0o1777, 0).is_some(), "sticky /tmp");
        assert!(private_dir_problem(0, 0o770, 0).is_some(), "group-writable");
        assert!(private_dir_problem(65534, 0o777, 0)
            .unwrap()
            .contains("and writable"));
    }

    #[test]
    fn a_missing_directory_is_created_0750() {
        let dir = scratch("create");
        ensure_private_dir(DirKind::Dump, &dir.join("a/b")).unwrap();
        let mode = fs::metadata(dir.join("a/b")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o750);
        ensure_private_dir(DirKind::Dump, &dir.join("a/b")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_world_writable_directory_is_refused_with_the_fix() {
        let dir = scratch("0777");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(DirKind::Dump, &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 0777"), "{err}");
        assert!(
            err.contains(&format!("chmod 0750 {}", dir.display())),
            "{err}"
        );
        assert!(err.contains("--dump-dir") && !err.contains('\n'), "{err}");
        assert_eq!(
            fs::metadata(&dir).unwrap().mode() & 0o777,
            0o777,
            "an existing directory is not changed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            // Only root can give a directory away; as another user, own it by root instead.
            let err = check_private_dir(DirKind::Spool, Path::new("/")).unwrap_err();
            assert!(err.to_string().contains("uid 0"), "{err}");
            return;
        }
        let dir = scratch("other");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = ensure_private_dir(DirKind::Spool, &dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
        assert!(err.contains("chown root:root"), "{err}");
        assert!(err.contains("--spool-dir"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_in_place_of_a_subdirectory_is_refused() {
        let dir = scratch("sublink");
        ensure_private_dir(DirKind::Spool, &dir).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("corrupt")).unwrap();
        let err = ensure_private_subdir(DirKind::Spool, &dir.join("corrupt")).unwrap_err();
        assert!(matches!(err, DirError::NotADirectory { .. }), "{err}");
        fs::remove_file(dir.join("corrupt")).unwrap();
        ensure_private_subdir(DirKind::Spool, &dir.join("corrupt")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_another_user_planted_at_the_directory_is_refused() {
        // Needs root (lchown to another user), as every test of the daemon does.
        let base = scratch("planted");
        let target = base.join("target");
        ensure_private_dir(DirKind::Dump, &target).unwrap();
        let planted = base.join("profiles");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        // The daemon's own link to a private directory is fine.
        ensure_private_dir(DirKind::Dump, &planted).unwrap();
        std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
        let err = ensure_private_dir(DirKind::Dump, &planted)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a symbolic link owned by uid 65534"), "{err}");
        assert!(
            err.contains(&format!("`rm {}`", planted.display())),
            "{err}"
        );
        assert!(
            !err.contains("chown"),
            "a chown would follow the link: {err}"
        );
        assert!(err.contains("--dump-dir"), "{err}");
        fs::remove_dir_all(&base).unwrap();
    }
}
