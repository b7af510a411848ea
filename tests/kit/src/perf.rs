//! The reference for complete user stacks: `perf record --call-graph dwarf`, which copies
//! each sample's user stack and unwinds it afterwards with the files' CFI. The unwind tests
//! and the bench compare profilerd's stacks with its stacks of the same process, taken at the
//! same time.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::stack::{Frame, Stack};

/// Starts `perf record --call-graph dwarf` on `pid` for `seconds` at 99 Hz, writing `output`;
/// [`Recording::stacks`] waits for it and reads the samples.
pub struct Recording {
    child: std::process::Child,
    output: std::path::PathBuf,
}

impl Recording {
    pub fn start(pid: u32, duration: Duration, output: &Path) -> Result<Self> {
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "99", "--call-graph", "dwarf", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(output)
            .args(["--", "sleep"])
            .arg(format!("{}", duration.as_secs_f64()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("perf must be installed (cargo xtask setup installs linux-perf)")?;
        Ok(Self {
            child,
            output: output.to_path_buf(),
        })
    }

    /// Waits for perf and returns its samples, one [`Stack`] each, leaf first.
    pub fn stacks(self) -> Result<Vec<Stack>> {
        let done = self.child.wait_with_output().context("waiting for perf")?;
        if !done.status.success() {
            bail!(
                "perf record failed: {}",
                String::from_utf8_lossy(&done.stderr)
            );
        }
        let script = Command::new("perf")
            .args(["script", "-F", "comm,ip,sym", "-i"])
            .arg(&self.output)
            .output()
            .context("running perf script")?;
        if !script.status.success() {
            bail!(
                "perf script failed: {}",
                String::from_utf8_lossy(&script.stderr)
            );
        }
        Ok(parse_script(&String::from_utf8_lossy(&script.stdout)))
    }
}

/// `perf script -F comm,ip,sym` output: a header line per sample (the comm), then one
/// `ADDRESS SYMBOL` line per frame, leaf first, then a blank line.
pub fn parse_script(text: &str) -> Vec<Stack> {
    let mut stacks = Vec::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else { continue };
        let frames = lines
            .filter_map(|line| {
                let (_, symbol) = line.trim().split_once(' ')?;
                let function = symbol.trim().trim_end_matches(" (inlined)").to_string();
                Some(Frame {
                    function,
                    kernel: false,
                })
            })
            .collect();
        stacks.push(Stack {
            labels: HashMap::from([("comm".to_string(), header.trim().to_string())]),
            frames,
            count: 1,
        });
    }
    stacks
}

/// Share of the samples (by count) whose stack holds one of `entries`: the program's entry
/// chain, which only a complete stack reaches.
pub fn reaching(stacks: &[Stack], entries: &[&str]) -> f64 {
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    if total == 0 {
        return 0.0;
    }
    let reached: i64 = stacks
        .iter()
        .filter(|s| entries.iter().any(|e| s.has(e)))
        .map(|s| s.count)
        .sum();
    reached as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_blocks_become_leaf_first_stacks() {
        let text = "nofp\n\t    11f2 leaf_spin\n\t    3fbf3 msort_with_tmp (inlined)\n\t   27249 __libc_start_call_main\n\nnofp\n\t    11e7 leaf_spin\n";
        let stacks = parse_script(text);
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].frames[1].function, "msort_with_tmp");
        assert!(stacks[0].has("__libc_start_call_main"));
        assert_eq!(reaching(&stacks, &["__libc_start_call_main"]), 0.5);
    }
}
