//! On-disk spool of profiles the server could not take yet: bounded in bytes, oldest dropped
//! first, replayed in creation order, and still there after a restart. An empty or unreadable
//! spool file is moved aside into `corrupt/` once (counted then, not at every start), kept
//! there for inspection within the same byte bound, and never sent or moved to the dump dir.

use std::{
    collections::BTreeMap,
    fs::{self, OpenOptions},
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use prost::Message;
use thiserror::Error;

use super::{
    files::{prepare_dir, remove_leftovers, write_file},
    pyroscope::Upload,
};
use crate::host::dirs::{ensure_private_subdir, DirError, DirKind};

const SUFFIX: &str = ".spool";
/// Where unreadable spool files are set aside, inside the spool dir.
const CORRUPT_DIR: &str = "corrupt";
/// Highest sequence number the daemon writes: a file numbered above it was not written by
/// profilerd (2^62 profiles take longer than any host lives), and counting on from it would
/// wrap the numbers and overwrite older, undelivered profiles.
const MAX_SEQ: u64 = 1 << 62;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error(transparent)]
    Dir(#[from] DirError),
    #[error("cannot write to the spool: {0}")]
    Write(String),
    #[error("spooled profile {path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// What one spool file holds.
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(message, repeated, tag = "2")]
    labels: Vec<Label>,
    #[prost(int64, tag = "3")]
    from_nanos: i64,
    #[prost(int64, tag = "4")]
    until_nanos: i64,
    #[prost(bytes = "vec", tag = "5")]
    pprof_gz: Vec<u8>,
}

/// The spool's counters and contents, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolCounts {
    /// Profiles dropped (oldest first) to stay within the byte bound.
    pub dropped_full: u64,
    /// Spool files found empty or unreadable, and moved aside.
    pub dropped_corrupt: u64,
    /// Files set aside earlier, removed (oldest first) to stay within the byte bound.
    pub corrupt_removed: u64,
    /// Temporary files an interrupted write left, removed at start.
    pub leftovers: u64,
    /// Profiles held.
    pub files: u64,
    /// Bytes held: profiles and the files set aside.
    pub bytes: u64,
    /// Files set aside in `corrupt/`.
    pub corrupt_files: u64,
}

/// Why a spool file was not read back.
enum ReadFailure {
    /// Removed by someone else: nothing to set aside.
    Gone,
    Bad(String),
}

/// The spool directory and its index.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: BTreeMap<u64, u64>,
    /// Files set aside in `corrupt/`, oldest first, with their sizes.
    corrupt: BTreeMap<(SystemTime, PathBuf), u64>,
    /// Bytes of `entries` and `corrupt`: both count against `max_bytes`.
    bytes: u64,
    /// Profiles dropped (oldest first) to stay within `max_bytes`.
    pub dropped_full: u64,
    /// Spool files that could not be read back (moved aside).
    pub dropped_corrupt: u64,
    corrupt_removed: u64,
    leftovers: u64,
    /// Sequence number after the highest `N.spool` name found at start, ours or not: a new
    /// profile is never numbered at a name something else holds.
    first_free: u64,
}

impl Spool {
    /// Opens (creating, 0750) the directory, refuses one other users can write in, removes
    /// what an interrupted write left, and indexes the profiles an earlier run spooled.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        prepare_dir(DirKind::Spool, dir)?;
        ensure_private_subdir(DirKind::Spool, &dir.join(CORRUPT_DIR))?;
        let leftovers = remove_leftovers(dir, |_| false);
        let mut spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: BTreeMap::new(),
            corrupt: BTreeMap::new(),
            bytes: 0,
            dropped_full: 0,
            dropped_corrupt: 0,
            corrupt_removed: 0,
            leftovers,
            first_free: 0,
        };
        spool.index_corrupt();
        let entries = fs::read_dir(dir).map_err(|source| DirError::Unusable {
            kind: DirKind::Spool,
            path: dir.to_path_buf(),
            source,
        })?;
        let mut empty = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if seq > MAX_SEQ {
                tracing::warn!(
                    "spool file {} has a sequence number profilerd never writes; left alone: move it out of --spool-dir",
                    entry.path().display()
                );
                continue;
            }
            spool.first_free = spool.first_free.max(seq + 1);
            // Not followed: a link or a FIFO is no file profilerd wrote, and is never opened.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                tracing::warn!(
                    "spool file {} is not a regular file; left alone: move it out of --spool-dir",
                    entry.path().display()
                );
                continue;
            }
            if meta.len() == 0 {
                empty.push(seq);
            }
            spool.entries.insert(seq, meta.len());
            spool.bytes += meta.len();
        }
        for seq in empty {
            spool.set_aside(seq, "empty (a write cut short)");
        }
        spool.trim_corrupt();
        Ok(spool)
    }

    /// Indexes what earlier runs set aside: it counts against the byte bound, but it was
    /// counted as corrupt when it was moved, not again now.
    fn index_corrupt(&mut self) {
        let Ok(entries) = fs::read_dir(self.dir.join(CORRUPT_DIR)) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_file() {
                let modified = meta.modified().unwrap_or(UNIX_EPOCH);
                self.corrupt.insert((modified, entry.path()), meta.len());
                self.bytes += meta.len();
            }
        }
    }

    /// Moves a spool file that cannot be sent into `corrupt/`, counted once; removes it when
    /// it cannot be moved.
    fn set_aside(&mut self, seq: u64, reason: &str) {
        let from = self.path(seq);
        if let Some(len) = self.entries.remove(&seq) {
            self.bytes -= len;
        }
        self.dropped_corrupt += 1;
        match self.move_to_corrupt(&from) {
            Ok((to, meta)) => {
                tracing::warn!(
                    "spooled profile {} is {reason}: not sent, moved to {} for inspection",
                    from.display(),
                    to.display()
                );
                let modified = meta.modified().unwrap_or(UNIX_EPOCH);
                self.corrupt.insert((modified, to), meta.len());
                self.bytes += meta.len();
                self.trim_corrupt();
            }
            Err(err) => {
                let _ = fs::remove_file(&from);
                tracing::warn!(
                    "spooled profile {} is {reason}: not sent, and removed (it could not be moved into {CORRUPT_DIR}/: {err})",
                    from.display()
                );
            }
        }
    }

    /// Links `from` into `corrupt/` under a name no file there has, then unlinks it: a file
    /// set aside earlier under the same name is never replaced.
    fn move_to_corrupt(&self, from: &Path) -> io::Result<(PathBuf, fs::Metadata)> {
        let dir = self.dir.join(CORRUPT_DIR);
        let name = from.file_name().unwrap_or_default().to_string_lossy();
        for n in 0..100u32 {
            let to = match n {
                0 => dir.join(&*name),
                n => dir.join(format!("{name}.{n}")),
            };
            match fs::hard_link(from, &to) {
                Ok(()) => {
                    fs::remove_file(from)?;
                    let meta = to.symlink_metadata()?;
                    return Ok((to, meta));
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "100 files of that name are set aside already",
        ))
    }

    /// Removes the oldest files set aside while the spool is over its bound.
    fn trim_corrupt(&mut self) {
        while self.bytes > self.max_bytes && self.remove_oldest_corrupt() {}
    }

    fn remove_oldest_corrupt(&mut self) -> bool {
        let Some(((_, path), len)) = self.corrupt.pop_first() else {
            return false;
        };
        let _ = fs::remove_file(&path);
        self.bytes -= len;
        self.corrupt_removed += 1;
        true
    }

    /// The counters and contents, for `/metrics`.
    pub fn counts(&self) -> SpoolCounts {
        SpoolCounts {
            dropped_full: self.dropped_full,
            dropped_corrupt: self.dropped_corrupt,
            corrupt_removed: self.corrupt_removed,
            leftovers: self.leftovers,
            files: self.entries.len() as u64,
            bytes: self.bytes,
            corrupt_files: self.corrupt.len() as u64,
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sequence number after the newest spooled profile (0 when empty).
    pub fn next_seq(&self) -> u64 {
        // Entries are at most MAX_SEQ, so this cannot overflow.
        let after_entries = self.entries.keys().next_back().map_or(0, |s| s + 1);
        after_entries.max(self.first_free)
    }

    /// Stores `upload`; drops the oldest profiles when the spool would exceed its bound.
    pub fn push(&mut self, upload: &Upload) -> Result<(), SpoolError> {
        let record = Record {
            seq: upload.seq,
            labels: upload
                .labels
                .iter()
                .map(|(name, value)| Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            from_nanos: upload.from_nanos,
            until_nanos: upload.until_nanos,
            pprof_gz: upload.pprof_gz.clone(),
        };
        let path = self.path(upload.seq);
        // A new profile never replaces a spooled one.
        let taken = || {
            SpoolError::Write(format!(
                "{} is taken or past the sequence numbers profilerd writes, so the new profile was not spooled: move files profilerd did not write out of --spool-dir",
                path.display()
            ))
        };
        if upload.seq > MAX_SEQ
            || self.entries.contains_key(&upload.seq)
            || path.symlink_metadata().is_ok()
        {
            return Err(taken());
        }
        let bytes = record.encode_to_vec();
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            self.dropped_full += 1;
            return Ok(());
        }
        // Room is made from the files set aside first: a profile is worth more.
        while self.bytes + len > self.max_bytes {
            if self.remove_oldest_corrupt() {
                continue;
            }
            let Some((&oldest, _)) = self.entries.iter().next() else {
                break;
            };
            self.remove(oldest);
            self.dropped_full += 1;
        }
        write_file(&path, &bytes, false).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => taken(),
            _ => SpoolError::Write(format!("cannot write {}: {e}", path.display())),
        })?;
        if let Some(old) = self.entries.insert(upload.seq, len) {
            self.bytes -= old;
        }
        self.bytes += len;
        Ok(())
    }

    /// Sequence number of the oldest spooled profile.
    pub fn oldest(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }

    /// Reads a spooled profile back; an empty or unreadable file is moved aside and counted.
    pub fn load(&mut self, seq: u64) -> Result<Upload, SpoolError> {
        let path = self.path(seq);
        match read_record(&path, seq, self.max_bytes) {
            Ok(record) => Ok(Upload {
                seq,
                labels: record
                    .labels
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect(),
                from_nanos: record.from_nanos,
                until_nanos: record.until_nanos,
                pprof_gz: record.pprof_gz,
            }),
            Err(ReadFailure::Gone) => {
                if let Some(len) = self.entries.remove(&seq) {
                    self.bytes -= len;
                }
                Err(SpoolError::Corrupt {
                    path,
                    reason: "removed by someone else".into(),
                })
            }
            Err(ReadFailure::Bad(reason)) => {
                self.set_aside(seq, &reason);
                Err(SpoolError::Corrupt { path, reason })
            }
        }
    }

    /// Deletes a spooled profile (sent, rejected, or moved elsewhere).
    pub fn remove(&mut self, seq: u64) {
        if let Some(len) = self.entries.remove(&seq) {
            self.bytes -= len;
            let _ = fs::remove_file(self.path(seq));
        }
    }
}

/// Reads and checks one spool file without following a link or waiting on a FIFO: a record
/// profilerd wrote carries its own sequence number and a profile.
fn read_record(path: &Path, seq: u64, max_bytes: u64) -> Result<Record, ReadFailure> {
    let bad = |reason: String| ReadFailure::Bad(reason);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ReadFailure::Gone,
            _ => bad(format!("unreadable ({e})")),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("unreadable ({e})")))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(bad("empty (a write cut short)".into()));
    }
    if meta.len() > max_bytes {
        return Err(bad(format!(
            "{} bytes, larger than --spool-max-bytes",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("unreadable ({e})")))?;
    let record =
        Record::decode(&bytes[..]).map_err(|e| bad(format!("not a spooled profile ({e})")))?;
    if record.seq != seq {
        return Err(bad(format!(
            "numbered {} inside but {seq} by its name",
            record.seq
        )));
    }
    if record.pprof_gz.is_empty() {
        return Err(bad("without a profile".into()));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(seq: u64, size: usize) -> Upload {
        Upload {
            seq,
            labels: vec![("service_name".into(), "svc".into())],
            from_nanos: 1,
            until_nanos: 2,
            pprof_gz: vec![7; size],
        }
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn replays_in_order_and_survives_a_restart() {
        let path = dir("order");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        for seq in [5, 3, 9] {
            spool.push(&upload(seq, 10)).unwrap();
        }
        fs::write(path.join("00000000000000000001.spool.tmp"), b"half").unwrap();
        drop(spool);
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.len(), 3);
        assert_eq!(spool.next_seq(), 10);
        let mut order = Vec::new();
        while let Some(seq) = spool.oldest() {
            assert_eq!(spool.load(seq).unwrap(), upload(seq, 10));
            spool.remove(seq);
            order.push(seq);
        }
        assert_eq!(order, [3, 5, 9]);
        assert_eq!(spool.bytes(), 0);
        let left: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [CORRUPT_DIR], "tmp leftovers are cleaned");
        assert_eq!(spool.counts().leftovers, 1);
        fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn sequence_numbers_never_wrap_or_overwrite() {
        let path = dir("wrap");
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join(format!("{}{SUFFIX}", u64::MAX)), b"planted").unwrap();
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(
            spool.len(),
            0,
            "a file past the numbers we write is not ours"
        );
        assert_eq!(spool.next_seq(), 0);
        spool.push(&upload(0, 10)).unwrap();
        let err = spool.push(&upload(0, 20)).unwrap_err().to_string();
        assert!(err.contains("taken"), "{err}");
        assert_eq!(spool.load(0).unwrap(), upload(0, 10), "the first one stays");
        assert!(spool.push(&upload(u64::MAX, 10)).is_err());
        assert_eq!(
            fs::read(path.join(format!("{}{SUFFIX}", u64::MAX))).unwrap(),
            b"planted"
        );
        fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn full_spool_drops_oldest_first_and_counts() {
        let path = dir("full");
        let one = upload(0, 100).pprof_gz.len() as u64 + 40;
        let mut spool = Spool::open(&path, one * 2).unwrap();
        for seq in 0..4 {
            spool.push(&upload(seq, 100)).unwrap();
        }
        assert_eq!(spool.len(), 2);
        assert_eq!(spool.oldest(), Some(2));
        assert_eq!(spool.dropped_full, 2);
        assert!(spool.bytes() <= one * 2);
        spool.push(&upload(9, 10_000)).unwrap();
        assert_eq!(
            spool.dropped_full, 3,
            "a profile larger than the whole spool is dropped"
        );
        fs::remove_dir_all(&path).unwrap();
    }

    fn corrupt_names(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(path.join(CORRUPT_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn corrupt_and_empty_files_are_set_aside_once() {
        let path = dir("corrupt");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        for seq in 1..=4 {
            spool.push(&upload(seq, 10)).unwrap();
        }
        fs::write(path.join(format!("{:020}.spool", 1)), b"\xff\xff\xff").unwrap();
        fs::write(path.join(format!("{:020}.spool", 2)), b"").unwrap();
        // A record that decodes, but is not the one its name says.
        let other = upload(7, 10);
        let mut moved = Spool::open(&dir("corrupt-other"), 1 << 20).unwrap();
        moved.push(&other).unwrap();
        fs::copy(moved.path(7), path.join(format!("{:020}.spool", 3))).unwrap();
        fs::remove_dir_all(moved.dir()).unwrap();
        drop(spool);

        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.dropped_corrupt, 1, "the empty file, at start");
        assert!(spool.load(1).is_err());
        assert!(spool.load(3).is_err());
        assert_eq!(spool.load(4).unwrap(), upload(4, 10));
        assert_eq!(spool.dropped_corrupt, 3);
        assert_eq!(spool.oldest(), Some(4));
        let aside = corrupt_names(&path);
        assert_eq!(aside.len(), 3, "{aside:?}");
        assert_eq!(spool.counts().corrupt_files, 3);
        drop(spool);

        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.dropped_corrupt, 0, "not counted again at a restart");
        assert_eq!(corrupt_names(&path), aside, "kept for inspection");
        assert_eq!(spool.len(), 1);
        fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn files_set_aside_stay_within_the_bound_oldest_removed_first() {
        let path = dir("corrupt-bound");
        let one = upload(0, 100).pprof_gz.len() as u64 + 40;
        let mut spool = Spool::open(&path, one * 3).unwrap();
        for seq in 0..2 {
            spool.push(&upload(seq, 100)).unwrap();
            fs::write(spool.path(seq), vec![0xff; 100]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(spool.load(0).is_err() && spool.load(1).is_err());
        assert_eq!(spool.counts().corrupt_files, 2);
        // Two profiles more need the room of one file set aside: the oldest goes.
        spool.push(&upload(2, 100)).unwrap();
        spool.push(&upload(3, 100)).unwrap();
        assert_eq!(corrupt_names(&path), [format!("{:020}.spool", 1)]);
        let counts = spool.counts();
        assert_eq!((counts.corrupt_removed, counts.dropped_full), (1, 0));
        assert!(counts.bytes <= one * 3, "{counts:?}");
        // A file set aside never replaces an earlier one of the same name.
        fs::write(spool.path(3), b"\xff").unwrap();
        spool.push(&upload(4, 1)).unwrap();
        fs::write(spool.path(4), b"\xff").unwrap();
        let mut names_before = corrupt_names(&path);
        assert!(spool.load(3).is_err());
        names_before.push(format!("{:020}.spool", 3));
        names_before.sort();
        assert_eq!(corrupt_names(&path), names_before);
        fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_fifo_or_link_in_the_spool_is_never_opened() {
        let path = dir("fifo");
        fs::create_dir_all(&path).unwrap();
        let fifo = std::ffi::CString::new(
            path.join(format!("{:020}.spool", 5))
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: mkfifo only reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/etc/passwd", path.join(format!("{:020}.spool", 6))).unwrap();
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert!(spool.is_empty(), "neither is indexed");
        assert_eq!(
            spool.next_seq(),
            7,
            "no new profile is numbered at their names"
        );
        // A profile at a taken name is refused, and the link is not written through.
        let err = spool.push(&upload(6, 10)).unwrap_err().to_string();
        assert!(err.contains("taken"), "{err}");
        assert!(fs::read(path.join(format!("{:020}.spool", 6)))
            .unwrap()
            .starts_with(b"root:"));
        fs::remove_dir_all(&path).unwrap();
    }
}
