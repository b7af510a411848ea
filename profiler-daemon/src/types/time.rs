//! Wall-clock times as profile file names and the page write them (UTC, no time-zone data).

use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYYMMDDTHHMMSS.mmmZ` in UTC.
pub fn utc_timestamp(time: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, ms) = utc_parts(time);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}.{ms:03}Z")
}

/// Milliseconds from `from` to `at`, negative when `at` is earlier.
pub fn millis_after(at: SystemTime, from: SystemTime) -> i64 {
    match at.duration_since(from) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

/// `2026-11-26T10:57:59Z` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(time: SystemTime) -> String {
    let (y, m, d, hh, mm, ss, _) = utc_parts(time);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Year, month, day, hour, minute, second and millisecond of `time` in UTC.
fn utc_parts(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    (
        y,
        m,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis(),
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_682_096_123);
        assert_eq!(utc_timestamp(t), "20261126T083456.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101T000000.000Z");
    }
}
