//! `profilerd record`: one profile of the selected processes, written to a file.

use std::{
    fs,
    io::IsTerminal,
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{comments, describe_targets, prepare, tick};
use crate::{
    aggregate::{Pipeline, ProcessProfile, Window},
    config::{Format, ProfileKind, RecordArgs},
    encode::{
        flame_graph_svg, folded_lines,
        pprof::{self, Measure},
    },
    export::write_atomic,
    host::privileges,
    process::{is_running, page_size},
    BPF_OBJECT,
};

/// Records for `--duration` (or until every `--pid` exited, or `stop`), then writes.
pub(super) fn record(args: &RecordArgs, stop: &AtomicBool) -> Result<()> {
    let (format, output) = args.resolved_output().map_err(anyhow::Error::msg)?;
    let sources = args.sources.sources(&args.profiles);
    let (config, _) = prepare(&args.target, &args.limits, &args.unwind, &[], sources)?;
    let outputs: Vec<(ProfileKind, PathBuf)> = kinds(&args.profiles)
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            (
                kind,
                if i == 0 {
                    output.clone()
                } else {
                    beside(&output, kind)
                },
            )
        })
        .collect();
    // Fail before sampling, not after 30 s, when an output cannot be written.
    for (_, output) in &outputs {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(output)
            .with_context(|| {
                format!(
                    "cannot write --output {}: pick a writable path",
                    output.display()
                )
            })?;
    }

    let mut pipeline = Pipeline::start(BPF_OBJECT, &config)?;
    super::daemon::warn_priority();
    privileges::drop_after_attach();
    sample_until_done(args, &mut pipeline, stop)?;
    let window = pipeline.take_window();
    for (kind, output) in &outputs {
        let bytes = encode(args, &window, *kind, format)?;
        write_atomic(output, &bytes)?;
        let (profiles, _) = of_kind(&window, *kind);
        let samples: u64 = profiles.iter().map(|p| p.samples).sum();
        tracing::info!(
            output = %output.display(),
            profile = kind.name(),
            samples,
            processes = profiles.len(),
            "wrote profile"
        );
        if samples == 0 {
            tracing::warn!("{}", nothing_recorded(args, *kind, window.duration));
        }
    }
    tracing::info!("sample accounting: {}", pipeline.accounting.summary());
    if let Some(unwind) = pipeline.unwind_stats() {
        tracing::info!("unwind tables: {}", unwind.summary());
    }
    Ok(())
}

/// Why a profile is empty, and what to try: a selected process that never ran on a CPU has
/// no CPU profile, and an empty file without a word reads as a profiler fault.
fn nothing_recorded(args: &RecordArgs, kind: ProfileKind, duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    let name = kind.name();
    if args.target.pids.is_empty() && args.target.cgroups.is_empty() {
        return format!("the {name} profile is empty: no process had samples in {seconds:.1} s");
    }
    let mut what: Vec<String> = args
        .target
        .pids
        .iter()
        .map(|p| format!("pid {p}"))
        .collect();
    what.extend(
        args.target
            .cgroups
            .iter()
            .map(|c| format!("cgroup {}", c.display())),
    );
    let hint = match kind {
        ProfileKind::Cpu => "it did not run on a CPU (an idle or blocked process has no CPU profile: --profile offcpu shows where it waits)",
        ProfileKind::Memory => "it touched no new memory pages",
        ProfileKind::Offcpu => "none of its threads blocked for --offcpu-min-block or longer and ran again",
        ProfileKind::Threads => "it started no thread",
    };
    format!(
        "the {name} profile is empty: {} had no samples in {seconds:.1} s: {hint}",
        what.join(", ")
    )
}

/// `--profile`'s kinds, each once, in the order given.
fn kinds(asked: &[ProfileKind]) -> Vec<ProfileKind> {
    let mut kinds = Vec::new();
    for kind in asked {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

/// Where a second kind of profile goes: its kind before `output`'s extension.
fn beside(output: &Path, kind: ProfileKind) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let split = [".pb.gz", ".svg", ".folded", ".txt", ".pprof", ".pb"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext).map(|stem| (stem.to_string(), *ext)));
    let renamed = match split {
        Some((stem, ext)) => format!("{stem}.{}{ext}", kind.name()),
        None => format!("{name}.{}", kind.name()),
    };
    output.with_file_name(renamed)
}

/// The window's profiles of one kind, and what their samples measure.
fn of_kind(window: &Window, kind: ProfileKind) -> (&[ProcessProfile], Measure) {
    match kind {
        ProfileKind::Cpu => (&window.processes, Measure::cpu_of(window)),
        ProfileKind::Memory => (&window.memory, Measure::memory_of(window)),
        ProfileKind::Offcpu => (&window.offcpu, Measure::OffCpu),
        ProfileKind::Threads => (&window.threads, Measure::Threads),
    }
}

/// One kind of the window's profiles in `format`.
fn encode(
    args: &RecordArgs,
    window: &Window,
    kind: ProfileKind,
    format: Format,
) -> Result<Vec<u8>> {
    let (profiles, measure) = of_kind(window, kind);
    let processes: Vec<&ProcessProfile> = profiles.iter().collect();
    let mut comments = comments(window, &args.target, None);
    if kind == ProfileKind::Memory {
        comments.push(format!(
            "memory growth: page-faults sampled every {} faults, each sample {} bytes first touched",
            window.fault_period,
            window.fault_period * page_size()
        ));
    }
    if kind == ProfileKind::Offcpu {
        comments.push(format!(
            "off-CPU time: nanoseconds switched out, blocks of at least {:?}",
            args.sources.offcpu_min_block
        ));
    }
    Ok(match format {
        Format::Pprof => pprof::to_gzip(&pprof::encode_measured(
            window, &processes, &comments, measure,
        )),
        Format::Folded => {
            let mut text = folded_lines(&processes).join("\n");
            text.push('\n');
            text.into_bytes()
        }
        Format::Svg => {
            let what = match kind {
                ProfileKind::Cpu => String::new(),
                ProfileKind::Memory => format!(
                    " memory growth, 1 sample = {} page faults",
                    window.fault_period
                ),
                ProfileKind::Offcpu => " off-CPU time, 1 sample = 1 ns switched out".to_string(),
                ProfileKind::Threads => " thread creation, 1 sample = 1 thread".to_string(),
            };
            let title = format!(
                "profilerd: {}{what} ({:.0?})",
                describe_targets(&args.target),
                window.duration
            );
            flame_graph_svg(&folded_lines(&processes), &title)?
        }
    })
}

/// Collects until the duration is over, `stop` is raised or every `--pid` has exited, with a
/// progress line on a terminal.
fn sample_until_done(args: &RecordArgs, pipeline: &mut Pipeline, stop: &AtomicBool) -> Result<()> {
    let started = Instant::now();
    let end = started + args.duration;
    tracing::info!(
        targets = %describe_targets(&args.target),
        frequency = args.target.frequency,
        cpus = pipeline.cpus(),
        duration = ?args.duration,
        "recording"
    );
    let progress = std::io::stderr().is_terminal();
    let mut next_collect = started + args.collect_interval.min(args.duration);
    loop {
        let running = tick(
            pipeline,
            &mut next_collect,
            args.collect_interval,
            Some(end),
            stop,
        )?;
        if progress {
            let left = end.saturating_duration_since(Instant::now()).as_secs();
            eprint!(
                "\rrecording {}: {left:>4}s left, {} samples ",
                describe_targets(&args.target),
                pipeline.accounting.in_profiles
            );
        }
        if !running {
            break;
        }
        if !args.target.pids.is_empty() && !args.target.pids.iter().any(|&p| is_running(p)) {
            tracing::info!("every --pid has exited; writing the profile now");
            pipeline.collect().context("draining the BPF maps failed")?;
            break;
        }
    }
    if progress {
        eprintln!();
    }
    Ok(())
}
