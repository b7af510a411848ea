//! The table loader: a thread of its own that builds each mapped file's unwind table once,
//! writes it into the kernel's rows array and page index, and gives each process the list of
//! its mappings with tables. Off the sampling path: the pipeline only queues jobs (bounded,
//! dropped and counted when full), and a process's samples are walked with frame pointers
//! until its list is written.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::{FileExt, MetadataExt},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use object::ReadCache;
use profiler_common::{
    UnwindMapping, UnwindMappings, UnwindPage, UnwindRow, UNWIND_MAX_MAPPINGS, UNWIND_PAGE_BITS,
};

use super::{
    paging::RowSink,
    rows::{Failure, KernelRows, RowWriter},
    space::RowSpace,
    table::{self, FileTable, Limits, Segment, TableError},
};
use crate::{host::privileges, sample::UnwindMaps, symbolize::MappedFile};

/// Jobs waiting for the loader; more are dropped (their processes keep frame pointers).
const QUEUE: usize = 256;

/// What the loader is asked to do.
enum Job {
    /// A process's executable file mappings (again after its map changed).
    Process { pid: u32, files: Vec<MappedFile> },
    /// A process exited: its list goes, and its files' tables when no process maps them.
    Exit { pid: u32 },
}

/// Bounds of the loader beyond the kernel maps' sizes.
#[derive(Clone, Copy, Debug)]
pub struct LoaderLimits {
    /// Largest file read for its table (the symbolizer's `--max-symbol-file-bytes`).
    pub max_file_bytes: u64,
    /// Rows of one file's table (at most the whole rows array).
    pub max_file_rows: usize,
}

/// Counters and gauges of the tables, for `/metrics` and the status lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Files whose tables are in the kernel now.
    pub files: u64,
    /// Rows in use, and the rows array's size.
    pub rows: u64,
    pub rows_capacity: u64,
    /// Page slots in use (one per 64 KiB from each table's first page to its last), and the
    /// index's size.
    pub pages: u64,
    pub pages_capacity: u64,
    /// Processes with a mapping list, and the most there can be.
    pub processes: u64,
    pub processes_capacity: u64,
    /// Tables built since start, and the time they took.
    pub built: u64,
    pub build_time: Duration,
    /// Files without a table: no CFI, unreadable, over a bound (their frames use frame
    /// pointers).
    pub files_failed: u64,
    /// Tables that did not fit the rows array or the page index.
    pub files_dropped: u64,
    /// Processes beyond `--unwind-processes`.
    pub processes_dropped: u64,
    /// Mappings beyond the per-process list's [`UNWIND_MAX_MAPPINGS`].
    pub mappings_dropped: u64,
    /// Jobs dropped because the queue was full.
    pub jobs_dropped: u64,
    /// Map writes the kernel refused.
    pub write_errors: u64,
}

impl UnwindStats {
    /// One line for logs.
    pub fn summary(&self) -> String {
        format!(
            "files={} rows={}/{} pages={}/{} processes={}/{} built={} build_time={:?} no_cfi={} full={} processes_dropped={} mappings_dropped={} queue_dropped={} write_errors={}",
            self.files,
            self.rows,
            self.rows_capacity,
            self.pages,
            self.pages_capacity,
            self.processes,
            self.processes_capacity,
            self.built,
            self.build_time,
            self.files_failed,
            self.files_dropped,
            self.processes_dropped,
            self.mappings_dropped,
            self.jobs_dropped,
            self.write_errors,
        )
    }
}

/// The handle the pipeline keeps: queues jobs, reads the counters.
pub struct Unwind {
    sender: Option<SyncSender<Job>>,
    /// Jobs queued and not done yet.
    pending: Arc<AtomicUsize>,
    /// Set when the daemon stops: the jobs still queued are not done.
    stopping: Arc<AtomicBool>,
    stats: Arc<Mutex<UnwindStats>>,
    thread: Option<JoinHandle<()>>,
}

impl Unwind {
    /// Starts the loader thread with the kernel maps' writers.
    pub fn start(maps: UnwindMaps, limits: LoaderLimits) -> std::io::Result<Self> {
        let stats = Arc::new(Mutex::new(UnwindStats {
            rows_capacity: maps.sizes.rows.into(),
            pages_capacity: maps.sizes.pages.into(),
            processes_capacity: maps.sizes.processes.into(),
            ..Default::default()
        }));
        let (sender, receiver) = sync_channel(QUEUE);
        let shared = Arc::clone(&stats);
        let pending = Arc::new(AtomicUsize::new(0));
        let done = Arc::clone(&pending);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let thread = std::thread::Builder::new()
            .name("unwind-tables".into())
            .spawn(move || Loader::new(maps, limits, shared).run(receiver, &done, &stop))?;
        Ok(Self {
            sender: Some(sender),
            pending,
            stopping,
            stats,
            thread: Some(thread),
        })
    }

    /// Queues a process's mappings (its first sample, or its map changed).
    pub fn process(&self, pid: u32, files: Vec<MappedFile>) {
        self.send(Job::Process { pid, files });
    }

    /// Queues a process's exit.
    pub fn exited(&self, pid: u32) {
        self.send(Job::Exit { pid });
    }

    fn send(&self, job: Job) {
        let Some(sender) = &self.sender else { return };
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = sender.try_send(job) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            if let TrySendError::Full(_) = err {
                self.lock().jobs_dropped += 1;
            }
        }
    }

    /// Waits until every queued job is done, at most `limit`.
    pub fn wait_idle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stats(&self) -> UnwindStats {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnwindStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Unwind {
    fn drop(&mut self) {
        // The job at hand is the last: the tables die with the maps, and a queue full of
        // map re-reads must not hold up the exit.
        self.stopping.store(true, Ordering::SeqCst);
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Which file a table belongs to: by build id, else by the inode and its size and mtime
/// (the same file in every mount namespace, and a rewritten one is another).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    BuildId(String),
    Inode {
        dev: u64,
        ino: u64,
        size: u64,
        mtime: i64,
    },
}

/// A file's table in the kernel (or the fact that it has none).
struct Loaded {
    /// None: no table (failed or dropped); kept so that it is not tried at every process.
    table: Option<Placed>,
    /// Processes mapping the file.
    refs: u32,
}

struct Placed {
    /// The ranges of the rows array that hold the table's rows: (first, count).
    ranges: Vec<(u32, u32)>,
    /// The table's page slots in the index, for its first page (`first_page`) on.
    page_first: u32,
    page_count: u32,
    first_page: u32,
    segments: Vec<Segment>,
}

struct Loader {
    maps: UnwindMaps,
    limits: LoaderLimits,
    stats: Arc<Mutex<UnwindStats>>,
    files: HashMap<FileKey, Loaded>,
    processes: HashMap<u32, Vec<FileKey>>,
    /// Processes whose mapping list is in the kernel (bounded by `--unwind-processes`).
    listed: std::collections::HashSet<u32>,
    space: RowSpace,
    /// Slots of the page index, placed like rows: one contiguous range per table.
    page_space: RowSpace,
    /// The tables' epoch in the kernel: bumped when page slots are freed.
    epoch: u32,
}

impl Loader {
    fn new(maps: UnwindMaps, limits: LoaderLimits, stats: Arc<Mutex<UnwindStats>>) -> Self {
        let space = RowSpace::new(maps.sizes.rows);
        let page_space = RowSpace::new(maps.sizes.pages);
        Self {
            maps,
            limits,
            stats,
            files: HashMap::new(),
            processes: HashMap::new(),
            listed: Default::default(),
            space,
            page_space,
            epoch: 0,
        }
    }

    fn run(mut self, jobs: Receiver<Job>, pending: &AtomicUsize, stopping: &AtomicBool) {
        // The thread reads files through descriptors it is handed and writes maps through
        // ours: it needs none of the capabilities it was started with.
        if let Err(err) = privileges::drop_to_map_access() {
            tracing::warn!("the unwind table thread could not drop its capabilities: {err}");
        }
        for job in jobs {
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            match job {
                Job::Process { pid, files } => self.process(pid, files),
                Job::Exit { pid } => self.exit(pid),
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, UnwindStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the tables of a process's files and writes its mapping list.
    fn process(&mut self, pid: u32, files: Vec<MappedFile>) {
        let new = !self.listed.contains(&pid);
        if new && self.listed.len() as u64 >= self.stats().processes_capacity {
            self.stats().processes_dropped += 1;
            return;
        }
        let mut keys: Vec<FileKey> = Vec::new();
        let mut list = UnwindMappings::default();
        let mut entries: Vec<UnwindMapping> = Vec::new();
        for mapped in &files {
            let Some(key) = file_key(mapped) else {
                continue;
            };
            if !keys.contains(&key) {
                self.acquire(&key, mapped);
                keys.push(key.clone());
            }
            let Some(placed) = self.files.get(&key).and_then(|l| l.table.as_ref()) else {
                continue;
            };
            let vma = &mapped.vma;
            if let Some(bias) = table::bias(&placed.segments, vma.start, vma.file_offset) {
                entries.push(UnwindMapping {
                    start: vma.start,
                    end: vma.end,
                    bias: bias.wrapping_add(u64::from(placed.first_page) << UNWIND_PAGE_BITS),
                    page_first: placed.page_first,
                    page_count: placed.page_count,
                });
            }
        }
        // The old list's files are released after the new one's are held: a file in both
        // keeps its table.
        if let Some(old) = self.processes.insert(pid, keys) {
            for key in old {
                self.release(&key);
            }
        }
        entries.sort_by_key(|m| m.start);
        if entries.len() > UNWIND_MAX_MAPPINGS {
            self.stats().mappings_dropped += (entries.len() - UNWIND_MAX_MAPPINGS) as u64;
            entries.truncate(UNWIND_MAX_MAPPINGS);
        }
        if entries.is_empty() {
            // Nothing to unwind with tables: the process stays on frame pointers without the
            // tail call (counted as a sample without tables).
            if self.listed.remove(&pid) {
                let _ = self.maps.remove_mappings(pid);
            }
            self.publish();
            return;
        }
        list.count = entries.len() as u32;
        list.mappings[..entries.len()].copy_from_slice(&entries);
        match self.maps.set_mappings(pid, &list) {
            Ok(()) => {
                self.listed.insert(pid);
            }
            Err(err) => {
                tracing::debug!(pid, %err, "writing the unwind mapping list failed");
                self.stats().write_errors += 1;
            }
        }
        self.publish();
    }

    fn exit(&mut self, pid: u32) {
        let Some(keys) = self.processes.remove(&pid) else {
            return;
        };
        if self.listed.remove(&pid) {
            let _ = self.maps.remove_mappings(pid);
        }
        for key in keys {
            self.release(&key);
        }
        self.publish();
    }

    /// One more process maps the file: its table is built the first time.
    fn acquire(&mut self, key: &FileKey, file: &MappedFile) {
        if let Some(loaded) = self.files.get_mut(key) {
            loaded.refs += 1;
            return;
        }
        let table = self.load(file);
        self.files.insert(key.clone(), Loaded { table, refs: 1 });
    }

    fn release(&mut self, key: &FileKey) {
        let Some(loaded) = self.files.get_mut(key) else {
            return;
        };
        loaded.refs -= 1;
        if loaded.refs > 0 {
            return;
        }
        let Some(Loaded {
            table: Some(placed),
            ..
        }) = self.files.remove(key)
        else {
            return;
        };
        // Pages before rows: no page the kernel can find leads to rows given to another file.
        self.free_pages(placed.page_first, placed.page_count);
        for (first, rows) in placed.ranges {
            self.space.free(first, rows);
        }
        self.stats().files -= 1;
    }

    /// Builds a file's table and places it in the kernel; None when it has none or it does not
    /// fit (counted).
    fn load(&mut self, mapped: &MappedFile) -> Option<Placed> {
        let started = Instant::now();
        let maps = &self.maps;
        let write = |first: u32, rows: &[UnwindRow]| maps.write_rows(first, rows);
        let mut rows = KernelRows::new(write, &mut self.space);
        let built = build(mapped, &self.limits, &mut rows);
        let elapsed = started.elapsed();
        {
            let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.build_time += elapsed;
            stats.built += 1;
        }
        let stored = match built {
            Ok(table) => rows.finish().map(|ranges| (table, ranges)),
            Err(err) => Err(err),
        };
        let (table, ranges) = match stored {
            Ok(stored) => stored,
            Err(err) => {
                let failed = rows.abandon();
                let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                match failed {
                    None => {
                        tracing::debug!(%err, "no unwind table");
                        stats.files_failed += 1;
                    }
                    Some(Failure::Full) => {
                        tracing::debug!(
                            largest_free = self.space.largest_free(),
                            failed = self.space.failed(),
                            "no room for an unwind table"
                        );
                        stats.files_dropped += 1;
                    }
                    Some(Failure::Write(err)) => {
                        tracing::debug!(%err, "writing an unwind table failed");
                        stats.write_errors += 1;
                        stats.files_dropped += 1;
                    }
                }
                return None;
            }
        };
        let Some((page_first, page_count, first_page)) = self.place_pages(&table) else {
            // The rows were never reachable through a page: freeing them needs no new epoch.
            for &(first, rows) in &ranges {
                self.space.free(first, rows);
            }
            self.stats().files_dropped += 1;
            return None;
        };
        tracing::debug!(
            source = table.stats.source.name(),
            also = table.stats.also.map_or("", |s| s.name()),
            rows = table.stats.rows,
            ranges = ranges.len(),
            pages = page_count,
            fdes = table.stats.fdes,
            unsupported_cfa = table.stats.unsupported_cfa,
            build_time = ?elapsed,
            "unwind table built"
        );
        self.stats().files += 1;
        Some(Placed {
            ranges,
            page_first,
            page_count,
            first_page,
            segments: table.segments,
        })
    }

    /// Writes the page index of a table whose rows are in the kernel, in a range of page slots
    /// from its first page to its last: (first slot, slot count, first page). None, counted,
    /// when the slots do not fit or the write fails.
    fn place_pages(&mut self, table: &FileTable) -> Option<(u32, u32, u32)> {
        let (first_page, page_count) = match (table.pages.first(), table.pages.last()) {
            (Some(&(low, _, _)), Some(&(high, _, _))) => (low, high - low + 1),
            _ => (0, 0),
        };
        // A crafted table whose rows sit pages apart asks for more slots than there are.
        let Some(page_first) = self.page_space.allocate(page_count) else {
            tracing::debug!(
                page_count,
                largest_free_pages = self.page_space.largest_free(),
                failed = self.page_space.failed(),
                "no room for an unwind table's pages"
            );
            return None;
        };
        let mut pages = vec![UnwindPage::default(); page_count as usize];
        for &(page, first, rows) in &table.pages {
            pages[(page - first_page) as usize] = UnwindPage { first, rows };
        }
        // The rows are written: a page the kernel can find always leads to written rows.
        if let Err(err) = self.maps.write_pages(page_first, &pages) {
            tracing::debug!(%err, "writing an unwind table's pages failed");
            // Some of the pages may have been written, and their rows cached by a CPU.
            self.free_pages(page_first, page_count);
            self.stats().write_errors += 1;
            return None;
        }
        Some((page_first, page_count, first_page))
    }

    /// Empties `count` page slots from `first` in the kernel and gives them back, with a new
    /// epoch, so that no CPU's row cache hands out a row found through them.
    fn free_pages(&mut self, first: u32, count: u32) {
        self.epoch = self.epoch.wrapping_add(1);
        let cleared = self
            .maps
            .clear_pages(first, count)
            .and_then(|()| self.maps.set_epoch(self.epoch));
        if cleared.is_err() {
            self.stats().write_errors += 1;
        }
        self.page_space.free(first, count);
    }

    fn publish(&self) {
        let processes = self.listed.len() as u64;
        let (rows, capacity) = (self.space.used(), self.space.capacity());
        let pages = self.page_space.used();
        let mut stats = self.stats();
        stats.processes = processes;
        stats.rows = rows.into();
        stats.rows_capacity = capacity.into();
        stats.pages = pages.into();
    }
}

/// A file's table from its headers and CFI sections, and its debug file's `.debug_frame`: the
/// debug file fills what the file's own CFI does not describe (only its headers are read when
/// the file has a `.debug_frame` of its own); one that cannot be used leaves the file's own
/// table. The rows go to `rows`.
fn build(
    mapped: &MappedFile,
    limits: &LoaderLimits,
    rows: &mut KernelRows<'_, impl RowWriter>,
) -> Result<FileTable, String> {
    let max = limits.max_file_bytes;
    let limits = Limits {
        max_rows: limits.max_file_rows,
        max_section_bytes: max,
    };
    build_from(&mapped.file, max, |elf| {
        let with_debug = mapped.open_debug_file().and_then(|debug| {
            build_from(&debug, max, |debug| {
                table::build(elf, Some(debug), &limits, &mut *rows)
            })
            .ok()
        });
        match with_debug {
            Some(table) => Ok(table),
            // No room, or a write failed: without the debug file it would be the same.
            None if rows.failed.is_some() => Err(TableError::NotStored),
            None => {
                rows.reset();
                table::build(elf, None::<&[u8]>, &limits, &mut *rows)
            }
        }
    })
}

fn file_key(mapped: &MappedFile) -> Option<FileKey> {
    if let Some(id) = &mapped.vma.build_id {
        return Some(FileKey::BuildId(id.clone()));
    }
    let meta = mapped.file.metadata().ok()?;
    Some(FileKey::Inode {
        dev: mapped.vma.dev,
        ino: mapped.vma.inode,
        size: meta.size(),
        mtime: meta.mtime(),
    })
}

/// Runs `build` on a read cache of `file` if the file is at most `max` bytes (a crafted
/// header can make the parser ask for any range of the file). Only the ranges parsed are read
/// (the headers and the CFI sections, not the code), with positioned reads from the checked
/// descriptor: never mapped (a file truncated under a mapping would kill the daemon with
/// SIGBUS), and the descriptor's offset is left alone (the symbolizer shares it).
pub(super) fn build_from<T, E: std::fmt::Display>(
    file: &File,
    max: u64,
    build: impl FnOnce(&ReadCache<Positioned<'_>>) -> Result<T, E>,
) -> Result<T, String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > max {
        return Err(format!("{size} bytes, over the {max}-byte bound"));
    }
    let cache = ReadCache::new(Positioned { file, at: 0, size });
    build(&cache).map_err(|err| err.to_string())
}

/// A file read at a position of its own.
pub(super) struct Positioned<'f> {
    file: &'f File,
    at: u64,
    /// The size checked against the bound: a file that grows meanwhile is read no further.
    size: u64,
}

impl Read for Positioned<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.size.saturating_sub(self.at);
        let len = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..len], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for Positioned<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(by) => self.size.checked_add_signed(by),
            SeekFrom::Current(by) => self.at.checked_add_signed(by),
        };
        self.at = at.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.at)
    }
}
