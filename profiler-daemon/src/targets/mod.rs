//! Which processes are profiled and how they are named. In: `--pid`, `--cgroup` and the
//! `[[target]]` sections of the config file. Out: the kernel filter (pids, cgroup ids), the
//! cgroups watched as a whole, the resolved sections, and the series labels of each process.

mod labels;
mod section;
mod select;

pub use labels::{
    derive_service_name, sanitize_service_name, truncate, LabelConfig, KIND_PROFILE_NAMES,
    MAX_VALUE_LEN,
};
pub use section::{named_pids, section_for, Section, SectionSpec, SelectorSpec};
pub use select::{resolve_targets, Targets};
