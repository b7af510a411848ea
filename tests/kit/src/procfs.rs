//! What the checks read of `/proc`, and profilerd's sample-accounting log line.

use std::{collections::HashMap, fs};

/// The fields of a `/proc/.../stat` file after the command name, from field 3 (state) on.
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    Some(
        stat.get(stat.rfind(')')? + 2..)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14, 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(&format!("/proc/{pid}/stat"))?;
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The nice value of each thread of a process (`/proc/PID/task/TID/stat` field 19).
pub fn thread_nice_values(pid: u32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path().join("stat");
            stat_fields(path.to_str()?)?.get(16)?.parse().ok()
        })
        .collect()
}

/// A `Name:   1234 kB` field of a `/proc/.../status` text, in MiB.
pub fn status_mib(status: &str, name: &str) -> Option<f64> {
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// A process's peak RSS (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        "VmHWM",
    )
}

/// VmRSS, RssAnon and RssFile of a process, in MiB.
pub fn rss_split(pid: u32) -> Option<[f64; 3]> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some([
        status_mib(&status, "VmRSS")?,
        status_mib(&status, "RssAnon")?,
        status_mib(&status, "RssFile")?,
    ])
}

/// The effective capability set (`CapEff`) of a `/proc/.../status` text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The `key=value` counters of profilerd's last "sample accounting:" (record) or "samples:"
/// (run) log line, `None` when it logged neither.
pub fn accounting(stderr: &str) -> Option<HashMap<String, u64>> {
    let line = stderr.lines().rev().find_map(|l| {
        l.split_once("sample accounting: ")
            .or_else(|| l.split_once("samples: taken="))
            .map(|(_, rest)| rest)
    })?;
    let line = if line.starts_with("taken=") {
        line.to_string()
    } else {
        format!("taken={line}")
    };
    Some(
        line.split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect(),
    )
}
