//! The kernel-matrix driver's `kernel-check: result {json}` line, written in a guest and read
//! by `cargo xtask test --kernels` into a row of its table.

use serde::{Deserialize, Serialize};

/// Prefix of the result line on the guest's console.
pub const RESULT_PREFIX: &str = "kernel-check: result ";

/// One kernel's result: what `profilerd check` noted, the figures of each check that ran,
/// which checks failed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    /// `profilerd check` lines that are not ok: what degrades on this kernel.
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub figures: Figures,
    #[serde(default)]
    pub failed: Vec<String>,
    #[serde(default)]
    pub seconds: f64,
}

/// The figures measured; a check that could not run leaves its own unset.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Figures {
    /// Launch to the "recording" line, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_ms: Option<u64>,
    /// Whether CAP_BPF is among the capabilities kept after attach (it is before 6.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_bpf_kept: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_three_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_samples: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_frames: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_read_path: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_inside: Option<i64>,
    /// Samples of the process outside the cgroup and of any other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_outside: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_kept: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_ok: Option<bool>,
    /// Share of the `nofp` fixture's samples (built without frame pointers) whose stack
    /// reaches main's caller in libc, in percent, and the frames unwound with tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwound_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_frames: Option<u64>,
    /// How the daemon fares as a non-root user with CAP_BPF and CAP_PERFMON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_root: Option<String>,
}

/// The last result line of a console or an output, if there is one that parses.
pub fn find_report(text: &str) -> Option<Report> {
    text.lines()
        .rev()
        .find_map(|l| l.split_once(RESULT_PREFIX))
        .and_then(|(_, json)| serde_json::from_str(json.trim()).ok())
}
