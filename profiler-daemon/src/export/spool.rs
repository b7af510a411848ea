//! On-disk spool of profiles the server could not take yet: bounded in bytes, oldest dropped
//! first, replayed in creation order, and still there after a restart.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use prost::Message;
use thiserror::Error;

use super::{
    dump::{ensure_writable_dir, write_atomic},
    pyroscope::Upload,
};

const SUFFIX: &str = ".spool";
/// Highest sequence number the daemon writes: a file numbered above it was not written by
/// profilerd (2^62 profiles take longer than any host lives), and counting on from it would
/// wrap the numbers and overwrite older, undelivered profiles.
const MAX_SEQ: u64 = 1 << 62;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("spool dir {path} is not writable ({source}): pass a writable --spool-dir")]
    Unwritable { path: PathBuf, source: io::Error },
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

/// The spool directory and its index.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: BTreeMap<u64, u64>,
    bytes: u64,
    /// Profiles dropped (oldest first) to stay within `max_bytes`.
    pub dropped_full: u64,
    /// Spool files that could not be read back.
    pub dropped_corrupt: u64,
}

impl Spool {
    /// Opens (creating) the directory and indexes what an earlier run left there.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let unwritable = |source| SpoolError::Unwritable {
            path: dir.to_path_buf(),
            source,
        };
        ensure_writable_dir(dir).map_err(unwritable)?;
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir)
            .map_err(unwritable)?
            .filter_map(Result::ok)
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write interrupted by a crash: never renamed, so never acknowledged.
                let _ = fs::remove_file(entry.path());
                continue;
            }
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
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            entries.insert(seq, len);
            bytes += len;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            entries,
            bytes,
            dropped_full: 0,
            dropped_corrupt: 0,
        })
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
        self.entries.keys().next_back().map_or(0, |s| s + 1)
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
        if upload.seq > MAX_SEQ || self.entries.contains_key(&upload.seq) || path.exists() {
            return Err(SpoolError::Write(format!(
                "{} is taken or past the sequence numbers profilerd writes, so the new profile was not spooled: move files profilerd did not write out of --spool-dir",
                path.display()
            )));
        }
        let bytes = record.encode_to_vec();
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            self.dropped_full += 1;
            return Ok(());
        }
        while self.bytes + len > self.max_bytes {
            let Some((&oldest, _)) = self.entries.iter().next() else {
                break;
            };
            self.remove(oldest);
            self.dropped_full += 1;
        }
        write_atomic(&path, &bytes).map_err(|e| SpoolError::Write(e.to_string()))?;
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

    /// Reads a spooled profile back; an unreadable file is removed and counted.
    pub fn load(&mut self, seq: u64) -> Result<Upload, SpoolError> {
        let path = self.path(seq);
        let result = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Record::decode(&bytes[..]).map_err(|e| e.to_string()));
        match result {
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
            Err(reason) => {
                self.remove(seq);
                self.dropped_corrupt += 1;
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
        assert_eq!(
            fs::read_dir(&path).unwrap().count(),
            0,
            "tmp leftovers are cleaned"
        );
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

    #[test]
    fn corrupt_files_are_dropped_and_counted() {
        let path = dir("corrupt");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        spool.push(&upload(1, 10)).unwrap();
        fs::write(path.join(format!("{:020}.spool", 1)), b"\xff\xff\xff").unwrap();
        assert!(spool.load(1).is_err());
        assert_eq!(spool.dropped_corrupt, 1);
        assert!(spool.is_empty());
        fs::remove_dir_all(&path).unwrap();
    }
}
