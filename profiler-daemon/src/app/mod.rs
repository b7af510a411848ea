//! The commands, wired from the stages: `record` (one profile to a file), `run` (the daemon:
//! run loop, reload, sinks, listener) and `check` (the host report). In: a parsed
//! [`Cli`](crate::config::Cli). Out: files, uploads, log lines and the process's exit code.
//!
//! Nothing here samples, names, encodes or sends by itself: each step calls its stage.

mod check;
mod daemon;
mod record;
mod reload;
mod run;
mod server;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

pub use daemon::execute;

use crate::{
    aggregate::{Pipeline, PipelineConfig, ProcessProfile, Window},
    config::{LimitArgs, Sources, TargetArgs, UnwindArgs, Unwinder},
    host::{check as host_check, preflight},
    sample::{OffCpuConfig, SamplerConfig, UnwindSizes},
    symbolize::SymbolsConfig,
    targets::{resolve_targets, Section, SectionSpec, Targets},
    types::CgroupTarget,
};

/// Checks privileges and targets, then builds the pipeline configuration.
fn prepare(
    target: &TargetArgs,
    limits: &LimitArgs,
    unwind: &UnwindArgs,
    specs: &[SectionSpec],
    sources: Sources,
) -> Result<(PipelineConfig, Watched)> {
    preflight::check_privileges()?;
    preflight::check_perf_events(target.frequency)?;
    let Targets {
        pids,
        selectors,
        cgroup_targets,
        sections,
    } = resolve_targets(&target.pids, &target.cgroups, specs)?;
    // The host report of `profilerd check`, in the log, once the fatal problems above have
    // had their one-line error: what is left are notes (and problems of unused features).
    let wanted = host_check::Wanted {
        frequency: target.frequency,
        cgroups: !target.cgroups.is_empty(),
        ..Default::default()
    };
    for item in host_check::report(&crate::host::Host::real(), &wanted) {
        match item.status {
            host_check::Status::Ok => tracing::debug!("preflight: {item}"),
            _ => tracing::warn!("preflight: {item}"),
        }
    }
    let config = PipelineConfig {
        sampler: SamplerConfig {
            frequency: target.frequency,
            pids,
            cgroups: selectors,
            counts_map_entries: limits.counts_map_entries,
            stack_map_entries: limits.stack_map_entries,
            kernel_stack_map_entries: limits.kernel_stack_map_entries,
            known_pids_entries: limits.max_processes,
            filter_entries: limits.max_filter_entries,
            notify_ring_bytes: 256 << 10,
            unwind: (unwind.unwind == Unwinder::Tables).then_some(UnwindSizes {
                rows: unwind.unwind_rows,
                pages: unwind.unwind_pages,
                processes: unwind.unwind_processes,
                cache: unwind.unwind_cache,
            }),
            fault_period: sources.fault_period,
            offcpu: sources
                .offcpu
                .map(|(min_block, max_blocked, period)| OffCpuConfig {
                    min_block,
                    max_blocked,
                    period,
                }),
            threads: sources.threads,
        },
        symbols: SymbolsConfig {
            max_processes: limits.max_processes as usize,
            max_kernel_symbols: limits.max_kernel_symbols as usize,
            max_user_symbols: limits.max_user_symbols as usize,
            file_ttl: limits.symbol_file_ttl,
            max_symbol_file_bytes: limits.max_symbol_file_bytes,
            max_symbol_bytes: limits.max_symbol_bytes,
            max_symbol_files: limits.max_symbol_files as usize,
        },
        max_stacks: limits.max_stacks as usize,
    };
    Ok((
        config,
        Watched {
            cgroup_targets,
            sections,
        },
    ))
}

/// What the run loop watches besides single processes, once the filter is in the kernel.
struct Watched {
    /// `--cgroup`s, watched as a whole.
    cgroup_targets: Vec<CgroupTarget>,
    sections: Vec<Section>,
}

fn describe_targets(target: &TargetArgs) -> String {
    let mut parts = Vec::new();
    if !target.pids.is_empty() {
        parts.push(format!("pids {:?}", target.pids));
    }
    for cgroup in &target.cgroups {
        parts.push(format!("cgroup {}", cgroup.display()));
    }
    if parts.is_empty() {
        "all processes".to_string()
    } else {
        parts.join(", ")
    }
}

/// The pprof comments of a profile: who made it, how, and (for one process) of what.
fn comments(window: &Window, target: &TargetArgs, process: Option<&ProcessProfile>) -> Vec<String> {
    let mut comments = vec![
        format!("profilerd {}", env!("CARGO_PKG_VERSION")),
        format!(
            "cpu-clock sampling at {} Hz, targets: {}",
            window.frequency,
            describe_targets(target)
        ),
    ];
    if let Some(p) = process {
        comments.push(format!(
            "pid {} comm {} exe {} cgroup {}",
            p.info.pid, p.info.comm, p.info.exe, p.info.cgroup
        ));
    }
    comments
}

/// One collect tick; returns false once `stop` was raised or `end` passed.
fn tick(
    pipeline: &mut Pipeline,
    next_collect: &mut Instant,
    interval: Duration,
    end: Option<Instant>,
    stop: &AtomicBool,
) -> Result<bool> {
    let deadline = end.map_or(*next_collect, |e| e.min(*next_collect));
    pipeline.wait_until(deadline, stop);
    pipeline.collect().context("draining the BPF maps failed")?;
    let now = Instant::now();
    *next_collect += interval;
    if *next_collect < now {
        // Fell behind (suspended, overloaded): skip missed ticks instead of bursting.
        *next_collect = now + interval;
    }
    let running = !stop.load(Ordering::Relaxed) && end.is_none_or(|e| now < e);
    Ok(running)
}

/// An error and its causes on one line. A cause whose text the message already includes is
/// left out: our error messages name their cause themselves ("--listen ADDR: Address already
/// in use: choose ..."), and `{:#}` would print it a second time.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_names_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = io.to_string();
        let bind = crate::serve::WebError::Bind {
            addr: "127.0.0.1:7070".parse().unwrap(),
            source: io,
        };
        let err = anyhow::Error::from(bind).context("cannot start the listener");
        let line = error_line(&err);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(line.starts_with("cannot start the listener: --listen 127.0.0.1:7070: "));
        assert!(line.ends_with("--listen off"), "{line}");

        // A cause the message does not mention is still shown.
        let plain = anyhow::Error::from(std::io::Error::other("disk on fire")).context("writing");
        assert_eq!(error_line(&plain), "writing: disk on fire");
    }
}
