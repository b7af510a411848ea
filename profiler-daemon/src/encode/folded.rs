//! Collapsed stacks and SVG flame graphs of per-process profiles.

use std::io;

use thiserror::Error;

use crate::{aggregate::ProcessProfile, symbolize::FrameKind};

#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("rendering the flame graph failed: {0}")]
    FlameGraph(io::Error),
}

/// Brendan Gregg's collapsed format: `root;...;leaf count`, one line per distinct stack.
/// The process name is the root frame; kernel frames end in `_[k]` (as stackcollapse-perf and
/// inferno expect); inlined functions appear as frames of their own. Stacks that differ only
/// in instruction addresses are merged.
pub fn folded_lines(processes: &[&ProcessProfile]) -> Vec<String> {
    let mut merged: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for process in processes {
        for (stack, count) in &process.stacks {
            let mut line = sanitize_frame(&process.info.comm);
            for &index in stack.iter().rev() {
                let location = &process.locations[index as usize];
                for frame in location.lines.iter().rev() {
                    line.push(';');
                    line.push_str(&sanitize_frame(&frame.function));
                    if location.kind == FrameKind::Kernel {
                        line.push_str("_[k]");
                    }
                }
            }
            protect_count(&mut line);
            *merged.entry(line).or_insert(0) += count;
        }
    }
    let mut lines: Vec<String> = merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    lines.sort();
    lines
}

/// Frames may not contain the separators of the folded format, nor control characters.
fn sanitize_frame(name: &str) -> String {
    name.chars()
        .map(|c| if c == ';' || c.is_control() { '_' } else { c })
        .collect()
}

/// A leaf frame ending in a number (`handler 424242`) would read, once the count follows, as
/// the two counts of a differential flame graph: the space before that number becomes a
/// no-break space, which reads the same.
fn protect_count(line: &mut String) {
    let Some(at) = line.rfind(char::is_whitespace) else {
        return;
    };
    let tail = &line[at..];
    let space = tail.chars().next().map_or(1, char::len_utf8);
    if tail[space..].parse::<f64>().is_ok() {
        line.replace_range(at..at + space, "\u{a0}");
    }
}

/// Renders folded lines as an interactive SVG flame graph.
pub fn flame_graph_svg(lines: &[String], title: &str) -> Result<Vec<u8>, EncodeError> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "samples".to_string();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input; an empty profile still deserves a readable file.
        let placeholder = ["no samples 1".to_string()];
        inferno::flamegraph::from_lines(
            &mut options,
            placeholder.iter().map(String::as_str),
            &mut svg,
        )
        .map_err(EncodeError::FlameGraph)?;
    } else {
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
            .map_err(EncodeError::FlameGraph)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        process::ProcessInfo,
        symbolize::{Line, Location},
    };

    #[test]
    fn folded_marks_kernel_frames_and_expands_inlined() {
        let line = |n: &str| Line {
            function: Arc::from(n),
            file: None,
            line: 0,
        };
        let profile = ProcessProfile {
            info: ProcessInfo {
                pid: 1,
                comm: "app".into(),
                ..Default::default()
            },
            locations: vec![
                Location {
                    kind: FrameKind::User,
                    address: 1,
                    vma: None,
                    lines: vec![line("main")],
                },
                Location {
                    kind: FrameKind::User,
                    address: 2,
                    vma: None,
                    lines: vec![line("inner"), line("outer")],
                },
                Location {
                    kind: FrameKind::Kernel,
                    address: 3,
                    vma: None,
                    lines: vec![line("vfs_write")],
                },
            ],
            stacks: [(vec![2, 1, 0], 4)].into_iter().collect(),
            samples: 4,
        };
        assert_eq!(
            folded_lines(&[&profile]),
            ["app;main;outer;inner;vfs_write_[k] 4"]
        );
        let svg =
            String::from_utf8(flame_graph_svg(&folded_lines(&[&profile]), "t").unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains("outer"));
    }

    #[test]
    fn a_leaf_ending_in_a_number_is_no_second_count() {
        let line = |n: &str| Line {
            function: Arc::from(n),
            file: None,
            line: 0,
        };
        let location = |name: &str| Location {
            kind: FrameKind::User,
            address: 1,
            vma: None,
            lines: vec![line(name)],
        };
        let profile = ProcessProfile {
            info: ProcessInfo {
                pid: 1,
                comm: "app\x1b[2J".into(),
                ..Default::default()
            },
            locations: vec![location("main"), location("handler 424242")],
            stacks: [(vec![1, 0], 3)].into_iter().collect(),
            samples: 3,
        };
        let lines = folded_lines(&[&profile]);
        assert_eq!(lines, ["app_[2J;main;handler\u{a0}424242 3"]);
        let svg = String::from_utf8(flame_graph_svg(&lines, "t").unwrap()).unwrap();
        // The frame keeps its name, and one count: a differential graph would show
        // `handler (3 samples, 100.00%; -14141300.00%)`.
        assert!(
            svg.contains("<title>handler\u{a0}424242 (3 samples, 100.00%)</title>"),
            "{svg}"
        );
    }
}
