//! profilerd: a system-wide eBPF CPU profiler.
//!
//! Pipeline, one module per stage: [`sampler`] (BPF, drain) -> [`symbolize`] -> [`aggregate`]
//! -> [`pprof`] / [`output`]. [`pipeline`] runs the stages on one thread; [`commands`] drives
//! it for `record` and `run`.

pub mod aggregate;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod pprof;
pub mod preflight;
pub mod privileges;
pub mod procinfo;
pub mod sampler;
pub mod spool;
pub mod symbolize;
pub mod targets;
pub mod trigger;
pub mod triggered;
pub mod upload;
pub mod watch;
pub mod web;

/// Types generated from `proto/profile.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pprof_proto {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

/// Types generated from `proto/push.proto` (Pyroscope's push API).
#[allow(clippy::all, missing_docs)]
pub mod push_proto {
    include!(concat!(env!("OUT_DIR"), "/push.v1.rs"));
}

/// The BPF object built by `build.rs` from `profiler-ebpf`.
pub static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler.bpf.o"));
