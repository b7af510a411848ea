//! The tables of one pprof profile: strings, mappings, functions and locations.

use rustc_hash::FxHashMap;

use super::pprof::KERNEL_MAPPING;
use crate::{
    aggregate::ProcessProfile,
    pprof_proto as pb,
    symbolize::{FrameKind, Location},
};

/// A location's mapping id, address, and (function id, line) of each of its lines.
type LocationKey = (u64, u64, Vec<(u64, i64)>);

#[derive(Default)]
pub(super) struct Strings {
    pub(super) table: Vec<String>,
    index: FxHashMap<String, i64>,
}

impl Strings {
    pub(super) fn new() -> Self {
        let mut strings = Self::default();
        strings.get("");
        strings
    }

    pub(super) fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// String table, mappings, functions and locations, each created on first use so that a
/// profile holds only what its samples reference.
pub(super) struct Tables {
    pub(super) strings: Strings,
    pub(super) mappings: Vec<pb::Mapping>,
    mapping_ids: FxHashMap<(u32, u64), u64>,
    kernel_mapping: Option<u64>,
    pub(super) functions: Vec<pb::Function>,
    function_ids: FxHashMap<(i64, i64), u64>,
    /// Locations by mapping, address and lines: a process's samples of several intervals
    /// (a kept profile's timeline) share them.
    location_ids: FxHashMap<LocationKey, u64>,
    pub(super) locations: Vec<pb::Location>,
}

impl Tables {
    pub(super) fn new() -> Self {
        Self {
            strings: Strings::new(),
            mappings: Vec::new(),
            mapping_ids: FxHashMap::default(),
            kernel_mapping: None,
            functions: Vec::new(),
            function_ids: FxHashMap::default(),
            location_ids: FxHashMap::default(),
            locations: Vec::new(),
        }
    }

    fn mapping(&mut self, pid: u32, location: &Location) -> u64 {
        match (location.kind, &location.vma) {
            (FrameKind::Kernel, _) if location.address != 0 => {
                if let Some(id) = self.kernel_mapping {
                    return id;
                }
                let id = self.mappings.len() as u64 + 1;
                let filename = self.strings.get(KERNEL_MAPPING);
                self.mappings.push(pb::Mapping {
                    id,
                    memory_start: 0,
                    memory_limit: u64::MAX,
                    filename,
                    has_functions: true,
                    ..Default::default()
                });
                self.kernel_mapping = Some(id);
                id
            }
            (FrameKind::User, Some(vma)) => {
                if let Some(&id) = self.mapping_ids.get(&(pid, vma.start)) {
                    return id;
                }
                let id = self.mappings.len() as u64 + 1;
                let filename = self.strings.get(&vma.path);
                let build_id = self.strings.get(vma.build_id.as_deref().unwrap_or(""));
                self.mappings.push(pb::Mapping {
                    id,
                    memory_start: vma.start,
                    memory_limit: vma.end,
                    file_offset: vma.file_offset,
                    filename,
                    build_id,
                    has_functions: true,
                    has_filenames: true,
                    has_line_numbers: true,
                    has_inline_frames: true,
                });
                self.mapping_ids.insert((pid, vma.start), id);
                id
            }
            _ => 0,
        }
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let (name, file) = (self.strings.get(name), self.strings.get(file));
        if let Some(&id) = self.function_ids.get(&(name, file)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(pb::Function {
            id,
            name,
            system_name: name,
            filename: file,
            start_line: 0,
        });
        self.function_ids.insert((name, file), id);
        id
    }

    pub(super) fn location(&mut self, pid: u32, location: &Location) -> u64 {
        let mapping_id = self.mapping(pid, location);
        let line: Vec<pb::Line> = location
            .lines
            .iter()
            .map(|line| pb::Line {
                function_id: self.function(&line.function, line.file.as_deref().unwrap_or("")),
                line: line.line as i64,
                column: 0,
            })
            .collect();
        let key = (
            mapping_id,
            location.address,
            line.iter().map(|l| (l.function_id, l.line)).collect(),
        );
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        self.location_ids.insert(key, id);
        self.locations.push(pb::Location {
            id,
            mapping_id,
            address: location.address,
            line,
            is_folded: false,
        });
        id
    }
}

/// Creates the mapping of the first process's executable before any other: `go tool pprof`
/// names a profile (its title, the file it saves a fetched one to) after its first mapping,
/// which would otherwise be the kernel's whenever a stack begins in the kernel.
pub(super) fn main_mapping_first(
    tables: &mut Tables,
    process: &ProcessProfile,
    stacks: &[(&Vec<u32>, u64)],
) {
    let exe = process.info.exe.as_str();
    if exe.is_empty() {
        return;
    }
    let main = stacks
        .iter()
        .flat_map(|(stack, _)| stack.iter())
        .filter_map(|&i| process.locations.get(i as usize))
        .find(|l| l.kind == FrameKind::User && l.vma.as_ref().is_some_and(|v| v.path == exe));
    if let Some(location) = main {
        tables.mapping(process.info.pid, location);
    }
}
