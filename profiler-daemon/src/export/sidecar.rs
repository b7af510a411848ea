//! The `.json` sidecar next to each kept profile in the dump dir: what the page shows about
//! it. Written last, so a listed profile's files exist; read back by the page, so profiles
//! kept before a restart are listed too.

use std::{
    fs,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// Suffix of a kept profile's metadata next to its `.pb.gz` and `.svg`.
pub const SIDECAR_SUFFIX: &str = ".json";
/// Rows the page shows at most (newest first).
const MAX_ROWS: usize = 500;

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
}

/// Sidecars of the kept profiles newer than `window`, newest first.
pub fn list_kept(dir: &Path, window: Duration, now: SystemTime) -> Vec<KeptSummary> {
    let oldest = now
        .checked_sub(window)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut rows: Vec<KeptSummary> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(SIDECAR_SUFFIX))
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<KeptSummary>(&bytes).ok())
        .filter(|k| k.fired_unix >= oldest)
        .filter(|k| dir.join(&k.pprof).exists())
        .collect();
    rows.sort_by(|a, b| b.fired_unix.cmp(&a.fired_unix).then(b.pprof.cmp(&a.pprof)));
    rows.truncate(MAX_ROWS);
    rows
}
