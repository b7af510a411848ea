//! What blazesym would read of a file, worked out from its ELF section headers before it does:
//! whether there is DWARF (in the file or in a separate debug file), how many bytes of symbol
//! and debug sections it would parse, and whether its debug-file search is safe to let run.
//!
//! blazesym parses DWARF lazily, so its parsed state of such a file grows with every part of
//! the program that is sampled, and `--symbol-file-ttl` releases it. A file with only a symbol
//! table (the stripped libraries and programs of a distribution) is parsed whole at its first
//! address and does not grow: releasing it every period only made the daemon read and parse
//! it again, and its RSS rise and fall with each re-read.
//!
//! blazesym follows a file's debug links by path: names taken from the file (absolute, or with
//! `..`), the file's own directory, and the paths it reads the build id from. For a file a user
//! wrote, any of those can be a FIFO that blocks the pipeline in `open()`. Debug info is read
//! only from files whose links cannot lead there (see [`inspect`]).

use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
};

use super::files::open_untrusted;

/// Where blazesym looks for separate debug files (its default debug directories).
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Bounds on what is read of a file's section table, so that a corrupt header cannot make
/// the daemon read megabytes.
const MAX_SECTION_TABLE: u64 = 1 << 20;
const MAX_SECTION_NAMES: u64 = 1 << 20;
const MAX_DEBUG_LINK: u64 = 4096;

/// What blazesym would do with a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// It would read DWARF (then `--symbol-file-ttl` applies).
    pub dwarf: bool,
    /// Whether to let it read debug info at all (see [`inspect`]).
    pub debug_syms: bool,
    /// Bytes of symbol tables, their strings and debug sections it would parse, the separate
    /// debug file's included; the whole file when its section table cannot be read.
    pub symbol_bytes: u64,
    /// The separate debug file blazesym reads, when debug info is read at all (the unwind
    /// tables take a `.debug_frame` from it).
    pub debug_file: Option<PathBuf>,
}

/// What blazesym would do with `file`, with the debug directories under `root` (`/` but in
/// tests). Its debug info is read when the file has no debug link, or when it is root's (no
/// other user could have written the link nor can replace what it names) and the link leads
/// to a plain name found in the debug directories, which blazesym then opens before it looks
/// anywhere else.
pub fn inspect(file: &File, root: &Path, build_id: Option<&str>) -> Facts {
    let whole = file.metadata().map_or(u64::MAX, |m| m.len());
    let sections = match sections(file) {
        Ok(Some(sections)) => sections,
        Ok(None) | Err(_) => {
            return Facts {
                dwarf: false,
                debug_syms: false,
                symbol_bytes: whole,
                debug_file: None,
            }
        }
    };
    let root_owned = file.metadata().is_ok_and(|m| m.uid() == 0);
    let linked = sections.debug_link.is_some() || sections.other_links;
    let debug_file = separate_debug_file(root, &sections, build_id);
    let debug_syms = !sections.path_link
        && (!linked || root_owned && (sections.debug_link.is_none() || debug_file.is_some()));
    let debug_bytes = debug_file
        .as_ref()
        .filter(|_| debug_syms)
        .and_then(|path| open_untrusted(path).ok())
        .map_or(0, |debug| match sections_of(&debug) {
            Some(s) => s.symbol_bytes,
            None => debug.metadata().map_or(u64::MAX, |m| m.len()),
        });
    Facts {
        dwarf: debug_syms && (sections.dwarf || debug_file.is_some()),
        debug_syms,
        symbol_bytes: sections.symbol_bytes.saturating_add(debug_bytes),
        debug_file: debug_file.filter(|_| debug_syms),
    }
}

fn sections_of(file: &File) -> Option<Sections> {
    sections(file).ok().flatten()
}

/// The separate debug file blazesym finds first for a file with these sections, when it is in
/// the debug directories: by build id, or by a debug link that is a plain file name.
fn separate_debug_file(
    root: &Path,
    sections: &Sections,
    build_id: Option<&str>,
) -> Option<PathBuf> {
    let within = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        for dir in DEBUG_DIRS {
            candidates.push(format!("{dir}/.build-id/{}/{}.debug", &id[..2], &id[2..]).into());
        }
    }
    if let Some(link) = &sections.debug_link {
        for dir in DEBUG_DIRS {
            candidates.push(Path::new(dir).join(link));
        }
    }
    candidates
        .into_iter()
        .map(|c| within(&c))
        .find(|c| c.is_file())
}

struct Sections {
    /// A `.debug_info` (or compressed `.zdebug_info`) section is present.
    dwarf: bool,
    /// The file name in `.gnu_debuglink`, when it is a plain name.
    debug_link: Option<String>,
    /// A `.gnu_debugaltlink` or `.debug_sup` section.
    other_links: bool,
    /// A `.gnu_debuglink` naming a path (absolute or with a directory), which blazesym would
    /// look up outside the debug directories.
    path_link: bool,
    /// Sizes of the sections blazesym parses for names and lines.
    symbol_bytes: u64,
}

/// Whether blazesym parses the section of this name into memory it holds.
fn is_symbol_section(name: &[u8]) -> bool {
    matches!(name, b".symtab" | b".strtab" | b".dynsym" | b".dynstr")
        || name.starts_with(b".debug_")
        || name.starts_with(b".zdebug_")
}

/// The section facts of a 64-bit little-endian ELF file; None for any other file.
fn sections(file: &File) -> io::Result<Option<Sections>> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)?;
    // Magic, ELFCLASS64, ELFDATA2LSB: the daemon runs on x86-64 and arm64 hosts.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Ok(None);
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    // Every offset read is below 64, and the header and each section entry are 64 bytes.
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(bytes_at(b, at));
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(bytes_at(b, at));
    let table_offset = u64_at(&header, 0x28);
    let entry_size = u64::from(u16_at(&header, 0x3a));
    let count = u64::from(u16_at(&header, 0x3c));
    let names_index = u64::from(u16_at(&header, 0x3e));
    if table_offset == 0 || entry_size < 64 || count == 0 || names_index >= count {
        return Ok(None);
    }
    if entry_size * count > MAX_SECTION_TABLE {
        return Ok(None);
    }
    let table = read_at(file, table_offset, entry_size * count)?;
    let entry = |i: u64| &table[(i * entry_size) as usize..][..64];
    // (name offset, file offset, size) of a section header.
    let fields = |e: &[u8]| (u32_at(e, 0), u64_at(e, 0x18), u64_at(e, 0x20));
    let (_, names_offset, names_size) = fields(entry(names_index));
    if names_size > MAX_SECTION_NAMES {
        return Ok(None);
    }
    let names = read_at(file, names_offset, names_size)?;
    let name_of = |at: u32| {
        let rest = names.get(at as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    let mut found = Sections {
        dwarf: false,
        debug_link: None,
        other_links: false,
        path_link: false,
        symbol_bytes: 0,
    };
    for i in 0..count {
        let (name, offset, size) = fields(entry(i));
        let name = name_of(name);
        if is_symbol_section(name) {
            let flags = u64_at(entry(i), 0x08);
            let parsed = parsed_size(file, name, flags, offset, size);
            found.symbol_bytes = found.symbol_bytes.saturating_add(parsed);
        }
        match name {
            b".debug_info" | b".zdebug_info" => found.dwarf = true,
            b".gnu_debuglink" => {
                let data = read_at(file, offset, size.min(MAX_DEBUG_LINK))?;
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                let link = String::from_utf8_lossy(&data[..end]).into_owned();
                // A link with a directory in it would be looked up outside the debug dirs.
                if link.is_empty() || link.contains('/') || link == ".." {
                    found.path_link = true;
                } else {
                    found.debug_link = Some(link);
                }
            }
            b".gnu_debugaltlink" | b".debug_sup" => found.other_links = true,
            _ => {}
        }
    }
    Ok(Some(found))
}

/// `sh_flags` bit of a section stored compressed behind an `Elf64_Chdr`.
const SHF_COMPRESSED: u64 = 0x800;

/// The bytes a symbol or debug section takes once blazesym has it in memory: a compressed
/// section is decompressed to the size its header claims, which the file's owner chose (a few
/// bytes on disk can claim a terabyte), so that size counts, not the bytes on disk. A header
/// that cannot be read counts as unbounded.
fn parsed_size(file: &File, name: &[u8], flags: u64, offset: u64, size: u64) -> u64 {
    let claimed = if flags & SHF_COMPRESSED != 0 {
        // Elf64_Chdr: ch_type u32, ch_reserved u32, ch_size u64, ch_addralign u64.
        read_at(file, offset, 24.min(size))
            .ok()
            .filter(|chdr| chdr.len() == 24)
            .map(|chdr| u64::from_le_bytes(bytes_at(&chdr, 8)))
    } else if name.starts_with(b".zdebug_") {
        // GNU's older form: "ZLIB", then the uncompressed size as a big-endian u64.
        read_at(file, offset, 12.min(size))
            .ok()
            .filter(|head| head.len() == 12 && head[..4] == *b"ZLIB")
            .map(|head| u64::from_be_bytes(bytes_at(&head, 4)))
    } else {
        return size;
    };
    claimed.map_or(u64::MAX, |claimed| claimed.max(size))
}

fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut data = vec![0; len as usize];
    file.read_exact_at(&mut data, offset)?;
    Ok(data)
}

/// The `N` bytes of `b` at `at`.
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit ELF file holding `sections` (name, contents) and the section names.
    fn elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let flagged: Vec<Section<'_>> = sections.iter().map(|&(n, c)| (n, c, 0)).collect();
        elf_flagged(&flagged)
    }

    /// A section of a test file: name, contents, `sh_flags`.
    type Section<'a> = (&'a str, &'a [u8], u64);

    /// [`elf`] with each section's `sh_flags`.
    fn elf_flagged(sections: &[Section<'_>]) -> Vec<u8> {
        let mut names = vec![0u8];
        let mut data = Vec::new();
        // (name offset, data offset, size, flags); data starts after the 64-byte header.
        let mut headers = vec![(0u32, 0u64, 0u64, 0u64)];
        for (name, contents, flags) in sections {
            headers.push((
                names.len() as u32,
                64 + data.len() as u64,
                contents.len() as u64,
                *flags,
            ));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            data.extend_from_slice(contents);
        }
        headers.push((names.len() as u32, 64 + data.len() as u64, 0, 0));
        names.extend_from_slice(b".shstrtab\0");
        let last = headers.len() - 1;
        headers[last].2 = names.len() as u64;
        data.extend_from_slice(&names);
        let table_offset = 64 + data.len() as u64;
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        out[0x28..0x30].copy_from_slice(&table_offset.to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[0x3e..0x40].copy_from_slice(&(last as u16).to_le_bytes());
        out.extend_from_slice(&data);
        for (name, offset, size, flags) in headers {
            let mut entry = [0u8; 64];
            entry[..4].copy_from_slice(&name.to_le_bytes());
            entry[0x08..0x10].copy_from_slice(&flags.to_le_bytes());
            entry[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
            entry[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&entry);
        }
        out
    }

    #[test]
    fn compressed_debug_sections_count_their_uncompressed_size() {
        const TIB: u64 = 1 << 40;
        let root = root("compressed");
        // A few bytes on disk whose Elf64_Chdr claims a terabyte (zlib, alignment 1).
        let mut chdr = Vec::new();
        chdr.extend_from_slice(&1u32.to_le_bytes());
        chdr.extend_from_slice(&0u32.to_le_bytes());
        chdr.extend_from_slice(&TIB.to_le_bytes());
        chdr.extend_from_slice(&1u64.to_le_bytes());
        chdr.extend_from_slice(b"x\x9c");
        let mut zdebug = b"ZLIB".to_vec();
        zdebug.extend_from_slice(&TIB.to_be_bytes());
        zdebug.extend_from_slice(b"x\x9c");
        let cases: [(&str, &[Section<'_>]); 3] = [
            ("gabi.so", &[(".debug_info", &chdr, SHF_COMPRESSED)]),
            ("gnu.so", &[(".zdebug_info", &zdebug, 0)]),
            // A header cut short: no size to trust.
            ("short.so", &[(".debug_info", &chdr[..10], SHF_COMPRESSED)]),
        ];
        for (name, sections) in cases {
            std::fs::write(root.join("usr/lib").join(name), elf_flagged(sections)).unwrap();
            let facts = facts(&root, &format!("/usr/lib/{name}"), None);
            assert!(facts.symbol_bytes >= TIB, "{name}: {facts:?}");
        }
        // Refused by the per-file bound when held, as any file over it.
        let mut files = super::super::files::Files::new(super::super::files::Bounds {
            max_file_bytes: 1 << 30,
            max_bytes: u64::MAX,
            max_files: usize::MAX,
        });
        let path = root.join("usr/lib/gabi.so");
        let meta = std::fs::metadata(&path).unwrap();
        let vma = crate::process::Vma {
            start: 0x1000,
            end: 0x2000,
            file_offset: 0,
            path: path.to_str().unwrap().to_string(),
            dev: super::super::files::maps_dev(meta.dev()),
            inode: meta.ino(),
            build_id: None,
        };
        let held = files.hold((vma.dev, vma.inode), 0x7fff_fff0, &vma, &mut None);
        assert_eq!(held.refused, Some(super::super::files::Refusal::FileBound));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A fresh directory standing in for a process's root file system.
    fn root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-debuginfo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        dir
    }

    fn facts(root: &Path, path: &str, build_id: Option<&str>) -> Facts {
        let file = File::open(root.join(path.trim_start_matches('/'))).unwrap();
        inspect(&file, root, build_id)
    }

    #[test]
    fn dwarf_in_the_file_or_a_separate_debug_file_counts() {
        let root = root("files");
        let write = |path: &str, bytes: Vec<u8>| {
            std::fs::write(root.join(path.trim_start_matches('/')), bytes).unwrap()
        };
        write(
            "/usr/lib/dwarf.so",
            elf(&[(".symtab", b"x"), (".debug_info", b"y")]),
        );
        write("/usr/lib/stripped.so", elf(&[(".symtab", b"x")]));
        write(
            "/usr/lib/linked.so",
            elf(&[(".gnu_debuglink", b"linked.so.debug\0\0\0\0\0crc!")]),
        );
        write("/usr/lib/not-elf.so", b"#!/bin/sh\n".repeat(10));
        assert!(facts(&root, "/usr/lib/dwarf.so", None).dwarf);
        assert!(!facts(&root, "/usr/lib/stripped.so", None).dwarf);
        // Not ELF: blazesym reads nothing of it that could be DWARF, and it counts whole.
        let not_elf = facts(&root, "/usr/lib/not-elf.so", None);
        assert_eq!((not_elf.dwarf, not_elf.symbol_bytes), (false, 100));

        // A debug link without its file (the -dbg package not installed) is not DWARF, and
        // blazesym, which would look for it next to the file, does not read debug info...
        let unresolved = facts(&root, "/usr/lib/linked.so", Some("abcdef"));
        assert_eq!((unresolved.dwarf, unresolved.debug_syms), (false, false));
        // ...found in the debug directory by its plain name, it is (the file is root's),
        std::fs::create_dir_all(root.join("usr/lib/debug")).unwrap();
        write(
            "/usr/lib/debug/linked.so.debug",
            elf(&[(".debug_info", &[0; 1000])]),
        );
        let linked = facts(&root, "/usr/lib/linked.so", None);
        assert!(linked.dwarf && linked.debug_syms, "{linked:?}");
        assert_eq!(linked.symbol_bytes, 1000, "the debug file's sections count");
        // ...and so is one found by build id.
        std::fs::create_dir_all(root.join("usr/lib/debug/.build-id/ab")).unwrap();
        write("/usr/lib/debug/.build-id/ab/cdef.debug", elf(&[]));
        assert!(facts(&root, "/usr/lib/stripped.so", Some("abcdef")).dwarf);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn symbol_and_debug_sections_are_measured_from_the_headers() {
        let root = root("sizes");
        let big = vec![0u8; 5000];
        let bytes = elf(&[
            (".text", &big),
            (".symtab", &[0; 240]),
            (".strtab", &[0; 60]),
            (".dynsym", &[0; 48]),
            (".dynstr", &[0; 12]),
            (".debug_info", &[0; 300]),
            (".debug_line", &[0; 40]),
            (".rodata", &big),
        ]);
        std::fs::write(root.join("usr/lib/sized.so"), bytes).unwrap();
        let sized = facts(&root, "/usr/lib/sized.so", None);
        assert_eq!(sized.symbol_bytes, 240 + 60 + 48 + 12 + 300 + 40);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn debug_links_that_lead_out_of_the_debug_directories_turn_debug_info_off() {
        let root = root("links");
        for (name, section, contents) in [
            ("absolute.so", ".gnu_debuglink", &b"/tmp/fifo\0\0\0crc!"[..]),
            ("parent.so", ".gnu_debuglink", b"../../tmp/x\0crc!"),
            ("altlink.so", ".gnu_debugaltlink", b"/tmp/dwz\0id"),
        ] {
            std::fs::write(
                root.join("usr/lib").join(name),
                elf(&[(section, contents), (".debug_info", b"y")]),
            )
            .unwrap();
            let found = facts(&root, &format!("/usr/lib/{name}"), None);
            // Root's file: an altlink (dwz) names root's files; a path in a debuglink never.
            let expected = section == ".gnu_debugaltlink";
            assert_eq!(found.debug_syms, expected, "{name}: {found:?}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_test_binary_has_dwarf() {
        // Test builds carry debug info.
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        assert!(inspect(&exe, Path::new("/"), None).dwarf);
    }
}
