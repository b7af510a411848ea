//! Paths that may lead into a FUSE mount, told apart before any lookup enters one.
//!
//! Any user can run a FUSE server, and every lookup of a name in a FUSE directory waits for its
//! answer, which may never come: `O_NONBLOCK` and `O_PATH` do not help, since the lookup comes
//! before the open. So a file of an exited process is opened by path only when no FUSE mount
//! point (of the process's namespace, and of ours) is the path or a directory above it, and
//! then one component at a time, without following symlinks (the paths of `/proc/PID/maps` are
//! resolved already, so a symlink in one is a replacement), each component's device checked
//! against the FUSE devices, and its mount against the mounts read (a mount made since could be
//! a FUSE one), before a name is looked up in it. The check asks the kernel for cached
//! attributes only (`AT_STATX_DONT_SYNC`), which a FUSE file system answers without its server.

use std::{
    collections::HashSet,
    ffi::CString,
    fs::File,
    os::unix::io::{AsRawFd, FromRawFd},
};

use crate::process::procfs::{
    parse_mount_devices, parse_mounts, read_mountinfo, read_mountinfo_of,
};

use super::files::Refusal;

/// The FUSE mounts a process and the daemon see.
#[derive(Clone, Debug, Default)]
pub struct FuseMounts {
    /// Devices (as [`crate::process::parse_maps`] spells them) of the FUSE mounts of both.
    pub devices: HashSet<u64>,
    /// Mount points of FUSE mounts in the process's namespace, relative to its root; None when
    /// its mountinfo could not be read (the process is gone).
    pub process_points: Option<Vec<String>>,
    /// Mount points of FUSE mounts in the daemon's namespace.
    pub own_points: Vec<String>,
    /// Ids of all the mounts of both, FUSE ones included, as mountinfo and `statx` number them.
    pub mounts: HashSet<u64>,
    /// Ids of the FUSE mounts of both.
    pub fuse_mounts: HashSet<u64>,
}

impl FuseMounts {
    /// Read afresh for each process tracked: a device number of an unmounted file system can
    /// come back as a FUSE mount.
    pub fn of(pid: u32) -> Self {
        Self::parse(
            read_mountinfo_of(pid).as_deref(),
            read_mountinfo().as_deref().unwrap_or(""),
        )
    }

    /// From the process's mountinfo text (None when gone) and the daemon's.
    pub fn parse(process: Option<&str>, own: &str) -> Self {
        let mut devices = HashSet::new();
        let (mut mounts, mut fuse_mounts) = (HashSet::new(), HashSet::new());
        let mut points = |text: &str| {
            devices.extend(fuse_devices(text));
            for (id, fuse) in mount_ids(text) {
                mounts.insert(id);
                if fuse {
                    fuse_mounts.insert(id);
                }
            }
            parse_mounts(text)
                .filter(|m| m.fstype.starts_with("fuse"))
                .map(|m| unescape(m.point))
                .collect::<Vec<_>>()
        };
        let process_points = process.map(&mut points);
        let own_points = points(own);
        Self {
            devices,
            process_points,
            own_points,
            mounts,
            fuse_mounts,
        }
    }

    /// Whether `path` in the process's namespace (`own`: in ours) is on or under a FUSE mount
    /// point; with the process's mountinfo gone, ours stands in.
    pub fn covers(&self, path: &str, own: bool) -> bool {
        let points = match (&self.process_points, own) {
            (Some(points), false) => points,
            _ => &self.own_points,
        };
        points.iter().any(|point| is_under(path, point))
    }
}

/// Devices of the FUSE mounts of a mountinfo text.
fn fuse_devices(text: &str) -> impl Iterator<Item = u64> + '_ {
    parse_mount_devices(text)
        .filter(|(_, fstype)| fstype.starts_with("fuse"))
        .filter_map(|(dev, _)| {
            let (major, minor) = dev.split_once(':')?;
            Some((major.parse::<u64>().ok()? << 32) | minor.parse::<u64>().ok()?)
        })
}

/// The id of each mount of a mountinfo text, and whether it is a FUSE one.
fn mount_ids(text: &str) -> impl Iterator<Item = (u64, bool)> + '_ {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let id = left.split_whitespace().next()?.parse().ok()?;
        Some((id, right.starts_with("fuse")))
    })
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match octal.and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `path` is `point` or below it, by whole components.
fn is_under(path: &str, point: &str) -> bool {
    let point = point.trim_end_matches('/');
    match path.strip_prefix(point) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Opens (`O_PATH`) the absolute `path` below the directory `base`, one component at a time,
/// refusing a symlink (as [`Refusal::NotRegular`] in the last place), a `..`, and a component
/// on a FUSE device or mount, or on a mount `fuse` does not know, before looking up the next
/// name in it.
pub fn walk(base: File, path: &str, fuse: &FuseMounts) -> Result<File, Refusal> {
    let mut at = base;
    check(&at, fuse, true)?;
    let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
    for (i, name) in names.iter().enumerate() {
        if *name == "." || *name == ".." {
            return Err(Refusal::Unreachable);
        }
        let name = CString::new(*name).map_err(|_| Refusal::Unreachable)?;
        // SAFETY: a valid directory descriptor and NUL-terminated name; the new descriptor
        // is owned by the File made of it.
        let fd = unsafe {
            libc::openat(
                at.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Refusal::Unreachable);
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        at = unsafe { File::from_raw_fd(fd) };
        check(&at, fuse, i + 1 < names.len())?;
    }
    Ok(at)
}

/// Refuses a descriptor on a FUSE device or mount, on a mount made since `fuse` was read, or
/// a symlink, and, for a `dir`, anything else than a directory; from cached attributes only,
/// which never wait on a FUSE server.
fn check(file: &File, fuse: &FuseMounts, dir: bool) -> Result<(), Refusal> {
    // SAFETY: statx is plain old data, filled in by the kernel.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty NUL-terminated path with AT_EMPTY_PATH, and a
    // statx buffer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE | libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(Refusal::Unreachable);
    }
    let dev = (u64::from(stx.stx_dev_major) << 32) | u64::from(stx.stx_dev_minor);
    if fuse.devices.contains(&dev) {
        return Err(Refusal::Fuse);
    }
    // A kernel before 5.8 gives no mount id: the devices and mount points alone decide.
    if stx.stx_mask & libc::STATX_MNT_ID != 0
        && (fuse.fuse_mounts.contains(&stx.stx_mnt_id) || !fuse.mounts.contains(&stx.stx_mnt_id))
    {
        return Err(Refusal::Fuse);
    }
    let kind = u32::from(stx.stx_mode) & libc::S_IFMT;
    // A symlink in place of the mapped file is not a regular file; one on the way there
    // means the path was changed since the mapping was made.
    if kind == libc::S_IFLNK {
        return Err(if dir {
            Refusal::Replaced
        } else {
            Refusal::NotRegular
        });
    }
    if dir && kind != libc::S_IFDIR {
        return Err(Refusal::Unreachable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::symbolize::files::maps_dev;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:50 / /home/eve/my\\040mnt rw,nosuid - fuse.sshfs eve@x: rw,user_id=1000
41 22 0:51 / /run/user/1000/doc rw,nosuid - fuse.portal portal rw
";

    #[test]
    fn paths_on_or_under_a_fuse_mount_point_are_told_apart() {
        let mounts = FuseMounts::parse(Some(MOUNTINFO), "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");
        assert_eq!(mounts.devices, HashSet::from([50, 51]));
        assert_eq!(mounts.fuse_mounts, HashSet::from([40, 41]));
        assert_eq!(mounts.mounts, HashSet::from([22, 40, 41]));
        assert!(mounts.covers("/home/eve/my mnt/lib.so", false));
        assert!(mounts.covers("/run/user/1000/doc", false));
        assert!(!mounts.covers("/home/eve/my mntx/lib.so", false));
        assert!(!mounts.covers("/usr/lib/libc.so.6", false));
        // The process's points are not ours: in our namespace the path is plain ext4.
        assert!(!mounts.covers("/home/eve/my mnt/lib.so", true));
        // Its mountinfo gone (it exited): ours stands in for it.
        let gone = FuseMounts::parse(None, MOUNTINFO);
        assert!(gone.covers("/home/eve/my mnt/lib.so", false));
        assert_eq!(gone.devices.len(), 2);
    }

    #[test]
    fn a_walk_refuses_symlinks_and_fuse_devices_before_descending() {
        let dir = std::env::temp_dir().join(format!("profilerd-fuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/lib.so"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let root = || File::open("/").unwrap();
        let path = |p: &str| dir.join(p).to_str().unwrap().to_string();
        let none = FuseMounts::of(std::process::id());

        let file = walk(root(), &path("real/lib.so"), &none).unwrap();
        let want = std::fs::metadata(dir.join("real/lib.so")).unwrap();
        assert_eq!(file.metadata().unwrap().ino(), want.ino());
        // A symlink on the way (it could lead into a FUSE mount) is refused.
        assert_eq!(
            walk(root(), &path("link/lib.so"), &none).err(),
            Some(Refusal::Replaced)
        );
        assert_eq!(
            walk(root(), &path("real/../real/lib.so"), &none).err(),
            Some(Refusal::Unreachable)
        );
        // A directory on a FUSE device (the temp dir's device stands in) is not looked into.
        let fuse = FuseMounts {
            devices: [maps_dev(want.dev())].into(),
            ..FuseMounts::of(std::process::id())
        };
        assert_eq!(
            walk(root(), &path("real/lib.so"), &fuse).err(),
            Some(Refusal::Fuse)
        );
        // Nor one on a mount not in the table read (mounted since, by anyone).
        assert_eq!(
            walk(root(), &path("real/lib.so"), &FuseMounts::default()).err(),
            Some(Refusal::Fuse)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
