//! The command line and the config file: the only code below the binary that knows clap. In:
//! argv and `--config FILE` (TOML). Out: [`Cli`] with the parsed arguments of each command.

mod cli;
mod file;
#[cfg(test)]
mod hostile;
mod listener;
mod server;
mod sources;
mod unwind;

pub use cli::{
    command, parse_from, Cli, Command, Format, LimitArgs, Listen, ListenerArgs, LogFormat, Mode,
    ParseError, RecordArgs, RunArgs, ServerArgs, TargetArgs, TriggerArgs, DEFAULT_DUMP_DIR,
};
pub use file::{ConfigError, ConfigFile};
pub use sources::{ProfileKind, SourceArgs, Sources};
pub use unwind::{UnwindArgs, Unwinder};
