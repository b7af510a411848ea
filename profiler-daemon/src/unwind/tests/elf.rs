//! The ELF layer on minimal hand-made files: which section is used, the segments.

use super::*;

const SHT_PROGBITS: u32 = 1;
const SHT_STRTAB: u32 = 3;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_R: u32 = 4;

/// An ELF64 x86_64 shared object with `sections` (name, address, bytes) and `loads` (flags,
/// offset, vaddr, size) program headers.
fn elf(machine: u16, sections: &[(&str, u64, &[u8])], loads: &[(u32, u64, u64, u64)]) -> Vec<u8> {
    let phoff = 64u64;
    let mut data = vec![0u8; 64 + 56 * loads.len()];
    let mut shstrtab = vec![0u8];
    let mut headers = vec![[0u8; 64]];
    let mut header = |name: u32, kind: u32, address: u64, offset: u64, size: u64| {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[16..24].copy_from_slice(&address.to_le_bytes());
        h[24..32].copy_from_slice(&offset.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[48..56].copy_from_slice(&1u64.to_le_bytes());
        headers.push(h);
    };
    for (name, address, bytes) in sections {
        let name_at = shstrtab.len() as u32;
        shstrtab.extend(name.as_bytes());
        shstrtab.push(0);
        let offset = data.len() as u64;
        data.extend(*bytes);
        header(name_at, SHT_PROGBITS, *address, offset, bytes.len() as u64);
    }
    let name_at = shstrtab.len() as u32;
    shstrtab.extend(b".shstrtab\0");
    header(
        name_at,
        SHT_STRTAB,
        0,
        data.len() as u64,
        shstrtab.len() as u64,
    );
    data.extend(&shstrtab);
    while !data.len().is_multiple_of(8) {
        data.push(0);
    }
    let shoff = data.len() as u64;
    let shnum = headers.len() as u16;
    for h in &headers {
        data.extend(h);
    }
    let mut e = [0u8; 64];
    e[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\0");
    e[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    e[18..20].copy_from_slice(&machine.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[32..40].copy_from_slice(&phoff.to_le_bytes());
    e[40..48].copy_from_slice(&shoff.to_le_bytes());
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&(loads.len() as u16).to_le_bytes());
    e[58..60].copy_from_slice(&64u16.to_le_bytes());
    e[60..62].copy_from_slice(&shnum.to_le_bytes());
    e[62..64].copy_from_slice(&(shnum - 1).to_le_bytes());
    data[..64].copy_from_slice(&e);
    for (i, &(flags, offset, vaddr, size)) in loads.iter().enumerate() {
        let p = &mut data[64 + 56 * i..64 + 56 * (i + 1)];
        p[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        p[4..8].copy_from_slice(&flags.to_le_bytes());
        for (at, value) in [
            (8, offset),
            (16, vaddr),
            (24, vaddr),
            (32, size),
            (40, size),
        ] {
            p[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    data
}

/// Sets `SHF_COMPRESSED` on the section called `name` of a file [`elf`] made.
fn set_compressed(file: &mut [u8], name: &str) {
    let word = |at: usize, len: usize| {
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&file[at..at + len]);
        u64::from_le_bytes(bytes) as usize
    };
    let (shoff, shnum, shstrndx) = (word(40, 8), word(60, 2), word(62, 2));
    let names = word(shoff + 64 * shstrndx + 24, 8);
    for i in 1..shnum {
        let header = shoff + 64 * i;
        let at = names + word(header, 4);
        if file[at..].starts_with(name.as_bytes()) && file[at + name.len()] == 0 {
            // sh_flags |= SHF_COMPRESSED (0x800).
            file[header + 9] |= 0x08;
            return;
        }
    }
    panic!("no section {name}");
}

fn debug_frame() -> Vec<u8> {
    debug_frame_of(vec![fde(0x1000, 0x10, &[(2, Cfi::CfaOffset(16))])])
}

fn debug_frame_of(fdes: Vec<FrameDescriptionEntry>) -> Vec<u8> {
    let mut section = DebugFrame(EndianVec::new(LittleEndian));
    frame_table(cie(), fdes)
        .write_debug_frame(&mut section)
        .expect("written");
    section.0.into_vec()
}

const LOADS: [(u32, u64, u64, u64); 2] =
    [(PF_R, 0, 0, 0x1000), (PF_R | PF_X, 0x1000, 0x1000, 0x800)];

#[test]
fn eh_frame_then_debug_frame_then_the_debug_files() {
    let rows = [
        unsupported(0),
        rsp(0x1000, 8),
        rsp(0x1002, 16),
        unsupported(0x1010),
    ];
    let text = Segment {
        file_offset: 0x1000,
        vaddr: 0x1000,
        file_size: 0x800,
        mem_size: 0x800,
    };
    let eh = eh_frame(cie(), vec![fde(0x1000, 0x10, &[(2, Cfi::CfaOffset(16))])]);
    let debug = debug_frame();
    let file = elf(
        62,
        &[(".eh_frame", 0x2000, &eh), (".debug_frame", 0, &debug)],
        &LOADS,
    );
    let t = build(&file[..], NO_DEBUG_FILE, &LIMITS).expect("a table");
    assert_eq!(
        (t.rows.as_slice(), t.stats.source),
        (&rows[..], CfiSource::EhFrame)
    );
    assert_eq!(t.segments, [text]);

    let file = elf(62, &[(".debug_frame", 0, &debug)], &LOADS);
    let t = build(&file[..], NO_DEBUG_FILE, &LIMITS).expect("a table");
    assert_eq!(
        (t.rows.as_slice(), t.stats.source),
        (&rows[..], CfiSource::DebugFrame)
    );

    let stripped = elf(62, &[(".text", 0x1000, &[0xc3])], &LOADS);
    assert_eq!(
        build(&stripped[..], NO_DEBUG_FILE, &LIMITS),
        Err(TableError::NoCfi)
    );
    let debug_file = elf(62, &[(".debug_frame", 0, &debug)], &[]);
    let t = build(&stripped[..], Some(&debug_file[..]), &LIMITS).expect("a table");
    assert_eq!(t.stats.source, CfiSource::DebugFileDebugFrame);
    assert_eq!(
        (t.rows.as_slice(), t.segments.as_slice()),
        (&rows[..], &[text][..])
    );
    let empty_debug = elf(62, &[], &[]);
    assert_eq!(
        build(&stripped[..], Some(&empty_debug[..]), &LIMITS),
        Err(TableError::NoCfi)
    );

    let i386 = elf(3, &[(".debug_frame", 0, &debug)], &LOADS);
    assert_eq!(
        build(&i386[..], NO_DEBUG_FILE, &LIMITS),
        Err(TableError::NotX86_64)
    );
}

/// .eh_frame for some code (a program's start files), .debug_frame for the rest: both, each
/// function described once, the .eh_frame's where both describe it.
#[test]
fn debug_frame_fills_what_eh_frame_does_not_describe() {
    let debug = debug_frame();
    let debug_file = elf(62, &[(".debug_frame", 0, &debug)], &[]);
    let more = eh_frame(cie(), vec![fde(0x1100, 0x10, &[(4, Cfi::CfaOffset(32))])]);
    let partial = elf(62, &[(".eh_frame", 0x2000, &more)], &LOADS);
    let both = [
        unsupported(0),
        rsp(0x1000, 8),
        rsp(0x1002, 16),
        unsupported(0x1010),
        rsp(0x1100, 8),
        rsp(0x1104, 32),
        unsupported(0x1110),
    ];
    let t = build(&partial[..], Some(&debug_file[..]), &LIMITS).expect("a table");
    assert_eq!(
        (
            t.rows.as_slice(),
            t.stats.source,
            t.stats.also,
            t.stats.fdes
        ),
        (
            &both[..],
            CfiSource::EhFrame,
            Some(CfiSource::DebugFileDebugFrame),
            2
        )
    );
    let debug_both = debug_frame_of(vec![
        fde(0x1000, 0x10, &[(2, Cfi::CfaOffset(16))]),
        fde(0x1100, 0x10, &[(4, Cfi::CfaOffset(48))]),
    ]);
    let own = elf(
        62,
        &[
            (".eh_frame", 0x2000, &more),
            (".debug_frame", 0, &debug_both),
        ],
        &LOADS,
    );
    let t = build(&own[..], NO_DEBUG_FILE, &LIMITS).expect("a table");
    assert_eq!(
        (t.rows.as_slice(), t.stats.also),
        (&both[..], Some(CfiSource::DebugFrame))
    );
    let tight = Limits {
        max_section_bytes: more.len() as u64 - 1,
        ..LIMITS
    };
    assert!(matches!(
        build(&partial[..], NO_DEBUG_FILE, &tight),
        Err(TableError::TooLarge {
            section: ".eh_frame",
            ..
        })
    ));
}

/// A compressed `.debug_frame` (Go writes one) beside `.eh_frame` leaves the `.eh_frame`'s
/// table; alone, it is refused by name.
#[test]
fn a_compressed_debug_frame_leaves_the_eh_frame_table() {
    let more = eh_frame(cie(), vec![fde(0x1100, 0x10, &[(4, Cfi::CfaOffset(32))])]);
    let debug_both = debug_frame_of(vec![
        fde(0x1000, 0x10, &[(2, Cfi::CfaOffset(16))]),
        fde(0x1100, 0x10, &[(4, Cfi::CfaOffset(48))]),
    ]);
    let mut compressed = vec![1, 0, 0, 0, 0, 0, 0, 0];
    compressed.extend((debug_both.len() as u64).to_le_bytes());
    compressed.extend(1u64.to_le_bytes());
    compressed.extend(&debug_both);
    let mut go_like = elf(
        62,
        &[
            (".eh_frame", 0x2000, &more),
            (".debug_frame", 0, &compressed),
        ],
        &LOADS,
    );
    set_compressed(&mut go_like, ".debug_frame");
    let t = build(&go_like[..], NO_DEBUG_FILE, &LIMITS).expect("a table");
    assert_eq!(
        (t.stats.source, t.stats.also, t.stats.fdes),
        (CfiSource::EhFrame, None, 1)
    );
    let go_without_eh = {
        let mut file = elf(62, &[(".debug_frame", 0, &compressed)], &LOADS);
        set_compressed(&mut file, ".debug_frame");
        file
    };
    assert_eq!(
        build(&go_without_eh[..], NO_DEBUG_FILE, &LIMITS),
        Err(TableError::Compressed {
            section: ".debug_frame"
        })
    );
}
