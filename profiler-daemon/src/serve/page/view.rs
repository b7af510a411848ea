//! The page of one profile at `/view/<file>`: why it was kept (the rule, the values that fired
//! it, the window), the timeline of the target's values with the thresholds, the interactive
//! flame graph, the differential flame graph (after the firing against before it) and the
//! top table by self and cumulative value. In: the profile's sidecar row and its call tree.
//! Out: HTML with the tree embedded as JSON and the script that draws it.

use std::fmt::Write as _;

use serde::Deserialize;

use super::{
    flame::{format_value, Flame},
    html::{head, html, url_segment, SCRIPT},
    plot::timelines,
};
use crate::export::{KeptSummary, CONTINUOUS};

/// `/view/<file>?type=`: the sample type shown (`go tool pprof -sample_index`).
#[derive(Debug, Default, Deserialize)]
pub struct ViewQuery {
    #[serde(rename = "type")]
    pub sample_type: Option<String>,
}

fn seconds(ms: i64) -> String {
    format!("{:+.1} s", ms as f64 / 1000.0)
}

/// The rule, the values that fired it and the window.
fn firing(out: &mut String, row: &KeptSummary) {
    let continuous = row.trigger == CONTINUOUS;
    let (start, end) = row.window_ms;
    out.push_str("<dl id=\"firing\">");
    let _ = write!(
        out,
        "<dt>{}</dt><dd>{} UTC</dd><dt>target</dt><dd>{}</dd><dt>service</dt><dd>{}</dd>",
        if continuous { "window start" } else { "fired" },
        html(&row.fired_at),
        html(&row.target),
        html(&row.service)
    );
    if continuous {
        let _ = write!(out, "<dt>window</dt><dd>{:.1} s</dd>", row.window_seconds);
    } else {
        let _ = write!(
            out,
            "<dt>window</dt><dd id=\"window\">from {} to {} around the firing ({:.1} s)</dd>",
            seconds(start),
            seconds(end),
            row.window_seconds
        );
    }
    out.push_str("</dl>\n");
    if row.capturing {
        out.push_str("<p class=\"capturing\" id=\"capturing\">Capturing: this is the history up to the firing; the seconds after it are still being recorded, and this page reloads until they are.</p>\n");
    }
    if row.fired.is_empty() {
        return;
    }
    out.push_str(
        "<table id=\"rules\"><thead><tr><th>rule</th><th>why it fired</th><th class=\"num\">cur</th>\
         <th class=\"num\">avg</th><th class=\"num\">min</th><th class=\"num\">diff %</th>\
         <th class=\"num\">avg + diff</th><th class=\"num\">abs</th><th class=\"num\">max</th></tr></thead><tbody>",
    );
    for rule in &row.fired {
        let _ = write!(
            out,
            "<tr data-metric=\"{m}\"><td>{m}</td><td>{}</td><td class=\"num cur\">{}</td><td class=\"num avg\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            html(&rule.reason),
            rule.cur,
            rule.avg,
            rule.min,
            rule.diff,
            rule.diff_threshold(),
            rule.abs,
            if rule.max == 0 { "none".to_string() } else { rule.max.to_string() },
            m = html(&rule.metric),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// Links to the profile's other sample types.
fn sample_types(out: &mut String, row: &KeptSummary, flame: &Flame) {
    if flame.types.len() < 2 {
        return;
    }
    out.push_str("<p id=\"types\">Sample type: ");
    for name in &flame.types {
        if *name == flame.chosen {
            let _ = write!(out, "<strong>{}</strong> ", html(name));
        } else {
            let _ = write!(
                out,
                "<a href=\"/view/{}?type={}\">{}</a> ",
                url_segment(&row.pprof),
                url_segment(name),
                html(name)
            );
        }
    }
    out.push_str("</p>\n");
}

fn top_table(out: &mut String, flame: &Flame) {
    let total = flame.total.max(1) as f64;
    out.push_str(
        "<div class=\"table-scroll\"><table id=\"top\"><thead><tr><th data-sort=\"name\">function</th>\
         <th class=\"num\" data-sort=\"flat\" aria-sort=\"descending\">flat</th><th class=\"num\" data-sort=\"flat\">flat%</th>\
         <th class=\"num\" data-sort=\"cum\">cum</th><th class=\"num\" data-sort=\"cum\">cum%</th></tr></thead><tbody>\n",
    );
    for row in &flame.top {
        let _ = writeln!(
            out,
            "<tr data-name=\"{name}\" data-flat=\"{}\" data-cum=\"{}\"><td class=\"name\">{name}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{:.2}%</td><td class=\"num\">{}</td><td class=\"num\">{:.2}%</td></tr>",
            row.flat,
            row.cum,
            format_value(row.flat, &flame.unit),
            row.flat as f64 * 100.0 / total,
            format_value(row.cum, &flame.unit),
            row.cum as f64 * 100.0 / total,
            name = html(&row.name),
        );
    }
    out.push_str("</tbody></table></div>\n");
}

fn graphs(out: &mut String, row: &KeptSummary, flame: &Flame) {
    let _ = writeln!(
        out,
        "<h2>Flame graph: {} ({})</h2>\
         <div class=\"controls\"><input id=\"search\" type=\"search\" placeholder=\"search functions (regular expression)\" aria-label=\"search\">\
         <button id=\"reset\" type=\"button\">Reset zoom</button><span id=\"matched\"></span></div>\
         <div id=\"details\"></div><div id=\"flame\" class=\"graph\"></div>",
        html(&flame.chosen),
        format_value(flame.total, &flame.unit)
    );
    if flame.truncated > 0 {
        let _ = write!(out, "<p>{} samples had stacks past the page's bound of nodes: their deeper frames count at the last node kept.</p>", flame.truncated);
    }
    if flame.has_phases() {
        let _ = writeln!(
            out,
            "<h2>What changed: the spike against the seconds before it</h2>\
             <p class=\"legend\">Widths are the samples of the spike, the interval that fired the rule and those after it ({}); \
             colours compare each function's share there with its share in the seconds before ({}): \
             <span style=\"background:#f66\">grew</span><span style=\"background:#66f;color:#fff\">shrank</span>. Search and zoom apply here too.</p>\
             <div id=\"diff\" class=\"graph\"></div>",
            format_value(flame.after, &flame.unit),
            format_value(flame.before, &flame.unit)
        );
    } else if row.trigger != CONTINUOUS {
        out.push_str("<p id=\"no-diff\">No differential graph: the profile has no samples on one side of the firing.</p>\n");
    }
}

pub fn render_view(row: &KeptSummary, flame: &Flame) -> String {
    let title = format!("profilerd: {} profile of {}", row.trigger, row.target);
    let mut out = head(&title, row.capturing);
    let _ = writeln!(
        out,
        "<p><a href=\"/\">all profiles</a></p><h1>{}</h1>",
        html(&title)
    );
    firing(&mut out, row);
    if !row.values.is_empty() {
        out.push_str("<h2>Timeline</h2>\n");
        out.push_str(&timelines(&row.values, &row.fired, row.window_ms));
    }
    let _ = write!(
        out,
        "<p><a href=\"/profiles/{0}\" download>Download the pprof</a> (<code>go tool pprof -http=: {1}</code>)</p>",
        url_segment(&row.pprof),
        html(&row.pprof)
    );
    sample_types(&mut out, row, flame);
    graphs(&mut out, row, flame);
    let _ = write!(
        out,
        "<h2>Top functions</h2><p>Click a heading to sort (like <code>pprof -top</code> and <code>-top -cum</code>), a function to find it in the graphs.</p>"
    );
    top_table(&mut out, flame);
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"flame-data\">{}</script><script>{SCRIPT}</script></body></html>",
        flame.to_json()
    );
    out
}
