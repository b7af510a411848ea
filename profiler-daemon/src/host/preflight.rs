//! Start-up checks that turn a missing privilege or a bad target into one clear line.

use std::{fs, path::Path};

use thiserror::Error;

use crate::process::procfs::read_thread_cap_eff;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum PreflightError {
    #[error("profilerd needs root, or CAP_BPF and CAP_PERFMON (missing: {missing}): run it with sudo, or `setcap cap_bpf,cap_perfmon+ep $(command -v profilerd)`")]
    Privileges { missing: String },
    #[error("kernel.perf_event_paranoid is {level}, a level Debian's and Ubuntu's kernels add above the upstream 2: only CAP_SYS_ADMIN opens perf events there, CAP_PERFMON is not enough: run profilerd as root, or `sysctl -w kernel.perf_event_paranoid=2`")]
    PerfEventsRootOnly { level: i32 },
    #[error("perf events are not available (no /proc/sys/kernel/perf_event_paranoid): profilerd needs a kernel built with CONFIG_PERF_EVENTS")]
    NoPerfEvents,
    #[error("--frequency {requested} Hz is above kernel.perf_event_max_sample_rate ({max}): lower --frequency or `sysctl -w kernel.perf_event_max_sample_rate={requested}`")]
    FrequencyTooHigh { requested: u64, max: u64 },
}

/// Effective capability mask of this process.
fn effective_caps() -> u64 {
    // This thread's: capabilities are per thread, and the main thread drops its own early.
    read_thread_cap_eff().unwrap_or(0)
}

/// `kernel.perf_event_paranoid`, when readable.
pub fn perf_event_paranoid() -> Option<i32> {
    fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Above the upstream maximum of 2, Debian's and Ubuntu's kernels (patch "perf: Allow further
/// restriction of perf_event_open") refuse perf_event_open to anyone without CAP_SYS_ADMIN.
pub fn perf_events_need_sys_admin(paranoid: Option<i32>) -> bool {
    paranoid.is_some_and(|level| level >= 3)
}

/// Root (CAP_SYS_ADMIN), or CAP_BPF + CAP_PERFMON where the perf_event_paranoid level lets
/// CAP_PERFMON open perf events.
pub fn check_privileges() -> Result<(), PreflightError> {
    check_caps(effective_caps(), perf_event_paranoid())
}

fn check_caps(caps: u64, paranoid: Option<i32>) -> Result<(), PreflightError> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return match paranoid {
            Some(level) if perf_events_need_sys_admin(paranoid) => {
                Err(PreflightError::PerfEventsRootOnly { level })
            }
            _ => Ok(()),
        };
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(PreflightError::Privileges {
        missing: missing.join(", "),
    })
}

pub fn check_perf_events(frequency: u64) -> Result<(), PreflightError> {
    if !Path::new("/proc/sys/kernel/perf_event_paranoid").exists() {
        return Err(PreflightError::NoPerfEvents);
    }
    match super::facts::max_sample_rate() {
        Some(max) if frequency > max => Err(PreflightError::FrequencyTooHigh {
            requested: frequency,
            max,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_need_root_or_bpf_and_perfmon() {
        assert!(check_caps(1 << CAP_SYS_ADMIN, Some(2)).is_ok());
        assert!(check_caps((1 << CAP_BPF) | (1 << CAP_PERFMON), Some(2)).is_ok());
        let err = check_caps(1 << CAP_BPF, Some(2)).unwrap_err().to_string();
        assert!(
            err.contains("CAP_PERFMON") && !err.contains("missing: CAP_BPF"),
            "{err}"
        );
        let err = check_caps(0, Some(2)).unwrap_err().to_string();
        assert!(
            err.contains("CAP_BPF, CAP_PERFMON") && err.contains("sudo"),
            "{err}"
        );
    }

    #[test]
    fn debian_paranoid_level_3_needs_root() {
        // Seen on Debian's 6.1 and 6.12 kernels: CAP_BPF + CAP_PERFMON got EACCES from
        // perf_event_open at level 3 and worked at level 2.
        let caps = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        let err = check_caps(caps, Some(3)).unwrap_err().to_string();
        assert!(
            err.contains("CAP_SYS_ADMIN") && err.contains("perf_event_paranoid=2"),
            "{err}"
        );
        assert!(check_caps(1 << CAP_SYS_ADMIN, Some(3)).is_ok());
        assert!(check_caps(caps, None).is_ok());
    }
}
