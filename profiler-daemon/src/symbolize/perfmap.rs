//! Names of JIT code from a process's perf map (`/tmp/perf-PID.map` in its own root, by the
//! pid it sees itself as), which the process writes itself (`node --perf-basic-prof`, the
//! JVM's perf-map-agent).
//!
//! The file is its owner's to make anything: a FIFO (blazesym's own reader opens it by path
//! and would wait for a writer), a symlink to another user's file, or gigabytes. So it is
//! opened here as untrusted, without following symlinks on the way (nor into a FUSE mount),
//! read only when the process's user owns it (as perf requires) and its bytes are under
//! `--max-symbol-file-bytes`, and parsed into one sorted table per process, kept while what
//! the table costs (its strings and entries, which a file of short lines makes several times
//! its size) is under that bound and the total one. It is read again only when its size or
//! modification time changed.

use std::{
    collections::{HashMap, HashSet},
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    sync::Arc,
};

use super::{
    files::{reopen_checked, Refusal},
    fuse::{self, FuseMounts},
};

/// What a table entry costs beyond its name: the tuple, and the name's `Arc` counts.
const ENTRY_OVERHEAD: u64 = (std::mem::size_of::<(u64, u64, Arc<str>)>() + 16) as u64;

/// One process's perf map as last read.
struct PerfMap {
    /// Size and modification time when read: a JIT appends as it compiles.
    stamp: (u64, i64, i64),
    /// (start, end, name), by start.
    entries: Vec<(u64, u64, Arc<str>)>,
    /// What `entries` cost (see [`cost`]).
    bytes: u64,
}

/// The perf maps of tracked processes.
#[derive(Default)]
pub struct PerfMaps {
    maps: HashMap<u32, PerfMap>,
    /// What the tables held cost (see [`cost`]).
    pub bytes: u64,
    /// Processes whose perf map was refused since it was last read (counted once each).
    refused: HashSet<u32>,
    /// The stamp and cost of a map refused for its cost, so that it is not read and parsed
    /// again at every drain until it changes (or room is made).
    too_big: HashMap<u32, ((u64, i64, i64), u64)>,
    /// FUSE mounts of each process, read once: a perf map is looked for at every drain.
    fuse: HashMap<u32, FuseMounts>,
}

impl PerfMaps {
    /// Names of `addrs` in the perf map of `pid` (None where it has none): re-read when it
    /// changed and the process lives. A map over `max_file_bytes`, or over `room` with the
    /// others, is refused.
    pub fn names(
        &mut self,
        pid: u32,
        addrs: &[u64],
        max_file_bytes: u64,
        room: u64,
    ) -> (Vec<Option<Arc<str>>>, Option<Refusal>) {
        let refusal = match self.refresh(pid, max_file_bytes, room) {
            Ok(()) => None,
            // Counted the first time only: the map is checked again at every drain.
            Err(refusal) => self.refused.insert(pid).then_some(refusal),
        };
        let names = match self.maps.get(&pid) {
            Some(map) => addrs.iter().map(|&a| lookup(&map.entries, a)).collect(),
            None => vec![None; addrs.len()],
        };
        (names, refusal)
    }

    fn refresh(&mut self, pid: u32, max_file_bytes: u64, room: u64) -> Result<(), Refusal> {
        let Some((path, uid)) = perf_map_path(pid) else {
            return Ok(());
        };
        let fuse = self.fuse.entry(pid).or_insert_with(|| FuseMounts::of(pid));
        let mut opened = open_perf_map(pid, &path, fuse);
        if opened.as_ref().err() == Some(&Refusal::Fuse) {
            // Perhaps only a mount made since its mounts were read: read them again.
            *fuse = FuseMounts::of(pid);
            opened = open_perf_map(pid, &path, fuse);
        }
        let mut file = match opened {
            Ok(file) => file,
            // No perf map (most processes), or the process is gone: keep what was read.
            Err(Refusal::Unreachable) => return Ok(()),
            Err(refusal) => return Err(refusal),
        };
        let meta = file.metadata().map_err(|_| Refusal::Unreachable)?;
        // Another user's file (a link made by hand, a file left in a shared /tmp) is not the
        // process's to name its code with.
        if meta.uid() != uid {
            return Err(Refusal::NotOwner);
        }
        let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec());
        let held = self.maps.get(&pid).map_or(0, |m| m.bytes);
        if self.maps.get(&pid).is_some_and(|m| m.stamp == stamp) {
            return Ok(());
        }
        // The text read is memory too, however little of it parses.
        if stamp.0 > max_file_bytes {
            return Err(Refusal::FileBound);
        }
        let room = room.saturating_add(held);
        let entries = match self.too_big.get(&pid) {
            Some(&(refused, bytes)) if refused == stamp => check_cost(bytes, max_file_bytes, room)
                .map(|()| read_entries(&mut file, stamp.0))?,
            _ => read_entries(&mut file, stamp.0),
        }?;
        let bytes = cost(&entries);
        if let Err(refusal) = check_cost(bytes, max_file_bytes, room) {
            self.too_big.insert(pid, (stamp, bytes));
            return Err(refusal);
        }
        self.too_big.remove(&pid);
        self.bytes = self.bytes - held + bytes;
        self.maps.insert(
            pid,
            PerfMap {
                stamp,
                entries,
                bytes,
            },
        );
        self.refused.remove(&pid);
        Ok(())
    }

    /// Drops the map of a process that is no longer tracked.
    pub fn forget(&mut self, pid: u32) {
        self.refused.remove(&pid);
        self.too_big.remove(&pid);
        self.fuse.remove(&pid);
        if let Some(map) = self.maps.remove(&pid) {
            self.bytes -= map.bytes;
        }
    }
}

/// Where blazesym's perf map reader would look, in the process's root: `/tmp`, named by the
/// pid the process sees itself as (its innermost pid namespace); and the process's effective
/// uid, who must own it.
fn perf_map_path(pid: u32) -> Option<(String, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let own_pid = status
        .lines()
        .find_map(|line| line.strip_prefix("NStgid:"))
        .and_then(|pids| pids.split_ascii_whitespace().next_back())
        .map_or_else(|| pid.to_string(), str::to_string);
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_ascii_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())?;
    Some((format!("/tmp/perf-{own_pid}.map"), uid))
}

/// Opens `path` in the root of process `pid`: no symlink followed (the map itself included,
/// as perf does with `O_NOFOLLOW`), no FUSE mount entered.
fn open_perf_map(pid: u32, path: &str, fuse: &FuseMounts) -> Result<File, Refusal> {
    if fuse.covers(path, false) {
        return Err(Refusal::Fuse);
    }
    let root = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(format!("/proc/{pid}/root"))
        .map_err(|_| Refusal::Unreachable)?;
    let handle = fuse::walk(root, path, fuse)?;
    reopen_checked(&handle, None)
}

/// The entries of the first `len` bytes of `file` (a file that grew since the fstat is read
/// only as far as it was measured).
fn read_entries(file: &mut File, len: u64) -> Result<Vec<(u64, u64, Arc<str>)>, Refusal> {
    let mut text = Vec::new();
    file.take(len)
        .read_to_end(&mut text)
        .map_err(|_| Refusal::Unreachable)?;
    Ok(parse(&String::from_utf8_lossy(&text)))
}

/// What a table holds in memory: each entry and its name.
fn cost(entries: &[(u64, u64, Arc<str>)]) -> u64 {
    entries
        .iter()
        .map(|e| ENTRY_OVERHEAD + e.2.len() as u64)
        .sum()
}

fn check_cost(bytes: u64, max_file_bytes: u64, room: u64) -> Result<(), Refusal> {
    if bytes > max_file_bytes {
        Err(Refusal::FileBound)
    } else if bytes > room {
        Err(Refusal::TotalBound)
    } else {
        Ok(())
    }
}

/// `START SIZE NAME` lines (hex, `0x` optional), sorted by start; other lines are skipped.
fn parse(text: &str) -> Vec<(u64, u64, Arc<str>)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let mut entries: Vec<(u64, u64, Arc<str>)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ' ');
            let start = hex(fields.next()?)?;
            let size = hex(fields.next()?)?;
            let name = fields.next()?.trim();
            (size > 0 && !name.is_empty()).then(|| (start, start.saturating_add(size), name.into()))
        })
        .collect();
    entries.sort_by_key(|e| e.0);
    entries
}

/// The entry holding `addr`; of overlapping ones (code replaced at the same address), the
/// one written last wins, as it does for perf.
fn lookup(entries: &[(u64, u64, Arc<str>)], addr: u64) -> Option<Arc<str>> {
    let after = entries.partition_point(|e| e.0 <= addr);
    entries[..after]
        .iter()
        .rev()
        .take(16)
        .find(|e| addr < e.1)
        .map(|e| Arc::clone(&e.2))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The tests' one perf map path (this process's): one test at a time uses it.
    static PERF_MAP: Mutex<()> = Mutex::new(());

    #[test]
    fn perf_map_lines_name_the_addresses_they_cover() {
        let entries = parse(
            "7f0000001000 100 LazyCompile:*fib /app/fib.js:1\n\
             0x7f0000000000 40 Builtin:Add\n\
             not a line\n\
             7f0000002000 0 empty\n",
        );
        assert_eq!(entries.len(), 2);
        let name = |a| lookup(&entries, a).map(|n| n.to_string());
        assert_eq!(name(0x7f00_0000_0010).as_deref(), Some("Builtin:Add"));
        assert_eq!(
            name(0x7f00_0000_10ff).as_deref(),
            Some("LazyCompile:*fib /app/fib.js:1")
        );
        assert_eq!(name(0x7f00_0000_1100), None);
        assert_eq!(name(0x7f00_0000_0040), None);
    }

    #[test]
    fn a_perf_map_is_read_within_the_bounds_of_what_its_table_costs() {
        let _only = PERF_MAP.lock().unwrap_or_else(|e| e.into_inner());
        let mut maps = PerfMaps::default();
        let pid = std::process::id();
        let path = perf_map_path(pid).unwrap().0;
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "1000 10 jitted\n").unwrap();
        let table = ENTRY_OVERHEAD + "jitted".len() as u64;
        let (names, refused) = maps.names(pid, &[0x1008, 0x2000], 4, u64::MAX);
        assert_eq!(
            (names, refused),
            (vec![None, None], Some(Refusal::FileBound))
        );
        maps.refused.clear();
        // Its 15 bytes are under the bound, its table is not.
        let (names, refused) = maps.names(pid, &[0x1008], table - 1, u64::MAX);
        assert_eq!((names, refused), (vec![None], Some(Refusal::FileBound)));
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, table - 1);
        assert_eq!((names, refused), (vec![None], None), "counted once");
        maps.refused.clear();
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, table - 1);
        assert_eq!((names, refused), (vec![None], Some(Refusal::TotalBound)));
        let (names, refused) = maps.names(pid, &[0x1008, 0x2000], table, table);
        assert_eq!(names[0].as_deref(), Some("jitted"));
        assert_eq!((names[1].clone(), refused), (None, None));
        assert_eq!(maps.bytes, table);

        // Made a FIFO by its owner: refused without blocking, the last table kept.
        std::fs::remove_file(&path).unwrap();
        let name = std::ffi::CString::new(path.as_str()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 1 << 20);
        assert_eq!(names[0].as_deref(), Some("jitted"));
        assert_eq!(refused, Some(Refusal::NotRegular));
        std::fs::remove_file(&path).unwrap();
        maps.forget(pid);
        assert_eq!(maps.bytes, 0);
    }

    #[test]
    fn a_perf_map_of_another_user_or_behind_a_symlink_is_refused() {
        let _only = PERF_MAP.lock().unwrap_or_else(|e| e.into_inner());
        let mut maps = PerfMaps::default();
        let pid = std::process::id();
        let path = perf_map_path(pid).unwrap().0;
        let other = format!("{path}.other");
        std::fs::write(&other, "1000 10 planted\n").unwrap();
        // A link to a file the process's user could read but did not write (here: ours).
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&other, &path).unwrap();
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 1 << 20);
        assert_eq!((names, refused), (vec![None], Some(Refusal::NotRegular)));
        // The file itself, owned by another user (nobody).
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&other, &path).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        maps.refused.clear();
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 1 << 20);
        assert_eq!((names, refused), (vec![None], Some(Refusal::NotOwner)));
        // Given back to the process's user, it is read.
        std::os::unix::fs::chown(&path, Some(perf_map_path(pid).unwrap().1), None).unwrap();
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 1 << 20);
        assert_eq!(names[0].as_deref(), Some("planted"), "{refused:?}");
        std::fs::remove_file(&path).unwrap();
    }
}
