//! Least privilege: once the sampler is loaded and attached, CAP_BPF, CAP_PERFMON and
//! CAP_SYS_ADMIN are no longer needed (maps are read through file descriptors the process
//! already holds). Capabilities are per thread, so each thread drops its own: the pipeline
//! thread keeps only what naming other processes' frames needs, the main thread keeps nothing.

use std::{fs, io};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;
pub const CAP_BPF: u32 = 39;

/// What symbolization needs after attach: other users' `/proc/PID/maps` (SYS_PTRACE), their
/// binaries (DAC_READ_SEARCH), `/proc/PID/map_files` of other mount namespaces
/// (CHECKPOINT_RESTORE) and kernel symbol addresses in `/proc/kallsyms` (SYSLOG).
pub const SYMBOLIZE: &[u32] = &[
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    CAP_SYSLOG,
    CAP_CHECKPOINT_RESTORE,
];

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, &c| m | (1 << c))
}

/// Effective and permitted capability masks of the calling thread.
fn get() -> io::Result<(u64, u64)> {
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two Data records for version 3; both are ours.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// Keeps only `keep` (of what the thread has) in its effective and permitted sets, clears the
/// inheritable and ambient sets and, when allowed, the bounding set. Returns the mask kept.
pub fn drop_to(keep: &[u32]) -> io::Result<u64> {
    let (_, permitted) = get()?;
    let kept = permitted & mask(keep);
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| kept & (1 << c) == 0) {
        // SAFETY: prctl with integer arguments. EPERM (no CAP_SETPCAP) leaves the bounding
        // set as it is; the effective and permitted sets below are what matter.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    }
    // SAFETY: as above.
    unsafe { libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: kept as u32,
            permitted: kept as u32,
            inheritable: 0,
        },
        Data {
            effective: (kept >> 32) as u32,
            permitted: (kept >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads the header and two Data records.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(kept)
}

/// Names of the capabilities in `mask`, for the log.
pub fn names(mask: u64) -> String {
    let name = |cap: u32| match cap {
        CAP_DAC_READ_SEARCH => "CAP_DAC_READ_SEARCH".to_string(),
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE".to_string(),
        CAP_SYSLOG => "CAP_SYSLOG".to_string(),
        CAP_CHECKPOINT_RESTORE => "CAP_CHECKPOINT_RESTORE".to_string(),
        CAP_BPF => "CAP_BPF".to_string(),
        other => format!("cap{other}"),
    };
    let list: Vec<String> = (0..64).filter(|c| mask & (1 << c) != 0).map(name).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// Whether reading maps through our own descriptors still needs CAP_BPF: before Linux 6.5
/// every bpf() command was refused without it while `kernel.unprivileged_bpf_disabled` is set.
fn maps_need_cap_bpf() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let disabled = fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").ok();
    maps_need_cap_bpf_on(&release, disabled.as_deref())
}

/// [`maps_need_cap_bpf`] from the kernel release and `kernel.unprivileged_bpf_disabled`
/// (`None`: unreadable, taken as set); `profilerd check` reads them from its host tree.
pub fn maps_need_cap_bpf_on(release: &str, unprivileged_bpf_disabled: Option<&str>) -> bool {
    let old_kernel = super::facts::parse_kernel_version(release).is_none_or(|v| v < (6, 5));
    let disabled = unprivileged_bpf_disabled.is_none_or(|t| t.trim() != "0");
    old_kernel && disabled
}

/// Drops this thread to [`SYMBOLIZE`] (plus CAP_BPF where draining still needs it) and logs
/// what stays; a failure is logged, not fatal (the daemon works the same, with more privilege
/// than it needs).
pub fn drop_after_attach() {
    let mut keep = SYMBOLIZE.to_vec();
    if maps_need_cap_bpf() {
        keep.push(CAP_BPF);
    }
    match drop_to(&keep) {
        Ok(kept) => tracing::info!(
            kept = %names(kept),
            "sampler attached; dropped every other capability"
        ),
        Err(err) => tracing::warn!("could not drop capabilities after attaching: {err}"),
    }
}

/// Drops a thread that only writes BPF maps through descriptors it was given (the unwind
/// table loader) to nothing, or to CAP_BPF where map access still needs it.
pub fn drop_to_map_access() -> io::Result<u64> {
    let keep: &[u32] = if maps_need_cap_bpf() { &[CAP_BPF] } else { &[] };
    drop_to(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_in_a_thread_leaves_only_what_is_kept() {
        // A thread of its own: capabilities are per thread, the test process keeps its own.
        let result = std::thread::spawn(|| {
            let kept = drop_to(&[CAP_SYSLOG]).unwrap();
            let (effective, permitted) = get().unwrap();
            (kept, effective, permitted)
        })
        .join()
        .unwrap();
        let (kept, effective, permitted) = result;
        assert_eq!(effective, kept);
        assert_eq!(permitted, kept);
        assert_eq!(kept & !(1 << CAP_SYSLOG), 0);
    }

    #[test]
    fn names_are_readable() {
        assert_eq!(names(0), "none");
        assert_eq!(
            names((1 << CAP_SYS_PTRACE) | (1 << CAP_SYSLOG)),
            "CAP_SYS_PTRACE, CAP_SYSLOG"
        );
    }
}
