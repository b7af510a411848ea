//! What the host offers the daemon. In: `/proc`, `/sys` and the thread's capabilities. Out:
//! start-up checks that fail with one line naming the fix ([`preflight`]), the report of
//! `profilerd check` ([`check`]), the capability drops after the sampler is attached, the
//! rules for the directories the daemon writes ([`dirs`]), and the daemon's scheduling
//! priority ([`priority`]).

pub mod check;
pub mod descriptors;
pub mod dirs;
mod facts;
pub mod preflight;
pub mod priority;
pub mod privileges;

pub use facts::{max_sample_rate, parse_kernel_version, Host};
