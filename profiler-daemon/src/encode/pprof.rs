//! Encodes window profiles as gzipped pprof (`perftools.profiles.Profile`).

use rustc_hash::FxHashMap;
use std::{io::Write, time::UNIX_EPOCH};

use flate2::{write::GzEncoder, Compression};
use prost::Message;

pub use super::measure::Measure;
pub use super::phase::{Phase, SliceTime};
use super::tables::{main_mapping_first, Tables};
use crate::{
    aggregate::{ProcessProfile, Window},
    pprof_proto as pb,
};

/// Name of the mapping that holds every kernel frame (the convention of perf and pprof).
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// Most samples (distinct stacks) per profile the server accepts.
pub const MAX_SAMPLES: usize = 16_000;
/// Largest decompressed profile the server accepts.
pub const MAX_BYTES: usize = 4 << 20;

/// The stacks of one process that go into a profile, with their counts, the index of the
/// measure they are values of, and when they were taken relative to a firing (ms).
type Part<'a> = (
    &'a ProcessProfile,
    Vec<(&'a Vec<u32>, u64)>,
    usize,
    Option<SliceTime>,
);

/// A process's samples of one collect interval, and when the interval was taken.
pub type Timed<'a> = (&'a ProcessProfile, SliceTime);

/// Stacks sorted, so that the same window always encodes to the same bytes.
fn sorted_stacks(process: &ProcessProfile) -> Vec<(&Vec<u32>, u64)> {
    let mut stacks: Vec<(&Vec<u32>, u64)> = process.stacks.iter().map(|(s, &c)| (s, c)).collect();
    stacks.sort();
    stacks
}

/// Builds one pprof profile of the given processes of a window, whose samples `measure`
/// describes. Every sample carries `pid` and `comm` labels, so one file can hold many
/// processes (`record`) or one (`run`).
pub fn encode_measured(
    window: &Window,
    processes: &[&ProcessProfile],
    comments: &[String],
    measure: Measure,
) -> pb::Profile {
    let parts: Vec<Part<'_>> = processes
        .iter()
        .map(|p| (*p, sorted_stacks(p), 0, None))
        .collect();
    encode_parts(window, &parts, comments, &[measure])
}

/// One profile holding the samples of several sources, each with its own pair of sample
/// types (zero in the others'): `go tool pprof -sample_index` picks one, and the last
/// source's is the default.
pub fn encode_sources(
    window: &Window,
    sources: &[(Measure, Vec<&ProcessProfile>)],
    comments: &[String],
) -> pb::Profile {
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (i, (_, processes)) in sources.iter().enumerate() {
        parts.extend(processes.iter().map(|p| (*p, sorted_stacks(p), i, None)));
    }
    let measures: Vec<Measure> = sources.iter().map(|(m, _)| *m).collect();
    encode_parts(window, &parts, comments, &measures)
}

/// [`encode_sources`] of a kept profile kept per collect interval: each sample also carries a
/// `phase` label ([`Phase`]: `before`, `firing` or `after`) and an `offset` label,
/// when its interval ended relative to the firing in milliseconds, so `go tool pprof
/// -tagfocus=phase=before` shows the seconds before the spike alone.
pub fn encode_timed(
    window: &Window,
    sources: &[(Measure, Vec<Timed<'_>>)],
    comments: &[String],
) -> pb::Profile {
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (i, (_, processes)) in sources.iter().enumerate() {
        parts.extend(
            processes
                .iter()
                .map(|(p, offset)| (*p, sorted_stacks(p), i, Some(*offset))),
        );
    }
    let measures: Vec<Measure> = sources.iter().map(|(m, _)| *m).collect();
    encode_parts(window, &parts, comments, &measures)
}

/// One process's profile as one or more profiles of the same series, each within the
/// server's limits on samples and size; together they hold every sample.
pub fn encode_split(
    window: &Window,
    process: &ProcessProfile,
    comments: &[String],
    measure: Measure,
    limits: (usize, usize),
) -> Vec<pb::Profile> {
    let (max_samples, max_bytes) = limits;
    let stacks = sorted_stacks(process);
    let mut pending = vec![&stacks[..]];
    let mut done = Vec::new();
    while let Some(chunk) = pending.pop() {
        if chunk.len() > max_samples {
            // Equal parts, each within the sample limit; pushed in reverse to keep stack order.
            let parts = chunk.len().div_ceil(max_samples);
            pending.extend(chunk.chunks(chunk.len().div_ceil(parts)).rev());
            continue;
        }
        let profile = encode_parts(
            window,
            &[(process, chunk.to_vec(), 0, None)],
            comments,
            &[measure],
        );
        if chunk.len() > 1 && profile.encoded_len() > max_bytes {
            let (first, second) = chunk.split_at(chunk.len() / 2);
            pending.push(second);
            pending.push(first);
        } else {
            done.push(profile);
        }
    }
    done
}

fn encode_parts(
    window: &Window,
    parts: &[Part<'_>],
    comments: &[String],
    measures: &[Measure],
) -> pb::Profile {
    let mut tables = Tables::new();
    let strings = &mut tables.strings;
    let mut sample_type = Vec::new();
    for measure in measures {
        for &(kind, unit) in measure.types().0 {
            sample_type.push(pb::ValueType {
                r#type: strings.get(kind),
                unit: strings.get(unit),
            });
        }
    }
    // The period of the default (last) sample type's source.
    let (_, (period_kind, period_unit), period) = measures
        .last()
        .copied()
        .unwrap_or(Measure::cpu_of(window))
        .types();
    let period_type = Some(pb::ValueType {
        r#type: strings.get(period_kind),
        unit: strings.get(period_unit),
    });
    let (pid_key, comm_key) = (strings.get("pid"), strings.get("comm"));
    if let Some((process, stacks, _, _)) = parts.first() {
        main_mapping_first(&mut tables, process, stacks);
    }

    let mut samples = Vec::new();
    for (process, stacks, source, offset) in parts {
        let pid = process.info.pid;
        let mut labels = vec![
            pb::Label {
                key: pid_key,
                str: tables.strings.get(&pid.to_string()),
                ..Default::default()
            },
            pb::Label {
                key: comm_key,
                str: tables.strings.get(&process.info.comm),
                ..Default::default()
            },
        ];
        if let Some(offset) = *offset {
            labels.extend(time_labels(&mut tables.strings, offset));
        }
        let mut location_ids: FxHashMap<u32, u64> = FxHashMap::default();
        for (stack, count) in stacks {
            let location_id = stack
                .iter()
                .map(|&index| {
                    *location_ids
                        .entry(index)
                        .or_insert_with(|| tables.location(pid, &process.locations[index as usize]))
                })
                .collect();
            samples.push(pb::Sample {
                location_id,
                value: values(measures, *source, *count),
                label: labels.clone(),
            });
        }
    }

    let comment = comments.iter().map(|c| tables.strings.get(c)).collect();
    let time_nanos = window
        .start
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    pb::Profile {
        sample_type,
        sample: samples,
        mapping: tables.mappings,
        location: tables.locations,
        function: tables.functions,
        string_table: tables.strings.table,
        time_nanos,
        duration_nanos: window.duration.as_nanos() as i64,
        period_type,
        period,
        comment,
        ..Default::default()
    }
}

/// `phase` ([`Phase`]) and `offset` (when the interval ended, in milliseconds
/// from the firing).
fn time_labels(strings: &mut super::tables::Strings, at: SliceTime) -> [pb::Label; 2] {
    [
        pb::Label {
            key: strings.get("phase"),
            str: strings.get(at.phase.name()),
            ..Default::default()
        },
        pb::Label {
            key: strings.get("offset"),
            num: at.end_ms,
            num_unit: strings.get("milliseconds"),
            ..Default::default()
        },
    ]
}

/// A sample's values: `count` samples of source `source`, zero for every other source.
fn values(measures: &[Measure], source: usize, count: u64) -> Vec<i64> {
    let mut values = Vec::new();
    for (i, measure) in measures.iter().enumerate() {
        if i == source {
            values.extend(measure.values(count));
        } else {
            values.extend(measure.types().0.iter().map(|_| 0));
        }
    }
    values
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
        process::{ProcessInfo, Vma},
        symbolize::{FrameKind, Line, Location},
    };

    fn line(name: &str) -> Line {
        Line {
            function: Arc::from(name),
            file: Some(Arc::from("src/x.c")),
            line: 3,
        }
    }

    #[test]
    fn timed_parts_carry_phase_and_offset_and_share_their_locations() {
        let at = |end_ms: i64| SliceTime {
            end_ms,
            phase: match end_ms {
                ..-1 => Phase::Before,
                -1 => Phase::Firing,
                _ => Phase::After,
            },
        };
        let window = window();
        let process = &window.processes[0];
        let cpu = Measure::cpu_of(&window);
        let once = encode_measured(&window, &[process], &[], cpu);
        let timed = encode_timed(
            &window,
            &[(
                cpu,
                vec![(process, at(-1500)), (process, at(-1)), (process, at(500))],
            )],
            &[],
        );
        assert_valid(&timed);
        assert_eq!(timed.location.len(), once.location.len());
        assert_eq!(timed.sample.len(), 3 * once.sample.len());
        let s = |i: i64| timed.string_table[i as usize].as_str();
        let labels: Vec<(String, i64)> = timed
            .sample
            .iter()
            .map(|sample| {
                let phase = sample.label.iter().find(|l| s(l.key) == "phase").unwrap();
                let offset = sample.label.iter().find(|l| s(l.key) == "offset").unwrap();
                assert_eq!(s(offset.num_unit), "milliseconds");
                (s(phase.str).to_string(), offset.num)
            })
            .collect();
        assert!(
            labels.contains(&("before".to_string(), -1500)),
            "{labels:?}"
        );
        assert!(labels.contains(&("firing".to_string(), -1)), "{labels:?}");
        assert!(labels.contains(&("after".to_string(), 500)), "{labels:?}");
    }

    #[test]
    fn the_executable_is_the_first_mapping_even_under_kernel_frames() {
        let mut window = window();
        let process = &mut window.processes[0];
        process.info.exe = "/usr/bin/hot".into();
        process.stacks.retain(|stack, _| stack[0] == 2);
        let processes: Vec<&ProcessProfile> = window.processes.iter().collect();
        let profile = encode_measured(&window, &processes, &[], Measure::cpu_of(&window));
        let first = &profile.mapping[0];
        assert_eq!(
            profile.string_table[first.filename as usize],
            "/usr/bin/hot"
        );
        assert_eq!(first.id, 1);
        assert_eq!(profile.mapping.len(), 2);
        assert_valid(&profile);
    }

    fn window() -> Window {
        let vma = Arc::new(Vma {
            start: 0x1000,
            end: 0x2000,
            file_offset: 0,
            path: "/usr/bin/hot".into(),
            dev: 0xfd_0000_0001,
            inode: 7,
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
        let mut stacks = FxHashMap::default();
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
            memory: Vec::new(),
            offcpu: Vec::new(),
            threads: Vec::new(),
            fault_period: 0,
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
        let comments = ["made by a test".to_string()];
        let cpu = Measure::cpu_of(&window);
        let gz = to_gzip(&encode_measured(&window, &processes, &comments, cpu));
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
    fn big_profiles_split_into_valid_parts_holding_every_sample() {
        let mut window = window();
        let process = &mut window.processes[0];
        process.stacks.clear();
        for i in 0..1000u32 {
            process.locations.push(Location {
                kind: FrameKind::User,
                address: 0x10_0000 + u64::from(i),
                vma: None,
                lines: vec![line(&format!("f{i}"))],
            });
            process.stacks.insert(vec![3 + i, 0], u64::from(i % 7) + 1);
        }
        let total: u64 = process.stacks.values().sum();
        let process = &window.processes[0];
        let cpu = Measure::Cpu { frequency: 99 };
        let whole = encode_split(&window, process, &[], cpu, (MAX_SAMPLES, MAX_BYTES));
        assert_eq!(whole.len(), 1, "within limits: one profile");
        let parts = encode_split(&window, process, &[], cpu, (300, MAX_BYTES));
        assert_eq!(parts.len(), 4);
        let third = whole[0].encoded_len() / 3;
        let by_size = encode_split(&window, process, &[], cpu, (MAX_SAMPLES, third));
        assert!(by_size.len() >= 3);
        for set in [&parts, &by_size] {
            let mut seen = 0;
            for part in set.iter() {
                assert_valid(part);
                assert!(part.sample.len() <= 300 || set.len() == by_size.len());
                seen += part.sample.iter().map(|s| s.value[0] as u64).sum::<u64>();
                // Each part holds only the locations its samples use.
                let used: std::collections::HashSet<u64> = part
                    .sample
                    .iter()
                    .flat_map(|s| s.location_id.iter().copied())
                    .collect();
                assert_eq!(used.len(), part.location.len());
            }
            assert_eq!(seen, total, "every sample in exactly one part");
        }
    }

    #[test]
    fn encoding_is_deterministic() {
        let window = window();
        let processes: Vec<&ProcessProfile> = window.processes.iter().collect();
        assert_eq!(
            encode_measured(&window, &processes, &[], Measure::cpu_of(&window)),
            encode_measured(&window, &processes, &[], Measure::cpu_of(&window))
        );
    }

    #[test]
    fn sources_side_by_side_keep_their_values_apart_with_the_last_as_default() {
        let window = window();
        let cpu_profile = &window.processes[0];
        let memory = Measure::Memory {
            period: 128,
            page: 4096,
        };
        let sources = [
            (Measure::Cpu { frequency: 100 }, vec![cpu_profile]),
            (Measure::OffCpu, vec![cpu_profile]),
            (memory, vec![cpu_profile]),
        ];
        let profile = encode_sources(&window, &sources, &[]);
        assert_valid(&profile);
        let s = |i: i64| profile.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("samples", "count"),
                ("cpu", "nanoseconds"),
                ("offcpu", "nanoseconds"),
                ("faults", "count"),
                ("memory", "bytes")
            ]
        );
        let pt = profile.period_type.as_ref().unwrap();
        assert_eq!((s(pt.r#type), s(pt.unit)), ("memory", "bytes"));
        assert_eq!(profile.period, 128 * 4096);
        let stacks = cpu_profile.stacks.len();
        assert_eq!(profile.sample.len(), 3 * stacks);
        for (i, sample) in profile.sample.iter().enumerate() {
            let (cpu, rest) = sample.value.split_at(2);
            let (off, mem) = rest.split_at(1);
            match i / stacks {
                0 => {
                    assert_eq!(cpu[1], cpu[0] * 10_000_000);
                    assert_eq!((off, mem), (&[0][..], &[0, 0][..]));
                }
                // An off-CPU count is nanoseconds, one value.
                1 => {
                    assert!(off[0] > 0);
                    assert_eq!((cpu, mem), (&[0, 0][..], &[0, 0][..]));
                }
                _ => {
                    assert_eq!((cpu, off), (&[0, 0][..], &[0][..]));
                    assert_eq!(mem[1], mem[0] * 4096);
                    assert_eq!(mem[0] % 128, 0);
                }
            }
        }
    }
}
