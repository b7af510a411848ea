//! The kernel side of the unwind tables: the rows array, the page index and the per-process
//! mapping lists the BPF unwinder reads, written in batches (one call per chunk of rows, not
//! one per row: per-element updates dominated a peer's overhead).

use std::io;

use aya::{
    maps::{Map, ProgramArray},
    programs::{PerfEvent, ProgramFd},
    Ebpf,
};
use profiler_common::{
    UnwindMappings, UnwindPage, UnwindRow, UNWIND_EPOCH_MAP, UNWIND_MAPPINGS_MAP, UNWIND_PAGES_MAP,
    UNWIND_PROGRAMS_MAP, UNWIND_PROGRAM_NAME, UNWIND_REFRESH_MAP, UNWIND_ROWS_MAP,
    UNWIND_ROW_CACHE_MAP,
};

use super::{batch::BatchMap, error::classify_program, SamplerError};

/// Sizes of the unwind maps (each from its flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindSizes {
    /// Rows of every file's table together (`--unwind-rows`).
    pub rows: u32,
    /// Page slots, one per 64 KiB of each file's code, of every file together
    /// (`--unwind-pages`).
    pub pages: u32,
    /// Processes with a mapping list (`--unwind-processes`).
    pub processes: u32,
    /// Entries of each CPU's row cache, a power of two (`--unwind-cache`).
    pub cache: u32,
}

/// Writers of the unwind maps; owned by whoever builds the tables (a thread of its own).
pub struct UnwindMaps {
    rows: BatchMap,
    pages: BatchMap,
    mappings: BatchMap,
    epoch: BatchMap,
    pub sizes: UnwindSizes,
}

impl UnwindMaps {
    /// Writes `rows` at `first..first + rows.len()` of the rows array.
    pub fn write_rows(&self, first: u32, rows: &[UnwindRow]) -> io::Result<()> {
        write_array(&self.rows, first, rows)
    }

    /// Writes `pages` at `first..first + pages.len()` of the page index.
    pub fn write_pages(&self, first: u32, pages: &[UnwindPage]) -> io::Result<()> {
        write_array(&self.pages, first, pages)
    }

    /// Empties `count` page slots from `first` (a file's table freed): the unwinder finds no
    /// rows there, whatever the rows array holds later.
    pub fn clear_pages(&self, first: u32, count: u32) -> io::Result<()> {
        let empty = vec![UnwindPage::default(); count.min(CHUNK as u32) as usize];
        let mut at = first;
        let end = first.saturating_add(count);
        while at < end {
            let n = (end - at).min(CHUNK as u32) as usize;
            write_array(&self.pages, at, &empty[..n])?;
            at += n as u32;
        }
        Ok(())
    }

    /// Sets the tables' epoch: rows the CPUs cached under another epoch are not used again.
    pub fn set_epoch(&self, epoch: u32) -> io::Result<()> {
        write_array(&self.epoch, 0, &[epoch])
    }

    /// Sets the mapping list of a process: from now on its samples are unwound with tables.
    pub fn set_mappings(&self, tgid: u32, mappings: &UnwindMappings) -> io::Result<()> {
        self.mappings
            .update(std::slice::from_ref(&tgid), std::slice::from_ref(mappings))
    }

    /// Forgets a process's mapping list (it exited, or its tables were freed).
    pub fn remove_mappings(&self, tgid: u32) -> io::Result<()> {
        self.mappings.delete(std::slice::from_ref(&tgid))
    }
}

/// Elements per batch update: a million-row table needs no 4 MiB key array.
const CHUNK: usize = 16384;

/// Writes `values` at `first..first + values.len()` of an array map, a batch at a time.
fn write_array<V: aya::Pod>(map: &BatchMap, first: u32, values: &[V]) -> io::Result<()> {
    for (i, values) in values.chunks(CHUNK).enumerate() {
        let start = first + (i * CHUNK) as u32;
        let keys: Vec<u32> = (start..start + values.len() as u32).collect();
        map.update(&keys, values)?;
    }
    Ok(())
}

/// The map names with their sizes and flags, for the loader.
pub fn map_sizes(sizes: &UnwindSizes) -> [(&'static str, &'static str, u32); 5] {
    [
        (UNWIND_ROW_CACHE_MAP, "--unwind-cache", sizes.cache),
        (UNWIND_ROWS_MAP, "--unwind-rows", sizes.rows),
        (UNWIND_PAGES_MAP, "--unwind-pages", sizes.pages),
        (UNWIND_MAPPINGS_MAP, "--unwind-processes", sizes.processes),
        (UNWIND_REFRESH_MAP, "--unwind-processes", sizes.processes),
    ]
}

/// Loads the unwinder program, puts it in the program array the sampler tail-calls, and
/// takes the maps' writers out of `ebpf`.
pub fn prepare(ebpf: &mut Ebpf, sizes: UnwindSizes) -> Result<UnwindMaps, SamplerError> {
    let program: &mut PerfEvent = ebpf
        .program_mut(UNWIND_PROGRAM_NAME)
        .ok_or_else(|| {
            SamplerError::Load(format!(
                "program {UNWIND_PROGRAM_NAME} missing from the object"
            ))
        })?
        .try_into()
        .map_err(|err| SamplerError::Load(format!("{err}")))?;
    // A refusal carries the verifier's log; `--unwind fp` loads without this program.
    program
        .load()
        .map_err(|err| match classify_program(&err, 0) {
            SamplerError::Rejected { errno, log } => SamplerError::UnwinderRejected { errno, log },
            other => other,
        })?;
    let fd = program
        .fd()
        .map_err(|err| SamplerError::Load(format!("{err}")))?
        .try_clone()
        .map_err(|err| SamplerError::Load(format!("{err}")))?;
    install(ebpf, UNWIND_PROGRAMS_MAP, &fd)?;
    Ok(UnwindMaps {
        rows: writer(ebpf, UNWIND_ROWS_MAP)?,
        pages: writer(ebpf, UNWIND_PAGES_MAP)?,
        mappings: writer(ebpf, UNWIND_MAPPINGS_MAP)?,
        epoch: writer(ebpf, UNWIND_EPOCH_MAP)?,
        sizes,
    })
}

/// Puts a loaded unwinder program into program array `map`, where its samplers tail-call it.
pub(super) fn install(
    ebpf: &mut Ebpf,
    map: &'static str,
    fd: &ProgramFd,
) -> Result<(), SamplerError> {
    let array = ebpf
        .map_mut(map)
        .ok_or_else(|| SamplerError::Load(format!("map {map} missing from the object")))?;
    let map_err = |source| SamplerError::Map { map, source };
    ProgramArray::try_from(array)
        .map_err(map_err)?
        .set(0, fd, 0)
        .map_err(map_err)
}

fn writer(ebpf: &Ebpf, name: &'static str) -> Result<BatchMap, SamplerError> {
    let map: &Map = ebpf
        .map(name)
        .ok_or_else(|| SamplerError::Load(format!("map {name} missing from the BPF object")))?;
    BatchMap::of(map)
        .ok_or_else(|| SamplerError::Load(format!("map {name} has an unexpected kind")))
}
