//! The scenarios both the host's end-to-end tests and the kernel matrix run: the fixture
//! arguments, the daemon arguments and the judgement of what came out, written once.

use std::{
    fs,
    ops::RangeInclusive,
    path::{Path, PathBuf},
    process::Command,
};

use crate::stack::{count_with, Stack};

/// The 3:1 `split` fixture: `work_three` and `work_one` both call `work_unit`, three times as
/// often from the first.
pub mod split {
    use super::*;

    /// Where `work_three`'s share must fall (~75% expected).
    pub const SHARE_BAND: RangeInclusive<f64> = 0.60..=0.90;

    /// Fewest samples of 4 s at 99 Hz of one busy thread (~396; a shared VM loses some).
    pub const MIN_SAMPLES_4S: i64 = 150;

    /// `work_three`'s share of the samples in either hot caller, and both counts.
    pub struct Share {
        pub share: f64,
        pub three: i64,
        pub one: i64,
    }

    pub fn share(stacks: &[Stack]) -> Share {
        let three = count_with(stacks, "work_three");
        let one = count_with(stacks, "work_one");
        Share {
            share: three as f64 / (three + one).max(1) as f64,
            three,
            one,
        }
    }

    /// Whether the whole chain is walked in order, leaf first: work_unit, work_three, main.
    pub fn chain_in_order(stack: &Stack) -> bool {
        matches!(
            (stack.position("work_unit"), stack.position("work_three"), stack.position("main")),
            (Some(u), Some(t), Some(m)) if u < t && t < m
        )
    }
}

/// The syscall-heavy `reader` fixture: `main` calls `read_loop`, which reads all the time.
pub mod reader {
    use super::*;

    /// The stacks whose leaf is in the kernel.
    pub fn in_kernel(stacks: &[Stack]) -> Vec<&Stack> {
        stacks
            .iter()
            .filter(|s| s.frames.first().is_some_and(|f| f.kernel))
            .collect()
    }

    /// A stack with a kernel read function and `read_loop` in it.
    pub fn is_read_path(stack: &Stack) -> bool {
        stack
            .frames
            .iter()
            .any(|f| f.kernel && f.function.contains("read"))
            && stack.has("read_loop")
    }

    /// Kernel frames only below the user frames, and `main` above `read_loop`.
    pub fn read_path_in_order(stack: &Stack) -> bool {
        let last_kernel = stack.frames.iter().rposition(|f| f.kernel);
        let first_user = stack.frames.iter().position(|f| !f.kernel);
        matches!((last_kernel, first_user), (Some(k), Some(u)) if k < u)
            && matches!(
                (stack.position("read_loop"), stack.position("main")),
                (Some(r), Some(m)) if r < m
            )
    }
}

/// The `spike` fixture under `run` in triggered mode: a light marker through the warm-up,
/// then a burn; exactly one CPU profile is kept, with the burn and the seconds before it.
pub mod spike {
    /// How long the light marker runs: through the warm-up of 10 collections of 500 ms after
    /// the daemon's attach, with the daemon stopping 7 s later (2 s burn, 2 s light, 2 s burn
    /// inside the cooldown, 1 s to spare).
    #[derive(Clone, Copy, Debug)]
    pub struct Timing {
        marker: &'static str,
        duration: &'static str,
    }

    /// The kernel matrix: the first attach of a run took up to 10.3 s in a guest while both
    /// guests boot at once on a busy host.
    pub const GUEST: Timing = Timing {
        marker: "16",
        duration: "23s",
    };
    /// The tests on the host, where the attach takes under a second.
    pub const HOST: Timing = Timing {
        marker: "9",
        duration: "16s",
    };

    impl Timing {
        /// The fixture's arguments: marker, burn, light, burn (seconds).
        pub fn fixture_args(self) -> [&'static str; 4] {
            [self.marker, "2", "2", "2"]
        }
    }

    /// `profilerd run` arguments for the fixture's pid, keeping profiles in `./kept`.
    pub fn run_args(pid: &str, timing: Timing) -> Vec<&str> {
        vec![
            "run",
            "--pid",
            pid,
            "--collect-interval",
            "500ms",
            "--pre-trigger",
            "5s",
            "--post-trigger",
            "2s",
            "--upload-interval",
            "5s",
            // min 25 (the default is 10): the burn is 50% of two CPUs, while a guest that
            // shares the host's CPUs with another one can bunch the light marker's work into
            // one interval past 10%, and an early firing's cooldown then hides the burn.
            "--cpu-trigger",
            "25,25,70,60s",
            "--dump-dir",
            "kept",
            "--duration",
            timing.duration,
        ]
    }

    /// How many times the daemon logged a firing.
    pub fn firings(stderr: &str) -> usize {
        stderr.matches("trigger fired").count()
    }
}

/// The names of the files in `dir`, sorted (none when it does not exist).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Kept profiles (`<metric>.<event>.<time>.pb.gz`) in `dir`, sorted.
pub fn kept_profiles(dir: &Path) -> Vec<PathBuf> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".pb.gz"))
        .map(|n| dir.join(n))
        .collect()
}

/// uid and gid of `nobody`, the user the unprivileged checks run as.
pub const NOBODY: &str = "65534";

/// `setpriv` running the rest of the command as `nobody` with no supplementary groups, and
/// `caps` as its inheritable (and, when given, ambient) capabilities.
pub fn as_nobody(setpriv: &Path, inheritable: &str, ambient: Option<&str>) -> Command {
    let mut command = Command::new(setpriv);
    command
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(format!("--inh-caps={inheritable}"));
    if let Some(ambient) = ambient {
        command.arg(format!("--ambient-caps={ambient}"));
    }
    command
}
