//! The dump dir: profile files written atomically, kept within a count and a byte bound
//! (oldest removed first), and the `.json` sidecar of each kept profile that the page lists.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use thiserror::Error;

use super::files::{prepare_dir, remove_leftovers, write_file};
use crate::{
    host::dirs::{DirError, DirKind},
    types::utc_timestamp,
};

#[derive(Debug, Error)]
pub enum DumpError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Writes `bytes` to `path` atomically: an exclusively created temporary file, renamed over
/// `path` (see [`super::files`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DumpError> {
    write_file(path, bytes, true).map_err(|source| DumpError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A file-name-safe version of a process name.
pub fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('.');
    if trimmed.is_empty() {
        "unknown".to_string()
    } else {
        trimmed.chars().take(64).collect()
    }
}

/// The directory `run` writes profiles into, kept within a file count and a byte size.
pub struct DumpDir {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    /// Old profiles removed to stay within the bounds.
    pub removed: u64,
    pub written: u64,
    /// Temporary and empty files an interrupted write left, removed at start.
    pub leftovers: u64,
    /// Managed files in the directory and their total size: from the last scan, plus the
    /// writes and removals since. A write need not stat the whole directory (with hundreds of
    /// files per window that was the daemon's largest file-system cost), and memory does not
    /// grow with `--dump-max-files` (an index of every path was about 2 MiB at 10000 files).
    files: usize,
    bytes: u64,
    /// The oldest managed files the last scan found (at most [`OLDEST_KEPT`]), oldest last:
    /// the next to remove. Files written since are newer than all of them; when the list runs
    /// out, the directory is scanned again.
    oldest: Vec<(SystemTime, PathBuf, u64)>,
    scanned: Option<std::time::Instant>,
}

/// How often the dump dir is re-read for files profilerd did not write itself.
const RESCAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Removal candidates one scan remembers: enough for a few windows of writes at the bound.
const OLDEST_KEPT: usize = 1024;

/// Suffix of the per-process profiles of `run`.
const PROFILE_SUFFIX: &str = ".pb.gz";
/// Suffixes of every file the dump dir manages (and bounds); other files are left alone.
const MANAGED_SUFFIXES: [&str; 3] = [PROFILE_SUFFIX, ".svg", super::sidecar::SIDECAR_SUFFIX];

fn is_managed(name: &str) -> bool {
    MANAGED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

impl DumpDir {
    /// Creates the directory if needed (0750), refuses one other users can write in, proves
    /// it is writable and removes what an interrupted write left.
    pub fn open(dir: &Path, max_files: usize, max_bytes: u64) -> Result<Self, DumpError> {
        prepare_dir(DirKind::Dump, dir)?;
        let leftovers = remove_leftovers(dir, is_managed);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_files,
            max_bytes,
            removed: 0,
            written: 0,
            leftovers,
            files: 0,
            bytes: 0,
            oldest: Vec::new(),
            scanned: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `<comm>-<pid>.cpu.<UTC timestamp>.pb.gz`
    pub fn profile_name(comm: &str, pid: u32, kind: &str, time: SystemTime) -> String {
        format!(
            "{}-{pid}.{kind}.{}{PROFILE_SUFFIX}",
            sanitize_name(comm),
            utc_timestamp(time)
        )
    }

    /// Writes one profile, then removes the oldest profiles beyond the bounds.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf, DumpError> {
        let path = self.dir.join(name);
        let replaced = fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        write_atomic(&path, bytes)?;
        self.written += 1;
        if self
            .scanned
            .is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL)
        {
            self.rescan();
        } else if is_managed(name) {
            match replaced {
                Some(old) => {
                    self.bytes = self.bytes.saturating_sub(old);
                    // Rewritten just now: no longer among the oldest.
                    self.oldest.retain(|(_, p, _)| *p != path);
                }
                None => self.files += 1,
            }
            self.bytes += bytes.len() as u64;
        }
        self.enforce_bounds();
        Ok(path)
    }

    fn rescan(&mut self) {
        self.scanned = Some(std::time::Instant::now());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        self.files = 0;
        self.bytes = 0;
        // A max-heap of the oldest: its top is the newest of them, dropped when it is full.
        let mut oldest = std::collections::BinaryHeap::with_capacity(OLDEST_KEPT + 1);
        for entry in entries.filter_map(Result::ok) {
            if !is_managed(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            self.files += 1;
            self.bytes += meta.len();
            oldest.push((
                meta.modified().unwrap_or(UNIX_EPOCH),
                entry.path(),
                meta.len(),
            ));
            if oldest.len() > OLDEST_KEPT {
                oldest.pop();
            }
        }
        let mut oldest = oldest.into_sorted_vec();
        oldest.reverse();
        self.oldest = oldest;
    }

    fn enforce_bounds(&mut self) {
        let mut rescanned = false;
        while self.files > self.max_files || self.bytes > self.max_bytes {
            let Some((_, path, len)) = self.oldest.pop() else {
                if rescanned {
                    break;
                }
                self.rescan();
                rescanned = true;
                continue;
            };
            let removed = fs::remove_file(&path);
            if removed.is_ok() {
                self.removed += 1;
            }
            // Gone either way (removed now, or by someone else before): stop counting it.
            if removed.is_ok() || !path.exists() {
                self.files = self.files.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("kworker/0:1H"), "kworker_0_1H");
        assert_eq!(sanitize_name("../.."), "_");
        assert_eq!(sanitize_name(""), "unknown");
        let name = DumpDir::profile_name("a b", 7, "cpu", UNIX_EPOCH);
        assert_eq!(name, "a_b-7.cpu.19700101T000000.000Z.pb.gz");
    }

    #[test]
    fn dump_dir_keeps_within_bounds() {
        let dir = std::env::temp_dir().join(format!("profilerd-dump-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // Left by an earlier run: the oldest, so the first to go.
        fs::write(dir.join("earlier.cpu.x.pb.gz"), b"old").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut dump = DumpDir::open(&dir, 2, 1 << 20).unwrap();
        fs::write(dir.join("unrelated.txt"), b"keep me").unwrap();
        for i in 0..4 {
            dump.write(&format!("p-{i}.cpu.x.pb.gz"), b"data").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["p-2.cpu.x.pb.gz", "p-3.cpu.x.pb.gz", "unrelated.txt"]
        );
        assert_eq!(dump.removed, 3);
        // The byte bound alone: three 4-byte profiles within 8 bytes leave two.
        let mut dump = DumpDir::open(&dir, 100, 8).unwrap();
        dump.write("p-4.cpu.x.pb.gz", b"data").unwrap();
        assert_eq!(dump.removed, 1);
        assert!(!dir.join("p-2.cpu.x.pb.gz").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dump_dir_bound_above_the_remembered_oldest() {
        // More files than one scan remembers as removal candidates: the list runs out and the
        // directory is scanned again, still removing strictly the oldest.
        let dir = std::env::temp_dir().join(format!("profilerd-dump-many-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let max = OLDEST_KEPT + 6;
        let total = max + 20;
        let mut dump = DumpDir::open(&dir, max, u64::MAX).unwrap();
        // Same-millisecond modification times tie; the zero-padded names then keep the order.
        let name = |i: usize| format!("q-{i:05}.cpu.x.pb.gz");
        for i in 0..total {
            dump.write(&name(i), b"x").unwrap();
        }
        // Rewriting an old name makes it new: it is not removed as one of the oldest.
        dump.write(&name(25), b"xy").unwrap();
        dump.write(&name(total), b"x").unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = (21..=total).filter(|&i| i != 25).map(name).collect();
        expected.push(name(25));
        expected.sort();
        assert_eq!(names.len(), max);
        assert_eq!(names, expected);
        assert_eq!(dump.removed, 21);
        assert_eq!((dump.files, dump.bytes), (max, max as u64 + 1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shared_dump_dir_is_refused_and_leftovers_are_removed_at_open() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("profilerd-dump-open-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = DumpDir::open(&dir, 10, 1 << 20).err().unwrap().to_string();
        assert!(
            err.contains("mode 0777") && err.contains("chmod 0750"),
            "{err}"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(dir.join("a.cpu.x.pb.gz.tmp"), b"half").unwrap();
        fs::write(dir.join(".profilerd-0123456789abcdef.tmp"), b"").unwrap();
        fs::write(dir.join("b.cpu.x.pb.gz"), b"").unwrap();
        fs::write(dir.join("c.cpu.x.pb.gz"), b"data").unwrap();
        let dump = DumpDir::open(&dir, 10, 1 << 20).unwrap();
        assert_eq!(dump.leftovers, 3);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.cpu.x.pb.gz"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_dump_dir_is_reported() {
        let err = DumpDir::open(Path::new("/proc/profilerd-cannot-exist"), 1, 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--dump-dir"), "{err}");
    }
}
