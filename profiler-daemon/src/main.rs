//! The `profilerd` binary: parses the command line, sets up logging, and hands over to
//! [`profilerd::app`].

use std::{ffi::OsString, io::IsTerminal, process::ExitCode};

use profilerd::config::{self, LogFormat, ParseError};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Kept for SIGHUP: a reload parses the same command line with the config file re-read.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match config::parse_from(argv.clone()) {
        Ok(cli) => cli,
        Err(ParseError::Clap(err)) => err.exit(),
        Err(ParseError::Config(err)) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!(
                "error: invalid --log-level {:?} ({err}): use error, warn, info, debug or trace",
                cli.log_level
            );
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    profilerd::app::execute(cli, argv)
}
