//! holmes' rules as plain values: which metric, the thresholds, and the parser of their
//! `min,diff,abs[,max],cooldown` text (flags, config file and `[[target]]` sections).

use std::time::Duration;

use super::parse_duration;

/// Which metric a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Cpu,
    Mem,
    Thread,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Cpu, Metric::Mem, Metric::Thread];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Mem => "mem",
            Metric::Thread => "thread",
        }
    }
}

/// One rule: `min, diff, abs[, max], cooldown` in holmes' order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub min: u64,
    /// Percent above the ring's average that fires.
    pub diff: u64,
    pub abs: u64,
    /// 0: no upper bound. At or above it nothing fires (the thread rule's optional max).
    pub max: u64,
    pub cooldown: Duration,
}

/// The rules in force (`None`: disabled) and the CPU value at which all are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub cpu: Option<Rule>,
    pub mem: Option<Rule>,
    pub thread: Option<Rule>,
    /// 0: off. When the CPU value is at or above it, no rule runs that tick.
    pub cpu_max: u64,
}

impl Rules {
    pub fn get(&self, metric: Metric) -> Option<&Rule> {
        match metric {
            Metric::Cpu => self.cpu.as_ref(),
            Metric::Mem => self.mem.as_ref(),
            Metric::Thread => self.thread.as_ref(),
        }
    }
}

/// A rule flag's value: the rule, or `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSetting(pub Option<Rule>);

/// Parses `min,diff,abs,cooldown` (`with_max`: `min,diff,abs,max,cooldown`), or `off`.
pub fn parse_rule(text: &str, with_max: bool) -> Result<Option<Rule>, String> {
    let text = text.trim();
    if matches!(text, "off" | "none" | "disabled" | "0") {
        return Ok(None);
    }
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let expected = if with_max { 5 } else { 4 };
    let shape = if with_max {
        "min,diff,abs,max,cooldown (e.g. 10,25,70,0,1h)"
    } else {
        "min,diff,abs,cooldown (e.g. 10,25,70,1m)"
    };
    if parts.len() != expected {
        return Err(format!("{text:?} is not {shape}, or off"));
    }
    let number = |s: &str, what: &str| -> Result<u64, String> {
        s.parse()
            .map_err(|_| format!("{what} {s:?} in {text:?} is not a whole number ({shape})"))
    };
    let cooldown = parse_duration(parts[expected - 1])?;
    Ok(Some(Rule {
        min: number(parts[0], "min")?,
        diff: number(parts[1], "diff")?,
        abs: number(parts[2], "abs")?,
        max: if with_max {
            number(parts[3], "max")?
        } else {
            0
        },
        cooldown,
    }))
}

/// The CPU rule's default, for tests of the stages that apply rules.
#[cfg(test)]
pub(crate) const TEST_RULE: Rule = Rule {
    min: 10,
    diff: 25,
    abs: 70,
    max: 0,
    cooldown: Duration::from_secs(60),
};

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = TEST_RULE;

    #[test]
    fn rules_parse_in_holmes_order_or_off() {
        assert_eq!(parse_rule("10,25,70,1m", false), Ok(Some(RULE)));
        assert_eq!(
            parse_rule("10,25,70,0,1h", true),
            Ok(Some(Rule {
                cooldown: Duration::from_secs(3600),
                ..RULE
            }))
        );
        assert_eq!(parse_rule("off", false), Ok(None));
        assert!(parse_rule("10,25,70", false)
            .unwrap_err()
            .contains("min,diff,abs,cooldown"));
        assert!(parse_rule("10,x,70,1m", false)
            .unwrap_err()
            .contains("diff"));
        assert!(parse_rule("10,25,70,1m", true).is_err());
    }
}
