//! Encodes window profiles as gzipped pprof (`perftools.profiles.Profile`).

use std::{collections::HashMap, io::Write, time::UNIX_EPOCH};

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use crate::{
    aggregate::{ProcessProfile, Window},
    pprof_proto as pb,
    symbolize::FrameKind,
};

/// Name of the mapping that holds every kernel frame (the convention of perf and pprof).
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut strings = Self::default();
        strings.get("");
        strings
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds one pprof profile from the given processes of a window. Every sample carries `pid`
/// and `comm` labels, so one file can hold many processes (`record`) or one (`run`).
pub fn encode(window: &Window, processes: &[&ProcessProfile], comments: &[String]) -> pb::Profile {
    let mut strings = Strings::new();
    let period = 1_000_000_000 / window.frequency.max(1) as i64;
    let value_type = |strings: &mut Strings, ty: &str, unit: &str| pb::ValueType {
        r#type: strings.get(ty),
        unit: strings.get(unit),
    };
    let sample_type = vec![
        value_type(&mut strings, "samples", "count"),
        value_type(&mut strings, "cpu", "nanoseconds"),
    ];
    let period_type = Some(value_type(&mut strings, "cpu", "nanoseconds"));

    let mut mappings: Vec<pb::Mapping> = Vec::new();
    let mut mapping_ids: HashMap<(u32, u64), u64> = HashMap::new();
    let mut kernel_mapping: Option<u64> = None;
    let mut functions: Vec<pb::Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut locations: Vec<pb::Location> = Vec::new();
    let mut samples = Vec::new();
    let (pid_key, comm_key) = (strings.get("pid"), strings.get("comm"));

    for process in processes {
        let pid = process.info.pid;
        let mut location_ids = vec![0u64; process.locations.len()];
        for (i, location) in process.locations.iter().enumerate() {
            let mapping_id = match (location.kind, &location.vma) {
                (FrameKind::Kernel, _) if location.address != 0 => *kernel_mapping
                    .get_or_insert_with(|| {
                        mappings.push(pb::Mapping {
                            id: mappings.len() as u64 + 1,
                            memory_start: 0,
                            memory_limit: u64::MAX,
                            filename: strings.get(KERNEL_MAPPING),
                            has_functions: true,
                            ..Default::default()
                        });
                        mappings.len() as u64
                    }),
                (FrameKind::User, Some(vma)) => {
                    *mapping_ids.entry((pid, vma.start)).or_insert_with(|| {
                        mappings.push(pb::Mapping {
                            id: mappings.len() as u64 + 1,
                            memory_start: vma.start,
                            memory_limit: vma.end,
                            file_offset: vma.file_offset,
                            filename: strings.get(&vma.path),
                            build_id: strings.get(vma.build_id.as_deref().unwrap_or("")),
                            has_functions: true,
                            has_filenames: true,
                            has_line_numbers: true,
                            has_inline_frames: true,
                        });
                        mappings.len() as u64
                    })
                }
                _ => 0,
            };
            let lines = location
                .lines
                .iter()
                .map(|line| {
                    let name = strings.get(&line.function);
                    let file = strings.get(line.file.as_deref().unwrap_or(""));
                    let function_id = *function_ids.entry((name, file)).or_insert_with(|| {
                        functions.push(pb::Function {
                            id: functions.len() as u64 + 1,
                            name,
                            system_name: name,
                            filename: file,
                            start_line: 0,
                        });
                        functions.len() as u64
                    });
                    pb::Line {
                        function_id,
                        line: line.line as i64,
                        column: 0,
                    }
                })
                .collect();
            locations.push(pb::Location {
                id: locations.len() as u64 + 1,
                mapping_id,
                address: location.address,
                line: lines,
                is_folded: false,
            });
            location_ids[i] = locations.len() as u64;
        }

        let labels = vec![
            pb::Label {
                key: pid_key,
                str: strings.get(&pid.to_string()),
                ..Default::default()
            },
            pb::Label {
                key: comm_key,
                str: strings.get(&process.info.comm),
                ..Default::default()
            },
        ];
        let mut stacks: Vec<(&Vec<u32>, &u64)> = process.stacks.iter().collect();
        // Deterministic output: the same window always encodes to the same bytes.
        stacks.sort();
        for (stack, &count) in stacks {
            samples.push(pb::Sample {
                location_id: stack.iter().map(|&i| location_ids[i as usize]).collect(),
                value: vec![count as i64, count as i64 * period],
                label: labels.clone(),
            });
        }
    }

    let comment = comments.iter().map(|c| strings.get(c)).collect();
    let time_nanos = window
        .start
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    pb::Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos,
        duration_nanos: window.duration.as_nanos() as i64,
        period_type,
        period,
        comment,
        ..Default::default()
    }
}

/// Serializes and gzips a profile.
pub fn to_gzip(profile: &pb::Profile) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(&profile.encode_to_vec())
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use super::*;
    use crate::{
        procinfo::{ProcessInfo, Vma},
        symbolize::{Line, Location},
    };

    fn line(name: &str) -> Line {
        Line {
            function: Arc::from(name),
            file: Some(Arc::from("src/x.c")),
            line: 3,
        }
    }

    fn window() -> Window {
        let vma = Arc::new(Vma {
            start: 0x1000,
            end: 0x2000,
            file_offset: 0,
            path: "/usr/bin/hot".into(),
            build_id: Some("abcd".into()),
        });
        let info = ProcessInfo {
            pid: 42,
            comm: "hot".into(),
            // Empty on purpose: a process re-read after a dlopen has a different VMA list than
            // the one captured when its window began; locations carry their own mapping.
            vmas: vec![],
            ..Default::default()
        };
        let locations = vec![
            Location {
                kind: FrameKind::User,
                address: 0x1100,
                vma: Some(vma.clone()),
                lines: vec![line("main")],
            },
            Location {
                kind: FrameKind::User,
                address: 0x1200,
                vma: Some(vma.clone()),
                lines: vec![line("inlined_leaf"), line("hot")],
            },
            Location {
                kind: FrameKind::Kernel,
                address: 0xffff_ffff_8100_0000,
                vma: None,
                lines: vec![Line {
                    function: Arc::from("vfs_write"),
                    file: None,
                    line: 0,
                }],
            },
        ];
        let mut stacks = HashMap::new();
        stacks.insert(vec![1, 0], 30);
        stacks.insert(vec![2, 1, 0], 10);
        Window {
            start: SystemTime::now() - Duration::from_secs(5),
            duration: Duration::from_secs(5),
            frequency: 100,
            processes: vec![ProcessProfile {
                info,
                locations,
                stacks,
                samples: 40,
            }],
        }
    }

    /// Checks every rule of the Pyroscope ingestion spec (section 4) on a decoded profile.
    pub(crate) fn assert_valid(profile: &pb::Profile) {
        let strings = &profile.string_table;
        assert_eq!(
            strings.first().map(String::as_str),
            Some(""),
            "string_table[0] must be empty"
        );
        assert!(
            !profile.sample_type.is_empty(),
            "sample_type must not be empty"
        );
        let in_range = |i: i64| i >= 0 && (i as usize) < strings.len();
        for ty in &profile.sample_type {
            assert!(in_range(ty.r#type) && in_range(ty.unit));
            assert!(
                !strings[ty.r#type as usize].contains('-'),
                "sample type names have no '-'"
            );
        }
        let pt = profile.period_type.as_ref().expect("period type");
        assert!(in_range(pt.r#type) && in_range(pt.unit));
        assert!(profile.sample.len() <= 16000);
        let location_ids: std::collections::HashSet<u64> =
            profile.location.iter().map(|l| l.id).collect();
        let function_ids: std::collections::HashSet<u64> =
            profile.function.iter().map(|f| f.id).collect();
        let mapping_ids: std::collections::HashSet<u64> =
            profile.mapping.iter().map(|m| m.id).collect();
        for sample in &profile.sample {
            assert_eq!(sample.value.len(), profile.sample_type.len());
            for id in &sample.location_id {
                assert!(
                    location_ids.contains(id),
                    "sample references a missing location"
                );
            }
            for label in &sample.label {
                assert!(in_range(label.key) && in_range(label.str));
            }
        }
        for location in &profile.location {
            assert_ne!(location.id, 0, "location ids are non-zero");
            assert!(location.mapping_id == 0 || mapping_ids.contains(&location.mapping_id));
            for line in &location.line {
                assert!(function_ids.contains(&line.function_id));
            }
        }
        for function in &profile.function {
            assert_ne!(function.id, 0, "function ids are non-zero");
            assert!(
                in_range(function.name)
                    && in_range(function.system_name)
                    && in_range(function.filename)
            );
        }
        for mapping in &profile.mapping {
            assert_ne!(mapping.id, 0);
            assert!(in_range(mapping.filename) && in_range(mapping.build_id));
        }
        for c in &profile.comment {
            assert!(in_range(*c));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        assert!(
            profile.time_nanos > now - 3600 * 1_000_000_000
                && profile.time_nanos < now + 600 * 1_000_000_000
        );
        assert!(profile.encoded_len() <= 4 << 20);
    }

    #[test]
    fn encoded_profile_round_trips_and_follows_every_rule() {
        let window = window();
        let processes: Vec<&ProcessProfile> = window.processes.iter().collect();
        let gz = to_gzip(&encode(
            &window,
            &processes,
            &["made by a test".to_string()],
        ));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let profile = pb::Profile::decode(&raw[..]).unwrap();
        assert_valid(&profile);

        let s = |i: i64| profile.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let pt = profile.period_type.unwrap();
        assert_eq!((s(pt.r#type), s(pt.unit)), ("cpu", "nanoseconds"));
        assert_eq!(profile.period, 10_000_000);
        assert_eq!(profile.duration_nanos, 5_000_000_000);
        assert_eq!(profile.sample.len(), 2);
        let total: i64 = profile.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(total, 40);
        for sample in &profile.sample {
            assert_eq!(sample.value[1], sample.value[0] * 10_000_000);
            let labels: Vec<(&str, &str)> =
                sample.label.iter().map(|l| (s(l.key), s(l.str))).collect();
            assert_eq!(labels, [("pid", "42"), ("comm", "hot")]);
        }
        // Kernel frames live in the kernel mapping; user frames carry path and build id.
        let kernel = profile
            .location
            .iter()
            .find(|l| l.address == 0xffff_ffff_8100_0000)
            .unwrap();
        let kmap = profile
            .mapping
            .iter()
            .find(|m| m.id == kernel.mapping_id)
            .unwrap();
        assert_eq!(s(kmap.filename), KERNEL_MAPPING);
        let user = profile
            .location
            .iter()
            .find(|l| l.address == 0x1200)
            .unwrap();
        let umap = profile
            .mapping
            .iter()
            .find(|m| m.id == user.mapping_id)
            .unwrap();
        assert_eq!(
            (s(umap.filename), s(umap.build_id)),
            ("/usr/bin/hot", "abcd")
        );
        // Inlined function first, its caller last.
        let names: Vec<&str> = user
            .line
            .iter()
            .map(|l| {
                s(profile
                    .function
                    .iter()
                    .find(|f| f.id == l.function_id)
                    .unwrap()
                    .name)
            })
            .collect();
        assert_eq!(names, ["inlined_leaf", "hot"]);
        assert!(profile.comment.iter().any(|&c| s(c) == "made by a test"));
    }

    #[test]
    fn encoding_is_deterministic() {
        let window = window();
        let processes: Vec<&ProcessProfile> = window.processes.iter().collect();
        assert_eq!(
            encode(&window, &processes, &[]),
            encode(&window, &processes, &[])
        );
    }
}
