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
    delivery::Exporter,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
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
        let (mut sigint, mut sigterm) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(err), _) | (_, Err(err)) => {
                return Err(anyhow::anyhow!("cannot install signal handlers: {err}"))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut delivery = None;
        let mut work = match cli.command {
            Command::Record(args) => {
                tokio::task::spawn_blocking(move || commands::record(&args, &worker_stop))
            }
            Command::Run(args) => {
                let server = commands::prepare_server(&args)?.map(|setup| {
                    let (exporter, handle) =
                        Exporter::start(setup.client, setup.spool, setup.delivery, shutdown_rx);
                    delivery = Some(handle);
                    (exporter, setup.labels)
                });
                // The exporter moves into the pipeline thread and is dropped when it ends,
                // which closes the delivery queue.
                tokio::task::spawn_blocking(move || {
                    let server = server.as_ref().map(|(exporter, labels)| (exporter, labels));
                    commands::run(&args, &worker_stop, server)
                })
            }
        };
        let finished = tokio::select! {
            joined = &mut work => Some(joined),
            _ = sigint.recv() => { tracing::info!("SIGINT: flushing the current window"); None }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: flushing the current window"); None }
        };
        stop.store(true, Ordering::Relaxed);
        let joined = match finished {
            Some(joined) => joined,
            None => work.await,
        };
        // Delivery gets one more attempt per queued profile; what fails stays in the spool.
        let _ = shutdown_tx.send(true);
        if let Some(handle) = delivery {
            let _ = handle.await;
        }
        joined.map_err(anyhow::Error::from)?
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
