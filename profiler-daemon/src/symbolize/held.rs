//! What other stages read of the symbolizer: the files a tracked process maps, as the
//! symbolizer opened and checked them (the unwind tables read the same files: one open, one set
//! of checks), which processes were (re)tracked, and the counters.

use std::{fs::File, path::PathBuf, sync::Arc};

use super::{file_id, files::open_untrusted, Symbols, SymbolsStats};
use crate::process::Vma;

/// One executable file mapping of a process and a descriptor of the file it maps.
pub struct MappedFile {
    pub vma: Arc<Vma>,
    /// A duplicate of the symbolizer's validated descriptor (the inode the process mapped).
    pub file: File,
    /// The separate debug file the symbolizer reads for it, if any.
    debug_file: Option<PathBuf>,
}

impl MappedFile {
    /// The separate debug file, opened as the symbolizer opens untrusted files (regular files
    /// only, never blocking); None without one or when it cannot be opened so.
    pub fn open_debug_file(&self) -> Option<File> {
        open_untrusted(self.debug_file.as_deref()?).ok()
    }
}

impl Symbols {
    /// The executable file mappings of `pid` whose files the symbolizer holds (opened as
    /// untrusted and checked); refused files are left out.
    pub fn files_of(&self, pid: u32) -> Vec<MappedFile> {
        let Some(tracked) = self.processes.get(&pid) else {
            return Vec::new();
        };
        tracked
            .info
            .vmas
            .iter()
            .filter_map(|vma| {
                let held = self.files.held.get(&file_id(vma)?)?;
                let file = held.descriptor()?.try_clone().ok()?;
                Some(MappedFile {
                    vma: Arc::clone(vma),
                    file,
                    debug_file: held.facts.debug_file.clone(),
                })
            })
            .collect()
    }

    /// Processes whose memory map was read (first seen, or read again after it changed)
    /// since the last call, oldest first.
    pub fn take_retracked(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.retracked)
    }

    /// The counters, with the caches' current entry counts.
    pub fn stats(&self) -> SymbolsStats {
        SymbolsStats {
            kernel_cache_entries: self.kernel.len() as u64,
            user_cache_entries: self.user_symbols as u64,
            files_cached: self.files.held.len() as u64,
            files_refused: self.files.refused,
            symbol_bytes: self.files.parsed_bytes + self.perf_maps.bytes,
            ..self.stats
        }
    }

    /// Processes currently tracked.
    pub fn tracked(&self) -> usize {
        self.processes.len()
    }
}
