//! What the daemon records about a process while it is alive: names, cgroup, and its
//! executable mappings (needed for pprof mappings and for naming frames that have no symbol).
//! In: a pid. Out: [`ProcessInfo`], read through the one `/proc` reader in [`procfs`].

pub(crate) mod procfs;

use std::{fs, path::PathBuf, sync::Arc, time::Duration};

use procfs::{parse_cgroup_v2, read_cgroup, read_stat};

/// One executable, file-backed mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    pub path: String,
    /// Device and inode of the file (0 for special mappings such as `[vdso]`): which file it
    /// is, in any mount namespace.
    pub dev: u64,
    pub inode: u64,
    /// GNU build id (hex) of the file, filled in by the symbolization stage.
    pub build_id: Option<String>,
}

/// Identity and layout of a process, captured on its first sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    /// Path of the executable, empty when unreadable (kernel threads, exited processes).
    pub exe: String,
    /// cgroup v2 path relative to the cgroup2 root, e.g. `/system.slice/nginx.service`.
    pub cgroup: String,
    /// Start time in clock ticks since boot; tells a reused pid from the original process.
    pub start_time: u64,
    pub vmas: Vec<Arc<Vma>>,
}

impl ProcessInfo {
    /// Reads `/proc/PID`; `None` when the process is already gone.
    pub fn read(pid: u32) -> Option<Self> {
        let mut info = Self::read_identity(pid)?;
        info.vmas = fs::read_to_string(format!("/proc/{pid}/maps"))
            .map(|text| parse_maps(&text).into_iter().map(Arc::new).collect())
            .unwrap_or_default();
        Some(info)
    }

    /// Reads `/proc/PID` without the memory map: what names and selects a process.
    pub fn read_identity(pid: u32) -> Option<Self> {
        let stat = read_stat(pid)?;
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = read_cgroup(pid)
            .map(|text| parse_cgroup_v2(&text))
            .unwrap_or_default();
        Some(Self {
            pid,
            comm: stat.comm,
            exe,
            cgroup,
            start_time: stat.start_time,
            vmas: Vec::new(),
        })
    }

    /// Placeholder for a process that exited before it could be read.
    pub fn unknown(pid: u32) -> Self {
        Self {
            pid,
            comm: format!("pid-{pid}"),
            ..Self::default()
        }
    }

    /// The mapping holding `addr`, if any.
    pub fn vma_for(&self, addr: u64) -> Option<&Arc<Vma>> {
        let index = self.vmas.partition_point(|v| v.end <= addr);
        self.vmas.get(index).filter(|v| v.start <= addr)
    }

    /// Short name of the executable (basename of `exe`, else `comm`).
    pub fn exe_name(&self) -> &str {
        self.exe
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.comm)
    }
}

/// Executable file-backed mappings of `/proc/PID/maps`, sorted by address.
pub fn parse_maps(text: &str) -> Vec<Vma> {
    let mut vmas: Vec<Vma> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let offset = fields.next()?;
            let dev = fields.next()?;
            let inode = fields.next()?;
            let path = fields.next()?.trim_start();
            if !perms.contains('x') || path.is_empty() {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            // "fd:01": major and minor in hex.
            let (major, minor) = dev.split_once(':')?;
            let dev = (u64::from_str_radix(major, 16).ok()? << 32)
                | u64::from_str_radix(minor, 16).ok()?;
            Some(Vma {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                file_offset: u64::from_str_radix(offset, 16).ok()?,
                path: path.to_string(),
                dev,
                inode: inode.parse().ok()?,
                build_id: None,
            })
        })
        .collect();
    vmas.sort_by_key(|v| v.start);
    vmas
}

/// True when `pid` exists and has not exited (a zombie waiting for its parent has exited).
pub fn is_running(pid: u32) -> bool {
    read_stat(pid).is_some_and(|stat| !matches!(stat.state, 'Z' | 'X'))
}

/// True when `pid` still names the process that started at `start_time`.
pub fn is_same_process_alive(pid: u32, start_time: u64) -> bool {
    read_stat(pid).is_some_and(|stat| stat.start_time == start_time)
}

/// The size of a page: what one page fault maps, and the unit of `statm`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096).max(1)
}

/// How long ago a process started, from its `start_time` (clock ticks since boot); None when
/// the clocks cannot be read.
pub fn age(start_time: u64) -> Option<Duration> {
    // SAFETY: sysconf has no memory arguments; clock_gettime writes the timespec given.
    let (ticks, boot) = unsafe {
        let ticks = libc::sysconf(libc::_SC_CLK_TCK);
        let mut now = std::mem::zeroed::<libc::timespec>();
        let ok = libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) == 0;
        (ticks, ok.then_some(now))
    };
    let boot = boot?;
    if ticks <= 0 {
        return None;
    }
    let since_boot = Duration::new(boot.tv_sec as u64, boot.tv_nsec as u32);
    let started = Duration::from_secs_f64(start_time as f64 / ticks as f64);
    Some(since_boot.saturating_sub(started))
}

/// Where the cgroup2 hierarchy is mounted: `/sys/fs/cgroup` on a pure v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = procfs::read_mountinfo()?;
    let mount = procfs::parse_mounts(&text)
        .find(|m| m.fstype == "cgroup2")
        .map(|m| PathBuf::from(m.point));
    mount
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_only_executable_file_mappings() {
        let text = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1 /usr/bin/prog
55d0c0001000-55d0c0005000 r-xp 00001000 08:01 1 /usr/bin/prog
7f0000000000-7f0000100000 r-xp 00028000 08:01 2 /usr/lib/libc.so.6
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
7ffe00000000-7ffe00001000 rw-p 00000000 00:00 0
";
        let vmas = parse_maps(text);
        assert_eq!(vmas.len(), 3);
        assert_eq!(vmas[0].path, "/usr/bin/prog");
        assert_eq!(vmas[0].file_offset, 0x1000);
        assert_eq!(vmas[2].path, "[vdso]");
        assert_eq!((vmas[1].dev, vmas[1].inode), (0x8_0000_0001, 2));
        assert_eq!(vmas[2].inode, 0);
        let info = ProcessInfo {
            vmas: vmas.into_iter().map(Arc::new).collect(),
            ..ProcessInfo::default()
        };
        assert_eq!(
            info.vma_for(0x7f0000000010).map(|v| v.start),
            Some(0x7f0000000000)
        );
        assert!(info.vma_for(0x1).is_none());
        assert!(info.vma_for(0x55d0c0000500).is_none());
    }
}
