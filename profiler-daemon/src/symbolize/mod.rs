//! Turns instruction pointers into named frames with blazesym. In: a pid and user addresses,
//! or kernel addresses. Out: [`Location`]s (frame kind, mapping, source lines with inlined
//! callees first), from bounded name caches shared across drains.
//!
//! One long-lived [`Symbols`] owns the `Symbolizer` (which is neither `Send` nor `Sync`) on the
//! pipeline thread. A process is cached on its first sample, so that its memory map survives
//! its exit until the next drain; it is evicted once it is gone and no longer sampled.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use blazesym::{
    symbolize::{
        cache, evict,
        source::{Process, Source},
        CodeInfo, Input, Reason, Symbolized, Symbolizer,
    },
    Pid,
};

use crate::process::{is_running, is_same_process_alive, ProcessInfo, Vma};

mod debuginfo;
mod frame;
mod kallsyms;

pub use frame::{FrameKind, Line, Location};

use kallsyms::Kallsyms;

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
}

/// Eviction rounds (drains) after which a live process that was not sampled is forgotten; the
/// kernel announces it again on its next sample.
const IDLE_ROUNDS: u32 = 300;

struct Tracked {
    info: ProcessInfo,
    /// Whether the process shares the daemon's mount namespace: then its files are opened by
    /// path, and their parsed symbols are shared with every other process mapping them.
    same_mount_ns: bool,
    /// Eviction rounds since a drain last referenced the process (0: referenced in this one).
    idle_rounds: u32,
    /// Addresses found outside every mapping even after reading the memory map again (a frame
    /// pointer chain that ended in garbage), so that they do not make every drain re-read it.
    unmapped: HashSet<u64>,
}

/// A file mapped by tracked processes, whose parsed symbols blazesym may hold.
struct HeldFile {
    /// The path blazesym opened it by.
    path: String,
    /// Tracked processes mapping it.
    processes: u32,
    /// When it was first held or last released by [`Symbols::expire_files`].
    since: Instant,
    /// Whether `file_ttl` applies: the file has DWARF, whose parsed state grows with every
    /// part of the program sampled. A symbol table alone is parsed whole, once.
    expires: bool,
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
    build_ids: HashMap<String, Option<String>>,
    /// Tracked processes mapping each file. blazesym keeps every file it read mapped (and its
    /// parsed symbols) until told otherwise; a file no tracked process maps any more is
    /// evicted, so that RSS does not grow with every binary that ever ran on the host.
    files: HashMap<FileId, HeldFile>,
    /// Files owed a release (see [`Symbols::expire_files`]), and when that was last worked out.
    expire_credit: f64,
    expire_checked: Instant,
    own_mount_ns: Option<PathBuf>,
    pub stats: SymbolsStats,
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
            build_ids: HashMap::new(),
            files: HashMap::new(),
            expire_credit: 0.0,
            expire_checked: Instant::now(),
            own_mount_ns: mount_ns(std::process::id()),
            stats: SymbolsStats::default(),
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
        for vma in &mut info.vmas {
            let build_id = self.build_id(pid, &vma.path);
            Arc::make_mut(vma).build_id = build_id;
        }
        let mut process = cache::Process::new(Pid::from(pid));
        process.cache_vmas = true;
        process.cache_perf_map = false;
        let request = cache::Cache::from(process);
        if let Err(err) = self.symbolizer.cache(&request) {
            tracing::debug!(pid, %err, "caching process memory map failed");
        }
        self.hold_files(&info);
        let tracked = Tracked {
            info,
            same_mount_ns: mount_ns(pid).is_some_and(|ns| Some(ns) == self.own_mount_ns),
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

    /// Distinct files of a process's memory map (blazesym opens them by the mapping's path).
    fn mapped_files(info: &ProcessInfo) -> HashMap<FileId, &Vma> {
        info.vmas
            .iter()
            .filter(|v| v.path.starts_with('/'))
            .filter_map(|v| Some((file_id(v)?, v.as_ref())))
            .collect()
    }

    fn hold_files(&mut self, info: &ProcessInfo) {
        let root = PathBuf::from(format!("/proc/{}/root", info.pid));
        for (id, vma) in Self::mapped_files(info) {
            self.files
                .entry(id)
                .or_insert_with(|| HeldFile {
                    path: vma.path.clone(),
                    processes: 0,
                    since: Instant::now(),
                    expires: debuginfo::has_debug_info(&root, &vma.path, vma.build_id.as_deref()),
                })
                .processes += 1;
        }
    }

    fn release_files(&mut self, info: &ProcessInfo) {
        for id in Self::mapped_files(info).into_keys() {
            let Some(file) = self.files.get_mut(&id) else {
                continue;
            };
            file.processes -= 1;
            if file.processes > 0 {
                continue;
            }
            let Some(file) = self.files.remove(&id) else {
                continue;
            };
            let _ = self
                .symbolizer
                .evict(&evict::Evict::Elf(evict::Elf::new(file.path)));
            if let Some(names) = self.names.remove(&id) {
                self.user_symbols -= names.len();
            }
            self.stats.files_evicted += 1;
        }
    }

    /// Build id of a mapped file, read once per path (bounded cache).
    fn build_id(&mut self, pid: u32, path: &str) -> Option<String> {
        if !path.starts_with('/') {
            return None;
        }
        if let Some(id) = self.build_ids.get(path) {
            return id.clone();
        }
        if self.build_ids.len() >= self.config.max_processes {
            self.build_ids.clear();
        }
        // Through /proc/PID/root so that a containerized process's own file is read.
        let id = blazesym::helper::read_elf_build_id(&format!("/proc/{pid}/root{path}"))
            .ok()
            .flatten()
            .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        self.build_ids.insert(path.to_string(), id.clone());
        id
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
            let cache_key = vma
                .as_deref()
                .filter(|v| v.path.starts_with('/'))
                .and_then(|v| Some((file_id(v)?, file_offset(v, addr))));
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

    fn symbolize_process(&mut self, pid: u32, addrs: &[u64]) -> Vec<Result<Vec<Line>, Reason>> {
        let alive = is_running(pid);
        let same_ns = self.processes.get(&pid).is_some_and(|t| t.same_mount_ns);
        let mut source = Process::new(Pid::from(pid));
        // map_files reaches binaries inside other mount namespaces (containers), but only
        // while the process lives, and blazesym then caches each file once per process. In
        // our own namespace, and after an exit, files are opened by path and shared.
        source.map_files = alive && !same_ns;
        source.perf_map = alive;
        let source = Source::Process(source);
        match self.symbolizer.symbolize(&source, Input::AbsAddr(addrs)) {
            Ok(results) => results.into_iter().map(symbolized_lines).collect(),
            Err(err) => {
                tracing::debug!(pid, %err, "symbolizing process failed");
                addrs.iter().map(|_| Err(Reason::Unsupported)).collect()
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
        let held = self.files.values().filter(|f| f.expires).count();
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
            .iter()
            .filter(|(_, f)| f.expires)
            .map(|(id, f)| (f.since, *id))
            .collect();
        if due < oldest.len() {
            oldest.select_nth_unstable(due);
            oldest.truncate(due);
        }
        for (_, id) in oldest {
            let Some(file) = self.files.get_mut(&id) else {
                continue;
            };
            file.since = now;
            let _ = self
                .symbolizer
                .evict(&evict::Evict::Elf(evict::Elf::new(file.path.as_str())));
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
            let evict = evict::Evict::Process(evict::Process::new(Pid::from(*pid)));
            let _ = self.symbolizer.evict(&evict);
            if !tracked.same_mount_ns {
                // Files reached through map_files are cached per process: release them.
                for vma in &tracked.info.vmas {
                    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", vma.start, vma.end);
                    let _ = self
                        .symbolizer
                        .evict(&evict::Evict::Elf(evict::Elf::new(path)));
                }
            }
            self.stats.processes_evicted += 1;
        }
        gone
    }

    /// The counters, with the caches' current entry counts.
    pub fn stats(&self) -> SymbolsStats {
        SymbolsStats {
            kernel_cache_entries: self.kernel.len() as u64,
            user_cache_entries: self.user_symbols as u64,
            files_cached: self.files.len() as u64,
            ..self.stats
        }
    }

    /// Processes currently tracked.
    pub fn tracked(&self) -> usize {
        self.processes.len()
    }
}

fn load_kallsyms() -> Kallsyms {
    let table = Kallsyms::load().unwrap_or_else(|err| {
        tracing::warn!("cannot read /proc/kallsyms ({err}): kernel frames stay unnamed");
        Kallsyms::default()
    });
    if table.len() == 0 {
        tracing::warn!(
            "/proc/kallsyms shows no addresses: kernel frames stay unnamed; run profilerd as root or with CAP_SYSLOG, or set kernel.kptr_restrict to 0"
        );
    }
    table
}

/// A file in any mount namespace: its device and inode.
type FileId = (u64, u64);

fn file_id(vma: &Vma) -> Option<FileId> {
    (vma.inode != 0).then_some((vma.dev, vma.inode))
}

/// Where `addr` is in the file `vma` maps.
fn file_offset(vma: &Vma, addr: u64) -> u64 {
    addr - vma.start + vma.file_offset
}

/// The mount namespace of a process (`/proc/PID/ns/mnt` link target).
fn mount_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

fn code_file(info: &CodeInfo<'_>) -> Arc<str> {
    info.to_path().to_string_lossy().into()
}

/// pprof lines of one symbolization result, innermost inlined function first.
fn symbolized_lines(result: Symbolized<'_>) -> Result<Vec<Line>, Reason> {
    let sym = match result {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(reason) => return Err(reason),
    };
    let mut lines = Vec::with_capacity(1 + sym.inlined.len());
    for inlined in sym.inlined.iter().rev() {
        lines.push(Line {
            function: inlined.name.as_ref().into(),
            file: inlined.code_info.as_ref().map(code_file),
            line: inlined.code_info.as_ref().and_then(|c| c.line).unwrap_or(0),
        });
    }
    lines.push(Line {
        function: sym.name.as_ref().into(),
        file: sym.code_info.as_deref().map(code_file),
        line: sym.code_info.as_ref().and_then(|c| c.line).unwrap_or(0),
    });
    Ok(lines)
}

#[cfg(test)]
mod tests;
