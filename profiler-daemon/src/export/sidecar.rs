//! The `.json` sidecar next to each kept profile in the dump dir: what the page shows about
//! it. Written last, so a listed profile's files exist; read back by the page (which trusts
//! only the daemon's own regular files), so profiles kept before a restart are listed too.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::sink::{KeptProfile, WindowProfile};
use crate::{
    aggregate::ProcessProfile,
    process::ProcessInfo,
    targets::{truncate, LabelConfig},
    types::{millis_after, rfc3339, utc_timestamp},
};

/// Suffix of a kept profile's metadata next to its `.pb.gz` and `.svg`.
pub const SIDECAR_SUFFIX: &str = ".json";

/// What the page shows about one kept profile (the sidecar's contents).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeptSummary {
    /// When the rule fired, RFC 3339 UTC.
    pub fired_at: String,
    /// Seconds since the epoch of `fired_at`, for sorting and the age filter.
    pub fired_unix: u64,
    pub target: String,
    pub service: String,
    pub trigger: String,
    pub reasons: Vec<String>,
    /// Up to three functions with the most self samples, with their share in percent.
    pub top: Vec<(String, f64)>,
    pub samples: u64,
    pub window_seconds: f64,
    /// File names in the dump dir.
    pub pprof: String,
    pub svg: Option<String>,
    /// Written at the firing, before the post-trigger window is over: the complete profile
    /// replaces these files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capturing: bool,
    /// The rules that fired, with the values that fired them; empty for a continuous-mode
    /// window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fired: Vec<FiredRule>,
    /// The target's values per collection across the window, for the page's plot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ValuePoint>,
    /// Where the window starts and ends relative to the firing, in ms (the start is negative;
    /// a continuous window starts at 0).
    #[serde(default)]
    pub window_ms: (i64, i64),
}

/// One rule that fired: holmes' values and its thresholds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FiredRule {
    /// `cpu`, `mem` or `thread`.
    pub metric: String,
    /// holmes' reason text.
    pub reason: String,
    pub cur: u64,
    pub avg: u64,
    pub min: u64,
    pub diff: u64,
    pub abs: u64,
    /// 0: no upper bound.
    pub max: u64,
}

impl FiredRule {
    /// The value at which the diff condition holds over `avg`: holmes' `avg*(100+diff)/100`.
    pub fn diff_threshold(&self) -> u64 {
        (u128::from(self.avg) * (100 + u128::from(self.diff)) / 100).min(u128::from(u64::MAX))
            as u64
    }
}

/// The target's values in one collection, `at_ms` after the firing (negative: before).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValuePoint {
    pub at_ms: i64,
    /// Percent of its CPU limit (cores).
    pub cpu: u64,
    /// Percent of its memory limit.
    pub mem: u64,
    pub thread: u64,
}

/// The `trigger` of a continuous-mode window's rows.
pub const CONTINUOUS: &str = "continuous";

/// A sidecar: one kept profile, or the rows of one continuous-mode window (one per file).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Sidecar {
    Kept(Box<KeptSummary>),
    Window(Vec<KeptSummary>),
}

impl Sidecar {
    pub fn into_rows(self) -> Vec<KeptSummary> {
        match self {
            Sidecar::Kept(kept) => vec![*kept],
            Sidecar::Window(rows) => rows,
        }
    }
}

/// Rows of one continuous-mode window sidecar: each stays well under the page's 1 MiB read
/// bound (a row is at most about 1 KiB: [`MAX_TOP_NAME`]).
pub const WINDOW_SIDECAR_ROWS: usize = 512;
/// Sidecars of one window at most: 16 of 512 rows hold `--max-processes`' 8192 processes.
pub const MAX_WINDOW_SIDECARS: usize = 16;
/// Longest function name a sidecar's top list keeps (C++ names run to kilobytes).
const MAX_TOP_NAME: usize = 200;

/// The name of part `part` of a continuous-mode window's sidecars: `continuous.<start>.json`,
/// then `continuous.<start>.<part>.json`.
pub fn window_sidecar_name(start: SystemTime, part: usize) -> String {
    window_part(&format!("{CONTINUOUS}.{}", utc_timestamp(start)), part)
}

fn window_part(stem: &str, part: usize) -> String {
    match part {
        0 => format!("{stem}{SIDECAR_SUFFIX}"),
        n => format!("{stem}.{n}{SIDECAR_SUFFIX}"),
    }
}

/// The window sidecars that may list a continuous-mode file `<comm>-<pid>.<kind>.<start>.pb.gz`
/// (the start is the last two dot-separated parts, `20261206T174411.421Z`), in order.
pub fn window_sidecars_for(file: &str) -> Option<impl Iterator<Item = String>> {
    let stem = file.strip_suffix(".pb.gz")?;
    let mut parts = stem.rsplitn(3, '.');
    let (millis, seconds) = (parts.next()?, parts.next()?);
    parts.next()?;
    let valid = seconds.len() == 15 && seconds.as_bytes()[8] == b'T' && millis.ends_with('Z');
    let stem = format!("{CONTINUOUS}.{seconds}.{millis}");
    valid.then(move || (0..MAX_WINDOW_SIDECARS).map(move |part| window_part(&stem, part)))
}

/// Seconds since the epoch.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl KeptProfile<'_> {
    /// The sidecar of the kept profile written as `<base>.pb.gz` and `<base>.svg`, whose
    /// answering profiles are `processes`.
    pub(super) fn summary(&self, base: &str, processes: &[&ProcessProfile]) -> KeptSummary {
        let kept = self.kept;
        let window = &kept.window;
        let first = window.processes.first().map(|p| &p.info);
        KeptSummary {
            fired_at: rfc3339(kept.fired_at),
            fired_unix: unix_seconds(kept.fired_at),
            target: kept.name.clone(),
            service: service_name(self.labels, first, &kept.name),
            trigger: self.metric().to_string(),
            reasons: self.reasons(),
            top: top_functions(processes, 3),
            samples: processes.iter().map(|p| p.samples).sum(),
            window_seconds: window.duration.as_secs_f64(),
            pprof: format!("{base}.pb.gz"),
            svg: Some(format!("{base}.svg")),
            capturing: !kept.complete,
            fired: kept
                .scenes
                .iter()
                .map(|s| FiredRule {
                    metric: s.metric.name().to_string(),
                    reason: s.reason.text().to_string(),
                    cur: s.cur,
                    avg: s.avg,
                    min: s.rule.min,
                    diff: s.rule.diff,
                    abs: s.rule.abs,
                    max: s.rule.max,
                })
                .collect(),
            values: kept
                .values
                .iter()
                .map(|(at_ms, v)| ValuePoint {
                    at_ms: *at_ms,
                    cpu: v.cpu,
                    mem: v.mem,
                    thread: v.thread,
                })
                .collect(),
            window_ms: (
                millis_after(window.start, kept.fired_at),
                millis_after(window.start + window.duration, kept.fired_at),
            ),
        }
    }
}

impl WindowProfile<'_> {
    /// The row of the continuous-mode file `file` in its window's sidecar.
    pub(super) fn summary(&self, file: &str) -> KeptSummary {
        let (window, process) = (self.window, self.process);
        let target = format!("{}-{}", process.info.comm, process.info.pid);
        KeptSummary {
            fired_at: rfc3339(window.start),
            fired_unix: unix_seconds(window.start),
            service: service_name(self.labels, Some(&process.info), &target),
            target,
            trigger: CONTINUOUS.to_string(),
            reasons: vec![format!(
                "{} profile of a {:.0} s window",
                self.measure.name(),
                window.duration.as_secs_f64()
            )],
            top: top_functions(&[process], 3),
            samples: process.samples,
            window_seconds: window.duration.as_secs_f64(),
            pprof: file.to_string(),
            window_ms: (0, window.duration.as_millis() as i64),
            ..KeptSummary::default()
        }
    }
}
/// The `service_name` the labels give `process`, else `fallback`.
fn service_name(labels: &LabelConfig, process: Option<&ProcessInfo>, fallback: &str) -> String {
    process
        .and_then(|info| {
            labels
                .for_process(info)
                .into_iter()
                .find(|(k, _)| k == "service_name")
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| fallback.to_string())
}

/// The `n` functions with the most self samples (leaf frames, inlined callee first) over
/// `processes`, with their share of all samples in percent.
fn top_functions(processes: &[&ProcessProfile], n: usize) -> Vec<(String, f64)> {
    // Names cut to MAX_TOP_NAME bytes, so that a row's size is bounded.
    let mut by_function: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0;
    for process in processes {
        for (stack, count) in &process.stacks {
            total += count;
            if let Some(&leaf) = stack.first() {
                let name = process.locations[leaf as usize].function();
                *by_function.entry(name).or_insert(0) += count;
            }
        }
    }
    let mut ranked: Vec<(&str, u64)> = by_function.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(name, count)| {
            (
                truncate(name, MAX_TOP_NAME).to_string(),
                count as f64 * 100.0 / total.max(1) as f64,
            )
        })
        .collect()
}
