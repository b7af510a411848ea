//! Reading the dump dir for the page and `/profiles/<name>`: only regular files the daemon
//! wrote, never through a link, never blocking.
//!
//! Anyone who can write to the dump dir can plant names in it: a symlink `leak.pb.gz ->
//! /etc/shadow` next to a sidecar listing it, a hard link to a root-owned file, a FIFO called
//! `x.json` (a blocking `open` of it would hang the page and the one runtime thread with it).
//! So every file is opened with `O_NOFOLLOW | O_NONBLOCK` and then judged by `fstat` on the
//! open descriptor (no window between the check and the read): a regular file, owned by the
//! daemon's user, with one link, not larger than the bound. Everything here blocks on the
//! file system, so callers run it on the blocking pool.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Read},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use thiserror::Error;
use tokio::sync::Semaphore;

use crate::export::{window_sidecars_for, KeptSummary, Sidecar, SIDECAR_SUFFIX};

/// Sidecars read at most for the page, the newest first (by modification time).
pub const MAX_SIDECARS: usize = 500;
/// Rows the page's listing holds at most (those of the sidecars read that match its filter).
pub const MAX_ROWS: usize = 2_000;
/// Rows a listing reads at most, matching or not (at most about 1 KiB each: about 20 MiB).
const MAX_ROWS_READ: usize = 20_000;
/// Distinct services and targets the listing offers as filters.
const MAX_FACETS: usize = 500;
/// Largest sidecar read: a kept profile's is a few KiB, a continuous-mode window's lists
/// every process written (a few hundred bytes each).
const MAX_SIDECAR_BYTES: u64 = 1 << 20;
/// Largest pprof or flame graph served: the daemon wrote each from memory in one piece, and at
/// most [`FILE_WORKERS`] are read at once.
pub const MAX_SERVED_BYTES: u64 = 64 << 20;
/// Reads of the dump dir at once, each on a blocking thread: many clients never take more than
/// this of the host's cores and memory.
pub const FILE_WORKERS: usize = 2;
/// Requests waiting for a worker; more are answered 503 at once, so that requests for the page
/// cannot keep every connection busy (busy connections are never replaced by new ones).
pub const FILE_QUEUE: usize = 8;

/// Why a file of the dump dir was not read; one counter each (`/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A symbolic link (`O_NOFOLLOW` refused it).
    Link,
    /// A FIFO, socket, device or directory.
    NotRegular,
    /// Owned by another user, or with more than one link (a hard link to someone's file).
    NotOurs,
    TooLarge,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Link,
        Refusal::NotRegular,
        Refusal::NotOurs,
        Refusal::TooLarge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::Link => "link",
            Refusal::NotRegular => "not_regular",
            Refusal::NotOurs => "not_ours",
            Refusal::TooLarge => "too_large",
        }
    }
}

/// Files of the dump dir refused, by [`Refusal`] (indexed like [`Refusal::ALL`]).
#[derive(Debug, Default)]
pub struct FileStats {
    refused: [AtomicU64; 4],
    /// Requests answered 503: [`FILE_QUEUE`] were waiting already.
    pub queue_full: AtomicU64,
}

/// The [`FILE_WORKERS`] and the requests waiting for one.
pub struct FileWorkers {
    permits: Semaphore,
    waiting: AtomicUsize,
}

impl Default for FileWorkers {
    fn default() -> Self {
        Self {
            permits: Semaphore::new(FILE_WORKERS),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// [`FileWorkers::run`] found [`FILE_QUEUE`] requests waiting, or the task failed.
#[derive(Debug)]
pub struct Busy;

impl FileWorkers {
    /// Runs `work` on the blocking pool once a worker is free.
    pub async fn run<T: Send + 'static>(
        &self,
        stats: &FileStats,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        // Counted out on drop: hyper drops the request's future when its client goes away,
        // and a count left behind would turn every later request into a 503.
        let place = Waiting::take(&self.waiting);
        if place.ahead >= FILE_WORKERS + FILE_QUEUE {
            stats.queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        }
        let _permit = self.permits.acquire().await.map_err(|_| Busy)?;
        tokio::task::spawn_blocking(work).await.map_err(|_| Busy)
    }
}

/// A place among the requests waiting for a worker, given back when dropped.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// Requests that held a place before this one.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn take(count: &'a AtomicUsize) -> Self {
        let ahead = count.fetch_add(1, Ordering::Relaxed);
        Self { count, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FileStats {
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    fn count(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why [`read_ours`] read nothing.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("refused ({}): the page serves only regular files the daemon wrote", .0.name())]
    Refused(Refusal),
    #[error(transparent)]
    Io(io::Error),
}

/// A plain file name: one path component, not `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The daemon's effective uid: the owner of every file it writes.
fn own_uid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

fn judge(meta: &fs::Metadata, max_bytes: u64) -> Result<(), Refusal> {
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    if meta.uid() != own_uid() || meta.nlink() != 1 {
        return Err(Refusal::NotOurs);
    }
    if meta.len() > max_bytes {
        return Err(Refusal::TooLarge);
    }
    Ok(())
}

/// Reads `dir/name` if it is a regular file the daemon wrote, at most `max_bytes`; each
/// refusal is counted in `stats`.
pub fn read_ours(
    dir: &Path,
    name: &str,
    max_bytes: u64,
    stats: &FileStats,
) -> Result<Vec<u8>, ReadError> {
    if !plain_name(name) {
        return Err(ReadError::Io(io::ErrorKind::NotFound.into()));
    }
    let refuse = |why| {
        stats.count(why);
        ReadError::Refused(why)
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(dir.join(name))
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => refuse(Refusal::Link),
            _ => ReadError::Io(err),
        })?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    judge(&meta, max_bytes).map_err(refuse)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after fstat: never read more than the bound.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(refuse(Refusal::TooLarge));
    }
    Ok(bytes)
}

/// Whether `dir/name` is a regular file the daemon wrote, without opening it.
fn is_ours(dir: &Path, name: &str) -> bool {
    plain_name(name)
        && fs::symlink_metadata(dir.join(name)).is_ok_and(|m| judge(&m, u64::MAX).is_ok())
}

/// What the page lists.
#[derive(Debug, Default)]
pub struct Listing {
    /// The rows that match the filter, newest first.
    pub rows: Vec<KeptSummary>,
    /// Sidecars beyond [`MAX_SIDECARS`], or rows beyond [`MAX_ROWS`], were not read.
    pub truncated: bool,
    /// The services and targets of every row read, for the filters.
    pub services: BTreeSet<String>,
    pub targets: BTreeSet<String>,
}

fn oldest_unix(window: Duration, now: SystemTime) -> u64 {
    now.checked_sub(window)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Reads a sidecar the daemon wrote: its rows (one for a kept profile, one per file for a
/// continuous-mode window).
fn read_sidecar(dir: &Path, name: &str, stats: &FileStats) -> Option<Vec<KeptSummary>> {
    let bytes = read_ours(dir, name, MAX_SIDECAR_BYTES, stats).ok()?;
    serde_json::from_slice::<Sidecar>(&bytes)
        .ok()
        .map(Sidecar::into_rows)
}

/// The profiles of the last `window` that `wanted` accepts, from the [`MAX_SIDECARS`] newest
/// sidecars the daemon wrote, whose profile file is still there.
pub fn list_kept(
    dir: &Path,
    window: Duration,
    now: SystemTime,
    stats: &FileStats,
    wanted: impl Fn(&KeptSummary) -> bool,
) -> Listing {
    let Ok(entries) = fs::read_dir(dir) else {
        return Listing::default();
    };
    let oldest = oldest_unix(window, now);
    let oldest_time = UNIX_EPOCH + Duration::from_secs(oldest);
    // The directory entry's own time (lstat: no link followed, nothing opened) picks the
    // newest sidecars of the window before any is read.
    let mut sidecars: Vec<(SystemTime, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.ends_with(SIDECAR_SUFFIX) {
                return None;
            }
            let modified = e.metadata().ok()?.modified().ok()?;
            (modified >= oldest_time).then_some((modified, name))
        })
        .collect();
    sidecars.sort_unstable_by(|a, b| b.cmp(a));
    let mut listing = Listing {
        truncated: sidecars.len() > MAX_SIDECARS,
        ..Listing::default()
    };
    let mut read = 0;
    for (_, name) in sidecars.into_iter().take(MAX_SIDECARS) {
        // Rows read, matching or not: a narrow filter does not make a listing read more.
        if read >= MAX_ROWS_READ || listing.rows.len() >= MAX_ROWS {
            listing.truncated = true;
            break;
        }
        let rows = read_sidecar(dir, &name, stats).unwrap_or_default();
        read += rows.len();
        for row in rows {
            if row.fired_unix < oldest || !is_ours(dir, &row.pprof) {
                continue;
            }
            for (set, value) in [
                (&mut listing.services, &row.service),
                (&mut listing.targets, &row.target),
            ] {
                if set.len() < MAX_FACETS && !value.is_empty() {
                    set.insert(value.clone());
                }
            }
            if !wanted(&row) {
                continue;
            }
            if listing.rows.len() < MAX_ROWS {
                listing.rows.push(row);
            } else {
                listing.truncated = true;
            }
        }
    }
    listing
        .rows
        .sort_by(|a, b| b.fired_unix.cmp(&a.fired_unix).then(b.pprof.cmp(&a.pprof)));
    listing
}

/// The row of the page's window that lists `name` (a pprof or flame graph the daemon wrote):
/// from the sidecar of the same base name (`<base>.pb.gz`, `<base>.svg`, `<base>.json`), or
/// the continuous-mode window's that names it. One sidecar is read, not the whole directory.
pub fn find_listed(
    dir: &Path,
    name: &str,
    window: Duration,
    now: SystemTime,
    stats: &FileStats,
) -> Option<KeptSummary> {
    let base = name
        .strip_suffix(".pb.gz")
        .or_else(|| name.strip_suffix(".svg"))?;
    let oldest = oldest_unix(window, now);
    let listed = |rows: Vec<KeptSummary>| {
        rows.into_iter().find(|row| {
            (row.pprof == name || row.svg.as_deref() == Some(name)) && row.fired_unix >= oldest
        })
    };
    if let Some(rows) = read_sidecar(dir, &format!("{base}{SIDECAR_SUFFIX}"), stats) {
        return listed(rows);
    }
    // A continuous-mode file: the parts of its window's sidecar, up to the first missing.
    window_sidecars_for(name)?
        .map_while(|sidecar| read_sidecar(dir, &sidecar, stats))
        .find_map(listed)
}

/// A listed profile's pprof or flame graph ([`find_listed`]), if the daemon wrote it.
pub fn read_kept_file(
    dir: &Path,
    name: &str,
    window: Duration,
    now: SystemTime,
    stats: &FileStats,
) -> Option<Vec<u8>> {
    find_listed(dir, name, window, now, stats)?;
    read_ours(dir, name, MAX_SERVED_BYTES, stats)
        .map_err(|err| tracing::debug!("/profiles/{name}: {err}"))
        .ok()
}

#[cfg(test)]
mod tests;
