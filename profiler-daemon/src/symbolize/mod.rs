//! Turns instruction pointers into named frames with blazesym. In: a pid and user addresses,
//! or kernel addresses. Out: [`Location`]s (frame kind, mapping, source lines with inlined
//! callees first), from bounded name caches shared across drains.
//!
//! One long-lived [`Symbols`] owns the `Symbolizer` (which is neither `Send` nor `Sync`) on the
//! pipeline thread. A process is cached on its first sample, so that its memory map survives
//! its exit until the next drain; it is evicted once it is gone and no longer sampled.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use blazesym::{
    symbolize::{
        cache, evict,
        source::{Elf, Process, Source},
        Input, Reason, Symbolizer,
    },
    Pid,
};

use crate::process::{is_running, is_same_process_alive, ProcessInfo, Vma};

mod debuginfo;
mod files;
mod frame;
mod fuse;
mod held;
mod kallsyms;
mod perfmap;

pub use frame::{FrameKind, Line, Location};
pub use held::MappedFile;

use files::{Bounds, FileId, Files, Refusal};
use frame::symbolized_lines;
use kallsyms::{load_kallsyms, Kallsyms};
use perfmap::PerfMaps;

/// Bounds of the symbolization caches.
#[derive(Clone, Copy, Debug)]
pub struct SymbolsConfig {
    /// Processes tracked at once (cached memory maps).
    pub max_processes: usize,
    /// Kernel functions whose names are remembered across drains.
    pub max_kernel_symbols: usize,
    /// Names of code in files (by file and offset, all processes together) remembered across
    /// drains.
    pub max_user_symbols: usize,
    /// How long blazesym keeps a file's parsed symbols before they are released.
    pub file_ttl: Duration,
    /// Symbol and debug section bytes of one file beyond which it is not parsed.
    pub max_symbol_file_bytes: u64,
    /// Symbol and debug section bytes of all the files parsed at once.
    pub max_symbol_bytes: u64,
    /// Mapped files held open at once.
    pub max_symbol_files: usize,
}

/// Counters of the symbolization stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct SymbolsStats {
    pub processes_tracked: u64,
    pub processes_evicted: u64,
    /// Processes not tracked because the cache was full (their frames show module+offset or
    /// their own symbols, read late).
    pub processes_dropped: u64,
    pub kernel_cache_hits: u64,
    pub kernel_cache_misses: u64,
    pub user_cache_hits: u64,
    pub user_cache_misses: u64,
    /// Names held now (filled in by [`Symbols::stats`]), and names dropped when a full cache
    /// was emptied.
    pub kernel_cache_entries: u64,
    pub kernel_cache_dropped: u64,
    pub user_cache_entries: u64,
    pub user_cache_dropped: u64,
    pub unknown_frames: u64,
    /// Files mapped by tracked processes (filled in by [`Symbols::stats`]); files whose
    /// parsed symbols were released because no tracked process maps them any more, and
    /// because they were older than `file_ttl`.
    pub files_cached: u64,
    pub files_evicted: u64,
    pub files_expired: u64,
    /// Mapped files not read, by [`Refusal::ALL`] index (see [`files`]).
    pub files_refused: [u64; Refusal::ALL.len()],
    /// Symbol and debug section bytes of the files blazesym may hold parsed (filled in by
    /// [`Symbols::stats`]).
    pub symbol_bytes: u64,
}

/// Labels of [`SymbolsStats::files_refused`], in order.
pub fn refusal_reasons() -> [&'static str; Refusal::ALL.len()] {
    Refusal::ALL.map(Refusal::name)
}

/// Eviction rounds (drains) after which a live process that was not sampled is forgotten; the
/// kernel announces it again on its next sample.
const IDLE_ROUNDS: u32 = 300;

struct Tracked {
    info: ProcessInfo,
    /// Eviction rounds since a drain last referenced the process (0: referenced in this one).
    idle_rounds: u32,
    /// Addresses found outside every mapping even after reading the memory map again (a frame
    /// pointer chain that ended in garbage), so that they do not make every drain re-read it.
    unmapped: HashSet<u64>,
}

/// Unmapped addresses remembered per process before the set starts over.
const MAX_UNMAPPED: usize = 1024;

/// The symbolization stage.
pub struct Symbols {
    symbolizer: Symbolizer,
    config: SymbolsConfig,
    processes: HashMap<u32, Tracked>,
    /// Kernel function names by kallsyms index, shared by every frame in the function.
    kernel: FxHashMap<u32, Arc<str>>,
    /// Read at the first kernel frame; empty when it could not be read.
    kallsyms: Option<Kallsyms>,
    /// Names of code in files, by file (device, inode) and offset in it, kept across drains and
    /// shared by every process mapping the file: a long-running process samples the same few
    /// thousand addresses window after window, and naming them again was most of the daemon's
    /// CPU. Code in anonymous memory (JIT code, which may be replaced at the same address) is
    /// named afresh each time. A file's names go when no tracked process maps it any more (its
    /// inode may then be reused).
    names: FxHashMap<FileId, FxHashMap<u64, Vec<Line>>>,
    /// Entries in `names` together (bounded by `max_user_symbols`).
    user_symbols: usize,
    /// The files tracked processes map, opened and checked once. blazesym keeps every file it
    /// read mapped (and its parsed symbols) until told otherwise; a file no tracked process
    /// maps any more is evicted, so that RSS does not grow with every binary that ever ran on
    /// the host.
    files: Files,
    /// JIT code names of tracked processes (see [`perfmap`]).
    perf_maps: PerfMaps,
    /// Files owed a release (see [`Symbols::expire_files`]), and when that was last worked out.
    expire_credit: f64,
    expire_checked: Instant,
    pub stats: SymbolsStats,
    /// Processes whose memory map was read since [`Symbols::take_retracked`] last asked.
    retracked: Vec<u32>,
}

impl Symbols {
    pub fn new(config: SymbolsConfig) -> Self {
        let symbolizer = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self {
            symbolizer,
            config,
            processes: HashMap::new(),
            kernel: FxHashMap::default(),
            kallsyms: None,
            names: FxHashMap::default(),
            user_symbols: 0,
            files: Files::new(Bounds {
                max_file_bytes: config.max_symbol_file_bytes,
                max_bytes: config.max_symbol_bytes,
                max_files: config.max_symbol_files,
            }),
            perf_maps: PerfMaps::default(),
            expire_credit: 0.0,
            expire_checked: Instant::now(),
            stats: SymbolsStats::default(),
            retracked: Vec::new(),
        }
    }

    /// Captures a process while it is alive: names, cgroup, memory map (blazesym's VMA cache
    /// and our own copy). Called on the first sample; again when its map changed.
    pub fn track(&mut self, pid: u32) {
        if pid == 0 {
            // blazesym reads pid 0 as "this process"; the idle task is never profiled anyway.
            return;
        }
        if !self.processes.contains_key(&pid) && self.processes.len() >= self.config.max_processes {
            self.stats.processes_dropped += 1;
            return;
        }
        let Some(mut info) = ProcessInfo::read(pid) else {
            return;
        };
        let mut process = cache::Process::new(Pid::from(pid));
        process.cache_vmas = true;
        process.cache_perf_map = false;
        let request = cache::Cache::from(process);
        if let Err(err) = self.symbolizer.cache(&request) {
            tracing::debug!(pid, %err, "caching process memory map failed");
        }
        self.hold_files(&mut info);
        self.retracked.push(pid);
        let tracked = Tracked {
            info,
            idle_rounds: 0,
            unmapped: HashSet::new(),
        };
        match self.processes.insert(pid, tracked) {
            Some(old) => {
                // After the new map's files are held: a file in both stays cached.
                self.release_files(&old.info);
            }
            None => self.stats.processes_tracked += 1,
        }
    }

    /// Distinct files of a process's memory map, as [`Symbols::hold_files`] held them.
    fn mapped_files(info: &ProcessInfo) -> HashSet<FileId> {
        info.vmas
            .iter()
            .filter(|v| v.path.starts_with('/'))
            .filter_map(|v| file_id(v))
            .collect()
    }

    /// Holds the files of a process's memory map (opened and checked the first time), and
    /// fills in each mapping's build id.
    fn hold_files(&mut self, info: &mut ProcessInfo) {
        // Once per distinct file: each hold counts one more process mapping it.
        let (pid, mut fuse) = (info.pid, None);
        let mut build_ids: HashMap<FileId, Option<String>> = HashMap::new();
        for vma in &mut info.vmas {
            let Some(id) = file_id(vma).filter(|_| vma.path.starts_with('/')) else {
                continue;
            };
            let files = &mut self.files;
            let build_id = build_ids
                .entry(id)
                .or_insert_with(|| files.hold(id, pid, vma, &mut fuse).build_id.clone());
            Arc::make_mut(vma).build_id = build_id.clone();
        }
    }

    fn release_files(&mut self, info: &ProcessInfo) {
        for id in Self::mapped_files(info) {
            let Some(file) = self.files.release(id) else {
                continue;
            };
            // Before the descriptor closes: its number, and so the path, may be reused.
            if let Some(path) = file.fd_path() {
                let _ = self
                    .symbolizer
                    .evict(&evict::Evict::Elf(evict::Elf::new(path)));
            }
            if let Some(names) = self.names.remove(&id) {
                self.user_symbols -= names.len();
            }
            self.stats.files_evicted += 1;
        }
    }

    /// What is known about `pid`; a process first met at drain time is read now.
    pub fn process(&mut self, pid: u32) -> ProcessInfo {
        if !self.processes.contains_key(&pid) {
            self.track(pid);
        }
        match self.processes.get_mut(&pid) {
            Some(tracked) => {
                tracked.idle_rounds = 0;
                tracked.info.clone()
            }
            None => ProcessInfo::unknown(pid),
        }
    }

    /// Symbolizes user-space addresses of one process, one batch.
    pub fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Location> {
        let mut found: Vec<Option<Location>> = match self.processes.get(&pid) {
            Some(t) => addrs.iter().map(|&a| self.cached(t, a)).collect(),
            None => vec![None; addrs.len()],
        };
        let missing: Vec<u64> = addrs
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(&a, _)| a)
            .collect();
        self.stats.user_cache_misses += missing.len() as u64;
        self.stats.user_cache_hits += (addrs.len() - missing.len()) as u64;
        if missing.is_empty() {
            return found.into_iter().flatten().collect();
        }
        let mut named = self.name_user(pid, &missing).into_iter();
        for slot in found.iter_mut().filter(|f| f.is_none()) {
            *slot = named.next();
        }
        found.into_iter().flatten().collect()
    }

    /// The name of `addr` without asking blazesym: from the names of its file, or known to be
    /// outside every mapping.
    fn cached(&self, tracked: &Tracked, addr: u64) -> Option<Location> {
        if tracked.unmapped.contains(&addr) {
            return Some(Location::named(
                FrameKind::User,
                addr,
                None,
                format!("[unknown] {addr:#x}"),
            ));
        }
        let vma = tracked.info.vma_for(addr)?;
        let lines = self
            .names
            .get(&file_id(vma)?)?
            .get(&file_offset(vma, addr))?;
        Some(Location {
            kind: FrameKind::User,
            address: addr,
            vma: Some(Arc::clone(vma)),
            lines: lines.clone(),
        })
    }

    /// Names addresses not in the caches, and caches those in files.
    fn name_user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Location> {
        let mut results = self.symbolize_process(pid, addrs);
        let unmapped = |results: &[Result<Vec<Line>, Reason>], known: Option<&HashSet<u64>>| {
            addrs
                .iter()
                .zip(results)
                .filter(|(a, r)| {
                    matches!(r, Err(Reason::Unmapped)) && !known.is_some_and(|k| k.contains(a))
                })
                .map(|(&a, _)| a)
                .collect::<Vec<u64>>()
        };
        let new_unmapped = unmapped(&results, self.processes.get(&pid).map(|t| &t.unmapped));
        // Only an unmapped address needs the /proc read that tells whether a refresh can help.
        if !new_unmapped.is_empty()
            && self
                .processes
                .get(&pid)
                .is_some_and(|t| is_same_process_alive(pid, t.info.start_time))
        {
            // The process mapped more code (dlopen, JIT) since it was cached: refresh once.
            self.track(pid);
            results = self.symbolize_process(pid, addrs);
            let still = unmapped(&results, None);
            if let Some(tracked) = self.processes.get_mut(&pid) {
                if tracked.unmapped.len() + still.len() > MAX_UNMAPPED {
                    tracked.unmapped.clear();
                }
                tracked.unmapped.extend(still);
            }
        }
        let vmas: Vec<Option<Arc<Vma>>> = match self.processes.get(&pid) {
            Some(t) => addrs.iter().map(|&a| t.info.vma_for(a).cloned()).collect(),
            None => vec![None; addrs.len()],
        };
        let mut locations = Vec::with_capacity(addrs.len());
        let mut cacheable = Vec::new();
        for ((&addr, result), vma) in addrs.iter().zip(results).zip(vmas) {
            // Code in a file does not change under an offset while the file stays the same.
            // Not the stand-in names of a file refused only until room is made for it.
            let cache_key = vma
                .as_deref()
                .filter(|v| v.path.starts_with('/'))
                .and_then(|v| Some((file_id(v)?, file_offset(v, addr))))
                .filter(|(id, _)| {
                    self.files.held.get(id).map(|f| f.refused) != Some(Some(Refusal::TotalBound))
                });
            let location = match result {
                Ok(lines) => Location {
                    kind: FrameKind::User,
                    address: addr,
                    vma,
                    lines,
                },
                Err(_) => {
                    self.stats.unknown_frames += 1;
                    let name = match vma.as_deref() {
                        Some(v) => format!(
                            "{}+{:#x}",
                            v.path.rsplit('/').next().unwrap_or(&v.path),
                            file_offset(v, addr)
                        ),
                        None => format!("[unknown] {addr:#x}"),
                    };
                    Location::named(FrameKind::User, addr, vma, name)
                }
            };
            if let Some((id, offset)) = cache_key {
                cacheable.push((id, offset, location.lines.clone()));
            }
            locations.push(location);
        }
        self.cache_names(cacheable);
        locations
    }

    fn cache_names(&mut self, names: Vec<(FileId, u64, Vec<Line>)>) {
        if names.is_empty() {
            return;
        }
        if self.user_symbols + names.len() > self.config.max_user_symbols {
            self.names.clear();
            self.stats.user_cache_dropped += self.user_symbols as u64;
            self.user_symbols = 0;
        }
        let room = self.config.max_user_symbols - self.user_symbols;
        for (id, offset, lines) in names.into_iter().take(room) {
            if self
                .names
                .entry(id)
                .or_default()
                .insert(offset, lines)
                .is_none()
            {
                self.user_symbols += 1;
            }
        }
    }

    /// Names addresses of one process: those in files from the files' checked descriptors
    /// (shared by every process mapping them, and readable after an exit), the others (vDSO,
    /// JIT code in a perf map) through blazesym's process source while the process lives.
    fn symbolize_process(&mut self, pid: u32, addrs: &[u64]) -> Vec<Result<Vec<Line>, Reason>> {
        let mut results: Vec<Result<Vec<Line>, Reason>> = vec![Err(Reason::Unmapped); addrs.len()];
        let mut by_file: HashMap<FileId, (Vma, Vec<usize>, Vec<u64>)> = HashMap::new();
        // In a mapping of ours without a file ([vdso]), and in none of ours (JIT code, or an
        // address a crafted stack made up).
        let (mut special, mut outside) = (Vec::new(), Vec::new());
        let tracked = self.processes.get(&pid);
        for (slot, &addr) in addrs.iter().enumerate() {
            let vma = tracked.and_then(|t| t.info.vma_for(addr));
            match vma {
                Some(vma) if vma.path.starts_with('/') => match file_id(vma) {
                    Some(id) => {
                        let entry = by_file
                            .entry(id)
                            .or_insert_with(|| (Vma::clone(vma), Vec::new(), Vec::new()));
                        entry.1.push(slot);
                        entry.2.push(file_offset(vma, addr));
                    }
                    None => results[slot] = Err(Reason::Unsupported),
                },
                Some(_) => special.push(slot),
                None => outside.push(slot),
            }
        }
        for (id, (vma, slots, offsets)) in by_file {
            let named = match self.files.admit(id, pid, &vma) {
                Ok((path, debug_syms)) => {
                    let mut elf = Elf::new(path);
                    elf.debug_syms = debug_syms;
                    self.run(pid, &Source::Elf(elf), Input::FileOffset(&offsets))
                }
                Err(_) => vec![Err(Reason::Unsupported); offsets.len()],
            };
            for (slot, result) in slots.into_iter().zip(named) {
                results[slot] = result;
            }
        }
        // Left unmapped: a refresh of the memory map may find them (dlopen since).
        self.name_jit(pid, addrs, outside, &mut results);
        if special.is_empty() || !is_running(pid) {
            return results;
        }
        // Only addresses in mappings without a file: blazesym's process source would open
        // any other mapping's file itself (through map_files, but without the checks).
        let special_addrs: Vec<u64> = special.iter().map(|&slot| addrs[slot]).collect();
        let mut source = Process::new(Pid::from(pid));
        source.map_files = true;
        source.perf_map = false;
        let named = self.run(
            pid,
            &Source::Process(source),
            Input::AbsAddr(&special_addrs),
        );
        for (slot, result) in special.into_iter().zip(named) {
            results[slot] = result;
        }
        results
    }

    /// Names the addresses at `slots` that the process's perf map covers.
    fn name_jit(
        &mut self,
        pid: u32,
        addrs: &[u64],
        slots: Vec<usize>,
        results: &mut [Result<Vec<Line>, Reason>],
    ) {
        if slots.is_empty() {
            return;
        }
        let wanted: Vec<u64> = slots.iter().map(|&slot| addrs[slot]).collect();
        let used = self.files.parsed_bytes + self.perf_maps.bytes;
        let room = self.config.max_symbol_bytes.saturating_sub(used);
        let max_file = self.config.max_symbol_file_bytes;
        let (names, refusal) = self.perf_maps.names(pid, &wanted, max_file, room);
        if let Some(refusal) = refusal {
            self.files.count_refusal(refusal, pid, "perf map");
        }
        for (slot, name) in slots.into_iter().zip(names) {
            if let Some(function) = name {
                results[slot] = Ok(vec![Line {
                    function,
                    file: None,
                    line: 0,
                }]);
            }
        }
    }

    fn run(
        &mut self,
        pid: u32,
        source: &Source<'_>,
        input: Input<&[u64]>,
    ) -> Vec<Result<Vec<Line>, Reason>> {
        let count = match input {
            Input::AbsAddr(a) | Input::VirtOffset(a) | Input::FileOffset(a) => a.len(),
        };
        match self.symbolizer.symbolize(source, input) {
            Ok(results) => results.into_iter().map(symbolized_lines).collect(),
            Err(err) => {
                tracing::debug!(pid, %err, "symbolizing failed");
                vec![Err(Reason::Unsupported); count]
            }
        }
    }

    /// Symbolizes kernel addresses via kallsyms. The names are held per kernel function
    /// (bounded), not per address: a busy host keeps sampling new instruction addresses inside
    /// the same few thousand kernel functions for hours, and a cache by address grew with
    /// every one of them.
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Location> {
        let kallsyms = self.kallsyms.get_or_insert_with(load_kallsyms);
        addrs
            .iter()
            .map(|&addr| {
                let function = match kallsyms.symbol(addr) {
                    Some(index) => {
                        if let Some(name) = self.kernel.get(&index) {
                            self.stats.kernel_cache_hits += 1;
                            name.clone()
                        } else {
                            self.stats.kernel_cache_misses += 1;
                            if self.kernel.len() >= self.config.max_kernel_symbols {
                                self.stats.kernel_cache_dropped += self.kernel.len() as u64;
                                self.kernel.clear();
                            }
                            let name: Arc<str> = kallsyms.name_of(index).into();
                            self.kernel.insert(index, name.clone());
                            name
                        }
                    }
                    None => {
                        self.stats.unknown_frames += 1;
                        format!("[kernel] {addr:#x}").into()
                    }
                };
                Location {
                    kind: FrameKind::Kernel,
                    address: addr,
                    vma: None,
                    lines: vec![Line {
                        function,
                        file: None,
                        line: 0,
                    }],
                }
            })
            .collect()
    }

    /// Releases blazesym's parsed state of the files with DWARF held longest, at a pace that
    /// releases each of them about once per `file_ttl` (see [`debuginfo`] for why only them).
    /// The names found stay in `names`; blazesym reads a file again only for an address they
    /// lack, which in a steady state is rare.
    /// Releasing all files at once instead made the daemon's RSS a sawtooth with a `file_ttl`
    /// period (several MiB of file pages and parsed debug info coming back between releases).
    fn expire_files(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.expire_checked);
        self.expire_checked = now;
        let held = self.files.held.values().filter(|f| f.expires()).count();
        let due = if self.config.file_ttl.is_zero() {
            held
        } else {
            // Credit beyond one full round is not kept: a long pause between drains must not
            // release files more than once in a row.
            self.expire_credit = (self.expire_credit
                + held as f64 * elapsed.as_secs_f64() / self.config.file_ttl.as_secs_f64())
            .min(held as f64);
            let due = self.expire_credit.floor();
            self.expire_credit -= due;
            due as usize
        };
        if due == 0 {
            return;
        }
        let mut oldest: Vec<(Instant, FileId)> = self
            .files
            .held
            .iter()
            .filter(|(_, f)| f.expires())
            .map(|(id, f)| (f.since, *id))
            .collect();
        if due < oldest.len() {
            oldest.select_nth_unstable(due);
            oldest.truncate(due);
        }
        for (_, id) in oldest {
            if let Some(file) = self.files.held.get_mut(&id) {
                file.since = now;
            }
            if let Some(path) = self.files.unparse(id) {
                let _ = self
                    .symbolizer
                    .evict(&evict::Evict::Elf(evict::Elf::new(path)));
            }
            self.stats.files_expired += 1;
        }
    }

    /// Forgets processes that exited and were not referenced by the last drain, and live ones
    /// idle for [`IDLE_ROUNDS`] drains. Returns their pids so the sampler announces them (or a
    /// process that reuses the pid) again.
    pub fn evict_exited(&mut self) -> Vec<u32> {
        self.expire_files();
        let mut gone = Vec::new();
        for (&pid, tracked) in self.processes.iter_mut() {
            tracked.idle_rounds += 1;
            if tracked.idle_rounds == 1 {
                continue;
            }
            // kill(pid, 0) is one cheap syscall per idle process; the /proc read that also
            // tells a reused pid apart runs only when the process is about to be forgotten.
            // SAFETY: signal 0 only checks that the process exists.
            let exists = unsafe { libc::kill(pid as i32, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            let forget = if !exists {
                true
            } else if tracked.idle_rounds % 10 != 0 {
                false
            } else {
                tracked.idle_rounds > IDLE_ROUNDS
                    || !is_same_process_alive(pid, tracked.info.start_time)
            };
            if forget {
                gone.push(pid);
            }
        }
        for pid in &gone {
            let Some(tracked) = self.processes.remove(pid) else {
                continue;
            };
            self.release_files(&tracked.info);
            self.perf_maps.forget(*pid);
            let evict = evict::Evict::Process(evict::Process::new(Pid::from(*pid)));
            let _ = self.symbolizer.evict(&evict);
            // Files blazesym's process source reached through map_files are cached per
            // process: release them.
            for vma in &tracked.info.vmas {
                let path = format!("/proc/{pid}/map_files/{:x}-{:x}", vma.start, vma.end);
                let _ = self
                    .symbolizer
                    .evict(&evict::Evict::Elf(evict::Elf::new(path)));
            }
            self.stats.processes_evicted += 1;
        }
        gone
    }
}

fn file_id(vma: &Vma) -> Option<FileId> {
    (vma.inode != 0).then_some((vma.dev, vma.inode))
}

/// Where `addr` is in the file `vma` maps.
fn file_offset(vma: &Vma, addr: u64) -> u64 {
    addr - vma.start + vma.file_offset
}

#[cfg(test)]
mod tests;
