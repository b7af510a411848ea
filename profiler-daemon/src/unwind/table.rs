//! The ELF layer: finds the CFI sections and the executable segments of a file, and hands the
//! section bytes to [`cfi`](super::cfi) and [`paging`](super::paging).

use object::{
    elf,
    read::elf::{ElfFile64, ProgramHeader},
    CompressionFormat, LittleEndian, Object, ObjectSection,
};
use profiler_common::UnwindRow;

use super::{
    cfi::{self, Cfi},
    paging,
};

/// Bounds of one file's table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rows of one file's table (page copies included) beyond which it is refused.
    pub max_rows: usize,
}

/// Where a table's CFI came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CfiSource {
    /// `.eh_frame`, its FDEs listed by `.eh_frame_hdr`'s sorted table.
    #[default]
    EhFrameHdr,
    /// `.eh_frame`, its entries read in order (no usable `.eh_frame_hdr`).
    EhFrame,
    /// The file's own `.debug_frame`.
    DebugFrame,
    /// The `.debug_frame` of the separate debug file.
    DebugFileDebugFrame,
}

impl CfiSource {
    /// Stable snake_case name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            CfiSource::EhFrameHdr => "eh_frame_hdr",
            CfiSource::EhFrame => "eh_frame",
            CfiSource::DebugFrame => "debug_frame",
            CfiSource::DebugFileDebugFrame => "debug_file_debug_frame",
        }
    }

    const fn section(self) -> &'static str {
        match self {
            CfiSource::EhFrameHdr | CfiSource::EhFrame => ".eh_frame",
            CfiSource::DebugFrame | CfiSource::DebugFileDebugFrame => ".debug_frame",
        }
    }
}

/// What building one table found. The CFI row counts are of the rows the FDEs' programs
/// define, before gaps are marked and equal neighbours merged; the byte counts weigh them by
/// the code they cover, which is what a sample lands on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub source: CfiSource,
    /// FDEs evaluated.
    pub fdes: u64,
    /// FDEs (or the rest of a section) skipped because they did not parse or evaluate.
    pub fdes_malformed: u64,
    pub cfi_rows: u64,
    /// CFI rows whose CFA (or return address) rule the BPF side cannot apply.
    pub unsupported_cfa: u64,
    /// CFI rows with an applicable CFA but a caller's rbp that cannot be recovered.
    pub unsupported_rbp: u64,
    /// CFI rows that end the walk (outermost frame, signal trampoline).
    pub end_rows: u64,
    /// Bytes of code the CFI rows cover, and those under an unsupported CFA rule.
    pub code_bytes: u64,
    pub unsupported_bytes: u64,
    /// Rows and pages of the table.
    pub rows: u64,
    pub pages: u64,
}

/// An executable `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub file_offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

/// One file's unwind table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileTable {
    /// Every page's rows, page after page, each page's sorted by `pc_low` from 0.
    pub rows: Vec<UnwindRow>,
    /// (page = file address >> 16, index of its first row in `rows`, its row count), sorted by
    /// page. A page in a gap between functions has no entry.
    pub pages: Vec<(u32, u32, u32)>,
    pub segments: Vec<Segment>,
    pub stats: TableStats,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not an x86_64 ELF file (64-bit little-endian, EM_X86_64)")]
    NotX86_64,
    #[error("no call frame information (no .eh_frame nor .debug_frame with an FDE)")]
    NoCfi,
    #[error("malformed {section}: {reason}")]
    Malformed {
        section: &'static str,
        reason: String,
    },
    #[error("{section} is compressed, which is not supported")]
    Compressed { section: &'static str },
    #[error("unwind table of more than {max} rows ({rows} so far)")]
    TooManyRows { rows: usize, max: usize },
}

/// Builds the unwind table of an x86_64 ELF file from its CFI (see the module doc for which
/// section is used). `debug_file` is consulted only when the file itself has no CFI.
pub fn build(
    elf: &[u8],
    debug_file: Option<&[u8]>,
    limits: &Limits,
) -> Result<FileTable, TableError> {
    let file = parse(elf)?;
    let segments = segments(&file);
    let mut table = file_cfi(&file, limits)?;
    if table.is_none() {
        if let Some(debug) = debug_file {
            let debug = parse(debug)?;
            table = match section(&debug, ".debug_frame")? {
                Some((data, _)) => nonempty(from_cfi(&Cfi::debug_frame(data), limits))?,
                None => None,
            };
            if let Some(table) = &mut table {
                table.stats.source = CfiSource::DebugFileDebugFrame;
            }
        }
    }
    let mut table = table.ok_or(TableError::NoCfi)?;
    table.segments = segments;
    Ok(table)
}

/// The table from the file's own `.eh_frame`, else its `.debug_frame`; `None` if it has no FDE
/// in either.
fn file_cfi(
    file: &ElfFile64<'_, LittleEndian>,
    limits: &Limits,
) -> Result<Option<FileTable>, TableError> {
    if let Some((data, address)) = section(file, ".eh_frame")? {
        let cfi = Cfi::EhFrame {
            data,
            address,
            hdr: section(file, ".eh_frame_hdr")?,
            text: file.section_by_name(".text").map(|s| s.address()),
            got: file.section_by_name(".got").map(|s| s.address()),
        };
        if let Some(table) = nonempty(from_cfi(&cfi, limits))? {
            return Ok(Some(table));
        }
    }
    match section(file, ".debug_frame")? {
        Some((data, _)) => nonempty(from_cfi(&Cfi::debug_frame(data), limits)),
        None => Ok(None),
    }
}

fn nonempty(table: Result<FileTable, TableError>) -> Result<Option<FileTable>, TableError> {
    match table {
        Ok(table) => Ok(Some(table)),
        Err(TableError::NoCfi) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The table of one CFI section (no ELF needed: the tests feed synthetic sections here).
pub(super) fn from_cfi(cfi: &Cfi<'_>, limits: &Limits) -> Result<FileTable, TableError> {
    let mut stats = TableStats::default();
    let spans = cfi::spans(cfi, &mut stats)?;
    if stats.fdes == 0 && stats.fdes_malformed > 0 {
        return Err(TableError::Malformed {
            section: stats.source.section(),
            reason: format!("none of its {} FDEs evaluates", stats.fdes_malformed),
        });
    }
    if stats.fdes == 0 {
        return Err(TableError::NoCfi);
    }
    let points = paging::points(spans);
    let (rows, pages) = paging::pages(&points, limits.max_rows)?;
    stats.rows = rows.len() as u64;
    stats.pages = pages.len() as u64;
    Ok(FileTable {
        rows,
        pages,
        segments: Vec::new(),
        stats,
    })
}

fn parse(data: &[u8]) -> Result<ElfFile64<'_, LittleEndian>, TableError> {
    if data.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(TableError::NotElf);
    }
    // e_ident[EI_CLASS] and e_ident[EI_DATA].
    if data.get(4) != Some(&elf::ELFCLASS64) || data.get(5) != Some(&elf::ELFDATA2LSB) {
        return Err(TableError::NotX86_64);
    }
    let file = ElfFile64::<LittleEndian>::parse(data).map_err(|err| TableError::Malformed {
        section: "ELF headers",
        reason: err.to_string(),
    })?;
    if file.elf_header().e_machine.get(LittleEndian) != elf::EM_X86_64 {
        return Err(TableError::NotX86_64);
    }
    Ok(file)
}

/// A section's bytes and address; `None` if absent or empty (`SHT_NOBITS` in a debug file).
fn section<'data>(
    file: &ElfFile64<'data, LittleEndian>,
    name: &'static str,
) -> Result<Option<(&'data [u8], u64)>, TableError> {
    let Some(section) = file.section_by_name(name) else {
        return Ok(None);
    };
    let malformed = |err: object::Error| TableError::Malformed {
        section: name,
        reason: err.to_string(),
    };
    if section.compressed_file_range().map_err(malformed)?.format != CompressionFormat::None {
        return Err(TableError::Compressed { section: name });
    }
    let data = section.data().map_err(malformed)?;
    Ok((!data.is_empty()).then_some((data, section.address())))
}

fn segments(file: &ElfFile64<'_, LittleEndian>) -> Vec<Segment> {
    let endian = LittleEndian;
    file.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD && ph.p_flags(endian) & elf::PF_X != 0)
        .map(|ph| Segment {
            file_offset: ph.p_offset(endian),
            vaddr: ph.p_vaddr(endian),
            file_size: ph.p_filesz(endian),
            mem_size: ph.p_memsz(endian),
        })
        .collect()
}

/// Page size mappings are aligned to (x86_64).
const PAGE_SIZE: u64 = 4096;

/// The bias of a mapping of the file at `map_start` from file offset `map_file_offset` (the
/// first and third fields of its `/proc/PID/maps` line): file address = pc - bias. `None` if
/// no executable segment holds that offset. The mapping's offset may be the segment's rounded
/// down to a page; wrapping arithmetic makes the same formula hold then.
pub fn bias(segments: &[Segment], map_start: u64, map_file_offset: u64) -> Option<u64> {
    let end = |s: &Segment| s.file_offset.saturating_add(s.file_size.max(1));
    let holds = |s: &&Segment| (s.file_offset..end(s)).contains(&map_file_offset);
    let holds_page =
        |s: &&Segment| (s.file_offset & !(PAGE_SIZE - 1)..end(s)).contains(&map_file_offset);
    let segment = segments
        .iter()
        .find(holds)
        .or_else(|| segments.iter().find(holds_page))?;
    let vaddr = segment
        .vaddr
        .wrapping_add(map_file_offset.wrapping_sub(segment.file_offset));
    Some(map_start.wrapping_sub(vaddr))
}
