use gimli::{
    write::{
        Address, CallFrameInstruction as Cfi, CommonInformationEntry, DebugFrame, EhFrame,
        EndianVec, Expression, FrameDescriptionEntry, FrameTable,
    },
    Encoding, Format, LittleEndian, Register,
};
use profiler_common::{cfa, rbp, UnwindRow};

use super::{
    cfi::Cfi as Section,
    loader::build_from,
    paging::RowSink,
    rows::{Failure, KernelRows, BATCH},
    space::RowSpace,
    table::{self, bias, CfiSource, Limits, Segment, TableError, TableStats},
};

mod elf;
mod paging;
mod real;

const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

const NO_DEBUG_FILE: Option<&[u8]> = None;

const LIMITS: Limits = Limits {
    max_rows: 1 << 20,
    max_section_bytes: 1 << 30,
};

/// A table with its rows, stored in a vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FileTable {
    rows: Vec<UnwindRow>,
    pages: Vec<(u32, u32, u32)>,
    segments: Vec<Segment>,
    stats: TableStats,
}

impl FileTable {
    fn of(rows: Vec<UnwindRow>, table: table::FileTable) -> Self {
        Self {
            rows,
            pages: table.pages,
            segments: table.segments,
            stats: table.stats,
        }
    }
}

fn build<'a, 'd, R: object::ReadRef<'a>, D: object::ReadRef<'d>>(
    elf: R,
    debug_file: Option<D>,
    limits: &Limits,
) -> Result<FileTable, TableError> {
    let mut rows = Vec::new();
    let table = table::build(elf, debug_file, limits, &mut rows)?;
    Ok(FileTable::of(rows, table))
}

fn section_table(section: &Section<'_>, limits: &Limits) -> Result<FileTable, TableError> {
    let mut rows = Vec::new();
    let table = table::section_table(section, limits, &mut rows)?;
    Ok(FileTable::of(rows, table))
}

fn cie() -> CommonInformationEntry {
    let encoding = Encoding {
        format: Format::Dwarf32,
        version: 1,
        address_size: 8,
    };
    let mut cie = CommonInformationEntry::new(encoding, 1, -8, RA);
    cie.add_instruction(Cfi::Cfa(RSP, 8));
    cie.add_instruction(Cfi::Offset(RA, -8));
    cie
}

/// An FDE for `start..start + len` with instructions at offsets from `start`.
fn fde(start: u64, len: u32, instructions: &[(u32, Cfi)]) -> FrameDescriptionEntry {
    let mut fde = FrameDescriptionEntry::new(Address::Constant(start), len);
    for (offset, instruction) in instructions {
        fde.add_instruction(*offset, instruction.clone());
    }
    fde
}

fn frame_table(cie: CommonInformationEntry, fdes: Vec<FrameDescriptionEntry>) -> FrameTable {
    let mut table = FrameTable::default();
    let id = table.add_cie(cie);
    for fde in fdes {
        table.add_fde(id, fde);
    }
    table
}

fn eh_frame(cie: CommonInformationEntry, fdes: Vec<FrameDescriptionEntry>) -> Vec<u8> {
    let mut section = EhFrame(EndianVec::new(LittleEndian));
    frame_table(cie, fdes)
        .write_eh_frame(&mut section)
        .expect("written");
    section.0.into_vec()
}

fn table_of(data: &[u8], limits: &Limits) -> Result<FileTable, TableError> {
    let section = Section::EhFrame {
        data,
        address: 0x100_0000,
        hdr: None,
        text: None,
        got: None,
    };
    section_table(&section, limits)
}

fn table(fdes: Vec<FrameDescriptionEntry>) -> FileTable {
    table_of(&eh_frame(cie(), fdes), &LIMITS).expect("a table")
}

fn row(pc_low: u16, cfa_rule: u8, cfa_offset: u16, rbp_rule: u8, rbp_offset: i16) -> UnwindRow {
    UnwindRow {
        pc_low,
        cfa_offset,
        rbp_offset,
        cfa_rule,
        rbp_rule,
    }
}

fn rsp(pc_low: u16, offset: u16) -> UnwindRow {
    row(pc_low, cfa::RSP, offset, rbp::SAME, 0)
}

fn unsupported(pc_low: u16) -> UnwindRow {
    row(pc_low, cfa::UNSUPPORTED, 0, rbp::SAME, 0)
}

fn end(pc_low: u16) -> UnwindRow {
    row(pc_low, cfa::END, 0, rbp::SAME, 0)
}

/// The rows of each page, with the page number.
fn paged(table: &FileTable) -> Vec<(u32, Vec<UnwindRow>)> {
    table
        .pages
        .iter()
        .map(|&(page, first, n)| {
            (
                page,
                table.rows[first as usize..(first + n) as usize].to_vec(),
            )
        })
        .collect()
}

fn one_page(table: &FileTable) -> Vec<UnwindRow> {
    let pages = paged(table);
    assert_eq!(pages.len(), 1, "{pages:?}");
    pages.into_iter().next().expect("a page").1
}

#[test]
fn push_rbp_mov_rbp_rsp_prologue_and_epilogue() {
    let t = table(vec![fde(
        0x1000,
        0x20,
        &[
            (1, Cfi::CfaOffset(16)),
            (1, Cfi::Offset(RBP, -16)),
            (4, Cfi::CfaRegister(RBP)),
            (0x1e, Cfi::Cfa(RSP, 8)),
        ],
    )]);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            rsp(0x1000, 8),
            row(0x1001, cfa::RSP, 16, rbp::AT_CFA, -16),
            row(0x1004, cfa::RBP, 16, rbp::AT_CFA, -16),
            row(0x101e, cfa::RSP, 8, rbp::AT_CFA, -16),
            unsupported(0x1020),
        ]
    );
    let s = t.stats;
    assert_eq!((s.fdes, s.cfi_rows, s.rows, s.pages), (1, 4, 6, 1));
    assert_eq!(
        (s.unsupported_cfa, s.unsupported_rbp, s.end_rows),
        (0, 0, 0)
    );
    assert_eq!((s.code_bytes, s.source), (0x20, CfiSource::EhFrame));
}

#[test]
fn leaf_with_rsp_offsets_only() {
    let t = table(vec![fde(
        0x2000,
        0x40,
        &[(4, Cfi::CfaOffset(48)), (0x3a, Cfi::CfaOffset(8))],
    )]);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            rsp(0x2000, 8),
            rsp(0x2004, 48),
            rsp(0x203a, 8),
            unsupported(0x2040)
        ]
    );
}

const PLT: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];

#[test]
fn the_plt_expression_and_others() {
    // Another threshold (the IBT PLT's lit10) is another expression: not the PLT rule.
    let mut lit10 = PLT;
    lit10[6] = 0x3a;
    let deref_rbp = vec![0x76, 0x78, 0x06]; // DW_OP_breg6 -8; DW_OP_deref
    let t = table(vec![
        fde(0x1000, 0x10, &[]),
        fde(
            0x1010,
            0x20,
            &[
                (6, Cfi::CfaOffset(16)),
                (0x10, Cfi::CfaExpression(Expression::raw(PLT.to_vec()))),
            ],
        ),
        fde(
            0x1030,
            0x10,
            &[(0, Cfi::CfaExpression(Expression::raw(lit10.to_vec())))],
        ),
        fde(
            0x1040,
            0x10,
            &[(0, Cfi::CfaExpression(Expression::raw(deref_rbp)))],
        ),
    ]);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            rsp(0x1000, 8),
            rsp(0x1016, 16),
            row(0x1020, cfa::PLT, 8, rbp::SAME, 0),
            unsupported(0x1030),
        ]
    );
    assert_eq!(
        (t.stats.unsupported_cfa, t.stats.unsupported_bytes),
        (2, 0x20)
    );
}

#[test]
fn undefined_return_address_ends_the_walk() {
    let t = table(vec![
        fde(0x1000, 0x10, &[(0, Cfi::Undefined(RA))]),
        fde(
            0x1010,
            0x10,
            &[(4, Cfi::CfaOffset(16)), (8, Cfi::Undefined(RA))],
        ),
    ]);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            end(0x1000),
            rsp(0x1010, 8),
            rsp(0x1014, 16),
            end(0x1018),
            unsupported(0x1020)
        ]
    );
    assert_eq!(t.stats.end_rows, 2);
}

#[test]
fn every_row_of_a_signal_trampoline_ends_the_walk() {
    let mut signal = cie();
    signal.signal_trampoline = true;
    let fdes = vec![fde(0x1000, 0x10, &[(4, Cfi::CfaOffset(160))])];
    let t = table_of(&eh_frame(signal, fdes), &LIMITS).expect("a table");
    assert_eq!(
        one_page(&t),
        [unsupported(0), end(0x1000), unsupported(0x1010)]
    );
    assert_eq!(t.stats.end_rows, 2);
}

#[test]
fn rules_that_do_not_fit_are_unsupported_never_guessed() {
    let t = table(vec![
        fde(0x1000, 0x10, &[(0, Cfi::CfaOffset(70_000))]),
        fde(0x1010, 0x10, &[(0, Cfi::Cfa(Register(3), 8))]),
        fde(0x1020, 0x10, &[(0, Cfi::Offset(RA, -16))]),
        fde(0x1030, 0x10, &[(0, Cfi::SameValue(RA))]),
        fde(
            0x1040,
            0x10,
            &[(0, Cfi::CfaOffset(65_535)), (2, Cfi::Offset(RBP, -40_000))],
        ),
        fde(0x1050, 0x10, &[(0, Cfi::Register(RBP, Register(3)))]),
        fde(0x1060, 0x10, &[(0, Cfi::Undefined(RBP))]),
        fde(
            0x1070,
            0x10,
            &[(0, Cfi::Expression(RBP, Expression::raw(vec![0x76, 0])))],
        ),
        fde(
            0x1080,
            0x10,
            &[(0, Cfi::Offset(RBP, -16)), (2, Cfi::SameValue(RBP))],
        ),
    ]);
    let no_rbp = |pc| row(pc, cfa::RSP, 8, rbp::UNSUPPORTED, 0);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            rsp(0x1040, 65_535),
            row(0x1042, cfa::RSP, 65_535, rbp::UNSUPPORTED, 0),
            no_rbp(0x1050),
            row(0x1080, cfa::RSP, 8, rbp::AT_CFA, -16),
            rsp(0x1082, 8),
            unsupported(0x1090),
        ]
    );
    assert_eq!((t.stats.unsupported_cfa, t.stats.unsupported_rbp), (4, 4));
}

#[test]
fn gaps_between_fdes_are_unsupported_and_equal_rows_merge() {
    let t = table(vec![
        fde(0x1000, 0x10, &[]),
        // Adjacent, same rule: one row. A rule change of another register changes nothing.
        fde(0x1010, 0x10, &[(4, Cfi::Offset(Register(3), -16))]),
        fde(0x1030, 0x10, &[(2, Cfi::CfaOffset(16))]),
    ]);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            rsp(0x1000, 8),
            unsupported(0x1020),
            rsp(0x1030, 8),
            rsp(0x1032, 16),
            unsupported(0x1040)
        ]
    );
    assert_eq!((t.stats.cfi_rows, t.stats.rows), (5, 6));
}

#[test]
fn a_function_across_a_page_boundary_starts_the_next_page_with_its_rule() {
    let t = table(vec![fde(0x1fff0, 0x50, &[(0x20, Cfi::CfaOffset(16))])]);
    assert_eq!(
        paged(&t),
        [
            (1, vec![unsupported(0), rsp(0xfff0, 8)]),
            (2, vec![rsp(0, 8), rsp(0x10, 16), unsupported(0x40)]),
        ]
    );
}

#[test]
fn pages_one_rule_covers_get_one_row_and_gap_pages_none() {
    let t = table(vec![fde(0x1_0000, 0x3_0000, &[]), fde(0x9_0010, 0x10, &[])]);
    assert_eq!(
        paged(&t),
        [
            (1, vec![rsp(0, 8)]),
            (2, vec![rsp(0, 8)]),
            (3, vec![rsp(0, 8)]),
            // Page 4 starts with the gap: no entry, as for pages 5 to 8.
            (9, vec![unsupported(0), rsp(0x10, 8), unsupported(0x20)]),
        ]
    );
    assert_eq!(t.pages, [(1, 0, 1), (2, 1, 1), (3, 2, 1), (9, 3, 3)]);
}

#[test]
fn overlapping_and_duplicate_fdes_resolve_by_later_start() {
    let t = table(vec![
        fde(0x1000, 0x100, &[]),
        fde(0x1080, 0x10, &[(0, Cfi::CfaOffset(16))]),
        fde(0x1200, 0x10, &[(0, Cfi::CfaOffset(24))]),
        fde(0x1200, 0x20, &[(0, Cfi::CfaOffset(32))]),
    ]);
    assert_eq!(
        one_page(&t),
        [
            unsupported(0),
            rsp(0x1000, 8),
            rsp(0x1080, 16),
            unsupported(0x1090),
            rsp(0x1200, 32),
            unsupported(0x1220),
        ]
    );
}

#[test]
fn debug_frame_gives_the_same_rows() {
    let fdes = || {
        vec![fde(
            0x1000,
            0x20,
            &[
                (1, Cfi::CfaOffset(16)),
                (1, Cfi::Offset(RBP, -16)),
                (4, Cfi::CfaRegister(RBP)),
            ],
        )]
    };
    let mut section = DebugFrame(EndianVec::new(LittleEndian));
    frame_table(cie(), fdes())
        .write_debug_frame(&mut section)
        .expect("written");
    let data = section.0.into_vec();
    let debug = section_table(&Section::debug_frame(&data), &LIMITS).expect("a table");
    assert_eq!(debug.stats.source, CfiSource::DebugFrame);
    assert_eq!(debug.rows, table(fdes()).rows);
}

#[test]
fn too_many_rows_fail_before_they_are_allocated() {
    // One FDE over 4 GiB: 65536 pages of one row each.
    let data = eh_frame(cie(), vec![fde(0x1_0000, u32::MAX, &[])]);
    let small = Limits {
        max_rows: 1000,
        ..LIMITS
    };
    assert_eq!(
        table_of(&data, &small),
        Err(TableError::TooManyRows {
            rows: 1001,
            max: 1000
        })
    );
    let t = table(vec![fde(0x1000, 0x10, &[(2, Cfi::CfaOffset(16))])]);
    let exact = Limits {
        max_rows: 4,
        ..LIMITS
    };
    assert_eq!(
        table_of(
            &eh_frame(cie(), vec![fde(0x1000, 0x10, &[(2, Cfi::CfaOffset(16))])]),
            &exact
        )
        .map(|t| t.rows),
        Ok(t.rows)
    );
}

#[test]
fn sections_without_fdes_or_broken_ones_are_errors() {
    assert_eq!(
        table_of(&eh_frame(cie(), vec![]), &LIMITS),
        Err(TableError::NoCfi)
    );
    assert!(matches!(
        table_of(&[0xff; 64], &LIMITS),
        Err(TableError::Malformed {
            section: ".eh_frame",
            ..
        })
    ));
    assert_eq!(
        build(&b"not an ELF file"[..], NO_DEBUG_FILE, &LIMITS),
        Err(TableError::NotElf)
    );
    let mut elf32 = *b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0";
    assert_eq!(
        build(&elf32[..], NO_DEBUG_FILE, &LIMITS),
        Err(TableError::NotX86_64)
    );
    elf32[4] = 2;
    assert!(matches!(
        build(&elf32[..], NO_DEBUG_FILE, &LIMITS),
        Err(TableError::Malformed { .. })
    ));
}

#[test]
fn bias_of_a_pie_and_of_a_non_pie_mapping() {
    // A shared object or PIE: vaddr = offset, loaded anywhere.
    let pie = [Segment {
        file_offset: 0x26000,
        vaddr: 0x26000,
        file_size: 0x15_5000,
        mem_size: 0x15_5000,
    }];
    let base = 0x7f12_3450_0000;
    assert_eq!(bias(&pie, base + 0x26000, 0x26000), Some(base));
    assert_eq!(bias(&pie, base + 0x26000, 0x1000), None);
    // A non-PIE executable at 0x400000, its text segment at an offset that is not page
    // aligned (mapped from the page below it).
    let exe = [Segment {
        file_offset: 0x1234,
        vaddr: 0x401234,
        file_size: 0x8000,
        mem_size: 0x8000,
    }];
    assert_eq!(bias(&exe, 0x401000, 0x1000), Some(0));
    let pc: u64 = 0x401500;
    assert_eq!(
        pc.wrapping_sub(bias(&exe, 0x401000, 0x1000).unwrap()),
        0x401500
    );
}

#[test]
fn row_space_first_fit_fragmentation_and_coalescing() {
    let mut space = RowSpace::new(100);
    assert_eq!(space.capacity(), 100);
    let a = space.allocate(30).unwrap();
    let b = space.allocate(30).unwrap();
    let c = space.allocate(30).unwrap();
    assert_eq!(
        (a, b, c, space.used(), space.largest_free()),
        (0, 30, 60, 90, 10)
    );
    assert_eq!(space.allocate(20), None);
    assert_eq!(space.failed(), 1);
    // Two free holes of 30 and 10 rows: 40 rows free, yet 31 do not fit.
    assert!(space.free(b, 30));
    assert_eq!((space.used(), space.largest_free()), (60, 30));
    assert_eq!(space.allocate(31), None);
    assert_eq!(space.failed(), 2);
    // First fit takes the lowest hole that fits.
    assert_eq!(space.allocate(5), Some(30));
    assert_eq!(space.allocate(10), Some(35));
    assert!(space.free(30, 5));
    assert!(space.free(35, 10));
    // A double free and ranges outside the array change nothing.
    assert!(!space.free(b, 30));
    assert!(!space.free(95, 10));
    assert!(!space.free(0, 0));
    assert_eq!(space.used(), 60);
    // Freeing a and c coalesces everything into one range again.
    assert!(space.free(a, 30));
    assert!(space.free(c, 30));
    assert_eq!((space.used(), space.largest_free()), (0, 100));
    assert_eq!(space.allocate(100), Some(0));
    assert_eq!(space.allocate(0), None);
    assert_eq!(RowSpace::new(0).largest_free(), 0);
}

/// Pages of 1 to 3000 rows, each row naming its page and place.
fn numbered_pages(n: usize) -> Vec<Vec<UnwindRow>> {
    (0..n)
        .map(|page| {
            let len = 1 + (page * 7919) % 3000;
            (0..len).map(|i| rsp(i as u16, page as u16)).collect()
        })
        .collect()
}

#[test]
fn kernel_rows_are_written_a_batch_at_a_time_into_ranges_given_back_when_unused() {
    let mut space = RowSpace::new(100_000);
    // A hole of 10 rows before a used row: too short for a batch.
    let hole = space.allocate(10).unwrap();
    assert_eq!(space.allocate(1), Some(10));
    assert!(space.free(hole, 10));
    let pages = numbered_pages(30);
    let total: usize = pages.iter().map(Vec::len).sum();
    let mut array = vec![UnwindRow::default(); 100_000];
    let mut writes = Vec::new();
    let (firsts, ranges) = {
        let write = |first: u32, rows: &[UnwindRow]| {
            array[first as usize..][..rows.len()].copy_from_slice(rows);
            writes.push(rows.len());
            Ok(())
        };
        let mut sink = KernelRows::new(write, &mut space);
        let firsts: Vec<u32> = pages.iter().map(|p| sink.page(p).unwrap()).collect();
        (firsts, sink.finish().unwrap())
    };
    for (page, first) in pages.iter().zip(firsts) {
        assert_eq!(&array[first as usize..][..page.len()], &page[..]);
    }
    // One range after the used row, exactly as long as the rows; written in batches of about
    // BATCH rows (a batch ends after the page that fills it).
    assert_eq!(ranges, [(11, total as u32)]);
    assert_eq!(space.used() as usize, total + 1);
    assert_eq!(writes.iter().sum::<usize>(), total);
    assert!(writes.len() > 1 && writes.iter().all(|&n| n < BATCH as usize + 3000));
}

#[test]
fn kernel_rows_without_room_or_with_a_failed_write_give_every_row_back() {
    // Three pages of 300 rows fit 1000 rows; a fourth does not.
    let mut space = RowSpace::new(1000);
    let page = vec![rsp(0, 8); 300];
    let mut sink = KernelRows::new(|_: u32, _: &[UnwindRow]| Ok(()), &mut space);
    for _ in 0..3 {
        assert!(sink.page(&page).is_ok());
    }
    assert_eq!(sink.page(&page), Err(TableError::NotStored));
    assert!(matches!(sink.abandon(), Some(Failure::Full)));
    drop(sink);
    assert_eq!((space.used(), space.largest_free()), (0, 1000));
    let mut sink = KernelRows::new(|_: u32, _: &[UnwindRow]| Ok(()), &mut space);
    for _ in 0..3 {
        assert!(sink.page(&page).is_ok());
    }
    assert_eq!(sink.finish(), Ok(vec![(0, 900)]));
    drop(sink);
    assert_eq!(space.used(), 900);
    assert!(space.free(0, 900));

    let failing = |_: u32, _: &[UnwindRow]| Err(std::io::Error::other("refused"));
    let mut sink = KernelRows::new(failing, &mut space);
    assert!(sink.page(&page).is_ok());
    assert!(sink.finish().is_err());
    assert!(matches!(sink.abandon(), Some(Failure::Write(_))));
    drop(sink);
    assert_eq!(space.used(), 0);
}

/// `.eh_frame_hdr` with 8-byte absolute pointers: the `.eh_frame` address, then (initial
/// location, FDE address) for each of `fdes`.
fn eh_frame_hdr(eh_frame_address: u64, fdes: &[(u64, u64)]) -> Vec<u8> {
    // Version 1; DW_EH_PE_udata8 for the eh_frame pointer, the count and the table.
    let mut hdr = vec![1, 0x04, 0x04, 0x04];
    hdr.extend(eh_frame_address.to_le_bytes());
    hdr.extend((fdes.len() as u64).to_le_bytes());
    for (initial, fde) in fdes {
        hdr.extend(initial.to_le_bytes());
        hdr.extend(fde.to_le_bytes());
    }
    hdr
}

/// The addresses of the FDEs of `.eh_frame` `data` at `address`, in the section's order.
fn fde_addresses(data: &[u8], address: u64) -> Vec<u64> {
    use gimli::UnwindSection;
    let section = gimli::EhFrame::new(data, LittleEndian);
    let bases = gimli::BaseAddresses::default().set_eh_frame(address);
    let mut entries = section.entries(&bases);
    let mut addresses = Vec::new();
    while let Some(entry) = entries.next().expect("an entry") {
        if let gimli::CieOrFde::Fde(partial) = entry {
            addresses.push(address + partial.offset() as u64);
        }
    }
    addresses
}

/// The table of `.eh_frame` `data` at `address` read through the header `hdr`.
fn table_through_header(data: &[u8], address: u64, hdr: &[u8]) -> FileTable {
    let section = Section::EhFrame {
        data,
        address,
        hdr: Some((hdr, 0x200_0000)),
        text: None,
        got: None,
    };
    section_table(&section, &LIMITS).expect("a table")
}

#[test]
fn the_header_lists_the_fdes_each_evaluated_once() {
    let data = eh_frame(
        cie(),
        vec![
            fde(0x1000, 0x10, &[]),
            fde(0x1020, 0x10, &[(2, Cfi::CfaOffset(16))]),
        ],
    );
    let address = 0x100_0000;
    let offsets = fde_addresses(&data, address);
    let in_order = table_of(&data, &LIMITS).expect("a table");
    let with = |hdr: &[u8]| table_through_header(&data, address, hdr);
    // The second FDE listed a thousand times is read once.
    let mut listed = vec![(0x1000, offsets[0])];
    listed.extend(std::iter::repeat_n((0x1020, offsets[1]), 1000));
    let t = with(&eh_frame_hdr(address, &listed));
    assert_eq!(
        (t.rows, t.stats.source, t.stats.fdes),
        (in_order.rows.clone(), CfiSource::EhFrameHdr, 2)
    );
    // A pointer outside .eh_frame: the header is not used.
    let t = with(&eh_frame_hdr(address, &[(0x1000, address - 8)]));
    assert_eq!(
        (t.rows, t.stats.source),
        (in_order.rows, CfiSource::EhFrame)
    );
}
