//! `profilerd record` and `profilerd run`: the pipeline driven to files.

use std::{
    fs,
    io::IsTerminal,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    aggregate::{ProcessProfile, Window},
    cli::{Format, LimitArgs, RecordArgs, RunArgs, TargetArgs, DEFAULT_DUMP_DIR},
    delivery::{DeliveryConfig, Exporter},
    labels::LabelConfig,
    output::{flame_graph_svg, folded_lines, write_atomic, DumpDir},
    pipeline::{Pipeline, PipelineConfig},
    pprof, preflight,
    procinfo::is_running,
    sampler::SamplerConfig,
    spool::Spool,
    symbolize::SymbolsConfig,
    upload::{self, Auth, Client, ServerConfig},
    BPF_OBJECT,
};

/// Checks privileges and targets, then builds the pipeline configuration.
fn prepare(target: &TargetArgs, limits: &LimitArgs) -> Result<PipelineConfig> {
    preflight::check_privileges()?;
    preflight::check_perf_events(target.frequency)?;
    preflight::check_pids(&target.pids)?;
    let cgroups = preflight::resolve_cgroups(&target.cgroups)?;
    Ok(PipelineConfig {
        sampler: SamplerConfig {
            frequency: target.frequency,
            pids: target.pids.clone(),
            cgroups,
            counts_map_entries: limits.counts_map_entries,
            stack_map_entries: limits.stack_map_entries,
            known_pids_entries: limits.max_processes,
            notify_ring_bytes: 256 << 10,
        },
        symbols: SymbolsConfig {
            max_processes: limits.max_processes as usize,
            max_kernel_symbols: limits.max_kernel_symbols as usize,
        },
        max_stacks: limits.max_stacks as usize,
    })
}

fn describe_targets(target: &TargetArgs) -> String {
    let mut parts = Vec::new();
    if !target.pids.is_empty() {
        parts.push(format!("pids {:?}", target.pids));
    }
    for cgroup in &target.cgroups {
        parts.push(format!("cgroup {}", cgroup.display()));
    }
    if parts.is_empty() {
        "all processes".to_string()
    } else {
        parts.join(", ")
    }
}

fn comments(window: &Window, target: &TargetArgs, process: Option<&ProcessProfile>) -> Vec<String> {
    let mut comments = vec![
        format!("profilerd {}", env!("CARGO_PKG_VERSION")),
        format!(
            "cpu-clock sampling at {} Hz, targets: {}",
            window.frequency,
            describe_targets(target)
        ),
    ];
    if let Some(p) = process {
        comments.push(format!(
            "pid {} comm {} exe {} cgroup {}",
            p.info.pid, p.info.comm, p.info.exe, p.info.cgroup
        ));
    }
    comments
}

/// One collect tick; returns false once `stop` was raised or `end` passed.
fn tick(
    pipeline: &mut Pipeline,
    next_collect: &mut Instant,
    interval: Duration,
    end: Option<Instant>,
    stop: &AtomicBool,
) -> Result<bool> {
    let deadline = end.map_or(*next_collect, |e| e.min(*next_collect));
    pipeline.wait_until(deadline, stop);
    pipeline.collect().context("draining the BPF maps failed")?;
    let now = Instant::now();
    *next_collect += interval;
    if *next_collect < now {
        // Fell behind (suspended, overloaded): skip missed ticks instead of bursting.
        *next_collect = now + interval;
    }
    let running = !stop.load(Ordering::Relaxed) && end.is_none_or(|e| now < e);
    Ok(running)
}

/// `profilerd record`: one profile of the selected processes.
pub fn record(args: &RecordArgs, stop: &AtomicBool) -> Result<()> {
    let config = prepare(&args.target, &args.limits)?;
    let (format, output) = args.resolved_output();
    // Fail before sampling, not after 30 s, when the output cannot be written.
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&output)
        .with_context(|| {
            format!(
                "cannot write --output {}: pick a writable path",
                output.display()
            )
        })?;

    let mut pipeline = Pipeline::start(BPF_OBJECT, &config)?;
    let started = Instant::now();
    let end = started + args.duration;
    tracing::info!(
        targets = %describe_targets(&args.target),
        frequency = args.target.frequency,
        cpus = pipeline.cpus(),
        duration = ?args.duration,
        "recording"
    );
    let progress = std::io::stderr().is_terminal();
    let mut next_collect = started + args.collect_interval.min(args.duration);
    loop {
        let running = tick(
            &mut pipeline,
            &mut next_collect,
            args.collect_interval,
            Some(end),
            stop,
        )?;
        if progress {
            let left = end.saturating_duration_since(Instant::now()).as_secs();
            eprint!(
                "\rrecording {}: {left:>4}s left, {} samples ",
                describe_targets(&args.target),
                pipeline.accounting.in_profiles
            );
        }
        if !running {
            break;
        }
        if !args.target.pids.is_empty() && !args.target.pids.iter().any(|&p| is_running(p)) {
            tracing::info!("every --pid has exited; writing the profile now");
            pipeline.collect().context("draining the BPF maps failed")?;
            break;
        }
    }
    if progress {
        eprintln!();
    }
    let window = pipeline.take_window();
    let processes: Vec<&ProcessProfile> = window.processes.iter().collect();
    let bytes = match format {
        Format::Pprof => pprof::to_gzip(&pprof::encode(
            &window,
            &processes,
            &comments(&window, &args.target, None),
        )),
        Format::Folded => {
            let mut text = folded_lines(&processes).join("\n");
            text.push('\n');
            text.into_bytes()
        }
        Format::Svg => {
            let title = format!(
                "profilerd: {} ({:.0?})",
                describe_targets(&args.target),
                window.duration
            );
            flame_graph_svg(&folded_lines(&processes), &title)?
        }
    };
    write_atomic(&output, &bytes)?;
    tracing::info!(
        output = %output.display(),
        samples = window.samples(),
        processes = window.processes.len(),
        "wrote profile"
    );
    tracing::info!("sample accounting: {}", pipeline.accounting.summary());
    Ok(())
}

/// The server side of `run`, checked before anything starts: URL, credentials, labels, spool.
pub struct ServerSetup {
    pub client: Client,
    pub spool: Spool,
    pub delivery: DeliveryConfig,
    pub labels: LabelConfig,
}

/// Validates `--server` and its companions; `None` when no server is configured.
pub fn prepare_server(args: &RunArgs) -> Result<Option<ServerSetup>> {
    let server = &args.server;
    let Some(url) = &server.server else {
        return Ok(None);
    };
    let url = upload::parse_url(url)?;
    let labels = LabelConfig::new(server.service_name.clone(), &server.tags)?;
    let password = upload::read_secret(
        "--basic-auth-password-file",
        server.basic_auth_password_file.as_ref(),
        "PROFILERD_BASIC_AUTH_PASSWORD",
    )?;
    let token = upload::read_secret(
        "--bearer-token-file",
        server.bearer_token_file.as_ref(),
        "PROFILERD_BEARER_TOKEN",
    )?;
    // Precedence as the server's clients use it: basic auth, then bearer token.
    let auth = match (&server.basic_auth_user, password, token) {
        (Some(user), Some(password), _) => Auth::Basic {
            user: user.clone(),
            password,
        },
        (Some(_), None, _) => return Err(upload::ServerConfigError::MissingPassword.into()),
        (None, _, Some(token)) => Auth::Bearer(token),
        (None, _, None) => Auth::None,
    };
    let headers = server
        .headers
        .iter()
        .map(|h| upload::parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let client = Client::new(ServerConfig {
        url,
        protocol: server.protocol,
        timeout: server.upload_timeout,
        auth,
        tenant: server.tenant_id.clone(),
        headers,
    })?;
    let spool = Spool::open(&server.spool_dir, server.spool_max_bytes)?;
    let delivery = DeliveryConfig {
        retries: server.upload_retries,
        max_backoff: server.retry_max_backoff,
        queue: server.upload_queue as usize,
        dump_dir: args
            .dump_dir()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DUMP_DIR)),
    };
    Ok(Some(ServerSetup {
        client,
        spool,
        delivery,
        labels,
    }))
}

/// `profilerd run`: one pprof per sampled process every upload interval, to the dump dir
/// and/or the server (through `exporter`).
pub fn run(
    args: &RunArgs,
    stop: &AtomicBool,
    server: Option<(&Exporter, &LabelConfig)>,
) -> Result<()> {
    let config = prepare(&args.target, &args.limits)?;
    let mut dump = match args.dump_dir() {
        Some(dir) => Some(DumpDir::open(
            &dir,
            args.dump_max_files as usize,
            args.dump_max_bytes,
        )?),
        None => None,
    };
    let mut pipeline = Pipeline::start(BPF_OBJECT, &config)?;
    let started = Instant::now();
    tracing::info!(
        targets = %describe_targets(&args.target),
        frequency = args.target.frequency,
        cpus = pipeline.cpus(),
        collect_interval = ?args.collect_interval,
        upload_interval = ?args.upload_interval,
        dump_dir = %dump.as_ref().map_or("none".to_string(), |d| d.path().display().to_string()),
        server = %args.server.server.as_deref().unwrap_or("none"),
        "profilerd running: one pprof per sampled process every upload interval; SIGINT/SIGTERM flush and exit"
    );
    let end = args.duration.map(|d| started + d);
    let mut next_collect = started + args.collect_interval;
    let mut next_upload = started + args.upload_interval;
    loop {
        let running = tick(
            &mut pipeline,
            &mut next_collect,
            args.collect_interval,
            end,
            stop,
        )?;
        let now = Instant::now();
        if now >= next_upload || !running {
            let window = pipeline.take_window();
            export_window(dump.as_mut(), server, &window, &args.target);
            next_upload = now.max(next_upload) + args.upload_interval;
            tracing::info!(
                tracked_processes = pipeline.symbols().tracked(),
                last_drain = ?pipeline.accounting.last_drain,
                counts_map_fill = pipeline.accounting.counts_entries,
                stack_map_fill = pipeline.accounting.stack_entries,
                dump_removed = dump.as_ref().map_or(0, |d| d.removed),
                "samples: {}",
                pipeline.accounting.summary()
            );
            if let Some((exporter, _)) = server {
                tracing::info!("delivery: {}", exporter.summary());
            }
        }
        if !running {
            break;
        }
    }
    tracing::info!(
        profiles_written = dump.as_ref().map_or(0, |d| d.written),
        "profilerd stopped; last window flushed"
    );
    Ok(())
}

fn export_window(
    mut dump: Option<&mut DumpDir>,
    server: Option<(&Exporter, &LabelConfig)>,
    window: &Window,
    target: &TargetArgs,
) {
    let mut written = 0;
    let until = window.start + window.duration;
    for process in &window.processes {
        let comments = comments(window, target, Some(process));
        // The server's limits decide the parts; a profile within them (the usual case) is
        // encoded once and written to both places.
        let parts: Vec<Vec<u8>> = match server {
            Some(_) => pprof::encode_split(
                window,
                process,
                &comments,
                pprof::MAX_SAMPLES,
                pprof::MAX_BYTES,
            )
            .iter()
            .map(pprof::to_gzip)
            .collect(),
            None => Vec::new(),
        };
        if let Some(dump) = dump.as_deref_mut() {
            let whole = match parts.as_slice() {
                [only] => only.clone(),
                _ => pprof::to_gzip(&pprof::encode(window, &[process], &comments)),
            };
            let name = DumpDir::profile_name(&process.info.comm, process.info.pid, window.start);
            match dump.write(&name, &whole) {
                Ok(_) => written += 1,
                Err(err) => tracing::error!("{err}"),
            }
        }
        if let Some((exporter, labels)) = server {
            if parts.len() > 1 {
                exporter.count_split();
            }
            let labels = labels.for_process(&process.info);
            for part in parts {
                exporter.submit(labels.clone(), window.start, until, part);
            }
        }
    }
    tracing::info!(
        processes = window.processes.len(),
        files = written,
        samples = window.samples(),
        "window exported"
    );
}
