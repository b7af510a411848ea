//! Tables of this machine's own files.

use std::time::Instant;

use super::*;

fn check_invariants(table: &FileTable) {
    assert!(
        table.pages.windows(2).all(|w| w[0].0 < w[1].0),
        "pages sorted"
    );
    let mut next = 0;
    for (page, rows) in paged(table) {
        assert!(!rows.is_empty(), "page {page:#x} has rows");
        assert_eq!(rows[0].pc_low, 0, "page {page:#x} starts at 0");
        assert!(
            rows.windows(2).all(|w| w[0].pc_low < w[1].pc_low),
            "page {page:#x} sorted"
        );
        assert!(rows.windows(2).all(|w| w[0]
            != UnwindRow {
                pc_low: w[0].pc_low,
                ..w[1]
            }));
        next += rows.len();
    }
    assert_eq!(next, table.rows.len(), "pages cover the rows, in order");
}

/// Builds the table of a file, prints its numbers, checks what holds for any real file.
fn real(path: &str) -> Option<(FileTable, Vec<u8>)> {
    let data = std::fs::read(path).ok()?;
    let started = Instant::now();
    let table = build(&data[..], NO_DEBUG_FILE, &LIMITS).expect("a table");
    let took = started.elapsed();
    // The loader reads only the headers and CFI sections, through a read cache: same table.
    let file = std::fs::File::open(path).expect("open");
    let cached = build_from(&file, u64::MAX, |elf| build(elf, NO_DEBUG_FILE, &LIMITS));
    assert!(
        cached == Ok(table.clone()),
        "{path}: the cached read differs"
    );
    let small = data.len() as u64 - 1;
    let refused = build_from(&file, small, |elf| build(elf, NO_DEBUG_FILE, &LIMITS));
    assert!(refused.is_err_and(|e| e.contains("over the")), "{path}");
    check_invariants(&table);
    let s = table.stats;
    let percent = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
    eprintln!(
        "{path}: {} in {took:?}: {} FDEs ({} malformed), {} CFI rows: {} unsupported CFA \
         ({:.3}%, {:.3}% of {} code bytes), {} unsupported rbp ({:.3}%), {} END, {} PLT; \
         {} rows ({} bytes), {} pages",
        s.source.name(),
        s.fdes,
        s.fdes_malformed,
        s.cfi_rows,
        s.unsupported_cfa,
        percent(s.unsupported_cfa, s.cfi_rows),
        percent(s.unsupported_bytes, s.code_bytes),
        s.code_bytes,
        s.unsupported_rbp,
        percent(s.unsupported_rbp, s.cfi_rows),
        s.end_rows,
        table.rows.iter().filter(|r| r.cfa_rule == cfa::PLT).count(),
        s.rows,
        s.rows as usize * std::mem::size_of::<UnwindRow>(),
        s.pages,
    );
    assert!(s.fdes > 1000 && s.rows > 5000, "{s:?}");
    assert_eq!(s.fdes_malformed, 0);
    assert!(!table.segments.is_empty());
    Some((table, data))
}

#[test]
fn tables_of_libc_and_python() {
    let (libc, data) = real("/lib/x86_64-linux-gnu/libc.so.6").expect("libc exists on Debian");
    let s = libc.stats;
    assert_eq!(s.source, CfiSource::EhFrameHdr);
    assert!(s.end_rows > 0, "_start-like and signal frames: {s:?}");
    assert!(s.unsupported_cfa * 100 < s.cfi_rows, "{s:?}");
    // Read in order instead of through the header: the same table.
    let elf = object::read::elf::ElfFile64::<object::LittleEndian>::parse(&data[..]).unwrap();
    let eh_frame = section_of(&elf, ".eh_frame");
    let in_order = Section::EhFrame {
        data: eh_frame.0,
        address: eh_frame.1,
        hdr: None,
        text: None,
        got: None,
    };
    let without_hdr = section_table(&in_order, &LIMITS).expect("a table");
    assert_eq!(without_hdr.rows, libc.rows);
    assert_eq!(without_hdr.stats.source, CfiSource::EhFrame);
    if let Some((python, _)) = real("/usr/bin/python3.11") {
        assert!(python.stats.unsupported_cfa * 100 < python.stats.cfi_rows * 5);
    }
}

fn section_of<'a>(
    elf: &object::read::elf::ElfFile64<'a, object::LittleEndian>,
    name: &str,
) -> (&'a [u8], u64) {
    use object::{Object, ObjectSection};
    let section = elf.section_by_name(name).expect("the section");
    (section.data().expect("its bytes"), section.address())
}

/// Mutations of a real `.eh_frame` (and its header) never panic and stay within bounds.
#[test]
fn corrupted_real_cfi_never_panics() {
    let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").expect("libc");
    let elf = object::read::elf::ElfFile64::<object::LittleEndian>::parse(&data[..]).unwrap();
    let (eh_frame, address) = section_of(&elf, ".eh_frame");
    let (hdr, hdr_address) = section_of(&elf, ".eh_frame_hdr");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let limits = Limits {
        max_rows: 200_000,
        ..LIMITS
    };
    for round in 0..60 {
        let (mut frame, mut header) = (eh_frame.to_vec(), hdr.to_vec());
        for _ in 0..1 + round % 8 {
            let target = if random() % 4 == 0 {
                &mut header
            } else {
                &mut frame
            };
            let at = (random() as usize) % target.len();
            target[at] = random() as u8;
        }
        let cut = if round % 5 == 0 {
            (random() as usize) % frame.len()
        } else {
            frame.len()
        };
        let section = Section::EhFrame {
            data: &frame[..cut],
            address,
            hdr: (round % 2 == 0).then_some((&header[..], hdr_address)),
            text: None,
            got: None,
        };
        if let Ok(table) = section_table(&section, &limits) {
            check_invariants(&table);
        }
    }
    // Whole-file garbage past a valid ELF header.
    let mut elf_bytes = data.clone();
    for _ in 0..200 {
        let at = 64 + (random() as usize) % (elf_bytes.len() - 64);
        elf_bytes[at] = random() as u8;
    }
    let _ = build(&elf_bytes[..], NO_DEBUG_FILE, &limits);
}
