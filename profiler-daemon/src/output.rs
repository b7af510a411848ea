//! Local outputs: folded stacks, SVG flame graphs, pprof files, and the bounded dump dir.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use thiserror::Error;

use crate::{aggregate::ProcessProfile, symbolize::FrameKind};

#[derive(Debug, Error)]
pub enum OutputError {
    #[error("dump dir {path} is not writable ({source}): pass a writable --dump-dir or fix its permissions")]
    DumpDirUnwritable { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("rendering the flame graph failed: {0}")]
    FlameGraph(io::Error),
}

/// Brendan Gregg's collapsed format: `root;...;leaf count`, one line per distinct stack.
/// The process name is the root frame; kernel frames end in `_[k]` (as stackcollapse-perf and
/// inferno expect); inlined functions appear as frames of their own. Stacks that differ only
/// in instruction addresses are merged.
pub fn folded_lines(processes: &[&ProcessProfile]) -> Vec<String> {
    let mut merged: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for process in processes {
        for (stack, count) in &process.stacks {
            let mut line = sanitize_frame(&process.info.comm);
            for &index in stack.iter().rev() {
                let location = &process.locations[index as usize];
                for frame in location.lines.iter().rev() {
                    line.push(';');
                    line.push_str(&sanitize_frame(&frame.function));
                    if location.kind == FrameKind::Kernel {
                        line.push_str("_[k]");
                    }
                }
            }
            *merged.entry(line).or_insert(0) += count;
        }
    }
    let mut lines: Vec<String> = merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    lines.sort();
    lines
}

/// Frames may not contain the separators of the folded format.
fn sanitize_frame(name: &str) -> String {
    name.replace([';', '\n'], "_")
}

/// Renders folded lines as an interactive SVG flame graph.
pub fn flame_graph_svg(lines: &[String], title: &str) -> Result<Vec<u8>, OutputError> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "samples".to_string();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input; an empty profile still deserves a readable file.
        let placeholder = ["no samples 1".to_string()];
        inferno::flamegraph::from_lines(
            &mut options,
            placeholder.iter().map(String::as_str),
            &mut svg,
        )
        .map_err(OutputError::FlameGraph)?;
    } else {
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
            .map_err(OutputError::FlameGraph)?;
    }
    Ok(svg)
}

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("out")
    ));
    let wrap = |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    fs::write(&tmp, bytes).map_err(wrap)?;
    fs::rename(&tmp, path).map_err(wrap)
}

/// `YYYYMMDDTHHMMSS.mmmZ` in UTC.
pub fn utc_timestamp(time: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, ms) = utc_parts(time);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}.{ms:03}Z")
}

/// `2026-11-26T10:57:59Z` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(time: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = utc_parts(time);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Year, month, day, hour, minute, second and millisecond of `time` in UTC.
fn utc_parts(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    (
        y,
        m,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis(),
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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

/// Creates `dir` if needed and proves a file can be written in it, so that a bad directory is
/// a start-up error rather than a lost profile later.
pub fn ensure_writable_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".profilerd-write-test-{}", std::process::id()));
    fs::write(&probe, b"")?;
    fs::remove_file(&probe)
}

/// The directory `run` writes profiles into, kept within a file count and a byte size.
pub struct DumpDir {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    /// Old profiles removed to stay within the bounds.
    pub removed: u64,
    pub written: u64,
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
const MANAGED_SUFFIXES: [&str; 3] = [PROFILE_SUFFIX, ".svg", crate::web::SIDECAR_SUFFIX];

fn is_managed(name: &str) -> bool {
    MANAGED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

impl DumpDir {
    /// Creates the directory if needed and proves it is writable.
    pub fn open(dir: &Path, max_files: usize, max_bytes: u64) -> Result<Self, OutputError> {
        ensure_writable_dir(dir).map_err(|source| OutputError::DumpDirUnwritable {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max_files,
            max_bytes,
            removed: 0,
            written: 0,
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
    pub fn profile_name(comm: &str, pid: u32, time: SystemTime) -> String {
        format!(
            "{}-{pid}.cpu.{}{PROFILE_SUFFIX}",
            sanitize_name(comm),
            utc_timestamp(time)
        )
    }

    /// Writes one profile, then removes the oldest profiles beyond the bounds.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf, OutputError> {
        let path = self.dir.join(name);
        let replaced = fs::metadata(&path)
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
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{
        procinfo::ProcessInfo,
        symbolize::{Line, Location},
    };

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_682_096_123);
        assert_eq!(utc_timestamp(t), "20261126T083456.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101T000000.000Z");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("kworker/0:1H"), "kworker_0_1H");
        assert_eq!(sanitize_name("../.."), "_");
        assert_eq!(sanitize_name(""), "unknown");
        let name = DumpDir::profile_name("a b", 7, UNIX_EPOCH);
        assert_eq!(name, "a_b-7.cpu.19700101T000000.000Z.pb.gz");
    }

    #[test]
    fn folded_marks_kernel_frames_and_expands_inlined() {
        let line = |n: &str| Line {
            function: Arc::from(n),
            file: None,
            line: 0,
        };
        let profile = ProcessProfile {
            info: ProcessInfo {
                pid: 1,
                comm: "app".into(),
                ..Default::default()
            },
            locations: vec![
                Location {
                    kind: FrameKind::User,
                    address: 1,
                    vma: None,
                    lines: vec![line("main")],
                },
                Location {
                    kind: FrameKind::User,
                    address: 2,
                    vma: None,
                    lines: vec![line("inner"), line("outer")],
                },
                Location {
                    kind: FrameKind::Kernel,
                    address: 3,
                    vma: None,
                    lines: vec![line("vfs_write")],
                },
            ],
            stacks: [(vec![2, 1, 0], 4)].into_iter().collect(),
            samples: 4,
        };
        assert_eq!(
            folded_lines(&[&profile]),
            ["app;main;outer;inner;vfs_write_[k] 4"]
        );
        let svg =
            String::from_utf8(flame_graph_svg(&folded_lines(&[&profile]), "t").unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains("outer"));
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
    fn unwritable_dump_dir_is_reported() {
        let err = DumpDir::open(Path::new("/proc/profilerd-cannot-exist"), 1, 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--dump-dir"), "{err}");
    }
}
