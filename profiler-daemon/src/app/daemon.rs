//! The process around the commands: the async runtime, signals (SIGINT/SIGTERM flush and
//! exit, SIGHUP reloads), the HTTP listener and the delivery task, and the pipeline thread.

use std::{
    ffi::OsString,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, OnceLock,
    },
    time::Duration,
};

use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::watch,
    task::JoinHandle,
};

use super::{
    check::check,
    error_line,
    record::record,
    run::{open_dump, run},
    server::prepare_server,
};
use crate::{
    config::{self, Cli, Command, Listen, ParseError, RunArgs},
    export::Exporter,
    host::{descriptors, priority, privileges},
    serve::{
        self,
        auth::Security,
        hosts,
        listener::ListenerConfig,
        metrics::Metrics,
        ondemand::{self, Kind},
        pprof::PprofEndpoint,
        WebState,
    },
};

/// Runs the parsed command line; `argv` is kept for SIGHUP, which parses it again with the
/// config file re-read.
pub fn execute(cli: Cli, argv: Vec<OsString>) -> ExitCode {
    tune_malloc();
    if let Command::Run(_) = &cli.command {
        raise_descriptor_limit();
    }
    let nice = match &cli.command {
        Command::Check(args) => {
            return if check(args) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Record(args) => args.priority.nice,
        Command::Run(args) => args.priority.nice,
    };
    raise_priority(nice);
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
    match runtime.block_on(serve_command(cli.command, argv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Why the priority could not be raised, told once the sampler runs: a daemon that cannot
/// start at all has a better first line to say.
static PRIORITY_WARNING: OnceLock<String> = OnceLock::new();

/// Before the runtime and the pipeline thread exist, so that they inherit it. Without the
/// privilege the daemon still runs, at the priority it was given.
fn raise_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    match priority::raise_to(nice) {
        Ok(Some(was)) => tracing::debug!("scheduling priority raised from nice {was} to {nice}"),
        Ok(None) => {}
        Err(err) => {
            let _ = PRIORITY_WARNING.set(err.to_string());
        }
    }
}

/// Logs why the priority could not be raised, if it could not; called once sampling runs.
pub(super) fn warn_priority() {
    if let Some(warning) = PRIORITY_WARNING.get() {
        tracing::warn!("{warning}");
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

/// The soft RLIMIT_NOFILE up to the hard one: a thousand idle connections exhaust systemd's
/// and most shells' soft 1024, and profile writes then fail. The listener keeps a reserve of
/// what this gives (`--listen-descriptor-reserve`).
fn raise_descriptor_limit() {
    match descriptors::raise_limit() {
        Ok(r) if r.after != r.before => {
            tracing::info!("open file limit raised from {} to {}", r.before, r.after)
        }
        Ok(r) => tracing::debug!("open file limit {}", r.after),
        Err(err) => tracing::warn!("cannot raise the open file limit: {err}"),
    }
}

/// The signals the daemon answers.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        let install = |kind| {
            signal(kind).map_err(|err| anyhow::anyhow!("cannot install signal handlers: {err}"))
        };
        Ok(Self {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }
}

/// Background tasks of `run` that get one more turn at shutdown.
#[derive(Default)]
struct Tasks {
    delivery: Option<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
    /// `--web-config-file`, re-read on SIGHUP.
    security: Option<Arc<Security>>,
}

async fn serve_command(command: Command, argv: Vec<OsString>) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let (reload_tx, reload_rx) = mpsc::channel::<Box<RunArgs>>();
    let reloadable = matches!(command, Command::Run(_));
    let stop = Arc::new(AtomicBool::new(false));
    let worker_stop = Arc::clone(&stop);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Tasks::default();
    let mut work = match command {
        Command::Record(args) => tokio::task::spawn_blocking(move || record(&args, &worker_stop)),
        Command::Run(args) => {
            start_run(*args, worker_stop, reload_rx, shutdown_rx, &mut tasks).await?
        }
        Command::Check(_) => unreachable!("`check` runs before the runtime starts"),
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
            _ = signals.interrupt.recv() => { tracing::info!("SIGINT: flushing the current window"); break None }
            _ = signals.terminate.recv() => { tracing::info!("SIGTERM: flushing the current window"); break None }
            _ = signals.hangup.recv() => {
                reload(&argv, reloadable, &reload_tx);
                reload_web(tasks.security.as_deref());
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    let joined = match finished {
        Some(joined) => joined,
        None => work.await,
    };
    // Delivery gets one more attempt per queued profile; what fails stays in the spool.
    let _ = shutdown_tx.send(true);
    if let Some(handle) = tasks.delivery {
        let _ = handle.await;
    }
    if let Some(handle) = tasks.listener {
        let _ = handle.await;
    }
    joined.map_err(anyhow::Error::from)?
}

/// Binds the listener, starts delivery, and moves the run loop onto the pipeline thread.
async fn start_run(
    args: RunArgs,
    stop: Arc<AtomicBool>,
    reloads: mpsc::Receiver<Box<RunArgs>>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let metrics = Arc::new(Metrics::default());
    // Requests wait in the queue until the next tick, also those whose client left meanwhile
    // (which already gave their place back): room for a few rounds of those.
    let queue = (args.listener.pprof_max_requests as usize * 4).max(16);
    let (requests, ondemand) = ondemand::channel(
        queue,
        args.limits.max_stacks as usize,
        Arc::clone(&metrics.pprof),
    );
    tasks.security = web_security(&args)?;
    // Bound first, so that a taken port is a start-up error; served once the state
    // exists. `run` logs the address when the pipeline is up.
    let bound = match args.listen {
        Listen(Some(addr)) => Some(serve::bind(addr).await?),
        Listen(None) => None,
    };
    let web = Arc::new(WebState {
        metrics: Arc::clone(&metrics),
        dump_dir: args.files_dir(),
        page_window: args.page_window,
        heartbeat: AtomicU64::new(0),
        stall_after: (args.collect_interval * 5).max(Duration::from_secs(10)),
        address: bound.as_ref().map(|(_, address)| *address),
        allowed_hosts: bound
            .as_ref()
            .and_then(|(_, address)| hosts::allowed_hosts(*address, &args.listen_host)),
        listener: listener_config(&args, tasks.security.clone()),
        file_workers: Default::default(),
        pprof: Some(PprofEndpoint::new(
            requests,
            Kind::ALL
                .into_iter()
                .filter(|k| args.profiles.iter().any(|p| p.name() == k.source()))
                .collect(),
            (
                args.listener.pprof_max_seconds,
                args.listener.pprof_max_requests as usize,
            ),
            args.collect_interval,
            Arc::clone(&metrics.pprof),
        )),
    });
    if let Some((listener, _)) = bound {
        tasks.listener = Some(tokio::spawn(serve::serve(
            listener,
            Arc::clone(&web),
            shutdown.clone(),
        )));
    }
    let dump = open_dump(&args)?;
    let exporter = prepare_server(&args)?.map(|setup| {
        let (exporter, handle) =
            Exporter::start(setup.client, setup.spool, setup.delivery, shutdown);
        metrics.set_delivery(Arc::clone(&exporter.stats));
        tasks.delivery = Some(handle);
        exporter
    });
    // The exporter moves into the pipeline thread and is dropped when it ends, which closes
    // the delivery queue.
    Ok(tokio::task::spawn_blocking(move || {
        run(
            &args,
            dump,
            &stop,
            exporter.as_ref(),
            &web,
            &reloads,
            ondemand,
        )
    }))
}

/// `--web-config-file`, read and checked before anything starts: a bad file is a one-line
/// error naming it, the cause and the fix.
fn web_security(args: &RunArgs) -> anyhow::Result<Option<Arc<Security>>> {
    let Some(path) = &args.listener.web_config_file else {
        return Ok(None);
    };
    if args.listen.0.is_none() {
        tracing::warn!(
            "--web-config-file {} is not used: the listener is off (--listen off)",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(Arc::new(Security::load(path)?)))
}

/// SIGHUP: re-reads `--web-config-file`; a file that no longer reads leaves the running one.
fn reload_web(security: Option<&Security>) {
    let Some(security) = security else {
        return;
    };
    match security.reload() {
        Ok(described) => tracing::info!(
            "SIGHUP: web config {} re-read: {described}",
            security.path().display()
        ),
        Err(err) => {
            tracing::error!("SIGHUP: the web config file is invalid, the running one stays: {err}")
        }
    }
}

fn listener_config(args: &RunArgs, security: Option<Arc<Security>>) -> ListenerConfig {
    let l = &args.listener;
    ListenerConfig {
        security,
        max_connections: l.listen_max_connections as usize,
        header_timeout: l.listen_header_timeout,
        idle_timeout: l.listen_idle_timeout,
        descriptor_reserve: descriptor_reserve(
            l.listen_descriptor_reserve,
            descriptors::soft_limit().ok(),
        ),
    }
}

/// The reserve within half the open file limit: a reserve as large as a small limit (a
/// container's 256, say) would refuse every connection.
fn descriptor_reserve(wanted: u64, limit: Option<u64>) -> u64 {
    match limit {
        Some(limit) if wanted > limit / 2 => {
            tracing::warn!(
                "--listen-descriptor-reserve {wanted} is over half the open file limit {limit}: \
                 keeping {} free instead; raise LimitNOFILE (or the container's limit) to keep {wanted}",
                limit / 2
            );
            limit / 2
        }
        _ => wanted,
    }
}

/// SIGHUP: re-reads the command line and config file and hands a valid result to the
/// pipeline; an invalid one is logged and the running configuration stays.
fn reload(argv: &[OsString], reloadable: bool, tx: &mpsc::Sender<Box<RunArgs>>) {
    if !reloadable {
        tracing::info!("SIGHUP: only `profilerd run` reloads; ignored");
        return;
    }
    match config::parse_from(argv.to_vec()) {
        Ok(Cli {
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

#[cfg(test)]
mod tests {
    use super::descriptor_reserve;

    #[test]
    fn the_descriptor_reserve_stays_within_half_the_limit() {
        assert_eq!(descriptor_reserve(256, Some(65_536)), 256);
        assert_eq!(descriptor_reserve(256, Some(1024)), 256);
        assert_eq!(descriptor_reserve(256, Some(300)), 150);
        assert_eq!(descriptor_reserve(256, None), 256);
    }
}
