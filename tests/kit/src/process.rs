//! Fixture processes that die with their guard, and polling.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A child process killed (and reaped) when dropped.
pub struct Running(pub Child);

impl Running {
    /// Starts `program ARGS` with stdout discarded.
    pub fn start(program: &Path, args: &[&str]) -> Result<Self> {
        Self::command(Command::new(program).args(args).stdout(Stdio::null()))
            .with_context(|| format!("cannot start {}", program.display()))
    }

    /// Like [`Running::start`], for tests: panics when the program cannot start.
    pub fn spawn(program: &Path, args: &[&str]) -> Self {
        Self::start(program, args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a prepared command.
    pub fn command(command: &mut Command) -> Result<Self> {
        Ok(Running(command.spawn()?))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
