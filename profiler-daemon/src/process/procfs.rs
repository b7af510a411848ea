//! The one reader of the `/proc` files the daemon uses: a process's `stat`, `statm`, the
//! `CapEff` line of `status` and `cgroup`, and `/proc/self/mountinfo`. Pure parse functions
//! over the file's text (for tests, and for `host::check`, which reads through a fixture root)
//! plus thin read functions that return `None` when the file cannot be read (mostly: the
//! process is gone).

use std::fs;

/// The fields of `/proc/PID/stat` the daemon uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 2, without its parentheses; may itself contain spaces and parentheses.
    pub(crate) comm: String,
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub(crate) state: char,
    /// Fields 14 and 15: user and system CPU time in clock ticks.
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    /// Field 20.
    pub(crate) threads: u64,
    /// Field 22: start time in clock ticks since boot.
    pub(crate) start_time: u64,
    /// Field 24: resident set size in pages.
    pub(crate) rss_pages: u64,
}

/// Parses `/proc/PID/stat`. The comm is everything between the first `(` and the last `)`,
/// the other fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm start at field 3 (state); read in order, without collecting them:
    // this runs for every tracked process at every drain.
    let mut fields = text.get(close + 2..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let mut at = 3;
    let mut number = |field: usize| -> Option<u64> {
        let value = fields.nth(field - at - 1)?.parse().ok();
        at = field;
        value
    };
    Some(Stat {
        comm,
        state,
        utime: number(14)?,
        stime: number(15)?,
        threads: number(20)?,
        start_time: number(22)?,
        rss_pages: number(24)?,
    })
}

/// Resident pages (field 2) of `/proc/PID/statm`.
pub(crate) fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The effective capability mask, the `CapEff:` line of a `/proc/.../status` text.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The cgroup v2 path from `/proc/PID/cgroup` (the `0::` line), `/` when there is none.
pub(crate) fn parse_cgroup_v2(text: &str) -> String {
    CgroupPaths::parse(text).v2
}

/// A process's cgroup paths, from `/proc/PID/cgroup`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupPaths {
    pub(crate) v2: String,
    pub(crate) v1_cpu: Option<String>,
    pub(crate) v1_memory: Option<String>,
}

impl CgroupPaths {
    pub(crate) fn parse(text: &str) -> Self {
        let mut paths = Self::default();
        let mut v2 = None;
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let path = path.trim();
            // The v2 line (`0::PATH`) has no controllers; the kernel writes one.
            if controllers.is_empty() {
                v2.get_or_insert(path);
            }
            let list: Vec<&str> = controllers.split(',').collect();
            if list.contains(&"cpu") {
                paths.v1_cpu = Some(path.to_string());
            }
            if list.contains(&"memory") {
                paths.v1_memory = Some(path.to_string());
            }
        }
        paths.v2 = v2.unwrap_or("/").to_string();
        paths
    }

    pub(crate) fn of_pid(pid: u32) -> Option<Self> {
        read_cgroup(pid).map(|t| Self::parse(&t))
    }
}

/// `/proc/PID/stat`, parsed.
pub(crate) fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/self/stat`, parsed.
pub(crate) fn read_own_stat() -> Option<Stat> {
    parse_stat(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// Resident pages of `/proc/PID/statm`.
pub(crate) fn read_statm_resident(pid: u32) -> Option<u64> {
    parse_statm_resident(&fs::read_to_string(format!("/proc/{pid}/statm")).ok()?)
}

/// The effective capabilities of the calling thread (capabilities are per thread), from
/// `/proc/thread-self/status`.
pub(crate) fn read_thread_cap_eff() -> Option<u64> {
    parse_cap_eff(&fs::read_to_string("/proc/thread-self/status").ok()?)
}

/// The text of `/proc/PID/cgroup`.
pub(crate) fn read_cgroup(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// One line of `/proc/self/mountinfo`: the mount point, the file system type and its super
/// options (for cgroup v1, the controllers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mount<'a> {
    pub point: &'a str,
    pub fstype: &'a str,
    pub options: &'a str,
}

/// The mounts of a mountinfo text, in order; malformed lines are skipped.
pub(crate) fn parse_mounts(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        let fstype = right.next()?;
        let options = right.nth(1).unwrap_or("");
        let point = left.split_whitespace().nth(4)?;
        Some(Mount {
            point,
            fstype,
            options,
        })
    })
}

pub(crate) fn read_mountinfo() -> Option<String> {
    fs::read_to_string("/proc/self/mountinfo").ok()
}

/// The device (`major:minor`, decimal) and file system type of each mount of a mountinfo text.
pub(crate) fn parse_mount_devices(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        Some((
            left.split_whitespace().nth(2)?,
            right.split_whitespace().next()?,
        ))
    })
}

/// The mounts as process `pid` sees them (its mount namespace).
pub(crate) fn read_mountinfo_of(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_type_and_options() {
        let text = "\
30 1 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 1 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
not a mount line
";
        let mounts: Vec<Mount<'_>> = parse_mounts(text).collect();
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[0],
            Mount {
                point: "/sys/fs/cgroup/unified",
                fstype: "cgroup2",
                options: "rw,nsdelegate",
            }
        );
        assert_eq!(mounts[1].options, "rw,cpu,cpuacct");
        let devices: Vec<(&str, &str)> = parse_mount_devices(text).collect();
        assert_eq!(devices, [("0:26", "cgroup2"), ("0:27", "cgroup")]);
    }

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let stat =
            "42 (my (odd) prog) S 1 42 42 0 -1 4194304 100 0 0 0 5 6 0 0 20 0 1 0 98765 1000 10";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(
            (parsed.comm.as_str(), parsed.start_time),
            ("my (odd) prog", 98765)
        );
        assert_eq!(parsed.state, 'S');
        assert_eq!((parsed.utime, parsed.stime), (5, 6));
        assert_eq!(parsed.threads, 1);
        assert_eq!(parsed.rss_pages, 10);
    }

    #[test]
    fn stat_without_comm_or_with_too_few_fields_is_none() {
        assert_eq!(parse_stat("42 S 1 42"), None);
        assert_eq!(parse_stat("42 (prog) S 1 42 42 0 -1 4194304 100"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn own_stat_and_statm_are_read() {
        let stat = read_stat(std::process::id()).unwrap();
        assert!(stat.threads >= 1);
        assert_eq!(read_own_stat().map(|s| s.start_time), Some(stat.start_time));
        assert!(read_statm_resident(std::process::id()).unwrap() > 0);
        assert!(read_cgroup(std::process::id()).is_some());
    }

    #[test]
    fn statm_resident_is_the_second_field() {
        assert_eq!(
            parse_statm_resident("5000 1200 300 10 0 900 0\n"),
            Some(1200)
        );
        assert_eq!(parse_statm_resident("5000\n"), None);
        assert_eq!(parse_statm_resident("5000 x\n"), None);
    }

    #[test]
    fn cap_eff_is_the_hex_mask_of_its_line() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("CapEff:\t0000008000000000\n"), Some(1 << 39));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tnot-hex\n"), None);
    }

    #[test]
    fn cgroup_v2_line_is_picked_on_hybrid_hosts() {
        let text = "12:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/user.slice/x.scope\n";
        assert_eq!(parse_cgroup_v2(text), "/user.slice/x.scope");
        assert_eq!(parse_cgroup_v2("3:memory:/\n"), "/");
    }

    #[test]
    fn cgroup_paths_of_a_hybrid_host() {
        let paths =
            CgroupPaths::parse("4:memory:/pod/a\n2:cpu,cpuacct:/pod/a\n1:name=systemd:/x\n0::/x\n");
        assert_eq!(paths.v2, "/x");
        assert_eq!(paths.v1_cpu.as_deref(), Some("/pod/a"));
        assert_eq!(paths.v1_memory.as_deref(), Some("/pod/a"));
        assert_eq!(CgroupPaths::parse("").v2, "/");
    }
}
