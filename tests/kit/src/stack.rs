//! Samples as the checks judge them: labels, frames leaf first, a count. The test crate
//! decodes them from pprof, the kernel-matrix driver (no protobuf decoder in a guest needed)
//! from `--format folded`.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context, Result};

/// A decoded sample: its labels and its stack as function names, leaf first (inlined
/// functions expanded), with kernel frames marked.
#[derive(Debug, Clone)]
pub struct Stack {
    pub labels: HashMap<String, String>,
    pub frames: Vec<Frame>,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub function: String,
    pub kernel: bool,
}

impl Stack {
    /// The `pid` label (pprof only; folded lines carry the process name).
    pub fn pid(&self) -> u32 {
        self.labels["pid"].parse().expect("numeric pid label")
    }

    /// The `comm` label: the process name.
    pub fn comm(&self) -> Option<&str> {
        self.labels.get("comm").map(String::as_str)
    }

    pub fn has(&self, function: &str) -> bool {
        self.frames.iter().any(|f| f.function == function)
    }

    /// Index of the first frame (from the leaf) named `function`.
    pub fn position(&self, function: &str) -> Option<usize> {
        self.frames.iter().position(|f| f.function == function)
    }
}

/// Sum of the counts.
pub fn total(stacks: &[Stack]) -> i64 {
    stacks.iter().map(|s| s.count).sum()
}

/// Sum of the counts of the stacks that hold `function`.
pub fn count_with(stacks: &[Stack], function: &str) -> i64 {
    stacks
        .iter()
        .filter(|s| s.has(function))
        .map(|s| s.count)
        .sum()
}

/// Suffix inferno's folded output gives kernel frames.
const KERNEL_SUFFIX: &str = "_[k]";

/// One `--format folded` line, `comm;root;...;leaf count`, as a [`Stack`] labelled `comm`.
pub fn parse_folded_line(line: &str) -> Result<Stack> {
    let (stack, count) = line.rsplit_once(' ').context("no count")?;
    let mut names = stack.split(';');
    let comm = names.next().unwrap_or_default().to_string();
    let mut frames: Vec<Frame> = names
        .map(|name| match name.strip_suffix(KERNEL_SUFFIX) {
            Some(function) => Frame {
                function: function.to_string(),
                kernel: true,
            },
            None => Frame {
                function: name.to_string(),
                kernel: false,
            },
        })
        .collect();
    frames.reverse();
    Ok(Stack {
        labels: HashMap::from([("comm".to_string(), comm)]),
        frames,
        count: count.parse().context("count is not a number")?,
    })
}

/// A `--format folded` file as stacks.
pub fn read_folded(path: &Path) -> Result<Vec<Stack>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(parse_folded_line)
        .collect::<Result<_>>()
        .with_context(|| format!("{} is not in the folded format", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_line_is_leaf_first_with_kernel_frames_marked() {
        let stack = parse_folded_line("reader;main;read_loop;ksys_read_[k];vfs_read_[k] 7")
            .expect("a folded line");
        assert_eq!(stack.comm(), Some("reader"));
        assert_eq!(stack.count, 7);
        let names: Vec<(&str, bool)> = stack
            .frames
            .iter()
            .map(|f| (f.function.as_str(), f.kernel))
            .collect();
        assert_eq!(
            names,
            [
                ("vfs_read", true),
                ("ksys_read", true),
                ("read_loop", false),
                ("main", false)
            ]
        );
    }

    #[test]
    fn folded_line_without_a_count_is_an_error() {
        assert!(parse_folded_line("split;main;work_three").is_err());
    }
}
