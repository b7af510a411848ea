use std::{
    io::IsTerminal,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use clap::Parser;
use profilerd::{
    cli::{Cli, Command},
    commands,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|err| {
        eprintln!(
            "error: invalid --log-level {:?} ({err}): use error, warn, info, debug or trace",
            cli.log_level
        );
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let mut work = tokio::task::spawn_blocking(move || match &cli.command {
            Command::Record(args) => commands::record(args, &worker_stop),
            Command::Run(args) => commands::run(args, &worker_stop),
        });
        let (mut sigint, mut sigterm) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(err), _) | (_, Err(err)) => {
                return Err(anyhow::anyhow!("cannot install signal handlers: {err}"))
            }
        };
        tokio::select! {
            joined = &mut work => return joined.map_err(anyhow::Error::from)?,
            _ = sigint.recv() => tracing::info!("SIGINT: flushing the current window"),
            _ = sigterm.recv() => tracing::info!("SIGTERM: flushing the current window"),
        }
        stop.store(true, Ordering::Relaxed);
        work.await.map_err(anyhow::Error::from)?
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
