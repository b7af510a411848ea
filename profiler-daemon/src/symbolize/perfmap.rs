//! Names of JIT code from a process's perf map (`/tmp/perf-PID.map` in its own root, by the
//! pid it sees itself as), which the process writes itself (`node --perf-basic-prof`, the
//! JVM's perf-map-agent).
//!
//! The file is its owner's to make anything: a FIFO (blazesym's own reader opens it by path
//! and would wait for a writer), or gigabytes. So it is opened here as untrusted, read only
//! while under `--max-symbol-file-bytes` (and the total bound), and parsed into one sorted
//! table per process, read again only when its size or modification time changed.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
};

use super::files::{open_untrusted, Refusal};

/// One process's perf map as last read.
struct PerfMap {
    /// Size and modification time when read: a JIT appends as it compiles.
    stamp: (u64, i64, i64),
    /// (start, end, name), by start.
    entries: Vec<(u64, u64, Arc<str>)>,
}

/// The perf maps of tracked processes.
#[derive(Default)]
pub struct PerfMaps {
    maps: HashMap<u32, PerfMap>,
    /// File bytes of the maps held (what their tables cost, about).
    pub bytes: u64,
    /// Processes whose perf map was refused since it was last read (counted once each).
    refused: HashSet<u32>,
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
        let Some(path) = perf_map_path(pid) else {
            return Ok(());
        };
        let mut file = match open_untrusted(&path) {
            Ok(file) => file,
            // No perf map (most processes), or the process is gone: keep what was read.
            Err(Refusal::Unreachable) => return Ok(()),
            Err(refusal) => return Err(refusal),
        };
        let meta = file.metadata().map_err(|_| Refusal::Unreachable)?;
        let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec());
        let held = self.maps.get(&pid).map_or(0, |m| m.stamp.0);
        if self.maps.get(&pid).is_some_and(|m| m.stamp == stamp) {
            return Ok(());
        }
        if stamp.0 > max_file_bytes {
            return Err(Refusal::FileBound);
        }
        if stamp.0 > room.saturating_add(held) {
            return Err(Refusal::TotalBound);
        }
        let mut text = Vec::new();
        // take(): a file that grew since the fstat is read only as far as it was measured.
        (&mut file)
            .take(stamp.0)
            .read_to_end(&mut text)
            .map_err(|_| Refusal::Unreachable)?;
        let map = PerfMap {
            stamp,
            entries: parse(&String::from_utf8_lossy(&text)),
        };
        self.bytes = self.bytes - held + stamp.0;
        self.maps.insert(pid, map);
        self.refused.remove(&pid);
        Ok(())
    }

    /// Drops the map of a process that is no longer tracked.
    pub fn forget(&mut self, pid: u32) {
        self.refused.remove(&pid);
        if let Some(map) = self.maps.remove(&pid) {
            self.bytes -= map.stamp.0;
        }
    }
}

/// Where blazesym's perf map reader would look: `/tmp` of the process's root, named by the
/// pid the process sees itself as (its innermost pid namespace).
fn perf_map_path(pid: u32) -> Option<PathBuf> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let own_pid = status
        .lines()
        .find_map(|line| line.strip_prefix("NStgid:"))
        .and_then(|pids| pids.split_ascii_whitespace().next_back())
        .map_or_else(|| pid.to_string(), str::to_string);
    Some(PathBuf::from(format!(
        "/proc/{pid}/root/tmp/perf-{own_pid}.map"
    )))
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
    use super::*;

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
    fn a_perf_map_is_read_within_the_bounds() {
        let mut maps = PerfMaps::default();
        let pid = std::process::id();
        let path = perf_map_path(pid).unwrap();
        std::fs::write(&path, "1000 10 jitted\n").unwrap();
        let (names, refused) = maps.names(pid, &[0x1008, 0x2000], 4, u64::MAX);
        assert_eq!(
            (names, refused),
            (vec![None, None], Some(Refusal::FileBound))
        );
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 4);
        assert_eq!((names, refused), (vec![None], None), "counted once");
        maps.refused.clear();
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 4);
        assert_eq!((names, refused), (vec![None], Some(Refusal::TotalBound)));
        let (names, refused) = maps.names(pid, &[0x1008, 0x2000], 1 << 20, 1 << 20);
        assert_eq!(names[0].as_deref(), Some("jitted"));
        assert_eq!((names[1].clone(), refused), (None, None));
        assert_eq!(maps.bytes, 15);

        // Made a FIFO by its owner: refused without blocking, the last table kept.
        std::fs::remove_file(&path).unwrap();
        let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let (names, refused) = maps.names(pid, &[0x1008], 1 << 20, 1 << 20);
        assert_eq!(names[0].as_deref(), Some("jitted"));
        assert_eq!(refused, Some(Refusal::NotRegular));
        std::fs::remove_file(&path).unwrap();
        maps.forget(pid);
        assert_eq!(maps.bytes, 0);
    }
}
