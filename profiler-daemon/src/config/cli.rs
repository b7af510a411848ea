//! Command-line interface of `profilerd`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::listener::parse_listen;
pub use super::listener::{Listen, ListenerArgs};
pub use super::server::ServerArgs;
use crate::types::{parse_bytes, parse_duration, parse_rule, RuleSetting, Rules};

const EXAMPLES: &str = "\
Examples:
  # 30 s CPU profile of one process, like `curl /debug/pprof/profile?seconds=30`, no code change
  profilerd record --pid 1234 --duration 30s --output cpu.pb.gz
  go tool pprof -top cpu.pb.gz

  # a flame graph of everything in a container's cgroup
  profilerd record --cgroup /system.slice/docker-abc.scope --duration 10s --format svg -o flame.svg

  # the daemon: keeps a profile, with the seconds before, when a CPU, memory or thread rule
  # fires for a process; the page at http://127.0.0.1:7070/ shows them
  profilerd run --dump-dir ./profiles

  # ... and, while it runs, any process's profile now, as from net/http/pprof
  go tool pprof -http=: 'http://127.0.0.1:7070/debug/pprof/profile?seconds=30&pid=1234'

  # one pprof per process every 15 s to a Pyroscope server, tagged like the article's pods
  profilerd run --mode continuous --server http://pyroscope:4040 --tag region=eu-west-1";

#[derive(Debug, Parser)]
#[command(
    name = "profilerd",
    version,
    about = "System-wide eBPF CPU profiler: samples user and kernel stacks of every process (or only chosen pids and cgroups) and writes pprof, folded stacks or flame graphs",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (error, warn, info, debug, trace, or tracing-subscriber directives).
    #[arg(long, global = true, default_value = "info", env = "PROFILERD_LOG")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// TOML file with any of the flags of `run` as keys (`frequency = 99`, `dump_dir = "..."`,
    /// `tag = { region = "eu" }`); flags on the command line override it.
    #[arg(long, global = true, value_name = "FILE", env = "PROFILERD_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record one profile of the selected processes and write it to a file.
    #[command(after_help = "Examples:
  profilerd record --pid 1234 --duration 30s --output cpu.pb.gz
  profilerd record --pid 1234 --format svg --output flame.svg
  profilerd record --duration 5s --format folded --output all.folded
  profilerd record --pid 1234 --unwind fp --output cpu.pb.gz   # frame pointers only
  profilerd record --pid 1234 --profile cpu,memory,offcpu,threads -o p.pb.gz   # + p.memory.pb.gz, ...")]
    Record(Box<RecordArgs>),
    /// Run the profiler daemon: keep a profile when a threshold rule fires (the default), or one
    /// pprof per sampled process every upload interval (--mode continuous); serve the kept
    /// profiles, /debug/pprof/ and /metrics on --listen.
    #[command(after_help = "Examples:
  profilerd run --dump-dir /var/lib/profilerd/profiles
  profilerd run --pid 1234 --cpu-trigger 10,25,60,1m --dump-dir ./profiles
  go tool pprof -http=: 'http://127.0.0.1:7070/debug/pprof/profile?seconds=30&pid=1234'
  profilerd run --mode continuous --pid 1234 --upload-interval 10s --dump-dir ./profiles
  profilerd run --mode continuous --server http://pyroscope:4040 --tag region=eu-west-1 --tag env=prod
  PROFILERD_BEARER_TOKEN=... profilerd run --server https://profiles.example.com --tenant-id team-a
  profilerd run --listen 0.0.0.0:7070 --web-config-file /etc/profilerd/web.yml   # TLS, users")]
    Run(Box<RunArgs>),
    /// Check that profilerd can run here with these settings: kernel, privileges, perf events,
    /// cgroups, sample rate, directories, server. Exits non-zero when something would fail.
    #[command(after_help = "Examples:
  profilerd check
  profilerd check --config /etc/profilerd/config.toml
  profilerd check --frequency 199 --server http://pyroscope:4040")]
    Check(Box<RunArgs>),
}

/// Which processes to sample and how often.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct TargetArgs {
    /// Sample only this process (tgid); repeatable. Filtered in the kernel.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Sample only processes in this cgroup v2 directory or below it; repeatable. An absolute
    /// path (/sys/fs/cgroup/...) or a path relative to the cgroup2 root (/system.slice/x.service).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Samples per second per CPU.
    #[arg(long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,
}

/// Sizes of the kernel maps and user-space caches. Every one is a hard bound with a drop counter.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Bounds")]
pub struct LimitArgs {
    /// Entries of each of the two kernel counts maps (distinct pid/thread/stack keys per
    /// collect interval). The default holds a busy 64-CPU host at 99 Hz for 1 s.
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(64..))]
    pub counts_map_entries: u32,
    /// Entries of each of the two kernel user-stack maps (distinct user stacks per collect
    /// interval, about 1 KiB of kernel memory each). The default holds a 64-CPU host at 99 Hz
    /// for 1 s even if every sample has a new stack.
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u32).range(64..))]
    pub stack_map_entries: u32,
    /// Entries of each of the two kernel-stack maps (distinct kernel
    /// stacks per collect interval, about 1 KiB of kernel memory each).
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u32).range(64..))]
    pub kernel_stack_map_entries: u32,
    /// Pids and cgroups the in-kernel filter can hold (each); a reload may add targets up to it.
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_filter_entries: u32,
    /// Processes tracked at once (kernel "already announced" set and symbolizer cache).
    #[arg(long, default_value_t = 8_192, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_processes: u32,
    /// Distinct stacks kept per profile window over all processes; samples of further new
    /// stacks are dropped and counted.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(16..))]
    pub max_stacks: u64,
    /// Kernel functions whose names are cached across drains (about 80 bytes each; all the
    /// sampled addresses in a function share one entry).
    #[arg(long, default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(16..))]
    pub max_kernel_symbols: u64,
    /// Names of code in files cached across drains, by file and offset, shared by all the
    /// processes mapping the file (about 150 bytes each). JIT code is named afresh.
    #[arg(long, default_value_t = 32_768, value_parser = clap::value_parser!(u64).range(16..))]
    pub max_user_symbols: u64,
    /// How long the symbolizer keeps the parsed debug info (DWARF, in the file or a separate
    /// debug file) of a file. Then it is released, and read again at the next address the
    /// name caches lack: the parsed debug info of a long-running process otherwise grows with
    /// every part of it ever sampled. Releases are spread over the period, oldest file first,
    /// so that memory does not rise and fall with it. Files with only a symbol table (stripped
    /// libraries) do not grow and are kept until no tracked process maps them.
    #[arg(long, default_value = "1m", value_parser = parse_period)]
    pub symbol_file_ttl: Duration,
    /// Symbol tables and debug sections (.symtab, .strtab, .dynsym, .dynstr, .debug_*, and a
    /// separate debug file's) of one mapped file beyond which it is not parsed: its frames are
    /// named by module and offset, and counted. Measured from the section headers before
    /// parsing; distribution libraries need under 2 MiB, a large C++ or Rust program with
    /// full debug info can need hundreds.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub max_symbol_file_bytes: u64,
    /// The same sections of all the files parsed at once; a file that would take them over it
    /// is not parsed until files are released. Parsed symbols cost about their size in memory
    /// (file pages and tables): keep it well under the daemon's memory limit.
    #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
    pub max_symbol_bytes: u64,
    /// Mapped files held open at once (each a descriptor, kept while a tracked process maps
    /// it); a file beyond it is not opened: its frames are named by module and offset, and
    /// counted. Keep it well under the descriptor limit (`LimitNOFILE`).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_symbol_files: u64,
}

/// The daemon's scheduling priority (both commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct PriorityArgs {
    /// Nice value of the daemon's threads, set at start (-20 to 19; 0 keeps the inherited
    /// one). Against a runaway at the ordinary priority, drains stay on time and a kept
    /// profile lands when due. Never lowers a higher priority a unit's Nice= gave.
    #[arg(long, default_value_t = -20, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// gzipped pprof protobuf (go tool pprof, Pyroscope, Grafana)
    Pprof,
    /// Brendan Gregg's collapsed stacks, one `a;b;c count` line per stack
    Folded,
    /// interactive SVG flame graph
    Svg,
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to record (e.g. 30s, 500ms, 2m). Ends early when every --pid has exited.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Output file (default: profile.pb.gz, profile.folded or profile.svg by --format).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format (default: from the --output extension; one no format writes needs it).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// How often the kernel maps are drained while recording.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub collect_interval: Duration,
    /// Which profiles to record, comma-separated: `cpu`, `memory`, `offcpu`, `threads`. The
    /// first goes to --output, each other one beside it with its kind before the extension
    /// (`profile.memory.pb.gz`).
    #[arg(
        long = "profile",
        value_enum,
        value_delimiter = ',',
        default_value = "cpu",
        value_name = "KINDS"
    )]
    pub profiles: Vec<super::ProfileKind>,
    #[command(flatten)]
    pub sources: super::SourceArgs,
    #[command(flatten)]
    pub priority: PriorityArgs,
    #[command(flatten)]
    pub unwind: super::UnwindArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl RecordArgs {
    /// The format and file to write, resolving the defaults. A name without an extension is
    /// pprof (`curl -o profile`); an extension none of the formats has, without `--format`, is
    /// an error rather than a pprof file named `.png`.
    pub fn resolved_output(&self) -> Result<(Format, PathBuf), String> {
        let from_extension = match self.output.as_ref().and_then(|p| p.file_name()) {
            None => None,
            Some(name) => {
                let name = name.to_string_lossy().to_lowercase();
                if name.ends_with(".svg") {
                    Some(Format::Svg)
                } else if name.ends_with(".folded") || name.ends_with(".txt") {
                    Some(Format::Folded)
                } else if [".pb.gz", ".pprof", ".pb", ".gz", ".prof", ".out"]
                    .iter()
                    .any(|e| name.ends_with(e))
                    || !name.contains('.')
                {
                    Some(Format::Pprof)
                } else if self.format.is_none() {
                    return Err(format!(
                        "--output {name}: no format writes this extension: name the file .pb.gz, .pprof, .prof, .svg, .folded or .txt, or give --format pprof|folded|svg"
                    ));
                } else {
                    None
                }
            }
        };
        let format = self.format.or(from_extension).unwrap_or(Format::Pprof);
        let output = self.output.clone().unwrap_or_else(|| {
            PathBuf::from(match format {
                Format::Pprof => "profile.pb.gz",
                Format::Folded => "profile.folded",
                Format::Svg => "profile.svg",
            })
        });
        Ok((format, output))
    }
}

#[derive(Debug, Clone, PartialEq, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How often the kernel maps are drained.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub collect_interval: Duration,
    /// continuous mode: how often one profile per sampled process is written; triggered mode:
    /// how often the status line is logged.
    #[arg(long, default_value = "15s", value_parser = parse_period)]
    pub upload_interval: Duration,
    /// Directory for the per-process pprof files [default: profiles, unless --server is set,
    /// in which case files are written only when --dump-dir is given]. It must be owned by the
    /// daemon's user and not writable by group or others; a missing one is created 0750.
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// Most profile files kept in --dump-dir; the oldest are removed first.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub dump_max_files: u64,
    /// Most bytes of profile files kept in --dump-dir (e.g. 512MiB, 2GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub dump_max_bytes: u64,
    /// Stop after this long (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Address of the HTTP listener with /metrics, /healthz, /debug/pprof/ and the page of
    /// profiles (/ lists them, /view/FILE shows one with its timeline, flame graphs and top
    /// table), or `off`. Loopback by default; a public address only when given here.
    #[arg(long, default_value = "127.0.0.1:7070", value_parser = parse_listen, value_name = "ADDR:PORT|off")]
    pub listen: Listen,
    /// A name a loopback listener also answers to in the `Host` header (`NAME` or
    /// `NAME:PORT`), repeatable. Others get a 403: a web page cannot reach the listener through
    /// a name of its own that it points at 127.0.0.1 (DNS rebinding).
    #[arg(long, value_name = "NAME")]
    pub listen_host: Vec<String>,
    /// How far back the page at / lists profiles (at most the 500 newest sidecars, 2000 rows).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub page_window: Duration,
    /// Which profiles to take besides CPU (always taken: the triggers need it),
    /// comma-separated: `cpu`, `memory`, `offcpu`, `threads`. With `memory`, a mem firing
    /// keeps the memory-growth profile of its window; with `threads`, a thread firing keeps
    /// the thread-creation profile; with `offcpu`, every kept profile holds the off-CPU time
    /// of its window too.
    #[arg(
        long = "profile",
        value_enum,
        value_delimiter = ',',
        default_value = "cpu,memory,threads",
        value_name = "KINDS"
    )]
    pub profiles: Vec<super::ProfileKind>,
    #[command(flatten)]
    pub sources: super::SourceArgs,
    #[command(flatten)]
    pub priority: PriorityArgs,
    #[command(flatten)]
    pub unwind: super::UnwindArgs,
    #[command(flatten)]
    pub listener: ListenerArgs,
    #[command(flatten)]
    pub trigger: TriggerArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// `[[target]]` sections of the config file (no flag can say them).
    #[arg(skip)]
    pub sections: Vec<crate::targets::SectionSpec>,
}

/// A duration that paces a loop: at least 100 ms, so that `0` cannot make it spin.
pub(super) fn parse_interval(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_millis(100), "100ms")
}

/// A duration between reports or releases: at least 1 s.
fn parse_period(text: &str) -> Result<Duration, String> {
    at_least(text, Duration::from_secs(1), "1s")
}

fn at_least(text: &str, min: Duration, shown: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < min {
        return Err(format!(
            "{text:?} is shorter than {shown}, the least this setting takes"
        ));
    }
    Ok(duration)
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// one human-readable line per event
    Text,
    /// one JSON object per line (for log shippers)
    Json,
}

/// What `run` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// keep a profile only when a threshold rule fires, with the seconds before it
    Triggered,
    /// every upload interval, one profile per sampled process
    Continuous,
}

fn parse_rule4(text: &str) -> Result<RuleSetting, String> {
    parse_rule(text, false).map(RuleSetting)
}

fn parse_rule5(text: &str) -> Result<RuleSetting, String> {
    parse_rule(text, true).map(RuleSetting)
}

/// Cores as a decimal (`2`, `0.5`), in thousandths.
fn parse_cores(text: &str) -> Result<u64, String> {
    let cores: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of cores (e.g. 2 or 0.5)"))?;
    if !(0.001..=100_000.0).contains(&cores) {
        return Err(format!("{text:?} cores is out of range"));
    }
    Ok((cores * 1000.0).round() as u64)
}

/// Threshold triggers (holmes rules) of `--mode triggered`.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Triggers")]
pub struct TriggerArgs {
    /// triggered: keep a profile only when a rule fires; continuous: one per process per interval.
    #[arg(long, value_enum, default_value = "triggered")]
    pub mode: Mode,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Memory for the drained history that supplies the seconds before a trigger.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub history_max_bytes: u64,
}

/// The rules and their denominators and windows: what a reload changes live.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Triggers")]
pub struct RuleArgs {
    /// CPU rule min,diff,abs,cooldown in percent of the target's cores, or off.
    #[arg(long, default_value = "10,25,70,1m", value_parser = parse_rule4, value_name = "MIN,DIFF,ABS,COOLDOWN")]
    pub cpu_trigger: RuleSetting,
    /// Memory rule min,diff,abs,cooldown in percent of the memory limit (RSS), or off.
    #[arg(long, default_value = "10,25,80,1m", value_parser = parse_rule4, value_name = "MIN,DIFF,ABS,COOLDOWN")]
    pub mem_trigger: RuleSetting,
    /// Thread rule min,diff,abs,max,cooldown in threads (max 0: none), or off.
    #[arg(long, default_value = "10,25,70,0,1h", value_parser = parse_rule5, value_name = "MIN,DIFF,ABS,MAX,COOLDOWN")]
    pub thread_trigger: RuleSetting,
    /// Skip every rule while the target's CPU is at or above this percent (0: never skip).
    #[arg(long, default_value_t = 0)]
    pub cpu_max: u64,
    /// Cores the CPU percent is relative to (default: the target's cgroup quota, else the host's CPUs).
    #[arg(long, value_parser = parse_cores, value_name = "CORES")]
    pub cpu_cores: Option<u64>,
    /// Memory the memory percent is relative to (default: the cgroup limit, else host RAM).
    #[arg(long, value_parser = parse_bytes, value_name = "SIZE")]
    pub memory_limit: Option<u64>,
    /// Seconds before the firing that the kept profile covers.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub pre_trigger: Duration,
    /// Seconds after the firing that the kept profile covers.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub post_trigger: Duration,
}

impl RuleArgs {
    pub fn rules(&self) -> Rules {
        Rules {
            cpu: self.cpu_trigger.0,
            mem: self.mem_trigger.0,
            thread: self.thread_trigger.0,
            cpu_max: self.cpu_max,
        }
    }
}

/// Default dump dir of `run`.
pub const DEFAULT_DUMP_DIR: &str = "profiles";

impl RunArgs {
    /// Where `run` writes: in triggered mode always (kept profiles are rare and precious),
    /// in continuous mode as [`RunArgs::dump_dir`] says.
    pub fn files_dir(&self) -> Option<PathBuf> {
        match self.trigger.mode {
            Mode::Triggered => Some(
                self.dump_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DUMP_DIR)),
            ),
            Mode::Continuous => self.dump_dir(),
        }
    }

    /// Where files go: --dump-dir, else the default unless profiles go to a server.
    pub fn dump_dir(&self) -> Option<PathBuf> {
        match (&self.dump_dir, &self.server.client.server) {
            (Some(dir), _) => Some(dir.clone()),
            (None, None) => Some(PathBuf::from(DEFAULT_DUMP_DIR)),
            (None, Some(_)) => None,
        }
    }
}

/// The full command tree with global flags propagated to the subcommands.
pub fn command() -> clap::Command {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    command
}

/// Why the command line (with its config file) could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Parses `argv` (program name first). With `--config FILE`, the file's settings fill in
/// what the command line does not set.
pub fn parse_from(argv: Vec<std::ffi::OsString>) -> Result<Cli, ParseError> {
    use clap::FromArgMatches;

    let command = command();
    let matches = command.clone().try_get_matches_from(&argv)?;
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let Some(path) = sub_matches.get_one::<PathBuf>("config") else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    let run = command
        .find_subcommand("run")
        .expect("the run subcommand exists");
    let file = crate::config::ConfigFile::load(path, run)?;
    let sub = command
        .find_subcommand(name)
        .expect("the parsed subcommand exists");
    let mut argv = argv;
    argv.extend(file.arguments_for(sub, sub_matches));
    let matches = command.try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Run(args) | Command::Check(args) = &mut cli.command {
        args.sections = file.targets;
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Rule;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("profilerd").chain(args.iter().copied()))
    }

    #[test]
    fn record_defaults_and_format_inference() {
        let cli = parse(&["record", "--pid", "1", "--pid", "2", "-o", "x.svg"]).unwrap();
        let Command::Record(args) = cli.command else {
            panic!("record expected")
        };
        assert_eq!(args.target.pids, [1, 2]);
        assert_eq!(args.target.frequency, 99);
        assert_eq!(args.duration, Duration::from_secs(30));
        assert_eq!(
            args.resolved_output(),
            Ok((Format::Svg, PathBuf::from("x.svg")))
        );
        let cli = parse(&["record", "--format", "folded"]).unwrap();
        let Command::Record(args) = cli.command else {
            panic!("record expected")
        };
        assert_eq!(
            args.resolved_output(),
            Ok((Format::Folded, PathBuf::from("profile.folded")))
        );
        let output = |args: &[&str]| {
            let Command::Record(args) = parse(args).unwrap().command else {
                panic!("record expected")
            };
            args.resolved_output()
        };
        let err = output(&["record", "-o", "x.png"]).unwrap_err();
        assert!(
            err.contains("--output x.png") && err.contains("--format"),
            "{err}"
        );
        assert_eq!(
            output(&["record", "-o", "x.png", "--format", "svg"]),
            Ok((Format::Svg, PathBuf::from("x.png")))
        );
        assert_eq!(
            output(&["record", "-o", "profile"]),
            Ok((Format::Pprof, PathBuf::from("profile")))
        );
    }

    #[test]
    fn run_defaults() {
        let Command::Run(args) = parse(&["run"]).unwrap().command else {
            panic!("run expected")
        };
        assert_eq!(args.collect_interval, Duration::from_secs(1));
        assert_eq!(args.upload_interval, Duration::from_secs(15));
        assert_eq!(args.dump_dir(), Some(PathBuf::from("profiles")));
        assert_eq!(args.server.client.protocol, crate::export::Protocol::Push);
        // The listener's defaults are checked beside its flags (listener.rs).
        let Command::Run(args) = parse(&["run", "--server", "http://x:4040"])
            .unwrap()
            .command
        else {
            panic!("run expected")
        };
        assert_eq!(
            args.dump_dir(),
            None,
            "server only: no files unless --dump-dir"
        );
        let Command::Run(args) = parse(&["run", "--server", "http://x", "--dump-dir", "d"])
            .unwrap()
            .command
        else {
            panic!("run expected")
        };
        assert_eq!(args.dump_dir(), Some(PathBuf::from("d")));
        assert_eq!(args.limits.counts_map_entries, 16_384);
        assert_eq!(args.trigger.mode, Mode::Triggered);
        let rules = args.trigger.rules.rules();
        let rule = |min, diff, abs, max, secs| {
            Some(Rule {
                min,
                diff,
                abs,
                max,
                cooldown: Duration::from_secs(secs),
            })
        };
        assert_eq!(rules.cpu, rule(10, 25, 70, 0, 60));
        assert_eq!(rules.mem, rule(10, 25, 80, 0, 60));
        assert_eq!(rules.thread, rule(10, 25, 70, 0, 3600));
        assert_eq!(args.trigger.rules.pre_trigger, Duration::from_secs(10));
        assert_eq!(args.trigger.rules.post_trigger, Duration::from_secs(5));
        // The article's settings for a 2-core pod with a 100 MB limit.
        let Command::Run(args) = parse(&[
            "run",
            "--cpu-cores",
            "2",
            "--memory-limit",
            "100MB",
            "--cpu-trigger",
            "20,100,150,2m",
            "--mem-trigger",
            "50,100,800,1m",
            "--thread-trigger",
            "off",
            "--collect-interval",
            "1s",
        ])
        .unwrap()
        .command
        else {
            panic!("run expected")
        };
        assert_eq!(args.trigger.rules.cpu_cores, Some(2000));
        assert_eq!(args.trigger.rules.memory_limit, Some(100_000_000));
        let rules = args.trigger.rules.rules();
        assert_eq!(rules.cpu, rule(20, 100, 150, 0, 120));
        assert_eq!(rules.thread, None);
    }

    #[test]
    fn bad_flags_are_rejected_with_the_flag_named() {
        for (args, needle) in [
            (&["record", "--pid", "abc"][..], "--pid"),
            (&["record", "--frequency", "0"][..], "--frequency"),
            (&["record", "--frequency", "100001"][..], "--frequency"),
            (&["record", "--duration", "soon"][..], "--duration"),
            (&["record", "--format", "png"][..], "--format"),
            (
                &["run", "--upload-interval", "1week"][..],
                "--upload-interval",
            ),
            (&["run", "--dump-max-bytes", "lots"][..], "--dump-max-bytes"),
            (
                &["run", "--counts-map-entries", "1"][..],
                "--counts-map-entries",
            ),
            (&["profile"][..], "profile"),
            (&["run", "--cpu-trigger", "10,25"][..], "--cpu-trigger"),
            (
                &["run", "--thread-trigger", "10,25,70,1h"][..],
                "--thread-trigger",
            ),
            (&["run", "--cpu-cores", "lots"][..], "--cpu-cores"),
            (&["run", "--mode", "sometimes"][..], "--mode"),
            // A loop paced by zero would spin.
            (
                &["record", "--collect-interval", "0"][..],
                "--collect-interval",
            ),
            (
                &["run", "--collect-interval", "50ms"][..],
                "--collect-interval",
            ),
            (&["run", "--upload-interval", "0"][..], "--upload-interval"),
            (&["run", "--upload-timeout", "0s"][..], "--upload-timeout"),
            (
                &["run", "--retry-max-backoff", "0"][..],
                "--retry-max-backoff",
            ),
            (&["run", "--symbol-file-ttl", "0"][..], "--symbol-file-ttl"),
            (
                &["run", "--listen-header-timeout", "0s"][..],
                "--listen-header-timeout",
            ),
            (
                &["run", "--listen-max-connections", "0"][..],
                "--listen-max-connections",
            ),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
