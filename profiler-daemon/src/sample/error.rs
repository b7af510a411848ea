//! Why the sampler could not start or drain, told as one line naming the cause and the fix.

use std::io;

use thiserror::Error;

use crate::host::max_sample_rate;

/// Why the sampler could not start or drain.
#[derive(Debug, Error)]
pub enum SamplerError {
    #[error("permission denied loading BPF programs or opening perf events: run as root, or grant CAP_BPF and CAP_PERFMON (e.g. `setcap cap_bpf,cap_perfmon+ep profilerd`)")]
    Permission,
    #[error("perf events are not available on this kernel ({0}): profilerd needs CONFIG_PERF_EVENTS and the software cpu-clock event")]
    PerfEventsUnavailable(io::Error),
    #[error("--frequency {requested} Hz is above kernel.perf_event_max_sample_rate ({max}): lower --frequency or raise it with `sysctl -w kernel.perf_event_max_sample_rate={requested}`")]
    FrequencyTooHigh { requested: u64, max: u64 },
    #[error("loading the BPF sampler failed: {0}")]
    Load(String),
    #[error(
        "the kernel refused the BPF map {map} of {flag} {entries} ({errno}): lower {flag}{}",
        memory_hint(errno)
    )]
    MapRefused {
        map: String,
        flag: &'static str,
        entries: u32,
        errno: io::Error,
    },
    /// The verifier refused the program. It answers EACCES too, so without the log this would
    /// read as a missing privilege.
    #[error(
        "this kernel's BPF verifier rejected the sampler ({errno}); the end of its log:\n{log}"
    )]
    Rejected { errno: io::Error, log: String },
    /// The same for the table unwinder, which `--unwind fp` leaves out.
    #[error(
        "this kernel's BPF verifier rejected the table unwinder ({errno}): pass --unwind fp to walk frame pointers only; the end of its log:\n{log}"
    )]
    UnwinderRejected { errno: io::Error, log: String },
    #[error("the memory-growth source (page-faults perf event) cannot start ({0}): leave `memory` out of --profile (for example --profile cpu)")]
    FaultsUnavailable(String),
    #[error("the off-CPU source (context-switches perf event, sched_switch and sched_process_free raw tracepoints) cannot start ({0}): leave `offcpu` out of --profile")]
    OffCpuUnavailable(String),
    #[error("the thread-creation source (task_newtask raw tracepoint) cannot start ({0}): leave `threads` out of --profile")]
    ThreadsUnavailable(String),
    #[error("BPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot list online CPUs: {0}")]
    Cpus(io::Error),
    #[error("cannot start the unwind table thread ({0}): raise the task limit (ulimit -u) or pass --unwind fp")]
    Thread(io::Error),
    #[error("{count} {what} exceed the filter's {capacity} entries: restart with --max-filter-entries {count} or more")]
    FilterFull {
        what: &'static str,
        count: usize,
        capacity: u32,
    },
}

/// Out of memory for a map: the locked-memory limit may be what is short.
fn memory_hint(errno: &io::Error) -> &'static str {
    if errno.raw_os_error() == Some(libc::ENOMEM) {
        ", or raise the locked-memory limit (ulimit -l, LimitMEMLOCK=infinity)"
    } else {
        ""
    }
}

/// First `io::Error` in an error's source chain.
fn io_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

fn is_permission(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// `sizes`: each sized map's name, the flag that sizes it, and its entries.
pub(super) fn classify_load(
    err: &aya::EbpfError,
    sizes: &[(&str, &'static str, u32)],
) -> SamplerError {
    match io_error_in(err) {
        Some(io) if is_permission(io) => SamplerError::Permission,
        Some(io) => match refused_map(err).and_then(|name| sizes.iter().find(|s| s.0 == name)) {
            Some(&(map, flag, entries)) => SamplerError::MapRefused {
                map: map.to_string(),
                flag,
                entries,
                errno: io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(0)),
            },
            None => SamplerError::Load(error_chain(err)),
        },
        None => SamplerError::Load(error_chain(err)),
    }
}

/// The map the kernel refused to create, if that is the error.
fn refused_map(err: &aya::EbpfError) -> Option<&str> {
    match err {
        aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, .. }) => Some(name),
        _ => None,
    }
}

/// Lines of the verifier's log kept in [`SamplerError::Rejected`]: the reason is at the end.
const VERIFIER_LOG_LINES: usize = 25;

pub(super) fn classify_program(err: &aya::programs::ProgramError, frequency: u64) -> SamplerError {
    if let aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    } = err
    {
        let log = verifier_log.to_string();
        if !log.trim().is_empty() {
            let lines: Vec<&str> = log.lines().collect();
            return SamplerError::Rejected {
                errno: io::Error::from_raw_os_error(io_error.raw_os_error().unwrap_or(0)),
                log: lines[lines.len().saturating_sub(VERIFIER_LOG_LINES)..].join("\n"),
            };
        }
    }
    if let aya::programs::ProgramError::SyscallError(syscall) = err {
        if syscall.call == "perf_event_open" {
            let io = &syscall.io_error;
            return match io.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => SamplerError::Permission,
                Some(libc::EINVAL) => match max_sample_rate() {
                    Some(max) if frequency > max => SamplerError::FrequencyTooHigh {
                        requested: frequency,
                        max,
                    },
                    _ => SamplerError::PerfEventsUnavailable(io::Error::from_raw_os_error(
                        libc::EINVAL,
                    )),
                },
                _ => SamplerError::PerfEventsUnavailable(io::Error::from(io.kind())),
            };
        }
    }
    match io_error_in(err) {
        Some(io) if is_permission(io) => SamplerError::Permission,
        _ => SamplerError::Load(error_chain(err)),
    }
}

/// A source beside the CPU sampler (memory growth, off-CPU) failed to load or attach:
/// `unavailable` names the source and its fix. (Frequency 0: a period, not a frequency, was
/// asked, so no frequency can be too high.)
pub(super) fn classify_source(
    err: &aya::programs::ProgramError,
    unavailable: fn(String) -> SamplerError,
) -> SamplerError {
    match classify_program(err, 0) {
        SamplerError::Permission => SamplerError::Permission,
        SamplerError::Rejected { errno, .. } => {
            unavailable(format!("rejected by the verifier: {errno}"))
        }
        _ => unavailable(error_chain(err)),
    }
}

pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
