//! When a kept profile's samples were taken against its firing: the `phase` and `offset`
//! labels of [`super::pprof::encode_timed`]. In: the end of an interval and of the interval
//! that fired. Out: the phase.

use std::time::SystemTime;

/// Where a collect interval lies against a firing: `before` it (the baseline), the interval
/// whose values fired the rule (`firing`), or `after` it; the last two are the spike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Before,
    Firing,
    After,
}

impl Phase {
    /// The phase of the interval ending at `end`, the firing one ending at `fired_end`.
    pub fn of(end: SystemTime, fired_end: SystemTime) -> Self {
        match end.cmp(&fired_end) {
            std::cmp::Ordering::Less => Phase::Before,
            std::cmp::Ordering::Equal => Phase::Firing,
            std::cmp::Ordering::Greater => Phase::After,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::Firing => "firing",
            Phase::After => "after",
        }
    }
}

/// When a collect interval was taken relative to a firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceTime {
    /// When it ended, in ms from the firing (negative: before it).
    pub end_ms: i64,
    pub phase: Phase,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_interval_that_fired_is_the_firing_phase_whatever_its_length() {
        let fired = UNIX_EPOCH + Duration::from_secs(100);
        let ms = Duration::from_millis(1);
        assert_eq!(Phase::of(fired - ms, fired), Phase::Before);
        assert_eq!(Phase::of(fired, fired), Phase::Firing);
        assert_eq!(Phase::of(fired + ms, fired), Phase::After);
        assert_eq!(Phase::Firing.name(), "firing");
    }
}
