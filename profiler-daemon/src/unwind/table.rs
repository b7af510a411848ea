//! The ELF layer: finds the CFI sections and the executable segments of a file, and hands the
//! section bytes to [`cfi`](super::cfi) and [`paging`](super::paging).

use object::{
    elf,
    read::elf::{ElfFile64, ProgramHeader},
    CompressionFormat, LittleEndian, Object, ObjectSection, ReadRef,
};

use super::{
    cfi::{self, Cfi, Span},
    paging::{self, PageEntry, Pager, RowSink, Unpaged},
};

/// Bounds of one file's table.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rows of one file's table (page copies included) beyond which it is refused.
    pub max_rows: usize,
    /// Bytes of one CFI section (`.eh_frame`, `.eh_frame_hdr`, `.debug_frame`) read at most.
    pub max_section_bytes: u64,
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
    /// The `.debug_frame` that filled code `source` does not describe; its counts are added.
    pub also: Option<CfiSource>,
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

impl TableStats {
    /// Adds the counts of a second section's spans (see [`TableStats::also`]).
    fn merge(&mut self, other: &TableStats) {
        self.also = Some(other.source);
        self.fdes += other.fdes;
        self.fdes_malformed += other.fdes_malformed;
        self.cfi_rows += other.cfi_rows;
        self.unsupported_cfa += other.unsupported_cfa;
        self.unsupported_rbp += other.unsupported_rbp;
        self.end_rows += other.end_rows;
        self.code_bytes = self.code_bytes.saturating_add(other.code_bytes);
        self.unsupported_bytes = self
            .unsupported_bytes
            .saturating_add(other.unsupported_bytes);
    }
}

/// An executable `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub file_offset: u64,
    pub vaddr: u64,
    pub file_size: u64,
    pub mem_size: u64,
}

/// One file's unwind table; its rows went to a [`RowSink`], each page's sorted by `pc_low`
/// from 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileTable {
    /// (page = file address >> 16, index of its first row in the sink, its row count), sorted
    /// by page. A page in a gap between functions has no entry.
    pub pages: Vec<PageEntry>,
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
    #[error("{section} of {size} bytes is over the {max}-byte bound")]
    TooLarge {
        section: &'static str,
        size: u64,
        max: u64,
    },
    #[error("unwind table of more than {max} rows ({rows} so far)")]
    TooManyRows { rows: usize, max: usize },
    /// The [`RowSink`] refused the rows (it knows why).
    #[error("the table's rows could not be stored")]
    NotStored,
}

/// Builds the unwind table of an x86_64 ELF file from its CFI: `.eh_frame`, and for the code
/// it does not describe, the file's own `.debug_frame`, else that of `debug_file` (a binary
/// built with `-fno-asynchronous-unwind-tables` keeps only its start files' FDEs in
/// `.eh_frame`). The files are read through `R`: a slice in tests, a read cache of the few
/// ranges parsed (headers and CFI sections) in the loader. The rows go to `sink`.
pub fn build<'a, 'd, R: ReadRef<'a>, D: ReadRef<'d>>(
    elf: R,
    debug_file: Option<D>,
    limits: &Limits,
    sink: &mut impl RowSink,
) -> Result<FileTable, TableError> {
    let file = parse(elf)?;
    let segments = segments(&file);
    let eh = match section(&file, ".eh_frame", limits)? {
        Some((data, address)) => Some(Cfi::EhFrame {
            data,
            address,
            hdr: section(&file, ".eh_frame_hdr", limits)?,
            text: file.section_by_name(".text").map(|s| s.address()),
            got: file.section_by_name(".got").map(|s| s.address()),
        }),
        None => None,
    };
    let mut table = match (eh, debug_frame(&file, debug_file, limits)) {
        (eh, Ok(Some(debug))) => merged(eh.as_ref(), debug, limits, sink)?,
        // Most files: the .eh_frame alone, paged as its FDEs are evaluated. A .debug_frame
        // that cannot be read (compressed, as Go writes it) leaves the .eh_frame's table.
        (Some(eh), debug) => match section_table(&eh, limits, sink) {
            Err(TableError::NoCfi) => return Err(debug.err().unwrap_or(TableError::NoCfi)),
            table => table?,
        },
        (None, Ok(None)) => return Err(TableError::NoCfi),
        (None, Err(err)) => return Err(err),
    };
    table.segments = segments;
    Ok(table)
}

/// The `.debug_frame` that may fill what `.eh_frame` does not describe: the file's own, else
/// the debug file's (none if neither has one).
fn debug_frame<'c, 'a: 'c, 'd: 'c, R: ReadRef<'a>, D: ReadRef<'d>>(
    file: &ElfFile64<'a, LittleEndian, R>,
    debug_file: Option<D>,
    limits: &Limits,
) -> Result<Option<(Cfi<'c>, CfiSource)>, TableError> {
    if let Some((data, _)) = section(file, ".debug_frame", limits)? {
        return Ok(Some((Cfi::debug_frame(data), CfiSource::DebugFrame)));
    }
    let Some(debug) = debug_file else {
        return Ok(None);
    };
    let debug = parse(debug)?;
    Ok(section(&debug, ".debug_frame", limits)?
        .map(|(data, _)| (Cfi::debug_frame(data), CfiSource::DebugFileDebugFrame)))
}

/// The table of `.eh_frame` (if any) and of the `.debug_frame` spans in no FDE range of it.
/// Rare (Debian's binaries and debug files have no `.debug_frame`): both sections' spans are
/// held and sorted.
fn merged(
    eh: Option<&Cfi<'_>>,
    (debug, source): (Cfi<'_>, CfiSource),
    limits: &Limits,
    sink: &mut impl RowSink,
) -> Result<FileTable, TableError> {
    let mut stats = TableStats::default();
    let eh = match eh {
        Some(eh) => none_if_no_cfi(section_spans(eh, &mut stats))?,
        None => Vec::new(),
    };
    let mut debug_stats = TableStats::default();
    let debug = match source {
        CfiSource::DebugFileDebugFrame => none_if_no_cfi(section_spans(&debug, &mut debug_stats))
            .inspect(|_| {
                debug_stats.source = source;
            }),
        _ => section_spans(&debug, &mut debug_stats),
    };
    let spans = match debug {
        Err(err) if eh.is_empty() => return Err(err),
        // A broken .debug_frame beside a usable .eh_frame leaves the .eh_frame's table.
        Err(_) => eh,
        Ok(debug) if eh.is_empty() => {
            stats = debug_stats;
            debug
        }
        Ok(debug) => {
            let filled = not_covered(&eh, debug);
            if !filled.is_empty() {
                stats.merge(&debug_stats);
            }
            let mut spans = eh;
            spans.extend(filled);
            spans
        }
    };
    if spans.is_empty() {
        return Err(TableError::NoCfi);
    }
    table_of_spans(spans, stats, limits, sink)
}

fn none_if_no_cfi(spans: Result<Vec<Span>, TableError>) -> Result<Vec<Span>, TableError> {
    match spans {
        Err(TableError::NoCfi) => Ok(Vec::new()),
        spans => spans,
    }
}

/// The spans of `extra` in no FDE range of `spans`: a function both sections describe keeps
/// the first's rows only.
fn not_covered(spans: &[Span], mut extra: Vec<Span>) -> Vec<Span> {
    if spans.is_empty() || extra.is_empty() {
        return extra;
    }
    let mut covered: Vec<(u64, u64)> = spans.iter().map(|s| (s.start, s.end)).collect();
    covered.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(covered.len());
    for (start, end) in covered {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    extra.retain(|span| {
        // The first covered range ending after the span starts is the only one it can meet.
        let i = merged.partition_point(|&(_, end)| end <= span.start);
        merged.get(i).is_none_or(|&(start, _)| start >= span.end)
    });
    extra
}

/// Evaluates one CFI section, handing its spans to `out`; [`TableError::NoCfi`] if it has
/// no FDE.
fn each_span(
    cfi: &Cfi<'_>,
    stats: &mut TableStats,
    out: &mut impl FnMut(&[Span]),
) -> Result<(), TableError> {
    cfi::spans(cfi, stats, out)?;
    if stats.fdes == 0 && stats.fdes_malformed > 0 {
        return Err(TableError::Malformed {
            section: stats.source.section(),
            reason: format!("none of its {} FDEs evaluates", stats.fdes_malformed),
        });
    }
    if stats.fdes == 0 {
        return Err(TableError::NoCfi);
    }
    Ok(())
}

/// The spans of one CFI section; [`TableError::NoCfi`] if it has no FDE.
fn section_spans(cfi: &Cfi<'_>, stats: &mut TableStats) -> Result<Vec<Span>, TableError> {
    let mut spans = Vec::new();
    each_span(cfi, stats, &mut |fde| spans.extend_from_slice(fde))?;
    Ok(spans)
}

/// The table of one CFI section. Spans that come in address order (`.eh_frame_hdr` lists the
/// FDEs sorted) are paged as they are evaluated, with no list of its spans held; others (a `.debug_frame`, an `.eh_frame` read in section order that turns out
/// unsorted) are held and sorted first. [`TableError::NoCfi`] if it has no span.
pub(super) fn section_table(
    cfi: &Cfi<'_>,
    limits: &Limits,
    sink: &mut impl RowSink,
) -> Result<FileTable, TableError> {
    let mut stats = TableStats::default();
    if let Cfi::EhFrame { .. } = cfi {
        let mut pager = Pager::new(sink, limits.max_rows);
        each_span(cfi, &mut stats, &mut |fde| {
            fde.iter().for_each(|&span| pager.push(span))
        })?;
        if !pager.any() {
            return Err(TableError::NoCfi);
        }
        match pager.finish() {
            Ok(pages) => return Ok(table_of_pages(pages, stats)),
            Err(Unpaged::Failed(err)) => return Err(err),
            // Evaluated again, held and sorted: the section's entries are in no address order.
            Err(Unpaged::Unsorted) => {
                stats = TableStats::default();
                sink.reset();
            }
        }
    }
    let spans = section_spans(cfi, &mut stats)?;
    if spans.is_empty() {
        return Err(TableError::NoCfi);
    }
    table_of_spans(spans, stats, limits, sink)
}

fn table_of_spans(
    spans: Vec<Span>,
    stats: TableStats,
    limits: &Limits,
    sink: &mut impl RowSink,
) -> Result<FileTable, TableError> {
    let pages = paging::pages(spans, limits.max_rows, sink)?;
    Ok(table_of_pages(pages, stats))
}

fn table_of_pages(pages: Vec<PageEntry>, mut stats: TableStats) -> FileTable {
    stats.rows = pages.iter().map(|&(_, _, rows)| u64::from(rows)).sum();
    stats.pages = pages.len() as u64;
    FileTable {
        pages,
        segments: Vec::new(),
        stats,
    }
}

fn parse<'a, R: ReadRef<'a>>(data: R) -> Result<ElfFile64<'a, LittleEndian, R>, TableError> {
    let ident = data.read_bytes_at(0, 6).map_err(|()| TableError::NotElf)?;
    if ident.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(TableError::NotElf);
    }
    // e_ident[EI_CLASS] and e_ident[EI_DATA].
    if ident.get(4) != Some(&elf::ELFCLASS64) || ident.get(5) != Some(&elf::ELFDATA2LSB) {
        return Err(TableError::NotX86_64);
    }
    let file = ElfFile64::<LittleEndian, R>::parse(data).map_err(|err| TableError::Malformed {
        section: "ELF headers",
        reason: err.to_string(),
    })?;
    if file.elf_header().e_machine.get(LittleEndian) != elf::EM_X86_64 {
        return Err(TableError::NotX86_64);
    }
    Ok(file)
}

/// A section's bytes and address; `None` if absent or empty (`SHT_NOBITS` in a debug file).
fn section<'a, R: ReadRef<'a>>(
    file: &ElfFile64<'a, LittleEndian, R>,
    name: &'static str,
    limits: &Limits,
) -> Result<Option<(&'a [u8], u64)>, TableError> {
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
    if section.size() > limits.max_section_bytes {
        return Err(TableError::TooLarge {
            section: name,
            size: section.size(),
            max: limits.max_section_bytes,
        });
    }
    let data = section.data().map_err(malformed)?;
    Ok((!data.is_empty()).then_some((data, section.address())))
}

fn segments<'a, R: ReadRef<'a>>(file: &ElfFile64<'a, LittleEndian, R>) -> Vec<Segment> {
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
