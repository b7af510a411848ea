use std::{
    ffi::OsString,
    io::IsTerminal,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use profilerd::{
    cli::{self, Command, Listen, LogFormat, ParseError, RunArgs},
    commands,
    delivery::Exporter,
    metrics::Metrics,
    privileges,
    web::{self, WebState},
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};
use tracing_subscriber::EnvFilter;

/// SIGHUP: re-reads the command line and config file and hands a valid result to the
/// pipeline; an invalid one is logged and the running configuration stays.
fn reload(argv: &[OsString], reloadable: bool, tx: &mpsc::Sender<Box<RunArgs>>) {
    if !reloadable {
        tracing::info!("SIGHUP: only `profilerd run` reloads; ignored");
        return;
    }
    match cli::parse_from(argv.to_vec()) {
        Ok(cli::Cli {
            command: Command::Run(args),
            ..
        }) => {
            tracing::info!("SIGHUP: configuration re-read; applying it at the next collect");
            let _ = tx.send(args);
        }
        Ok(_) => {
            tracing::error!("SIGHUP: the command line no longer parses as `run`; nothing changed")
        }
        Err(err) => {
            let text = match &err {
                ParseError::Clap(err) => err.render().to_string(),
                ParseError::Config(err) => err.to_string(),
            };
            let first = text.lines().next().unwrap_or_default();
            tracing::error!(
                "SIGHUP: the new configuration is invalid, the running one stays: {}",
                first.strip_prefix("error: ").unwrap_or(first)
            );
        }
    }
}

/// glibc's malloc raises its mmap and trim thresholds as the program frees large blocks
/// (kallsyms at start, a busy window's tables), and a thread arena's free top is returned only
/// above the trim threshold (malloc_trim leaves it alone): the daemon's RSS then kept a few
/// MiB of freed memory, more or less depending on which window had last peaked. Fixed
/// thresholds return large blocks and a free top to the system when they are freed. A
/// GLIBC_TUNABLES or MALLOC_*_ setting in the environment is left to win.
fn tune_malloc() {
    let set = |var: &str| std::env::var_os(var).is_some();
    if set("GLIBC_TUNABLES") {
        return;
    }
    // SAFETY: mallopt only changes malloc parameters; it runs before any other thread exists.
    unsafe {
        if !set("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
        if !set("MALLOC_TRIM_THRESHOLD_") {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
        }
    }
}

fn main() -> ExitCode {
    tune_malloc();
    // Kept for SIGHUP: a reload parses the same command line with the config file re-read.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match cli::parse_from(argv.clone()) {
        Ok(cli) => cli,
        Err(ParseError::Clap(err)) => err.exit(),
        Err(ParseError::Config(err)) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|err| {
        eprintln!(
            "error: invalid --log-level {:?} ({err}): use error, warn, info, debug or trace",
            cli.log_level
        );
        std::process::exit(2);
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }

    if let Command::Check(args) = &cli.command {
        return if commands::check(args) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

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
        let (mut sigint, mut sigterm, mut sighup) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(i), Ok(t), Ok(h)) => (i, t, h),
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
                return Err(anyhow::anyhow!("cannot install signal handlers: {err}"))
            }
        };
        let (reload_tx, reload_rx) = mpsc::channel::<Box<RunArgs>>();
        let reloadable = matches!(cli.command, Command::Run(_));
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut delivery = None;
        let mut listening = None;
        let mut work = match cli.command {
            Command::Record(args) => {
                tokio::task::spawn_blocking(move || commands::record(&args, &worker_stop))
            }
            Command::Run(args) => {
                let metrics = Arc::new(Metrics::default());
                // Bound first, so that a taken port is a start-up error; served once the state
                // exists. `run` logs the address when the pipeline is up.
                let bound = match args.listen {
                    Listen(Some(addr)) => Some(web::bind(addr).await?),
                    Listen(None) => None,
                };
                let web = Arc::new(WebState {
                    metrics: Arc::clone(&metrics),
                    dump_dir: args.files_dir(),
                    page_window: args.page_window,
                    heartbeat: AtomicU64::new(0),
                    stall_after: (args.collect_interval * 5).max(Duration::from_secs(10)),
                    address: bound.as_ref().map(|(_, address)| *address),
                });
                if let Some((listener, _)) = bound {
                    listening = Some(tokio::spawn(web::serve(
                        listener,
                        Arc::clone(&web),
                        shutdown_rx.clone(),
                    )));
                }
                let server = commands::prepare_server(&args)?.map(|setup| {
                    let (exporter, handle) =
                        Exporter::start(setup.client, setup.spool, setup.delivery, shutdown_rx);
                    metrics.set_delivery(Arc::clone(&exporter.stats));
                    delivery = Some(handle);
                    (exporter, setup.labels)
                });
                // The exporter moves into the pipeline thread and is dropped when it ends,
                // which closes the delivery queue.
                tokio::task::spawn_blocking(move || {
                    let server = server
                        .as_ref()
                        .map(|(exporter, labels)| (exporter, labels.clone()));
                    commands::run(&args, &worker_stop, server, &web, &reload_rx)
                })
            }
            Command::Check(_) => unreachable!("handled before the runtime starts"),
        };
        // The pipeline thread exists now with every capability (it loads the sampler and
        // drops its own after attaching). This thread serves HTTP, delivers and reloads: it
        // needs none. Threads it starts later inherit that.
        if let Err(err) = privileges::drop_to(&[]) {
            tracing::warn!("could not drop the main thread's capabilities: {err}");
        }
        let finished = loop {
            tokio::select! {
                joined = &mut work => break Some(joined),
                _ = sigint.recv() => { tracing::info!("SIGINT: flushing the current window"); break None }
                _ = sigterm.recv() => { tracing::info!("SIGTERM: flushing the current window"); break None }
                _ = sighup.recv() => reload(&argv, reloadable, &reload_tx),
            }
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
        if let Some(handle) = listening {
            let _ = handle.await;
        }
        joined.map_err(anyhow::Error::from)?
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", profilerd::commands::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
