//! Median and spread of repeated measurements, and the RSS trend of a memory run.

use serde::Serialize;

/// Median and spread of repeated measurements.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// The [`Stat`] of `values` (NaN figures when there are none).
pub fn stat(values: &[f64]) -> Stat {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: *v.first().unwrap_or(&f64::NAN),
        max: *v.last().unwrap_or(&f64::NAN),
        n,
    }
}

/// The daemon's upload interval: its RSS rises while a window fills and falls when it is
/// written and trimmed, a sawtooth of this period.
pub const UPLOAD_INTERVAL_SECS: f64 = 15.0;

/// Mean RSS per whole upload interval, so that the slope describes the trend and not where in
/// the sawtooth the series happens to start and stop.
pub fn interval_means(series: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut bins: Vec<(f64, f64, usize)> = Vec::new();
    for &(t, rss) in series {
        let bin = (t / UPLOAD_INTERVAL_SECS).floor();
        match bins.last_mut() {
            Some(last) if last.0 == bin => {
                last.1 += rss;
                last.2 += 1;
            }
            _ => bins.push((bin, rss, 1)),
        }
    }
    // Partial intervals at either end would bring the sawtooth back.
    let full = UPLOAD_INTERVAL_SECS as usize - 1;
    bins.into_iter()
        .filter(|b| b.2 >= full)
        .map(|(bin, sum, n)| ((bin + 0.5) * UPLOAD_INTERVAL_SECS, sum / n as f64))
        .collect()
}

/// Least-squares slope in MiB per minute.
pub fn slope(series: &[(f64, f64)]) -> f64 {
    let n = series.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = series
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = series.iter().fold((0.0, 0.0), |a, p| {
        (a.0 + (p.0 - mx) * (p.1 - my), a.1 + (p.0 - mx).powi(2))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = stat(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(stat(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(stat(&[]).median.is_nan());
    }

    #[test]
    fn slope_of_a_line_in_mib_per_minute() {
        let series: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 2.0 * t as f64)).collect();
        assert!((slope(&series) - 120.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 1.0)]), 0.0);
    }
}
