//! The files mapped by tracked processes, opened as untrusted and held for blazesym.
//!
//! Any local user controls the files their processes map: after mapping one they can replace
//! its path with a FIFO (whose `open()` waits for a writer that never comes), a device, or
//! another file. So a file is opened once, while its process lives: first with `O_PATH` (which
//! runs no device driver's or FIFO's open), and opened for reading, without blocking, only if
//! `fstat` says it is a regular file with the device and inode `/proc/PID/maps` recorded for
//! the mapping. Once the process is gone, its path is looked up only outside FUSE mounts (see
//! [`super::fuse`]). blazesym then reads the file through `/proc/self/fd/N` of that descriptor:
//! the inode the process mapped, whatever its path names later. A file that fails the checks,
//! whose symbol and debug sections are over `--max-symbol-file-bytes` (or would take the files
//! parsed together over `--max-symbol-bytes`), or beyond `--max-symbol-files` files held open,
//! is not handed to blazesym: its frames are named by module and offset, and the refusal is
//! counted by reason.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
    time::Instant,
};

use crate::process::Vma;

use super::{debuginfo, fuse, fuse::FuseMounts};

/// A file in any mount namespace: its device and inode.
pub type FileId = (u64, u64);

/// Why a mapped file is not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its path opened something other than a regular file (a FIFO, a device, a directory).
    NotRegular,
    /// Its path now names another file than the one mapped (device or inode differ).
    Replaced,
    /// It could not be opened at all (gone, or no permission).
    Unreachable,
    /// Its symbol and debug sections are over `--max-symbol-file-bytes`.
    FileBound,
    /// Parsing it would take the files parsed together over `--max-symbol-bytes`.
    TotalBound,
    /// It is on a FUSE file system, whose server (any user can run one) answers every open
    /// and every page read of it, or never does.
    Fuse,
    /// A perf map not owned by its process's user (perf refuses those too).
    NotOwner,
    /// `--max-symbol-files` files are held open already.
    HeldBound,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::NotRegular,
        Refusal::Replaced,
        Refusal::Unreachable,
        Refusal::FileBound,
        Refusal::TotalBound,
        Refusal::Fuse,
        Refusal::NotOwner,
        Refusal::HeldBound,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NotRegular => "not_regular",
            Refusal::Replaced => "replaced",
            Refusal::Unreachable => "unreachable",
            Refusal::FileBound => "file_bound",
            Refusal::TotalBound => "total_bound",
            Refusal::Fuse => "fuse",
            Refusal::NotOwner => "not_owner",
            Refusal::HeldBound => "held_bound",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Opens a file a user may control without waiting on anyone (see [`open_checked`]).
pub fn open_untrusted(path: &Path) -> Result<File, Refusal> {
    open_checked(path, 0, None)
}

/// Opens a file a user may control, reading it only once it is known to be a regular file
/// (and, given `expect`, the device and inode as `/proc/PID/maps` spells them).
///
/// The path is first opened with `O_PATH`, which runs no driver's or FIFO's open: a plain
/// read-only open of a device node (a symlink to `/dev/watchdog` arms the watchdog) already
/// acts before any `fstat` could refuse it. Only that descriptor's inode, checked, is then
/// opened for reading through `/proc/self/fd/N` (non-blocking, no controlling terminal), and
/// checked again: the reopen follows the descriptor, not the path, so it is the same inode
/// unless something is wrong. `flags` adds open flags to the `O_PATH` open (`O_NOFOLLOW`
/// where the path is ours to choose).
pub fn open_checked(
    path: &Path,
    flags: libc::c_int,
    expect: Option<FileId>,
) -> Result<File, Refusal> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | flags)
        .open(path)
        .map_err(|_| Refusal::Unreachable)?;
    reopen_checked(&handle, expect)
}

/// Opens for reading the file an `O_PATH` descriptor names, if it is a regular file (and
/// `expect`'s device and inode): see [`open_checked`].
pub fn reopen_checked(handle: &File, expect: Option<FileId>) -> Result<File, Refusal> {
    let meta = handle.metadata().map_err(|_| Refusal::Unreachable)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    let id = (maps_dev(meta.dev()), meta.ino());
    if expect.is_some_and(|expect| expect != id) {
        return Err(Refusal::Replaced);
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(|_| Refusal::Unreachable)?;
    let reopened = file.metadata().map_err(|_| Refusal::Unreachable)?;
    if !reopened.file_type().is_file() || (maps_dev(reopened.dev()), reopened.ino()) != id {
        return Err(Refusal::Replaced);
    }
    Ok(file)
}

/// The device number as `/proc/PID/maps` spells it, parsed by [`crate::process::parse_maps`]
/// (major in the high 32 bits, minor in the low ones).
pub fn maps_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0xfff);
    let minor = ((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0xff);
    (major << 32) | minor
}

/// Opens the file `vma` of process `pid` maps: through `/proc/PID/map_files/` (the mapped
/// inode itself, while the process lives and the daemon has CAP_SYS_ADMIN), else by its path
/// in the process's root, else by its path in ours. A path is trusted only as far as it still
/// leads to the same device and inode, which also tells a container's file from ours.
pub fn open_mapped(pid: u32, vma: &Vma, fuse: &FuseMounts) -> Result<File, Refusal> {
    let expect = Some((vma.dev, vma.inode));
    let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", vma.start, vma.end);
    // The map file is a link to the mapped inode itself, which no lookup by name reaches.
    let mut refusal = match open_checked(Path::new(&map_file), 0, expect) {
        Ok(file) => return Ok(file),
        Err(refusal) => refusal,
    };
    // By path (the process gone): never into a FUSE mount, whose lookups may never return.
    for own in [false, true] {
        if fuse.covers(&vma.path, own) {
            refusal = Refusal::Fuse;
            continue;
        }
        let base = if own {
            "/".to_string()
        } else {
            format!("/proc/{pid}/root")
        };
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(base)
            .map_err(|_| Refusal::Unreachable)
            .and_then(|base| fuse::walk(base, &vma.path, fuse))
            .and_then(|handle| reopen_checked(&handle, expect));
        match opened {
            Ok(file) => return Ok(file),
            // The most telling reason of all the attempts: a FIFO says more than "gone".
            Err(Refusal::Unreachable) => {}
            Err(other) if refusal != Refusal::NotRegular || other == Refusal::Fuse => {
                refusal = other
            }
            Err(_) => {}
        }
    }
    Err(refusal)
}

/// A file mapped by tracked processes.
pub struct HeldFile {
    /// The validated descriptor blazesym reads the file through; None when refused.
    file: Option<File>,
    /// Why it is not read (a total-bound refusal is retried when room is made).
    pub refused: Option<Refusal>,
    /// Its GNU build id (hex).
    pub build_id: Option<String>,
    pub facts: debuginfo::Facts,
    /// Tracked processes mapping it.
    pub processes: u32,
    /// Whether blazesym may hold its parsed state (counted in [`Files::parsed_bytes`]).
    parsed: bool,
    /// When it was first held or last released by an expiry.
    pub since: Instant,
}

impl HeldFile {
    /// The validated descriptor, unless the file was refused.
    pub fn descriptor(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// The path blazesym reads the file by.
    pub fn fd_path(&self) -> Option<PathBuf> {
        let fd = self.file.as_ref()?.as_raw_fd();
        Some(PathBuf::from(format!("/proc/self/fd/{fd}")))
    }

    /// Whether `--symbol-file-ttl` applies (see [`debuginfo`]).
    pub fn expires(&self) -> bool {
        self.facts.dwarf
    }
}

/// Bounds on parsed symbol data.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub max_file_bytes: u64,
    pub max_bytes: u64,
    /// Files held open at once: each is a descriptor, and the daemon's own files need some.
    pub max_files: usize,
}

/// Every file mapped by a tracked process, by identity.
pub struct Files {
    pub held: HashMap<FileId, HeldFile>,
    bounds: Bounds,
    /// Symbol and debug section bytes of the files blazesym may hold parsed.
    pub parsed_bytes: u64,
    /// Refusals by [`Refusal::ALL`] index.
    pub refused: [u64; Refusal::ALL.len()],
    /// Held files with a descriptor (bounded by [`Bounds::max_files`]).
    pub descriptors: usize,
}

impl Files {
    pub fn new(bounds: Bounds) -> Self {
        Self {
            held: HashMap::new(),
            bounds,
            parsed_bytes: 0,
            refused: [0; Refusal::ALL.len()],
            descriptors: 0,
        }
    }

    /// Holds the file of `vma` for one more process, opening and checking it the first time.
    /// `fuse` holds the devices of the process's FUSE mounts, read at the first new file.
    pub fn hold(
        &mut self,
        id: FileId,
        pid: u32,
        vma: &Vma,
        fuse: &mut Option<FuseMounts>,
    ) -> &HeldFile {
        if self.held.contains_key(&id) {
            let file = self.held.get_mut(&id).expect("checked");
            file.processes += 1;
            return file;
        }
        let fuse = fuse.get_or_insert_with(|| FuseMounts::of(pid));
        let opened = if self.descriptors >= self.bounds.max_files {
            Err(Refusal::HeldBound)
        } else if fuse.devices.contains(&vma.dev) {
            Err(Refusal::Fuse)
        } else {
            open_mapped(pid, vma, fuse)
        };
        let (file, refused, build_id, facts) = match opened {
            Ok(file) => {
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                let build_id = blazesym::helper::read_elf_build_id(&path)
                    .ok()
                    .flatten()
                    .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
                // blazesym looks for debug files in our own debug directories, never in the
                // process's root (which a container's user may have made a FUSE mount).
                let facts = debuginfo::inspect(&file, Path::new("/"), build_id.as_deref());
                let refused =
                    (facts.symbol_bytes > self.bounds.max_file_bytes).then_some(Refusal::FileBound);
                (Some(file), refused, build_id, facts)
            }
            Err(refusal) => (None, Some(refusal), None, debuginfo::Facts::default()),
        };
        if let Some(refusal) = refused {
            self.refuse(refusal, pid, vma, facts.symbol_bytes);
        }
        let file = if refused.is_some() { None } else { file };
        self.descriptors += usize::from(file.is_some());
        self.held.entry(id).or_insert(HeldFile {
            file,
            refused,
            build_id,
            facts,
            processes: 1,
            parsed: false,
            since: Instant::now(),
        })
    }

    /// Counts a refusal of a file that is not a mapping (a perf map).
    pub fn count_refusal(&mut self, refusal: Refusal, pid: u32, path: &str) {
        self.refused[refusal.index()] += 1;
        tracing::info!(pid, path, reason = refusal.name(), "not reading a perf map");
    }

    fn refuse(&mut self, refusal: Refusal, pid: u32, vma: &Vma, bytes: u64) {
        self.refused[refusal.index()] += 1;
        let fix = match refusal {
            Refusal::FileBound => "raise --max-symbol-file-bytes to name its frames",
            Refusal::TotalBound => "raise --max-symbol-bytes to name its frames",
            Refusal::HeldBound => "raise --max-symbol-files to name its frames",
            _ => "its frames are named by module and offset",
        };
        tracing::info!(
            pid,
            path = %vma.path,
            symbol_bytes = bytes,
            reason = refusal.name(),
            "not reading a mapped file: {fix}"
        );
    }

    /// The path and debug-info setting blazesym may read `id` with, counting its parsed bytes
    /// against `--max-symbol-bytes` the first time; the refusal otherwise.
    pub fn admit(&mut self, id: FileId, pid: u32, vma: &Vma) -> Result<(PathBuf, bool), Refusal> {
        let room = self.bounds.max_bytes.saturating_sub(self.parsed_bytes);
        let file = self.held.get_mut(&id).ok_or(Refusal::Unreachable)?;
        match file.refused {
            Some(Refusal::TotalBound) if file.facts.symbol_bytes <= room => file.refused = None,
            Some(refusal) => return Err(refusal),
            None => {}
        }
        if !file.parsed {
            if file.facts.symbol_bytes > room {
                file.refused = Some(Refusal::TotalBound);
                let bytes = file.facts.symbol_bytes;
                self.refuse(Refusal::TotalBound, pid, vma, bytes);
                return Err(Refusal::TotalBound);
            }
            file.parsed = true;
            self.parsed_bytes += file.facts.symbol_bytes;
        }
        let path = file.fd_path().ok_or(Refusal::Unreachable)?;
        Ok((path, file.facts.debug_syms))
    }

    /// Marks `id`'s parsed state released (blazesym was told to evict it); returns the path
    /// to evict.
    pub fn unparse(&mut self, id: FileId) -> Option<PathBuf> {
        let file = self.held.get_mut(&id)?;
        if std::mem::take(&mut file.parsed) {
            self.parsed_bytes -= file.facts.symbol_bytes;
        }
        file.fd_path()
    }

    /// One process fewer maps `id`; returns the file when none does any more (the caller
    /// evicts blazesym's state of it before it is dropped, which closes the descriptor).
    pub fn release(&mut self, id: FileId) -> Option<HeldFile> {
        let file = self.held.get_mut(&id)?;
        file.processes -= 1;
        if file.processes > 0 {
            return None;
        }
        let file = self.held.remove(&id)?;
        self.descriptors -= usize::from(file.file.is_some());
        if file.parsed {
            self.parsed_bytes -= file.facts.symbol_bytes;
        }
        Some(file)
    }
}

#[cfg(test)]
mod tests {
    use std::{ffi::CString, sync::mpsc, time::Duration};

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A mapping of `path` as `/proc/PID/maps` recorded it, for a pid that is not running (so
    /// that only the path is left to open, as after an exit).
    fn vma_of(path: &Path) -> Vma {
        let meta = std::fs::metadata(path).unwrap();
        Vma {
            start: 0x1000,
            end: 0x2000,
            file_offset: 0,
            path: path.to_str().unwrap().to_string(),
            dev: maps_dev(meta.dev()),
            inode: meta.ino(),
            build_id: None,
        }
    }

    /// A pid no process has (above the kernel's largest).
    const GONE: u32 = 0x7fff_fff0;

    /// `open_mapped` on another thread, so that a blocking open fails the test instead of
    /// hanging it.
    fn open_within_a_second(vma: &Vma) -> Result<(), Refusal> {
        let (tx, rx) = mpsc::channel();
        let vma = vma.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_mapped(GONE, &vma, &FuseMounts::of(GONE)).map(|_| ()));
        });
        rx.recv_timeout(Duration::from_secs(1))
            .expect("open_mapped blocked")
    }

    #[test]
    fn maps_dev_matches_the_maps_spelling() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let vmas = crate::process::parse_maps(&text);
        let vma = vmas.iter().find(|v| v.inode != 0).unwrap();
        let opened = open_checked(Path::new(&vma.path), 0, Some((vma.dev, vma.inode)));
        assert!(opened.is_ok(), "{vma:?}");
    }

    #[test]
    fn a_file_replaced_after_it_was_mapped_is_refused_without_blocking() {
        let dir = dir("replaced");
        let lib = dir.join("lib.so");
        std::fs::write(&lib, b"original").unwrap();
        let vma = vma_of(&lib);
        assert_eq!(open_within_a_second(&vma), Ok(()));

        // Another regular file at the path: another inode (made while the first one exists,
        // so that the file system cannot hand out its inode number again).
        std::fs::write(dir.join("other.so"), b"impostor").unwrap();
        std::fs::rename(dir.join("other.so"), &lib).unwrap();
        assert_eq!(open_within_a_second(&vma), Err(Refusal::Replaced));

        // A symlink to a FIFO: opened without waiting for a writer, and refused.
        let fifo = dir.join("fifo");
        let name = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        std::fs::remove_file(&lib).unwrap();
        std::os::unix::fs::symlink(&fifo, &lib).unwrap();
        assert_eq!(open_within_a_second(&vma), Err(Refusal::NotRegular));

        std::fs::remove_file(&lib).unwrap();
        assert_eq!(open_within_a_second(&vma), Err(Refusal::Unreachable));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_under_a_fuse_mount_point_is_not_looked_up() {
        let dir = dir("under-fuse");
        let lib = dir.join("lib.so");
        std::fs::write(&lib, b"original").unwrap();
        let vma = vma_of(&lib);
        // The directory stands in for a FUSE mount point of ours (its mountinfo gone with the
        // process): the file is there and the same, but no lookup may go into the mount.
        let fuse = FuseMounts {
            own_points: vec![dir.to_str().unwrap().to_string()],
            ..FuseMounts::of(GONE)
        };
        assert_eq!(open_mapped(GONE, &vma, &fuse).err(), Some(Refusal::Fuse));
        assert!(open_mapped(GONE, &vma, &FuseMounts::of(GONE)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Whether `inotify` (non-blocking, watching IN_OPEN) has seen an open since last asked.
    fn opened(inotify: &File) -> bool {
        let mut events = [0u8; 4096];
        // SAFETY: a valid descriptor and buffer of that length.
        let n = unsafe { libc::read(inotify.as_raw_fd(), events.as_mut_ptr().cast(), 4096) };
        n > 0
    }

    /// An inotify descriptor reporting every open of `path`'s inode.
    fn watch_opens(path: &Path) -> File {
        use std::os::unix::io::FromRawFd;
        // SAFETY: plain syscalls; the descriptor is owned by the returned File.
        let inotify = unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            File::from_raw_fd(fd)
        };
        let name = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid descriptor and NUL-terminated path.
        let watch =
            unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), name.as_ptr(), libc::IN_OPEN) };
        assert!(watch >= 0);
        inotify
    }

    #[test]
    fn a_fifo_or_device_behind_a_symlink_is_refused_without_being_opened() {
        let dir = dir("never-opened");
        let fifo = dir.join("fifo");
        let name = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let mut targets = vec![fifo];
        // A device node of our own (the null device), so that no other process's opens of
        // /dev/null are seen; only root may make one.
        let device = dir.join("null");
        let name = CString::new(device.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) } == 0 {
            targets.push(device);
        }
        for target in targets {
            let link = dir.join("lib.so");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).unwrap();
            let inotify = watch_opens(&target);
            assert_eq!(open_untrusted(&link).err(), Some(Refusal::NotRegular));
            assert!(!opened(&inotify), "{target:?} was opened for reading");
            // The watch does see a reading open (so that the check above means something).
            let reader = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&target);
            assert!(reader.is_ok() && opened(&inotify), "{target:?} unwatched");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A held file of `bytes` symbol bytes (this test binary's descriptor stands in).
    fn held(bytes: u64) -> HeldFile {
        HeldFile {
            file: Some(File::open(std::env::current_exe().unwrap()).unwrap()),
            refused: None,
            build_id: None,
            facts: debuginfo::Facts {
                dwarf: false,
                debug_syms: true,
                symbol_bytes: bytes,
                debug_file: None,
            },
            processes: 1,
            parsed: false,
            since: Instant::now(),
        }
    }

    #[test]
    fn files_are_parsed_within_the_total_bound_and_admitted_once_room_is_made() {
        let mut files = Files::new(Bounds {
            max_file_bytes: 100,
            max_bytes: 150,
            max_files: usize::MAX,
        });
        let vma = vma_of(&std::env::current_exe().unwrap());
        files.held.insert((1, 1), held(100));
        files.held.insert((1, 2), held(100));
        // Inserted by hand: counted as hold() counts them.
        files.descriptors = files.held.len();
        assert!(files.admit((1, 1), 1, &vma).is_ok());
        assert_eq!(files.parsed_bytes, 100);
        // Counted once, however often it is read.
        assert!(files.admit((1, 1), 1, &vma).is_ok());
        assert_eq!(files.parsed_bytes, 100);
        assert_eq!(files.admit((1, 2), 1, &vma), Err(Refusal::TotalBound));
        assert_eq!(files.admit((1, 2), 1, &vma), Err(Refusal::TotalBound));
        assert_eq!(
            files.refused[Refusal::TotalBound.index()],
            1,
            "counted once"
        );

        // The first one released (its process exited): room for the second.
        assert!(files.release((1, 1)).is_some());
        assert_eq!(files.parsed_bytes, 0);
        assert!(files.admit((1, 2), 1, &vma).is_ok());
        assert_eq!(files.parsed_bytes, 100);
        // An expiry gives its bytes back until it is read again.
        assert!(files.unparse((1, 2)).is_some());
        assert_eq!(files.parsed_bytes, 0);
    }

    #[test]
    fn a_file_over_the_per_file_bound_is_refused_when_held() {
        let mut files = Files::new(Bounds {
            max_file_bytes: 1,
            max_bytes: u64::MAX,
            max_files: usize::MAX,
        });
        // This test binary: a symbol table and DWARF of more than one byte.
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::env::current_exe().unwrap();
        let vma = crate::process::parse_maps(&text)
            .into_iter()
            .find(|v| Path::new(&v.path) == exe)
            .unwrap();
        let held = files.hold((vma.dev, vma.inode), std::process::id(), &vma, &mut None);
        assert_eq!(held.refused, Some(Refusal::FileBound));
        assert!(held.fd_path().is_none(), "no descriptor for blazesym");
        assert_eq!(
            files.admit((vma.dev, vma.inode), std::process::id(), &vma),
            Err(Refusal::FileBound)
        );
        assert_eq!(files.refused[Refusal::FileBound.index()], 1);
    }

    #[test]
    fn files_beyond_the_held_bound_are_not_opened_until_one_is_released() {
        let dir = dir("held-bound");
        let vmas: Vec<Vma> = ["a.so", "b.so", "c.so"]
            .iter()
            .map(|name| {
                std::fs::write(dir.join(name), name).unwrap();
                vma_of(&dir.join(name))
            })
            .collect();
        let mut files = Files::new(Bounds {
            max_file_bytes: u64::MAX,
            max_bytes: u64::MAX,
            max_files: 1,
        });
        let hold = |files: &mut Files, vma: &Vma| {
            let fuse = &mut Some(FuseMounts::of(GONE));
            files.hold((vma.dev, vma.inode), GONE, vma, fuse).refused
        };
        assert_eq!(hold(&mut files, &vmas[0]), None);
        assert_eq!(hold(&mut files, &vmas[1]), Some(Refusal::HeldBound));
        assert_eq!(files.descriptors, 1);
        assert_eq!(files.refused[Refusal::HeldBound.index()], 1);
        // The refused one holds no descriptor: releasing it makes no room.
        assert!(files.release((vmas[1].dev, vmas[1].inode)).is_some());
        assert_eq!(files.descriptors, 1);
        assert!(files.release((vmas[0].dev, vmas[0].inode)).is_some());
        assert_eq!(files.descriptors, 0);
        assert_eq!(hold(&mut files, &vmas[2]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_on_a_fuse_mount_is_never_opened() {
        let mut files = Files::new(Bounds {
            max_file_bytes: u64::MAX,
            max_bytes: u64::MAX,
            max_files: usize::MAX,
        });
        // A path that does not exist: the device alone decides, before any open.
        let vma = Vma {
            path: "/never/opened".into(),
            ..vma_of(&std::env::current_exe().unwrap())
        };
        let mut fuse = Some(FuseMounts {
            devices: [vma.dev].into(),
            ..FuseMounts::default()
        });
        let held = files.hold((vma.dev, vma.inode), GONE, &vma, &mut fuse);
        assert_eq!(held.refused, Some(Refusal::Fuse));
        assert_eq!(files.refused[Refusal::Fuse.index()], 1);
    }
}
