//! What the host offers the daemon. In: `/proc`, `/sys` and the thread's capabilities. Out:
//! start-up checks that fail with one line naming the fix ([`preflight`]), the report of
//! `profilerd check` ([`check`]), and the capability drops after the sampler is attached.

pub mod check;
pub mod descriptors;
mod facts;
pub mod preflight;
pub mod privileges;

pub use facts::{max_sample_rate, Host};
