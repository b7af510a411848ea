//! The matrix's table: one row per kernel, one column per check's figures, then each row's
//! notes and problems.

use profiler_testkit::matrix::Figures;

use super::Row;

const HEADER: [&str; 11] = [
    "kernel",
    "result",
    "attach",
    "CAP_BPF after attach",
    "work_three",
    "kernel frames (distinct, share)",
    "cgroup filter (in/out)",
    "triggered profile",
    "whole stacks without frame pointers (table frames)",
    "CAP_BPF+CAP_PERFMON, no root",
    "time",
];

/// The figure cells of a row, `-` where a check left its figure unset.
fn figure_cells(f: &Figures) -> [String; 8] {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    [
        or_dash(f.attach_ms.map(|ms| format!("{ms} ms"))),
        or_dash(
            f.cap_bpf_kept
                .map(|kept| if kept { "kept" } else { "dropped" }.to_string()),
        ),
        or_dash(f.work_three_pct.map(|p| format!("{p:.1}%"))),
        or_dash(
            f.kernel_frames
                .map(|n| format!("{n}, {:.0}%", f.kernel_pct.unwrap_or(0.0))),
        ),
        or_dash(
            f.cgroup_inside
                .map(|inside| format!("{inside}/{}", f.cgroup_outside.unwrap_or(0))),
        ),
        or_dash(
            f.trigger_kept
                .map(|kept| format!("{kept} kept, {} samples", f.trigger_samples.unwrap_or(0))),
        ),
        or_dash(
            f.unwound_pct
                .map(|p| format!("{p:.1}% ({})", f.table_frames.unwrap_or(0))),
        ),
        or_dash(f.non_root.clone()),
    ]
}

/// The cells of one row.
fn cells(row: &Row) -> Vec<String> {
    let failed = row
        .result
        .as_ref()
        .map(|r| r.failed.clone())
        .unwrap_or_default();
    let verdict = if row.pass {
        "pass".to_string()
    } else if failed.is_empty() {
        "FAIL".to_string()
    } else {
        format!("FAIL: {}", failed.join(", "))
    };
    let figures = match &row.result {
        Some(report) => figure_cells(&report.figures),
        None => figure_cells(&Figures::default()),
    };
    let mut cells = vec![row.kernel.clone(), verdict];
    cells.extend(figures);
    cells.push(format!("{:.0} s", row.seconds));
    cells
}

/// Prints the table, then the notes of `profilerd check` and the problems of each row.
pub(super) fn print(rows: &[Row]) {
    let mut table: Vec<Vec<String>> = vec![HEADER.iter().map(|h| h.to_string()).collect()];
    table.extend(rows.iter().map(cells));
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    println!();
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
    for row in rows {
        for note in row.result.iter().flat_map(|r| &r.notes) {
            println!("{}: profilerd check: {note}", row.kernel);
        }
    }
    for row in rows {
        if let Some(problem) = &row.problem {
            println!("\n{} failed: {problem}", row.kernel);
        }
    }
}
