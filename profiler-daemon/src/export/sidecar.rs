//! The `.json` sidecar next to each kept profile in the dump dir: what the page shows about
//! it. Written last, so a listed profile's files exist; read back by the page (which trusts
//! only the daemon's own regular files), so profiles kept before a restart are listed too.

use serde::{Deserialize, Serialize};

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
}
