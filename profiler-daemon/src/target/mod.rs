//! Which processes are profiled and how they are named. In: `--pid`, `--cgroup` and the
//! `[[target]]` sections of the config file. Out: the kernel filter (pids, cgroup ids), the
//! cgroups watched as a whole, the resolved sections, and the series labels of each process.

mod labels;
mod section;
mod select;

pub use labels::{
    sanitize_service_name, truncate, LabelConfig, LabelError, BUILTIN_LABELS, MAX_LABEL_NAMES,
    MAX_NAME_LEN, MAX_VALUE_LEN, PROFILE_NAME,
};
pub use section::{section_for, Section, SectionSpec, Selector, SelectorSpec};
pub use select::{resolve_targets, SelectError, Targets};
