//! profilerd: a system-wide eBPF CPU profiler.
//!
//! The stages, in the order data flows (a stage imports only the ones before it):
//!
//! | module | in | out |
//! | --- | --- | --- |
//! | `types/` | | durations, sizes, rules, cgroup targets, timestamps (a leaf) |
//! | `process/` | `/proc/PID/*` | what the daemon knows of a process |
//! | `host/` | `/proc/sys`, capabilities | start-up checks, `check` items, capability drops |
//! | `sample/` | the BPF object | drained counts and stacks |
//! | `symbolize/` | addresses | named frames |
//! | `unwind/` | ELF files' bytes | unwind tables (paged CFI rows) for the BPF unwinder |
//! | `aggregate/` | drained samples | per-process windows (and the one-thread pipeline) |
//! | `targets/` | `--pid`, `--cgroup`, `[[target]]` | kernel filter, sections, labels |
//! | `trigger/` | windows | rule firings and kept profiles |
//! | `encode/` | windows | pprof, folded stacks, flame graphs |
//! | `export/` | encoded profiles | dump dir, Pyroscope uploads, spool |
//! | `serve/` | dump dir, metrics | the HTTP listener: page, `/metrics`, `/healthz` |
//! | `config/` | argv, TOML | parsed commands (the only clap-aware module) |
//! | `app/` | a parsed command | `record`, `run` and `check` wired from the stages |

mod aggregate;
pub mod app;
pub mod config;
mod encode;
pub mod export;
mod host;
mod process;
mod sample;
mod serve;
mod symbolize;
mod targets;
mod trigger;
mod types;
mod unwind;

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
