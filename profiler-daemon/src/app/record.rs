//! `profilerd record`: one profile of the selected processes, written to a file.

use std::{fs, io::IsTerminal, sync::atomic::AtomicBool, time::Instant};

use anyhow::{Context, Result};

use super::{comments, describe_targets, prepare, tick};
use crate::{
    aggregate::{Pipeline, ProcessProfile},
    config::{Format, RecordArgs},
    encode::{flame_graph_svg, folded_lines, pprof},
    export::write_atomic,
    host::privileges,
    process::is_running,
    BPF_OBJECT,
};

/// Records for `--duration` (or until every `--pid` exited, or `stop`), then writes.
pub(super) fn record(args: &RecordArgs, stop: &AtomicBool) -> Result<()> {
    let (config, _) = prepare(&args.target, &args.limits, &args.unwind, &[])?;
    let (format, output) = args.resolved_output();
    // Fail before sampling, not after 30 s, when the output cannot be written.
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&output)
        .with_context(|| {
            format!(
                "cannot write --output {}: pick a writable path",
                output.display()
            )
        })?;

    let mut pipeline = Pipeline::start(BPF_OBJECT, &config)?;
    super::daemon::warn_priority();
    privileges::drop_after_attach();
    sample_until_done(args, &mut pipeline, stop)?;
    let window = pipeline.take_window();
    let processes: Vec<&ProcessProfile> = window.processes.iter().collect();
    let bytes = match format {
        Format::Pprof => pprof::to_gzip(&pprof::encode(
            &window,
            &processes,
            &comments(&window, &args.target, None),
        )),
        Format::Folded => {
            let mut text = folded_lines(&processes).join("\n");
            text.push('\n');
            text.into_bytes()
        }
        Format::Svg => {
            let title = format!(
                "profilerd: {} ({:.0?})",
                describe_targets(&args.target),
                window.duration
            );
            flame_graph_svg(&folded_lines(&processes), &title)?
        }
    };
    write_atomic(&output, &bytes)?;
    tracing::info!(
        output = %output.display(),
        samples = window.samples(),
        processes = window.processes.len(),
        "wrote profile"
    );
    tracing::info!("sample accounting: {}", pipeline.accounting.summary());
    if let Some(unwind) = pipeline.unwind_stats() {
        tracing::info!("unwind tables: {}", unwind.summary());
    }
    Ok(())
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
