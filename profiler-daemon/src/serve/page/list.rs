//! The page at `/`: the profiles of the last hours, kept ones and continuous-mode windows,
//! newest first, filterable by service, target and rule, a page of rows at a time. In: the
//! dump dir's listing and the query. Out: HTML.

use std::{fmt::Write as _, path::Path, time::Duration};

use serde::Deserialize;

use super::html::{head, html, url_segment};
use crate::{
    export::{KeptSummary, CONTINUOUS},
    serve::files::{Listing, MAX_ROWS, MAX_SIDECARS},
};

/// Rows per page.
pub const PAGE_ROWS: usize = 50;

/// The rules a row can be filtered by: the kept profiles' metrics, and continuous mode.
const RULES: [&str; 4] = ["cpu", "mem", "thread", CONTINUOUS];

/// `/?service=&target=&rule=&page=`: empty values filter nothing.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    service: String,
    /// Part of the target's name, any case.
    #[serde(default)]
    target: String,
    #[serde(default)]
    rule: String,
    /// From 1.
    page: Option<usize>,
}

impl ListQuery {
    pub fn accepts(&self, row: &KeptSummary) -> bool {
        (self.service.is_empty() || row.service == self.service)
            && (self.rule.is_empty() || row.trigger == self.rule)
            && (self.target.is_empty()
                || row
                    .target
                    .to_lowercase()
                    .contains(&self.target.to_lowercase()))
    }

    /// The query of page `page` with the same filters.
    fn link(&self, page: usize) -> String {
        format!(
            "/?service={}&amp;target={}&amp;rule={}&amp;page={page}",
            url_segment(&self.service),
            url_segment(&self.target),
            url_segment(&self.rule)
        )
    }

    fn filtered(&self) -> bool {
        !(self.service.is_empty() && self.target.is_empty() && self.rule.is_empty())
    }
}

fn options<'a>(values: impl Iterator<Item = &'a str>, chosen: &str) -> String {
    values
        .map(|v| {
            let selected = if v == chosen { " selected" } else { "" };
            format!("<option value=\"{0}\"{selected}>{0}</option>", html(v))
        })
        .collect()
}

fn filters(out: &mut String, listing: &Listing, query: &ListQuery) {
    let _ = writeln!(
        out,
        "<form id=\"filters\" method=\"get\" action=\"/\">\
         <label>service<select name=\"service\"><option value=\"\">any</option>{}</select></label>\
         <label>target<input name=\"target\" list=\"targets\" value=\"{}\" placeholder=\"part of its name\"></label>\
         <datalist id=\"targets\">{}</datalist>\
         <label>rule<select name=\"rule\"><option value=\"\">any</option>{}</select></label>\
         <button type=\"submit\">Filter</button>{}</form>",
        options(listing.services.iter().map(String::as_str), &query.service),
        html(&query.target),
        options(listing.targets.iter().map(String::as_str), ""),
        options(RULES.into_iter(), &query.rule),
        if query.filtered() {
            " <a href=\"/\">clear</a>"
        } else {
            ""
        }
    );
}

fn row(out: &mut String, row: &KeptSummary) {
    let top: Vec<String> = row
        .top
        .iter()
        .map(|(f, pct)| format!("<code>{}</code> {pct:.1}%", html(f)))
        .collect();
    let svg_link = row.svg.as_ref().map_or(String::new(), |svg| {
        format!(" <a href=\"/profiles/{}\">SVG</a>", url_segment(svg))
    });
    let capturing = if row.capturing {
        " <em class=\"capturing\">(capturing: the seconds after the firing are still being recorded)</em>"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<tr class=\"profile\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{capturing}</td><td>{}</td>\
         <td class=\"num\">{}</td><td><a class=\"view\" href=\"/view/{pprof}\">view</a> \
         <a href=\"/profiles/{pprof}\" download>pprof</a>{svg_link}</td></tr>",
        html(&row.fired_at),
        html(&row.target),
        html(&row.service),
        html(&row.trigger),
        html(&row.reasons.join("; ")),
        top.join("<br>"),
        row.samples,
        pprof = url_segment(&row.pprof),
    );
}

/// Links to the other pages of the listing.
fn pages(out: &mut String, query: &ListQuery, page: usize, count: usize) {
    if count <= 1 {
        return;
    }
    out.push_str("<nav id=\"pages\">");
    if page > 1 {
        let _ = write!(
            out,
            "<a rel=\"prev\" href=\"{}\">newer</a>",
            query.link(page - 1)
        );
    }
    let _ = write!(out, "<span>page {page} of {count}</span>");
    if page < count {
        let _ = write!(
            out,
            "<a rel=\"next\" href=\"{}\">older</a>",
            query.link(page + 1)
        );
    }
    out.push_str("</nav>\n");
}

pub fn render_list(
    listing: &Listing,
    query: &ListQuery,
    window: Duration,
    dir: Option<&Path>,
) -> String {
    let hours = window.as_secs_f64() / 3600.0;
    let count = listing.rows.len().div_ceil(PAGE_ROWS).max(1);
    let page = query.page.unwrap_or(1).clamp(1, count);
    let shown = listing
        .rows
        .iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS);
    let mut out = head("profilerd: profiles", false);
    let _ = writeln!(
        out,
        "<h1>profilerd: profiles</h1>\n<p>Profiles kept by trigger rules, and continuous-mode \
         windows, of the last {hours:.0} h, newest first{}. \
         <a href=\"/debug/pprof/\">/debug/pprof/</a> <a href=\"/metrics\">metrics</a></p>",
        dir.map_or(String::new(), |d| format!(
            ", from <code>{}</code>",
            html(&d.display().to_string())
        ))
    );
    filters(&mut out, listing, query);
    if listing.truncated {
        let _ = writeln!(
            out,
            "<p id=\"truncated\">Only the {MAX_SIDECARS} newest sidecars and {MAX_ROWS} rows are read; older profiles are in the dump dir.</p>"
        );
    }
    if listing.rows.is_empty() {
        let why = if query.filtered() {
            "No profile matches these filters."
        } else {
            "No profile was kept in this time. A profile is kept when a trigger rule fires (continuous mode writes one per process and window)."
        };
        let _ = writeln!(out, "<p id=\"empty\">{why}</p>");
    } else {
        out.push_str(
            "<table id=\"kept\"><thead><tr><th>time (UTC)</th><th>target</th><th>service</th>\
             <th>rule</th><th>reason</th><th>top functions (self)</th><th class=\"num\">samples</th>\
             <th>profile</th></tr></thead><tbody>\n",
        );
        for kept in shown {
            row(&mut out, kept);
        }
        out.push_str("</tbody></table>\n");
        pages(&mut out, query, page, count);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(target: &str, fired_unix: u64, trigger: &str) -> KeptSummary {
        KeptSummary {
            fired_at: "2026-11-26T10:00:00Z".into(),
            fired_unix,
            target: target.into(),
            service: "svc".into(),
            trigger: trigger.into(),
            reasons: vec!["cpu: meet diff trigger condition".into()],
            top: vec![("work_three".into(), 74.5), ("<script>".into(), 1.0)],
            samples: 335,
            window_seconds: 13.0,
            pprof: format!("cpu.{fired_unix}.pb.gz"),
            svg: Some(format!("cpu.{fired_unix}.svg")),
            ..KeptSummary::default()
        }
    }

    fn listing(rows: Vec<KeptSummary>) -> Listing {
        Listing {
            services: rows.iter().map(|r| r.service.clone()).collect(),
            targets: rows.iter().map(|r| r.target.clone()).collect(),
            rows,
            truncated: false,
        }
    }

    #[test]
    fn rows_are_escaped_and_link_to_their_view() {
        let mut rows = listing(vec![kept("spike-1 <b>", 1, "cpu")]);
        rows.truncated = true;
        let html = render_list(
            &rows,
            &ListQuery::default(),
            Duration::from_secs(6 * 3600),
            None,
        );
        assert!(html.contains("spike-1 &lt;b&gt;"));
        assert!(html.contains("<code>&lt;script&gt;</code> 1.0%"));
        assert!(html.contains("href=\"/view/cpu.1.pb.gz\""));
        assert!(html.contains("href=\"/profiles/cpu.1.pb.gz\" download"));
        assert!(html.contains("href=\"/profiles/cpu.1.svg\""));
        assert!(html.contains("last 6 h"));
        assert!(html.contains("id=\"truncated\""));
        assert!(!html.contains("class=\"capturing\""));
        let mut capturing = kept("spike-2", 2, "cpu");
        capturing.capturing = true;
        let html = render_list(
            &listing(vec![capturing]),
            &ListQuery::default(),
            Duration::from_secs(3600),
            None,
        );
        assert!(html.contains("class=\"capturing\""), "{html}");
        let empty = render_list(
            &Listing::default(),
            &ListQuery::default(),
            Duration::from_secs(3600),
            None,
        );
        assert!(empty.contains("id=\"empty\""));
        assert!(!empty.contains("id=\"truncated\""));
    }

    #[test]
    fn filters_and_pages_keep_each_other() {
        let query = ListQuery {
            service: "svc".into(),
            target: "API".into(),
            rule: CONTINUOUS.into(),
            page: Some(2),
        };
        assert!(query.accepts(&kept("api-7", 1, CONTINUOUS)));
        assert!(!query.accepts(&kept("api-7", 1, "cpu")));
        assert!(!query.accepts(&kept("db-7", 1, CONTINUOUS)));
        let rows: Vec<KeptSummary> = (0..(PAGE_ROWS as u64 * 2 + 5))
            .map(|i| kept(&format!("api-{i}"), 1000 - i, CONTINUOUS))
            .collect();
        let html = render_list(&listing(rows), &query, Duration::from_secs(3600), None);
        assert!(html.contains("page 2 of 3"), "{html}");
        assert!(
            html.contains("href=\"/?service=svc&amp;target=API&amp;rule=continuous&amp;page=3\"")
        );
        assert!(
            html.contains("href=\"/?service=svc&amp;target=API&amp;rule=continuous&amp;page=1\"")
        );
        assert_eq!(html.matches("<tr class=\"profile\">").count(), PAGE_ROWS);
        assert!(html.contains("<td>api-50</td>") && !html.contains("<td>api-49</td>"));
        assert!(html.contains("<option value=\"continuous\" selected>"));
        // A page past the end shows the last.
        let far = ListQuery {
            page: Some(99),
            ..ListQuery::default()
        };
        let html = render_list(
            &listing(vec![kept("a", 1, "cpu")]),
            &far,
            Duration::from_secs(3600),
            None,
        );
        assert_eq!(html.matches("<tr class=\"profile\">").count(), 1);
        assert!(!html.contains("id=\"pages\""));
    }
}
