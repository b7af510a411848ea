//! A `profilerd` in the background with its log in a file, stopped when its guard drops.
//!
//! The log goes to a file rather than a pipe: a pipe nobody reads fills and blocks the daemon,
//! and a file can be read while it runs (start-up lines, the HTTP address) and after it exits.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// A running `profilerd`, killed on drop if it is still running.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `binary ARGS` in `dir` with stdout discarded and stderr written to `log`.
    pub fn start(binary: &Path, args: &[&str], dir: &Path, log: &Path) -> Result<Self> {
        let stderr =
            fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Daemon {
            child,
            log: log.to_path_buf(),
        })
    }

    /// What the daemon has logged so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (the daemon writes what it has and exits 0).
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit in pid_t");
        // SAFETY: kill(2) with a pid we own and a valid signal number touches no memory.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }

    /// Waits for the daemon to exit, polling every `every` and calling `on_poll` first each
    /// time. Past `limit` it is killed and this fails.
    pub fn wait(
        &mut self,
        limit: Duration,
        every: Duration,
        mut on_poll: impl FnMut(&Self),
    ) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            on_poll(self);
            if let Some(status) = self.child.try_wait().context("wait profilerd")? {
                return Ok(status);
            }
            if started.elapsed() > limit {
                self.kill();
                bail!("profilerd did not exit within {limit:?}");
            }
            thread::sleep(every);
        }
    }

    /// Kills the daemon and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
