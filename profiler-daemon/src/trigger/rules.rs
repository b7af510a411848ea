//! holmes' threshold rules (mosn/holmes), applied per target: a ring of the last 10 values
//! (the current one included), a warm-up of 10 collections counted from the daemon's start,
//! integer maths, and a cooldown after each firing.

use std::time::Instant;

use crate::types::{Metric, Rule, Rules};

/// Values kept per metric, the current one included.
pub const RING: usize = 10;
/// Collections before any rule runs.
pub const WARM_UP: u64 = 10;

/// Outcome of `match_rule`, with holmes' reason texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BelowMin,
    AtOrOverMax,
    OverAbs,
    Diff,
    DiffNotMet,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::BelowMin => "curVal < ruleMin",
            Reason::AtOrOverMax => "curVal >= ruleMax",
            Reason::OverAbs => "curVal > ruleAbs",
            Reason::Diff => "meet diff trigger condition",
            Reason::DiffNotMet => "curVal < avg*(100+ruleDiff)/100",
        }
    }

    pub fn fires(self) -> bool {
        matches!(self, Reason::OverAbs | Reason::Diff)
    }
}

/// holmes' `matchRule`, checked in its order.
pub fn match_rule(avg: u64, cur: u64, rule: &Rule) -> Reason {
    if cur < rule.min {
        return Reason::BelowMin;
    }
    if rule.max != 0 && cur >= rule.max {
        return Reason::AtOrOverMax;
    }
    if cur > rule.abs {
        return Reason::OverAbs;
    }
    // In u128: any diff and average a flag can give, without overflow.
    let threshold = u128::from(avg).saturating_mul(100 + u128::from(rule.diff)) / 100;
    if u128::from(cur) >= threshold {
        return Reason::Diff;
    }
    Reason::DiffNotMet
}

/// The last [`RING`] values of one metric.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    values: [u64; RING],
    len: usize,
    next: usize,
}

impl Ring {
    pub fn push(&mut self, value: u64) {
        self.values[self.next] = value;
        self.next = (self.next + 1) % RING;
        self.len = (self.len + 1).min(RING);
    }

    /// Values held (at most [`RING`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The values held, oldest first.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        let start = (self.next + RING - self.len) % RING;
        (0..self.len).map(move |i| self.values[(start + i) % RING])
    }

    /// Integer average of the values held.
    pub fn avg(&self) -> u64 {
        if self.len == 0 {
            return 0;
        }
        // In u128, so that no values can overflow the sum; the mean fits in u64 again.
        let sum: u128 = self.values[..self.len].iter().map(|&v| u128::from(v)).sum();
        (sum / self.len as u128) as u64
    }
}

/// What the rules were looking at when one fired (holmes' "scene").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scene {
    pub metric: Metric,
    pub reason: Reason,
    pub cur: u64,
    pub avg: u64,
    pub rule: Rule,
}

impl Scene {
    pub fn describe(&self) -> String {
        format!(
            "{} trigger: {} (cur {} avg {}; rule min {} diff {} abs {} max {} cooldown {:?})",
            self.metric.name(),
            self.reason.text(),
            self.cur,
            self.avg,
            self.rule.min,
            self.rule.diff,
            self.rule.abs,
            self.rule.max,
            self.rule.cooldown
        )
    }
}

/// Current values of one target in one collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Values {
    pub cpu: u64,
    pub mem: u64,
    pub thread: u64,
}

impl Values {
    pub fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Cpu => self.cpu,
            Metric::Mem => self.mem,
            Metric::Thread => self.thread,
        }
    }
}

/// Per-target rule state: rings, collection count, cooldowns.
#[derive(Clone, Debug, Default)]
pub struct TargetState {
    rings: [Ring; 3],
    collected: u64,
    /// Collections before this target was first seen, still to be put in the rings.
    unseen: usize,
    cooldown_until: [Option<Instant>; 3],
    pub last: Values,
}

impl TargetState {
    /// The state of a target first seen after `collections` collections of the daemon: it
    /// is warm when they are enough, and each of them is a point of its history at 0% CPU
    /// (every sample is counted in the kernel, so an interval without one had none), and at
    /// the memory and threads of its first reading (the values of then were not read).
    pub fn first_seen_after(collections: u64) -> Self {
        Self {
            collected: collections,
            unseen: collections.min(RING as u64) as usize,
            ..Self::default()
        }
    }

    /// Records this collection's values and returns the rules that fire now.
    pub fn observe(&mut self, values: Values, rules: &Rules, now: Instant) -> Vec<Scene> {
        for _ in 0..std::mem::take(&mut self.unseen) {
            for (i, metric) in Metric::ALL.iter().enumerate() {
                let before = if *metric == Metric::Cpu {
                    0
                } else {
                    values.get(*metric)
                };
                self.rings[i].push(before);
            }
        }
        for (i, metric) in Metric::ALL.iter().enumerate() {
            self.rings[i].push(values.get(*metric));
        }
        self.collected += 1;
        self.last = values;
        if self.collected < WARM_UP {
            return Vec::new();
        }
        if rules.cpu_max != 0 && values.cpu >= rules.cpu_max {
            return Vec::new();
        }
        let mut fired = Vec::new();
        for (i, metric) in Metric::ALL.iter().enumerate() {
            let Some(rule) = rules.get(*metric) else {
                continue;
            };
            if self.cooldown_until[i].is_some_and(|until| now < until) {
                continue;
            }
            let avg = self.rings[i].avg();
            let cur = values.get(*metric);
            let reason = match_rule(avg, cur, rule);
            if reason.fires() {
                self.cooldown_until[i] = Some(now + rule.cooldown);
                fired.push(Scene {
                    metric: *metric,
                    reason,
                    cur,
                    avg,
                    rule: *rule,
                });
            }
        }
        fired
    }

    /// Whether the warm-up is over.
    pub fn warmed_up(&self) -> bool {
        self.collected >= WARM_UP
    }

    /// The values the rings hold, oldest first, the current one last: what the averages were
    /// made of, drawn on the page as the timeline before a firing.
    pub fn recent(&self) -> Vec<Values> {
        let [cpu, mem, thread] = &self.rings;
        cpu.values()
            .zip(mem.values())
            .zip(thread.values())
            .map(|((cpu, mem), thread)| Values { cpu, mem, thread })
            .collect()
    }

    /// The history `metric`'s rule compares with: its average and how many values it holds.
    pub fn history(&self, metric: Metric) -> (u64, usize) {
        let ring = &self.rings[Metric::ALL.iter().position(|m| *m == metric).unwrap_or(0)];
        (ring.avg(), ring.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RULE: Rule = crate::types::TEST_RULE;

    #[test]
    fn the_largest_rule_values_do_not_overflow() {
        let huge = Rule {
            min: 0,
            diff: u64::MAX,
            abs: u64::MAX,
            max: 0,
            cooldown: Duration::from_secs(60),
        };
        assert_eq!(match_rule(u64::MAX, u64::MAX, &huge), Reason::DiffNotMet);
        assert_eq!(match_rule(0, 1, &huge), Reason::Diff);
    }

    #[test]
    fn every_branch_of_the_rule() {
        assert_eq!(match_rule(5, 9, &RULE), Reason::BelowMin);
        let with_max = Rule { max: 50, ..RULE };
        assert_eq!(match_rule(5, 50, &with_max), Reason::AtOrOverMax);
        assert_eq!(match_rule(5, 51, &with_max), Reason::AtOrOverMax);
        assert_eq!(match_rule(5, 49, &with_max), Reason::Diff);
        assert_eq!(match_rule(60, 71, &RULE), Reason::OverAbs);
        assert_eq!(
            match_rule(60, 70, &RULE),
            Reason::DiffNotMet,
            "abs is strict, 75 needed for diff"
        );
        // Integer rounding: avg 33 -> 33*125/100 = 41 (41.25 truncated).
        assert_eq!(match_rule(33, 41, &RULE), Reason::Diff);
        assert_eq!(match_rule(33, 40, &RULE), Reason::DiffNotMet);
        assert_eq!(
            match_rule(0, 10, &RULE),
            Reason::Diff,
            "at min with a zero average"
        );
        assert_eq!(Reason::OverAbs.text(), "curVal > ruleAbs");
        assert_eq!(Reason::Diff.text(), "meet diff trigger condition");
    }

    #[test]
    fn ring_holds_ten_and_averages_with_integer_division() {
        let mut ring = Ring::default();
        assert_eq!(ring.avg(), 0);
        for v in [1, 2] {
            ring.push(v);
        }
        assert_eq!(ring.avg(), 1, "3 / 2");
        assert_eq!(ring.values().collect::<Vec<_>>(), [1, 2]);
        for v in 0..20 {
            ring.push(v);
        }
        assert_eq!(ring.avg(), (10..20).sum::<u64>() / 10);
        assert_eq!(
            ring.values().collect::<Vec<_>>(),
            (10..20).collect::<Vec<_>>()
        );
    }

    fn rules() -> Rules {
        Rules {
            cpu: Some(RULE),
            mem: None,
            thread: None,
            cpu_max: 0,
        }
    }

    fn cpu(v: u64) -> Values {
        Values {
            cpu: v,
            ..Values::default()
        }
    }

    #[test]
    fn warm_up_then_fire_with_the_current_value_in_the_average() {
        let mut state = TargetState::default();
        let now = Instant::now();
        for _ in 0..9 {
            assert!(
                state.observe(cpu(90), &rules(), now).is_empty(),
                "warming up"
            );
        }
        assert!(!state.warmed_up());
        let fired = state.observe(cpu(90), &rules(), now);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].reason, Reason::OverAbs);
        assert_eq!((fired[0].cur, fired[0].avg), (90, 90));

        // avg includes cur: 9 x 10 + 13 = 103 / 10 = 10; 10*125/100 = 12 <= 13 fires.
        let mut state = TargetState::default();
        for _ in 0..9 {
            state.observe(cpu(10), &rules(), now);
        }
        let fired = state.observe(cpu(13), &rules(), now);
        assert_eq!(fired[0].reason, Reason::Diff);
        assert_eq!(fired[0].avg, 10);
    }

    #[test]
    fn a_target_first_seen_late_is_warm_with_zero_cpu_before_it() {
        let now = Instant::now();
        let mut rules = rules();
        rules.thread = Some(Rule { abs: 500, ..RULE });
        // A quiet process: first sampled on the daemon's 26th collection, at 49% CPU.
        let mut state = TargetState::first_seen_after(25);
        assert!(state.warmed_up());
        let values = Values {
            cpu: 49,
            mem: 0,
            thread: 300,
        };
        let fired = state.observe(values, &rules, now);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].metric, Metric::Cpu);
        assert_eq!((fired[0].cur, fired[0].avg), (49, 4), "49 / 10");
        assert_eq!(state.history(Metric::Cpu), (4, RING));
        // Threads before the first reading are not known: they are taken as its own value,
        // so a count that was always there does not look like a jump.
        assert_eq!(state.history(Metric::Thread), (300, RING));

        // Seen after 3 collections: 3 zeros and itself, 6 more to warm up.
        let mut state = TargetState::first_seen_after(3);
        state.observe(cpu(40), &rules, now);
        assert_eq!(state.history(Metric::Cpu), (10, 4));
        for _ in 0..5 {
            assert!(state.observe(cpu(40), &rules, now).is_empty(), "warming up");
        }
        assert!(!state.warmed_up());
        assert_eq!(state.observe(cpu(40), &rules, now).len(), 1);
    }

    #[test]
    fn cooldown_skips_the_rule_until_it_ends() {
        let mut state = TargetState::default();
        let t0 = Instant::now();
        for _ in 0..9 {
            state.observe(cpu(0), &rules(), t0);
        }
        assert_eq!(state.observe(cpu(80), &rules(), t0).len(), 1);
        assert!(state
            .observe(cpu(95), &rules(), t0 + Duration::from_secs(59))
            .is_empty());
        assert_eq!(
            state
                .observe(cpu(95), &rules(), t0 + Duration::from_secs(60))
                .len(),
            1
        );
    }

    #[test]
    fn cpu_max_skips_every_rule() {
        let mut rules = rules();
        rules.cpu_max = 90;
        rules.mem = Some(RULE);
        let mut state = TargetState::default();
        let now = Instant::now();
        for _ in 0..10 {
            state.observe(
                Values {
                    cpu: 0,
                    mem: 0,
                    thread: 0,
                },
                &rules,
                now,
            );
        }
        assert!(state
            .observe(
                Values {
                    cpu: 95,
                    mem: 99,
                    thread: 0
                },
                &rules,
                now
            )
            .is_empty());
        let fired = state.observe(
            Values {
                cpu: 85,
                mem: 99,
                thread: 0,
            },
            &rules,
            now,
        );
        assert_eq!(
            fired.iter().map(|s| s.metric).collect::<Vec<_>>(),
            [Metric::Cpu, Metric::Mem]
        );
    }
}
