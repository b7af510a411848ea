//! `profilerd check`: one line per thing the daemon needs from this host, ok or the problem
//! with its fix. The facts are read through [`Host`], which tests point at fixture trees.

use std::{
    fmt, fs,
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::process::procfs::{parse_cap_eff, parse_mounts, Mount};

use super::{
    dirs::{check_private_dir, DirKind, PRIVATE_DIR_MODE},
    facts::{parse_kernel_version, Host},
    preflight::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN},
};

/// Oldest kernel the sampler loads on: BPF ring buffer (5.8), `bpf_probe_read_user` (5.5),
/// bounded loops (5.3).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// How long the server check waits for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but something is degraded or worth knowing.
    Note,
    /// The daemon would fail (or a requested feature would not work).
    Problem,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Note => "note",
            Status::Problem => "PROBLEM",
        };
        write!(f, "{status:<8}{:<16}{}", self.name, self.detail)
    }
}

/// What the checks are about: the settings of `run` that the host must support.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    pub frequency: u64,
    pub cgroups: bool,
    pub dirs: Vec<(DirKind, PathBuf)>,
    pub server: Option<String>,
}

/// Every check, in a fixed order.
pub fn report(host: &Host, wanted: &Wanted) -> Vec<Item> {
    let mut items = vec![
        kernel(host),
        btf(host),
        privileges(host),
        after_attach(host),
        perf_events(host),
        sample_rate(host, wanted.frequency),
        cgroups(host, wanted.cgroups),
    ];
    for (kind, dir) in &wanted.dirs {
        items.push(directory(*kind, dir));
    }
    if let Some(server) = &wanted.server {
        items.push(server_reachable(server));
    }
    items
}

fn item(name: &'static str, status: Status, detail: impl Into<String>) -> Item {
    Item {
        name,
        status,
        detail: detail.into(),
    }
}

fn kernel(host: &Host) -> Item {
    let Some(release) = host.read("/proc/sys/kernel/osrelease") else {
        return item(
            "kernel",
            Status::Problem,
            "cannot read /proc/sys/kernel/osrelease: is /proc mounted?",
        );
    };
    let release = release.trim().to_string();
    let (major, minor) = MIN_KERNEL;
    match parse_kernel_version(&release) {
        Some(version) if version >= MIN_KERNEL => {
            item("kernel", Status::Ok, format!("{release} (needs {major}.{minor} or newer)"))
        }
        Some(_) => item(
            "kernel",
            Status::Problem,
            format!("{release} is older than {major}.{minor}, which the BPF sampler needs (ring buffer): upgrade the kernel"),
        ),
        None => item(
            "kernel",
            Status::Note,
            format!("cannot tell the version of {release:?}; {major}.{minor} or newer is needed"),
        ),
    }
}

fn btf(host: &Host) -> Item {
    if host.path("/sys/kernel/btf/vmlinux").exists() {
        item("btf", Status::Ok, "/sys/kernel/btf/vmlinux present")
    } else {
        // The sampler uses no CO-RE relocation and no BTF-typed helper.
        item(
            "btf",
            Status::Note,
            "no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF): not needed, nothing degrades",
        )
    }
}

/// The effective capabilities of the calling thread.
fn effective_caps(host: &Host) -> u64 {
    host.read("/proc/thread-self/status")
        .and_then(|status| parse_cap_eff(&status))
        .unwrap_or(0)
}

fn privileges(host: &Host) -> Item {
    let caps = effective_caps(host);
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return item("privileges", Status::Ok, "CAP_SYS_ADMIN (root)");
    }
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return item("privileges", Status::Ok, "CAP_BPF and CAP_PERFMON");
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    item(
        "privileges",
        Status::Problem,
        format!(
            "missing {}: run as root, or `setcap cap_bpf,cap_perfmon+ep $(command -v profilerd)`",
            missing.join(", ")
        ),
    )
}

/// What the daemon keeps after attaching, which depends on the kernel (see `privileges`).
fn after_attach(host: &Host) -> Item {
    let release = host.read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let disabled = host.read("/proc/sys/kernel/unprivileged_bpf_disabled");
    if crate::host::privileges::maps_need_cap_bpf_on(&release, disabled.as_deref()) {
        item(
            "after attach",
            Status::Note,
            format!(
                "the pipeline thread keeps CAP_BPF: before Linux 6.5, reading BPF maps needs it while kernel.unprivileged_bpf_disabled is {} (6.5 and later: dropped)",
                disabled.as_deref().map_or("unreadable", str::trim)
            ),
        )
    } else {
        item(
            "after attach",
            Status::Ok,
            "CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN dropped; the pipeline thread keeps only what symbolizing needs",
        )
    }
}

fn perf_events(host: &Host) -> Item {
    let paranoid = host
        .read("/proc/sys/kernel/perf_event_paranoid")
        .and_then(|t| t.trim().parse::<i32>().ok());
    if crate::host::preflight::perf_events_need_sys_admin(paranoid) {
        let level = paranoid.unwrap_or_default();
        return if effective_caps(host) & (1 << CAP_SYS_ADMIN) != 0 {
            item(
                "perf events",
                Status::Ok,
                format!("available to root (perf_event_paranoid {level}, a Debian/Ubuntu level: CAP_PERFMON alone would not do)"),
            )
        } else {
            item(
                "perf events",
                Status::Problem,
                format!("perf_event_paranoid is {level} (a Debian/Ubuntu level): only CAP_SYS_ADMIN opens perf events, CAP_PERFMON is not enough: run as root, or `sysctl -w kernel.perf_event_paranoid=2`"),
            )
        };
    }
    match host.read("/proc/sys/kernel/perf_event_paranoid") {
        Some(level) => item(
            "perf events",
            Status::Ok,
            format!(
                "available (perf_event_paranoid {}; CAP_PERFMON or root is not limited by it)",
                level.trim()
            ),
        ),
        None => item(
            "perf events",
            Status::Problem,
            "no /proc/sys/kernel/perf_event_paranoid: the kernel lacks CONFIG_PERF_EVENTS, use one built with it",
        ),
    }
}

fn sample_rate(host: &Host, frequency: u64) -> Item {
    let Some(max) = host
        .read("/proc/sys/kernel/perf_event_max_sample_rate")
        .and_then(|t| t.trim().parse::<u64>().ok())
    else {
        return item(
            "sample rate",
            Status::Note,
            format!("cannot read kernel.perf_event_max_sample_rate; --frequency is {frequency} Hz"),
        );
    };
    if frequency > max {
        item(
            "sample rate",
            Status::Problem,
            format!("--frequency {frequency} Hz is above kernel.perf_event_max_sample_rate {max}: lower --frequency or `sysctl -w kernel.perf_event_max_sample_rate={frequency}`"),
        )
    } else {
        item(
            "sample rate",
            Status::Ok,
            format!("--frequency {frequency} Hz <= kernel.perf_event_max_sample_rate {max}"),
        )
    }
}

/// The cgroup layout from the mount table: v2 only, hybrid (v1 controllers and a cgroup2
/// mount), or v1 only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    V2 { mount: String },
    Hybrid { mount: String },
    V1Only,
    None,
}

pub fn cgroup_layout(mountinfo: &str) -> CgroupLayout {
    let mut v2 = None;
    let mut v1 = false;
    for Mount {
        point: mount,
        fstype,
        ..
    } in parse_mounts(mountinfo)
    {
        match fstype {
            "cgroup2" if v2.is_none() => v2 = Some(mount.to_string()),
            "cgroup" => v1 = true,
            _ => {}
        }
    }
    match (v2, v1) {
        (Some(mount), false) => CgroupLayout::V2 { mount },
        (Some(mount), true) => CgroupLayout::Hybrid { mount },
        (None, true) => CgroupLayout::V1Only,
        (None, false) => CgroupLayout::None,
    }
}

fn cgroups(host: &Host, needed: bool) -> Item {
    let layout = host
        .read("/proc/self/mountinfo")
        .map_or(CgroupLayout::None, |text| cgroup_layout(&text));
    let without = if needed {
        Status::Problem
    } else {
        Status::Note
    };
    match layout {
        CgroupLayout::V2 { mount } => item("cgroups", Status::Ok, format!("cgroup v2 at {mount}")),
        CgroupLayout::Hybrid { mount } => item(
            "cgroups",
            Status::Ok,
            format!("hybrid: v1 controllers, cgroup2 at {mount} (the cgroup filter and service names use it)"),
        ),
        CgroupLayout::V1Only => item(
            "cgroups",
            without,
            "cgroup v1 only: --cgroup targets and cgroup service names need cgroup2, mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified`",
        ),
        CgroupLayout::None => item(
            "cgroups",
            without,
            "no cgroup hierarchy mounted: --cgroup needs cgroup2, mount it with `mount -t cgroup2 none /sys/fs/cgroup`",
        ),
    }
}

/// Whether profilerd could create and write files in `dir`, without creating it; an existing
/// `dir` must also be one only the daemon's user can write in, as `run` requires.
fn directory(kind: DirKind, dir: &Path) -> Item {
    let what = kind.name();
    // A relative path that exists nowhere yet is created in the working directory.
    let existing = dir
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .unwrap_or(Path::new("."));
    let meta = match fs::metadata(existing) {
        Ok(meta) => meta,
        Err(err) => return item(what, Status::Problem, format!("{}: {err}", dir.display())),
    };
    if !meta.is_dir() {
        return item(
            what,
            Status::Problem,
            format!(
                "{} is not a directory: point {} at a directory",
                existing.display(),
                kind.flag()
            ),
        );
    }
    if existing == dir {
        if let Err(err) = check_private_dir(kind, dir) {
            return item(what, Status::Problem, err.to_string());
        }
    }
    let Ok(c_path) = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()) else {
        return item(
            what,
            Status::Problem,
            format!("{}: invalid path", dir.display()),
        );
    };
    // SAFETY: access() only reads the NUL-terminated path.
    let writable = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    // A relative dir is created in the working directory: say which, `.` says nothing.
    let parent = std::env::current_dir().map_or_else(|_| existing.into(), |cwd| cwd.join(existing));
    let parent = parent.canonicalize().unwrap_or(parent);
    let created = match dir.strip_prefix(existing) {
        Ok(rest) if rest.as_os_str().is_empty() => String::new(),
        rest => format!(
            " (will be created as {}, mode {PRIVATE_DIR_MODE:04o})",
            parent.join(rest.unwrap_or(dir)).display()
        ),
    };
    if writable {
        item(
            what,
            Status::Ok,
            format!("{} writable{created}", dir.display()),
        )
    } else {
        item(
            what,
            Status::Problem,
            format!(
                "{} is not writable{created}: fix its permissions or choose another directory",
                existing.display()
            ),
        )
    }
}

/// host:port of a server URL (default ports 80 and 443).
pub fn server_address(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if let Some(stripped) = authority.strip_prefix('[') {
        let (host, after) = stripped.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

fn server_reachable(url: &str) -> Item {
    let Some((host, port)) = server_address(url) else {
        return item(
            "server",
            Status::Problem,
            format!("{url:?} is not an http:// or https:// URL: use e.g. http://pyroscope:4040"),
        );
    };
    let addrs = match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect::<Vec<_>>(),
        Err(err) => {
            return item(
                "server",
                Status::Problem,
                format!("cannot resolve {host}: {err}: check the --server host name and DNS"),
            )
        }
    };
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(_) => {
                return item(
                    "server",
                    Status::Ok,
                    format!("{url} accepts connections ({addr})"),
                )
            }
            Err(err) => last = Some(err),
        }
    }
    item(
        "server",
        Status::Problem,
        format!(
            "cannot connect to {host}:{port}: {}: start the server or fix --server (profiles are spooled meanwhile)",
            last.map_or("no address".to_string(), |e| e.to_string())
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fixture host tree with the given files.
    fn host(files: &[(&str, &str)]) -> (tempdir::Dir, Host) {
        let dir = tempdir::Dir::new();
        for (path, text) in files {
            let full = dir.path().join(path.trim_start_matches('/'));
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, text).unwrap();
        }
        let host = Host {
            root: dir.path().to_path_buf(),
        };
        (dir, host)
    }

    mod tempdir {
        use std::path::{Path, PathBuf};

        /// A directory removed on drop.
        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "profilerd-check-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
    const V2: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const V1: &str = "27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";

    #[test]
    fn layouts() {
        assert_eq!(
            cgroup_layout(V2),
            CgroupLayout::V2 {
                mount: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(
            cgroup_layout(HYBRID),
            CgroupLayout::Hybrid {
                mount: "/sys/fs/cgroup/unified".into()
            }
        );
        assert_eq!(cgroup_layout(V1), CgroupLayout::V1Only);
        assert_eq!(cgroup_layout(""), CgroupLayout::None);
    }

    #[test]
    fn cgroup_item_is_a_problem_only_when_cgroups_are_used() {
        let (_d, h) = host(&[("/proc/self/mountinfo", V1)]);
        assert_eq!(cgroups(&h, false).status, Status::Note);
        let used = cgroups(&h, true);
        assert_eq!(used.status, Status::Problem);
        assert!(used.detail.contains("mount -t cgroup2"), "{}", used.detail);
        let (_d, h) = host(&[("/proc/self/mountinfo", HYBRID)]);
        assert_eq!(cgroups(&h, true).status, Status::Ok);
    }

    #[test]
    fn missing_btf_is_a_note_not_a_problem() {
        let (_d, h) = host(&[]);
        let line = btf(&h);
        assert_eq!(line.status, Status::Note);
        assert!(line.detail.contains("not needed"), "{}", line.detail);
        let (_d, h) = host(&[("/sys/kernel/btf/vmlinux", "BTF")]);
        assert_eq!(btf(&h).status, Status::Ok);
    }

    #[test]
    fn low_max_sample_rate_names_the_sysctl() {
        let (_d, h) = host(&[("/proc/sys/kernel/perf_event_max_sample_rate", "50\n")]);
        let line = sample_rate(&h, 99);
        assert_eq!(line.status, Status::Problem);
        assert!(
            line.detail
                .contains("sysctl -w kernel.perf_event_max_sample_rate=99"),
            "{}",
            line.detail
        );
        assert_eq!(sample_rate(&h, 49).status, Status::Ok);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.15"), Some((5, 15)));
        let (_d, h) = host(&[("/proc/sys/kernel/osrelease", "5.4.0-150-generic\n")]);
        let line = kernel(&h);
        assert_eq!(line.status, Status::Problem);
        assert!(line.detail.contains("upgrade"), "{}", line.detail);
        let (_d, h) = host(&[("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")]);
        assert_eq!(kernel(&h).status, Status::Ok);
    }

    #[test]
    fn privileges_from_capeff() {
        let (_d, h) = host(&[(
            "/proc/thread-self/status",
            "Name:\tx\nCapEff:\t000001ffffffffff\n",
        )]);
        assert_eq!(privileges(&h).status, Status::Ok);
        let (_d, h) = host(&[("/proc/thread-self/status", "CapEff:\t0000008000000000\n")]);
        let line = privileges(&h);
        assert_eq!(line.status, Status::Problem);
        assert!(
            line.detail.contains("missing CAP_PERFMON"),
            "{}",
            line.detail
        );
        let (_d, h) = host(&[("/proc/thread-self/status", "CapEff:\t0000000000000000\n")]);
        assert!(privileges(&h).detail.contains("CAP_BPF, CAP_PERFMON"));
    }

    #[test]
    fn debian_paranoid_level_3_is_a_problem_without_root() {
        let perfmon = "CapEff:\t000000c000000000\n";
        let (_d, h) = host(&[
            ("/proc/sys/kernel/perf_event_paranoid", "3\n"),
            ("/proc/thread-self/status", perfmon),
        ]);
        let line = perf_events(&h);
        assert_eq!(line.status, Status::Problem, "{line}");
        assert!(line.detail.contains("CAP_SYS_ADMIN"), "{line}");
        let (_d, h) = host(&[
            ("/proc/sys/kernel/perf_event_paranoid", "3\n"),
            ("/proc/thread-self/status", "CapEff:\t000001ffffffffff\n"),
        ]);
        assert_eq!(perf_events(&h).status, Status::Ok);
        let (_d, h) = host(&[
            ("/proc/sys/kernel/perf_event_paranoid", "2\n"),
            ("/proc/thread-self/status", perfmon),
        ]);
        assert_eq!(perf_events(&h).status, Status::Ok);
    }

    #[test]
    fn cap_bpf_kept_after_attach_before_6_5() {
        let (_d, h) = host(&[
            ("/proc/sys/kernel/osrelease", "6.1.0-56-cloud-amd64\n"),
            ("/proc/sys/kernel/unprivileged_bpf_disabled", "2\n"),
        ]);
        let line = after_attach(&h);
        assert_eq!(line.status, Status::Note, "{line}");
        assert!(line.detail.contains("keeps CAP_BPF"), "{line}");
        let (_d, h) = host(&[
            ("/proc/sys/kernel/osrelease", "6.1.0-56-cloud-amd64\n"),
            ("/proc/sys/kernel/unprivileged_bpf_disabled", "0\n"),
        ]);
        assert_eq!(after_attach(&h).status, Status::Ok);
        let (_d, h) = host(&[
            ("/proc/sys/kernel/osrelease", "6.12.117+deb12-cloud-amd64\n"),
            ("/proc/sys/kernel/unprivileged_bpf_disabled", "2\n"),
        ]);
        assert_eq!(after_attach(&h).status, Status::Ok);
    }

    #[test]
    fn missing_perf_events() {
        let (_d, h) = host(&[]);
        let line = perf_events(&h);
        assert_eq!(line.status, Status::Problem);
        assert!(
            line.detail.contains("CONFIG_PERF_EVENTS"),
            "{}",
            line.detail
        );
    }

    #[test]
    fn directories() {
        let dir = tempdir::Dir::new();
        let line = directory(DirKind::Dump, &dir.path().join("a/b"));
        assert_eq!(line.status, Status::Ok, "{line}");
        let path = dir.path().canonicalize().unwrap().join("a/b");
        let created = format!("will be created as {}, mode 0750)", path.display());
        assert!(line.detail.contains(&created), "{line}");
        fs::write(dir.path().join("file"), "").unwrap();
        let line = directory(DirKind::Dump, &dir.path().join("file/x"));
        assert_eq!(line.status, Status::Problem, "{line}");
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let line = directory(DirKind::Spool, &shared);
        assert_eq!(
            line.status,
            Status::Problem,
            "a world-writable dir is no ok: {line}"
        );
        assert!(line.detail.contains("chmod 0750"), "{line}");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(directory(DirKind::Spool, &shared).status, Status::Ok);
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_address("http://pyroscope:4040"),
            Some(("pyroscope".into(), 4040))
        );
        assert_eq!(
            server_address("https://user:pw@example.com/prefix"),
            Some(("example.com".into(), 443))
        );
        assert_eq!(server_address("http://[::1]:9/"), Some(("::1".into(), 9)));
        assert_eq!(server_address("pyroscope:4040"), None);
        let line = server_reachable("ftp://x");
        assert_eq!(line.status, Status::Problem);
    }

    #[test]
    fn unreachable_server_is_a_problem_with_the_fix() {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let line = server_reachable(&format!("http://127.0.0.1:{port}"));
        assert_eq!(line.status, Status::Problem, "{line}");
        assert!(line.detail.contains("cannot connect"), "{line}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(
            server_reachable(&format!("http://127.0.0.1:{port}")).status,
            Status::Ok
        );
    }
}
