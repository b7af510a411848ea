//! Plain values shared by every stage: durations and sizes as flags write them, holmes'
//! rules, cgroup targets, UTC timestamps. A leaf: it imports nothing of the crate, so any
//! stage may use it without pulling in another.

mod cgroup;
mod rule;
mod time;
mod units;

pub use cgroup::CgroupTarget;
#[cfg(test)]
pub(crate) use rule::TEST_RULE;
pub use rule::{parse_rule, Metric, Rule, RuleSetting, Rules};
pub use time::{millis_after, rfc3339, utc_timestamp};
pub use units::{parse_bytes, parse_duration};
