//! Durations and sizes as the flags and the config file write them.

use std::time::Duration;

/// The longest duration any setting takes: longer ones are refused at parse time, so that no
/// later sum (a deadline, a backoff) can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `30s`, `500ms`, `2m`, `1h`, `1m30s`; a bare number means seconds. At most
/// [`MAX_DURATION`]; every conversion is checked.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration: use e.g. 30s, 500ms or 2m".into());
    }
    let too_long = || {
        format!(
            "duration {text:?} is longer than {} days, the most any setting takes",
            MAX_DURATION.as_secs() / 86_400
        )
    };
    if let Ok(secs) = text.parse::<u64>() {
        let duration = Duration::from_secs(secs);
        return if duration > MAX_DURATION {
            Err(too_long())
        } else {
            Ok(duration)
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: use e.g. 30s, 500ms or 2m"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration {text:?}: unit must be ms, s, m or h"
                ))
            }
        };
        total = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|part| total.checked_add(part))
            .filter(|sum| *sum <= MAX_DURATION)
            .ok_or_else(too_long)?;
        rest = tail;
    }
    if total.is_zero() {
        return Err(format!("duration {text:?} must be greater than zero"));
    }
    Ok(total)
}

/// `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: use e.g. 512MiB or 2GiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in {text:?}: use B, KiB, MiB or GiB"
            ))
        }
    };
    value
        .checked_mul(factor)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("size {text:?} must be between 1 byte and 16 EiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("10x").unwrap_err().contains("unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
    }

    #[test]
    fn durations_past_the_bound_are_refused_not_a_panic() {
        for text in [
            "99999999999999999999s",
            "18446744073709551615",
            "18446744073709551615s",
            "1e400s",
            "3651d",
            "87601h",
            "87599h120m",
            "99999999999999999999999999999999999999999999ms",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        let err = parse_duration("99999999999999999999s").unwrap_err();
        assert!(err.contains("longer than 3650 days"), "{err}");
        assert_eq!(parse_duration("87600h"), Ok(MAX_DURATION));
        assert_eq!(parse_duration("315360000"), Ok(MAX_DURATION));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
