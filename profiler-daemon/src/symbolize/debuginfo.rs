//! Whether blazesym would read DWARF for a file: in the file itself, or in a separate debug
//! file it finds through `.gnu_debuglink` or the build id.
//!
//! blazesym parses DWARF lazily, so its parsed state of such a file grows with every part of
//! the program that is sampled, and `--symbol-file-ttl` releases it. A file with only a symbol
//! table (the stripped libraries and programs of a distribution) is parsed whole at its first
//! address and does not grow: releasing it every period only made the daemon read and parse
//! it again, and its RSS rise and fall with each re-read.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

/// Where blazesym looks for separate debug files (its default debug directories).
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Bounds on what is read of a file's section table, so that a corrupt header cannot make
/// the daemon read megabytes.
const MAX_SECTION_TABLE: u64 = 1 << 20;
const MAX_SECTION_NAMES: u64 = 1 << 20;
const MAX_DEBUG_LINK: u64 = 4096;

/// Whether `path` (as seen from `root`, `/proc/PID/root` for a process's own mount namespace)
/// has DWARF debug info that blazesym would use. Anything unreadable or unexpected counts as
/// yes: such a file is then released every period, which is always safe.
pub fn has_debug_info(root: &Path, path: &str, build_id: Option<&str>) -> bool {
    let within = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let sections = match sections(&within(Path::new(path))) {
        Ok(Some(sections)) => sections,
        Ok(None) | Err(_) => return true,
    };
    if sections.dwarf {
        return true;
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        for dir in DEBUG_DIRS {
            candidates.push(format!("{dir}/.build-id/{}/{}.debug", &id[..2], &id[2..]).into());
        }
    }
    if let Some(link) = &sections.debug_link {
        let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
        candidates.push(dir.join(link));
        candidates.push(dir.join(".debug").join(link));
        for debug_dir in DEBUG_DIRS {
            let debug_dir = Path::new(debug_dir);
            candidates.push(debug_dir.join(link));
            candidates.push(
                debug_dir
                    .join(dir.strip_prefix("/").unwrap_or(dir))
                    .join(link),
            );
        }
    }
    candidates.iter().any(|c| within(c).is_file())
}

struct Sections {
    /// A `.debug_info` (or compressed `.zdebug_info`) section is present.
    dwarf: bool,
    /// The file name in `.gnu_debuglink`.
    debug_link: Option<String>,
}

/// The section facts of a 64-bit little-endian ELF file; None for any other file.
fn sections(path: &Path) -> io::Result<Option<Sections>> {
    let mut file = File::open(path)?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header)?;
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
    let table = read_at(&mut file, table_offset, entry_size * count)?;
    let entry = |i: u64| &table[(i * entry_size) as usize..][..64];
    // (name offset, file offset, size) of a section header.
    let fields = |e: &[u8]| (u32_at(e, 0), u64_at(e, 0x18), u64_at(e, 0x20));
    let (_, names_offset, names_size) = fields(entry(names_index));
    if names_size > MAX_SECTION_NAMES {
        return Ok(None);
    }
    let names = read_at(&mut file, names_offset, names_size)?;
    let name_of = |at: u32| {
        let rest = names.get(at as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    };
    let mut found = Sections {
        dwarf: false,
        debug_link: None,
    };
    for i in 0..count {
        let (name, offset, size) = fields(entry(i));
        match name_of(name) {
            b".debug_info" | b".zdebug_info" => found.dwarf = true,
            b".gnu_debuglink" => {
                let data = read_at(&mut file, offset, size.min(MAX_DEBUG_LINK))?;
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                let link = String::from_utf8_lossy(&data[..end]).into_owned();
                // A link with a directory in it would be looked up outside the debug dirs.
                if !link.is_empty() && !link.contains('/') {
                    found.debug_link = Some(link);
                }
            }
            _ => {}
        }
    }
    Ok(Some(found))
}

fn read_at(file: &mut File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut data = vec![0; len as usize];
    file.read_exact(&mut data)?;
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
        let mut names = vec![0u8];
        let mut data = Vec::new();
        // (name offset, data offset, size); data starts after the 64-byte header.
        let mut headers = vec![(0u32, 0u64, 0u64)];
        for (name, contents) in sections {
            headers.push((
                names.len() as u32,
                64 + data.len() as u64,
                contents.len() as u64,
            ));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            data.extend_from_slice(contents);
        }
        headers.push((names.len() as u32, 64 + data.len() as u64, 0));
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
        for (name, offset, size) in headers {
            let mut entry = [0u8; 64];
            entry[..4].copy_from_slice(&name.to_le_bytes());
            entry[0x18..0x20].copy_from_slice(&offset.to_le_bytes());
            entry[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&entry);
        }
        out
    }

    /// A fresh directory standing in for a process's root file system.
    fn root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-debuginfo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        dir
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
        assert!(has_debug_info(&root, "/usr/lib/dwarf.so", None));
        assert!(!has_debug_info(&root, "/usr/lib/stripped.so", None));
        assert!(has_debug_info(&root, "/usr/lib/not-elf.so", None));
        assert!(has_debug_info(&root, "/usr/lib/missing.so", None));

        // A debug link without its file (the -dbg package not installed) is not DWARF...
        assert!(!has_debug_info(&root, "/usr/lib/linked.so", Some("abcdef")));
        // ...found under the debug directory's copy of the file's directory, it is,
        std::fs::create_dir_all(root.join("usr/lib/debug/usr/lib")).unwrap();
        write("/usr/lib/debug/usr/lib/linked.so.debug", elf(&[]));
        assert!(has_debug_info(&root, "/usr/lib/linked.so", None));
        // ...and so is one found by build id.
        std::fs::create_dir_all(root.join("usr/lib/debug/.build-id/ab")).unwrap();
        write("/usr/lib/debug/.build-id/ab/cdef.debug", elf(&[]));
        assert!(has_debug_info(
            &root,
            "/usr/lib/stripped.so",
            Some("abcdef")
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_test_binary_has_dwarf() {
        // Test builds carry debug info.
        let exe = std::env::current_exe().unwrap();
        assert!(has_debug_info(Path::new("/"), exe.to_str().unwrap(), None));
    }
}
