//! The one kit of profilerd's end-to-end checks, shared by the test crate (`tests/`), the
//! bench (`cargo xtask bench`) and the kernel-matrix driver (`kernel-check`, run inside QEMU
//! guests).
//!
//! What goes in: paths to the real `profilerd` binary and the C fixtures. What comes out:
//! guards that clean up after themselves (fixture processes, daemons, cgroups), readers of
//! `/proc` and of profilerd's log lines, stacks decoded from folded output, and the
//! judgements of the scenarios both the host tests and the kernel matrix check.
//!
//! Fallible functions return `anyhow::Result` (the driver reports a failed check and goes on);
//! the test crate turns errors into panics.

pub mod cgroup;
pub mod daemon;
pub mod fixtures;
pub mod hostile;
pub mod matrix;
pub mod perf;
pub mod process;
pub mod procfs;
pub mod scenario;
pub mod stack;

pub use cgroup::Cgroup;
pub use daemon::Daemon;
pub use hostile::{Behaviour, HostileServer};
pub use process::{tail, wait_until, Running};
pub use stack::{Frame, Stack};
