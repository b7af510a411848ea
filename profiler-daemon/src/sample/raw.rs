//! Raw tracepoint programs: the thread-creation source on `task_newtask`, the off-CPU source's
//! `sched_switch` and `sched_process_free`, and the raw-tracepoint table unwinder their
//! samples tail-call.

use aya::{programs::RawTracePoint, Ebpf};
use profiler_common::{THREADS_PROGRAM_NAME, UNWIND_PROGRAMS_TP_MAP, UNWIND_TP_PROGRAM_NAME};

use super::{error::error_chain, tables, SamplerError};

/// Loads raw tracepoint program `name`; `unavailable` names the source and its fix.
fn load<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    unavailable: &dyn Fn(String) -> SamplerError,
) -> Result<&'a mut RawTracePoint, SamplerError> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| SamplerError::Load(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|err| unavailable(format!("{err}")))?;
    program
        .load()
        .map_err(|err| unavailable(error_chain(&err)))?;
    Ok(program)
}

/// Loads program `name` and attaches it to raw tracepoint `tracepoint`.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    unavailable: fn(String) -> SamplerError,
) -> Result<(), SamplerError> {
    let named = |what: String| unavailable(format!("raw tracepoint {tracepoint}: {what}"));
    load(ebpf, name, &named)?
        .attach(tracepoint)
        .map_err(|err| named(error_chain(&err)))?;
    Ok(())
}

/// The thread-creation source: the program on `task_newtask`.
pub(super) fn attach_threads(ebpf: &mut Ebpf) -> Result<(), SamplerError> {
    attach(
        ebpf,
        THREADS_PROGRAM_NAME,
        "task_newtask",
        SamplerError::ThreadsUnavailable,
    )
}

/// Loads the raw-tracepoint table unwinder into the program array its samples tail-call.
pub(super) fn prepare_unwinder(ebpf: &mut Ebpf) -> Result<(), SamplerError> {
    let unavailable =
        |what: String| SamplerError::ThreadsUnavailable(format!("its unwinder: {what}"));
    let fd = load(ebpf, UNWIND_TP_PROGRAM_NAME, &unavailable)?
        .fd()
        .map_err(|err| SamplerError::Load(format!("{err}")))?
        .try_clone()
        .map_err(|err| SamplerError::Load(format!("{err}")))?;
    tables::install(ebpf, UNWIND_PROGRAMS_TP_MAP, &fd)
}
