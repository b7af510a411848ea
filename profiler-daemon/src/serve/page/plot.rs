//! The timeline of a kept profile: the target's CPU, memory and thread values per collect
//! interval across the window, with the thresholds of the rule that fired drawn over them. In:
//! the sidecar's values and fired rules. Out: inline SVG, drawn on the server (no script).

use std::fmt::Write as _;

use super::html::html;
use crate::export::{FiredRule, ValuePoint};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 120.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A threshold is left off the chart when it is this many times the largest value (holmes'
/// default `abs` of a rule is far above anything seen): the legend still names it.
const OFF_CHART: u64 = 4;

/// A metric of the plots: its key, what its values are, how one is read from a point.
type PlotMetric = (&'static str, &'static str, fn(&ValuePoint) -> u64);

const METRICS: [PlotMetric; 3] = [
    ("cpu", "CPU, % of its limit", |p| p.cpu),
    ("mem", "memory, % of its limit", |p| p.mem),
    ("thread", "threads", |p| p.thread),
];

/// One plot per metric, the fired ones first; empty when no value was recorded.
pub fn timelines(values: &[ValuePoint], fired: &[FiredRule], window_ms: (i64, i64)) -> String {
    if values.is_empty() {
        return String::new();
    }
    let mut metrics: Vec<_> = METRICS.iter().collect();
    metrics.sort_by_key(|(key, _, _)| !fired.iter().any(|f| f.metric == *key));
    let mut out = String::new();
    for (key, title, read) in metrics {
        let rules: Vec<&FiredRule> = fired.iter().filter(|f| f.metric == *key).collect();
        let points: Vec<(i64, u64)> = values.iter().map(|p| (p.at_ms, read(p))).collect();
        out.push_str(&plot(key, title, &points, &rules, window_ms));
    }
    out
}

/// The x and y scales of one plot.
struct Scale {
    from_ms: i64,
    to_ms: i64,
    top: u64,
}

impl Scale {
    fn x(&self, ms: i64) -> f64 {
        let span = (self.to_ms - self.from_ms).max(1) as f64;
        LEFT + (ms - self.from_ms) as f64 / span * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: u64) -> f64 {
        HEIGHT - BOTTOM - value as f64 / self.top.max(1) as f64 * (HEIGHT - TOP - BOTTOM)
    }
}

/// A threshold of a rule: its name, the value, what it means.
fn thresholds(rule: &FiredRule) -> [(&'static str, u64, String); 3] {
    [
        ("min", rule.min, format!("min {}", rule.min)),
        (
            "diff",
            rule.diff_threshold(),
            format!("avg {} + {}%", rule.avg, rule.diff),
        ),
        ("abs", rule.abs, format!("abs {}", rule.abs)),
    ]
}

fn plot(
    key: &str,
    title: &str,
    points: &[(i64, u64)],
    rules: &[&FiredRule],
    window_ms: (i64, i64),
) -> String {
    let largest = points.iter().map(|p| p.1).max().unwrap_or(0);
    let drawn: Vec<(&str, u64, String)> = rules
        .iter()
        .flat_map(|r| thresholds(r))
        .filter(|(_, v, _)| *v <= largest.max(1) * OFF_CHART)
        .collect();
    let top = drawn
        .iter()
        .map(|t| t.1)
        .chain([largest, 1])
        .max()
        .unwrap_or(1);
    let scale = Scale {
        from_ms: window_ms.0.min(points[0].0),
        to_ms: window_ms
            .1
            .max(points[points.len() - 1].0)
            .max(window_ms.0 + 1),
        top: top + top / 10 + 1,
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure class=\"timeline\"><figcaption>{}</figcaption>\
         <svg class=\"timeline\" data-metric=\"{key}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{} per collect interval\">",
        html(title),
        html(title)
    );
    // The seconds after the firing, shaded.
    let (fired, end) = (scale.x(0), scale.x(scale.to_ms));
    let _ = write!(
        svg,
        "<rect class=\"after\" x=\"{fired:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\"><title>after the firing</title></rect>",
        (end - fired).max(0.0),
        HEIGHT - TOP - BOTTOM
    );
    axes(&mut svg, &scale);
    let mut labels_at: Vec<f64> = Vec::new();
    for (name, value, label) in &drawn {
        let y = scale.y(*value);
        // Labels of close thresholds would overlap: each goes below the ones near it.
        let mut label_y = y + 4.0;
        while labels_at.iter().any(|at| (at - label_y).abs() < 11.0) {
            label_y += 11.0;
        }
        labels_at.push(label_y);
        let _ = write!(
            svg,
            "<line class=\"threshold {name}\" data-rule=\"{name}\" data-value=\"{value}\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"threshold-label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            WIDTH - RIGHT,
            WIDTH - RIGHT + 4.0,
            label_y,
            html(label)
        );
    }
    let _ = write!(
        svg,
        "<line class=\"firing\" x1=\"{fired:.1}\" x2=\"{fired:.1}\" y1=\"{TOP}\" y2=\"{:.1}\"/>\
         <text class=\"firing-label\" x=\"{:.1}\" y=\"{:.1}\">fired</text>",
        HEIGHT - BOTTOM,
        fired + 3.0,
        TOP + 10.0
    );
    let line: Vec<String> = points
        .iter()
        .map(|&(ms, v)| format!("{:.1},{:.1}", scale.x(ms), scale.y(v)))
        .collect();
    let _ = write!(
        svg,
        "<polyline class=\"values\" points=\"{}\"/>",
        line.join(" ")
    );
    for &(ms, v) in points {
        let _ = write!(
            svg,
            "<circle class=\"value\" data-at-ms=\"{ms}\" data-value=\"{v}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{:+.1} s: {v}</title></circle>",
            scale.x(ms),
            scale.y(v),
            ms as f64 / 1000.0
        );
    }
    svg.push_str("</svg></figure>\n");
    svg
}

/// The y axis (0, half, top) and the x axis in seconds from the firing.
fn axes(svg: &mut String, scale: &Scale) {
    let bottom = HEIGHT - BOTTOM;
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{bottom}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{bottom}\" y2=\"{bottom}\"/>",
        WIDTH - RIGHT
    );
    for value in [0, scale.top / 2, scale.top] {
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value}</text>",
            LEFT - 4.0,
            scale.y(value) + 4.0
        );
    }
    let span_s = (scale.to_ms - scale.from_ms) as f64 / 1000.0;
    let step = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| span_s / s <= 10.0)
        .unwrap_or(600.0);
    let first = (scale.from_ms as f64 / 1000.0 / step).ceil() as i64;
    let last = (scale.to_ms as f64 / 1000.0 / step).floor() as i64;
    for i in first..=last {
        let seconds = i as f64 * step;
        let x = scale.x((seconds * 1000.0) as i64);
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{seconds:+} s</text>",
            bottom + 16.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> FiredRule {
        FiredRule {
            metric: "cpu".into(),
            reason: "meet diff trigger condition".into(),
            cur: 47,
            avg: 4,
            min: 10,
            diff: 25,
            abs: 1000,
            max: 0,
        }
    }

    fn point(at_ms: i64, cpu: u64) -> ValuePoint {
        ValuePoint {
            at_ms,
            cpu,
            mem: 3,
            thread: 4,
        }
    }

    #[test]
    fn the_fired_metric_comes_first_with_its_thresholds() {
        let values = [
            point(-2000, 2),
            point(-1000, 3),
            point(0, 47),
            point(1000, 50),
        ];
        let svg = timelines(&values, &[rule()], (-5000, 2000));
        let cpu = svg.find("data-metric=\"cpu\"").expect("cpu plot");
        assert!(cpu < svg.find("data-metric=\"mem\"").unwrap());
        assert!(cpu < svg.find("data-metric=\"thread\"").unwrap());
        let cpu_plot = &svg[cpu..svg.find("data-metric=\"mem\"").unwrap()];
        assert!(cpu_plot.contains("data-rule=\"min\" data-value=\"10\""));
        assert!(
            cpu_plot.contains("data-rule=\"diff\" data-value=\"5\""),
            "4 * 125 / 100"
        );
        // abs 1000 is more than 4 times the largest value: not drawn.
        assert!(!cpu_plot.contains("data-rule=\"abs\""));
        assert_eq!(cpu_plot.matches("<circle class=\"value\"").count(), 4);
        assert!(cpu_plot.contains("data-at-ms=\"0\" data-value=\"47\""));
        assert!(cpu_plot.contains("class=\"firing\""));
        assert!(
            cpu_plot.contains(">-5 s<") || cpu_plot.contains(">-4 s<"),
            "{cpu_plot}"
        );
        // The other metrics have no thresholds.
        let rest = &svg[svg.find("data-metric=\"mem\"").unwrap()..];
        assert!(!rest.contains("data-rule="));
    }

    #[test]
    fn no_values_no_plot() {
        assert_eq!(timelines(&[], &[rule()], (-5000, 2000)), "");
    }
}
