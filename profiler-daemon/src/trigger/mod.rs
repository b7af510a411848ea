//! holmes-style triggers. In: each collect interval's [`Window`](crate::aggregate::Window) of
//! samples, plus `/proc` and cgroup files for memory, threads and limits. Out: firings of the
//! rules ([`Watcher`]) and the kept profiles that answer them ([`Captures`]), with the seconds
//! before the firing taken from a bounded history.

mod capture;
mod limits;
mod rules;
mod watch;

pub use capture::{Captures, Kept};
pub use watch::{Firing, WatchConfig, Watcher};
