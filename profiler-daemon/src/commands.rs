//! `profilerd record` and `profilerd run`: the pipeline driven to files.

use std::{
    collections::BTreeMap,
    fs,
    io::IsTerminal,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::Receiver,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

use crate::{
    aggregate::{ProcessProfile, Window},
    cli::{Format, LimitArgs, Mode, RecordArgs, RunArgs, TargetArgs, DEFAULT_DUMP_DIR},
    delivery::{DeliveryConfig, Exporter},
    labels::LabelConfig,
    metrics::{MapCapacity, Snapshot},
    output::{flame_graph_svg, folded_lines, rfc3339, utc_timestamp, write_atomic, DumpDir},
    pipeline::{Pipeline, PipelineConfig},
    pprof, preflight,
    procinfo::is_running,
    sampler::{CgroupSelector, SamplerConfig},
    spool::Spool,
    symbolize::SymbolsConfig,
    targets::{Section, SectionSpec, Selector},
    trigger::{Rule, Rules, Scene},
    triggered::{Captures, Kept},
    upload::{self, Auth, Client, ServerConfig},
    watch::{CgroupTarget, WatchConfig, Watcher},
    web::{KeptSummary, WebState, SIDECAR_SUFFIX},
    BPF_OBJECT,
};

/// What the kernel filter holds and what the watcher watches.
struct Targets {
    pids: Vec<u32>,
    selectors: Vec<CgroupSelector>,
    /// `--cgroup`s, watched as a whole.
    cgroup_targets: Vec<CgroupTarget>,
    sections: Vec<Section>,
}

/// Resolves `--pid`, `--cgroup` and the `[[target]]` sections on this host. With a filter
/// (`--pid` or `--cgroup`), the sections' pids and cgroups join it; process and executable
/// patterns cannot be filtered in the kernel and match only inside it.
fn resolve_targets(target: &TargetArgs, specs: &[SectionSpec]) -> Result<Targets> {
    preflight::check_pids(&target.pids)?;
    let (mut selectors, cgroup_targets): (Vec<_>, Vec<_>) =
        preflight::resolve_cgroups(&target.cgroups)?
            .into_iter()
            .unzip();
    let mut pids = target.pids.clone();
    let filtered = !pids.is_empty() || !selectors.is_empty();
    let mut sections = Vec::new();
    for spec in specs {
        let mut selector = None;
        let section = Section::resolve(spec, |path| {
            let (found, cgroup) = preflight::resolve_cgroups(std::slice::from_ref(path))?.remove(0);
            selector = Some(found);
            Ok::<_, preflight::PreflightError>(cgroup)
        })
        .map_err(|err| {
            anyhow::anyhow!(
                "[[target]] {} (line {}): {err}",
                spec.display_name(),
                spec.line
            )
        })?;
        if filtered {
            match &section.selector {
                Selector::Pids(more) => pids.extend(more),
                Selector::Cgroup(_) => selectors.extend(selector),
                Selector::Process(_) | Selector::Exe(_) => tracing::warn!(
                    "[[target]] {}: --pid/--cgroup limit sampling, so it matches only processes they select",
                    section.name
                ),
            }
        }
        sections.push(section);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(Targets {
        pids,
        selectors,
        cgroup_targets,
        sections,
    })
}

/// Checks privileges and targets, then builds the pipeline configuration.
fn prepare(
    target: &TargetArgs,
    limits: &LimitArgs,
    specs: &[SectionSpec],
) -> Result<(PipelineConfig, Vec<CgroupTarget>, Vec<Section>)> {
    preflight::check_privileges()?;
    preflight::check_perf_events(target.frequency)?;
    let targets = resolve_targets(target, specs)?;
    // The host report of `profilerd check`, in the log, once the fatal problems above have
    // had their one-line error: what is left are notes (and problems of unused features).
    let wanted = crate::check::Wanted {
        frequency: target.frequency,
        cgroups: !target.cgroups.is_empty(),
        ..Default::default()
    };
    for item in crate::check::report(&crate::check::Host::real(), &wanted) {
        match item.status {
            crate::check::Status::Ok => tracing::debug!("preflight: {item}"),
            _ => tracing::warn!("preflight: {item}"),
        }
    }
    let config = PipelineConfig {
        sampler: SamplerConfig {
            frequency: target.frequency,
            pids: targets.pids,
            cgroups: targets.selectors,
            counts_map_entries: limits.counts_map_entries,
            stack_map_entries: limits.stack_map_entries,
            kernel_stack_map_entries: limits.kernel_stack_map_entries,
            known_pids_entries: limits.max_processes,
            filter_entries: limits.max_filter_entries,
            notify_ring_bytes: 256 << 10,
        },
        symbols: SymbolsConfig {
            max_processes: limits.max_processes as usize,
            max_kernel_symbols: limits.max_kernel_symbols as usize,
            max_user_symbols: limits.max_user_symbols as usize,
            file_ttl: limits.symbol_file_ttl,
        },
        max_stacks: limits.max_stacks as usize,
    };
    Ok((config, targets.cgroup_targets, targets.sections))
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
    let (config, _, _) = prepare(&args.target, &args.limits, &[])?;
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
    crate::privileges::drop_after_attach();
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
    let Some((client, labels)) = server_client(args)? else {
        return Ok(None);
    };
    let server = &args.server;
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

/// The HTTP client and labels of `--server` and its companions, without touching the spool.
pub fn server_client(args: &RunArgs) -> Result<Option<(Client, LabelConfig)>> {
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
    Ok(Some((client, labels)))
}

/// `profilerd run`: in `continuous` mode one pprof per sampled process every upload interval;
/// in `triggered` mode only the profiles of targets whose rules fired. Both go to the dump dir
/// and/or the server (through `exporter`).
pub fn run(
    args: &RunArgs,
    stop: &AtomicBool,
    server: Option<(&Exporter, LabelConfig)>,
    web: &WebState,
    reloads: &Receiver<Box<RunArgs>>,
) -> Result<()> {
    let (exporter, labels) = match server {
        Some((exporter, labels)) => (Some(exporter), Some(labels)),
        None => (None, None),
    };
    // What is in effect: the start-up settings, then whatever reloads changed.
    let mut active = args.clone();
    let (config, mut cgroup_targets, mut sections) =
        prepare(&args.target, &args.limits, &args.sections)?;
    let rules = args.trigger.rules();
    // Service names for the page; the same rules as the server's labels.
    let mut page_labels = LabelConfig::new(args.server.service_name.clone(), &args.server.tags)?
        .with_sections(sections.clone())?;
    let mut labels = labels
        .map(|l| l.with_sections(sections.clone()))
        .transpose()?;
    let mut dump = match args.files_dir() {
        Some(dir) => Some(DumpDir::open(
            &dir,
            args.dump_max_files as usize,
            args.dump_max_bytes,
        )?),
        None => None,
    };
    let mut pipeline = Pipeline::start(BPF_OBJECT, &config)?;
    crate::privileges::drop_after_attach();
    if let Some(address) = web.address {
        tracing::info!(
            "HTTP listener on http://{address}/: kept profiles at /, /metrics, /healthz"
        );
    }
    let capacity = MapCapacity {
        counts: config.sampler.counts_map_entries,
        user_stacks: config.sampler.stack_map_entries,
        kernel_stacks: config.sampler.kernel_stack_map_entries,
    };
    let mut triggers_fired: BTreeMap<&'static str, u64> = BTreeMap::new();
    let started = Instant::now();
    let destination = format!(
        "{}{}",
        dump.as_ref().map_or("no files".to_string(), |d| format!(
            "files in {}",
            d.path().display()
        )),
        args.server
            .server
            .as_deref()
            .map_or(String::new(), |s| format!(" and server {s}"))
    );
    let end = args.duration.map(|d| started + d);
    let mut next_collect = started + args.collect_interval;
    let mut next_report = started + args.upload_interval;
    let mut mode = match args.trigger.mode {
        Mode::Continuous => {
            tracing::info!(
                targets = %describe_targets(&args.target),
                frequency = args.target.frequency,
                cpus = pipeline.cpus(),
                collect_interval = ?args.collect_interval,
                upload_interval = ?args.upload_interval,
                "profilerd running in continuous mode: one pprof per sampled process every upload interval to {destination}; SIGINT/SIGTERM flush and exit"
            );
            None
        }
        Mode::Triggered => {
            let processes = cgroup_targets.is_empty() || !args.target.pids.is_empty();
            let watcher = Watcher::new(watch_config(args, &cgroup_targets, &sections));
            let captures = Captures::new(
                args.trigger.pre_trigger,
                args.trigger.post_trigger,
                args.trigger.history_max_bytes as usize,
                args.target.frequency,
            );
            let watched = match (processes, cgroup_targets.is_empty()) {
                (true, true) => format!("each process of {}", describe_targets(&args.target)),
                (true, false) => format!(
                    "each of pids {:?} and each cgroup as a whole ({})",
                    args.target.pids,
                    describe_cgroups(&cgroup_targets)
                ),
                (false, _) => format!(
                    "each cgroup as a whole ({})",
                    describe_cgroups(&cgroup_targets)
                ),
            };
            tracing::info!(
                frequency = args.target.frequency,
                collect_interval = ?args.collect_interval,
                pre_trigger = ?args.trigger.pre_trigger,
                post_trigger = ?args.trigger.post_trigger,
                "profilerd running in triggered mode: watching {watched}; rules {}; kept profiles ({{cpu|mem|thread}}.<event>.<time>.pb.gz + .svg) go to {destination}; a status line every {:?}",
                describe_rules(&rules),
                args.upload_interval
            );
            Some((watcher, captures))
        }
    };
    loop {
        let running = tick(
            &mut pipeline,
            &mut next_collect,
            active.collect_interval,
            end,
            stop,
        )?;
        web.beat();
        while let Ok(new) = reloads.try_recv() {
            reload(
                &mut active,
                *new,
                Live {
                    pipeline: &mut pipeline,
                    mode: &mut mode,
                    cgroup_targets: &mut cgroup_targets,
                    sections: &mut sections,
                    exporter,
                    labels: &mut labels,
                    page_labels: &mut page_labels,
                },
            );
        }
        let server = exporter.zip(labels.as_ref());
        let now = Instant::now();
        let report = now >= next_report || !running;
        match &mut mode {
            None => {
                if report {
                    let window = pipeline.take_window();
                    export_window(dump.as_mut(), server, &window, &active.target);
                }
            }
            Some((watcher, captures)) => {
                let slice = pipeline.take_window();
                let wall = SystemTime::now();
                for firing in watcher.tick(&slice, now) {
                    for scene in &firing.scenes {
                        *triggers_fired.entry(scene.metric.name()).or_insert(0) += 1;
                        tracing::info!(
                            target = %firing.name,
                            trigger = scene.metric.name(),
                            reason = scene.reason.text(),
                            cur = scene.cur,
                            avg = scene.avg,
                            min = scene.rule.min,
                            diff = scene.rule.diff,
                            abs = scene.rule.abs,
                            max = scene.rule.max,
                            cooldown = ?scene.rule.cooldown,
                            "trigger fired"
                        );
                    }
                    captures.fire(firing, wall);
                }
                let mut kept = captures.on_slice(slice, wall);
                if !running {
                    kept.extend(captures.flush(SystemTime::now()));
                }
                for kept in kept {
                    write_kept(dump.as_mut(), server, &kept, &active.target, &page_labels);
                }
                if report {
                    tracing::info!("status: {}", watcher.status(3));
                    let stats = captures.stats;
                    tracing::info!(
                        fired = stats.fired,
                        merged = stats.merged,
                        kept = stats.kept,
                        history_bytes = captures.history_bytes(),
                        history_dropped = stats.history_dropped,
                        file_reads = watcher.file_reads,
                        dropped_targets = watcher.dropped_targets,
                        "triggers"
                    );
                }
            }
        }
        let history_bytes = mode.as_ref().map_or(0, |(_, c)| c.history_bytes() as u64);
        web.metrics.publish(Snapshot {
            accounting: pipeline.accounting,
            capacity,
            symbols: pipeline.symbols().stats(),
            tracked_processes: pipeline.symbols().tracked() as u64,
            triggers_fired: triggers_fired.clone(),
            profiles_written: dump.as_ref().map_or(0, |d| d.written),
            dump_removed: dump.as_ref().map_or(0, |d| d.removed),
            history_bytes,
            spool: exporter.map(Exporter::spool_counts),
        });
        if report {
            next_report = now.max(next_report) + active.upload_interval;
            // A window's profiles were just freed: hand the freed pages back to the system so
            // that RSS follows what is live, not the high-water mark of the busiest window.
            // SAFETY: malloc_trim only releases unused heap memory.
            unsafe { libc::malloc_trim(0) };
            tracing::info!(
                tracked_processes = pipeline.symbols().tracked(),
                last_drain = ?pipeline.accounting.last_drain,
                counts_map_fill = pipeline.accounting.counts_entries,
                user_stack_map_fill = pipeline.accounting.stack_entries,
                kernel_stack_map_fill = pipeline.accounting.kernel_stack_entries,
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

/// The trigger watcher's settings from `args` and the resolved cgroups.
fn watch_config(args: &RunArgs, cgroups: &[CgroupTarget], sections: &[Section]) -> WatchConfig {
    WatchConfig {
        sections: sections.to_vec(),
        rules: args.trigger.rules(),
        cores_flag: args.trigger.cpu_cores,
        memory_flag: args.trigger.memory_limit,
        frequency: args.target.frequency,
        processes: cgroups.is_empty() || !args.target.pids.is_empty(),
        cgroups: cgroups.to_vec(),
        max_targets: args.limits.max_processes as usize,
    }
}

/// What a reload can change in the running daemon.
struct Live<'a> {
    pipeline: &'a mut Pipeline,
    mode: &'a mut Option<(Watcher, Captures)>,
    cgroup_targets: &'a mut Vec<CgroupTarget>,
    sections: &'a mut Vec<Section>,
    exporter: Option<&'a Exporter>,
    labels: &'a mut Option<LabelConfig>,
    page_labels: &'a mut LabelConfig,
}

/// Settings that only a restart changes: they size kernel maps, attach perf events, or own
/// files and sockets. A reload that changes them says so and leaves them as they are.
fn restart_only(old: &RunArgs, new: &RunArgs) -> Vec<&'static str> {
    let debug = |v: &dyn std::fmt::Debug| format!("{v:?}");
    [
        ("--frequency", old.target.frequency != new.target.frequency),
        ("--mode", old.trigger.mode != new.trigger.mode),
        (
            "map and cache limits",
            debug(&old.limits) != debug(&new.limits),
        ),
        (
            "--dump-dir / --dump-max-files / --dump-max-bytes",
            old.files_dir() != new.files_dir()
                || old.dump_max_files != new.dump_max_files
                || old.dump_max_bytes != new.dump_max_bytes,
        ),
        ("--listen", old.listen != new.listen),
        ("--page-window", old.page_window != new.page_window),
        ("--duration", old.duration != new.duration),
        (
            "--history-max-bytes",
            old.trigger.history_max_bytes != new.trigger.history_max_bytes,
        ),
        (
            "--server (added or removed)",
            old.server.server.is_some() != new.server.server.is_some(),
        ),
        (
            "spool and queue settings",
            old.server.spool_dir != new.server.spool_dir
                || old.server.spool_max_bytes != new.server.spool_max_bytes
                || old.server.upload_queue != new.server.upload_queue
                || old.server.upload_retries != new.server.upload_retries
                || old.server.retry_max_backoff != new.server.retry_max_backoff,
        ),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name)
    .collect()
}

/// Applies a reloaded configuration: targets, rules, tags and server settings change now,
/// trigger history, queued and spooled profiles stay. A part that fails to apply is logged
/// and keeps its old value; the other parts still apply.
fn reload(active: &mut RunArgs, new: RunArgs, live: Live<'_>) {
    let mut applied = Vec::new();
    for name in restart_only(active, &new) {
        tracing::warn!("reload: {name} changed; that takes effect at the next restart");
    }

    if active.target.pids != new.target.pids
        || active.target.cgroups != new.target.cgroups
        || active.sections != new.sections
    {
        let resolved = resolve_targets(&new.target, &new.sections).and_then(|t| {
            // Checked before anything changes, so that a failure leaves all as it was.
            let page = live.page_labels.clone().with_sections(t.sections.clone())?;
            Ok((t, page))
        });
        match resolved {
            Err(err) => tracing::error!("reload: targets unchanged: {}", error_line(&err)),
            Ok((targets, page)) => {
                match live.pipeline.set_filters(&targets.pids, &targets.selectors) {
                    Err(err) => tracing::error!("reload: targets unchanged: {err}"),
                    Ok(()) => {
                        active.target.pids = new.target.pids.clone();
                        active.target.cgroups = new.target.cgroups.clone();
                        active.sections = new.sections.clone();
                        *live.cgroup_targets = targets.cgroup_targets;
                        *live.page_labels = page;
                        if let Some(labels) = live.labels.take() {
                            *live.labels = labels.with_sections(targets.sections.clone()).ok();
                        }
                        *live.sections = targets.sections;
                        applied.push("targets");
                    }
                }
            }
        }
    }

    let trigger_changed = debug_text(&active.trigger.rules()) != debug_text(&new.trigger.rules())
        || active.trigger.cpu_cores != new.trigger.cpu_cores
        || active.trigger.memory_limit != new.trigger.memory_limit
        || active.trigger.pre_trigger != new.trigger.pre_trigger
        || active.trigger.post_trigger != new.trigger.post_trigger;
    if trigger_changed {
        let t = &mut active.trigger;
        t.cpu_trigger = new.trigger.cpu_trigger;
        t.mem_trigger = new.trigger.mem_trigger;
        t.thread_trigger = new.trigger.thread_trigger;
        t.cpu_max = new.trigger.cpu_max;
        t.cpu_cores = new.trigger.cpu_cores;
        t.memory_limit = new.trigger.memory_limit;
        t.pre_trigger = new.trigger.pre_trigger;
        t.post_trigger = new.trigger.post_trigger;
        applied.push("rules");
    }
    if let Some((watcher, captures)) = live.mode.as_mut() {
        // Targets or rules: the watcher keeps the history of every target that stays.
        watcher.reconfigure(watch_config(active, live.cgroup_targets, live.sections));
        captures.set_windows(active.trigger.pre_trigger, active.trigger.post_trigger);
    }

    if debug_text(&active.server.tags) != debug_text(&new.server.tags)
        || active.server.service_name != new.server.service_name
    {
        let labels = LabelConfig::new(new.server.service_name.clone(), &new.server.tags)
            .and_then(|l| l.with_sections(live.sections.clone()));
        match labels {
            Err(err) => tracing::error!("reload: tags unchanged: {err}"),
            Ok(labels) => {
                *live.page_labels = labels.clone();
                if live.labels.is_some() {
                    *live.labels = Some(labels);
                }
                active.server.tags = new.server.tags.clone();
                active.server.service_name = new.server.service_name.clone();
                applied.push("tags");
            }
        }
    }

    let client_changed = active.server.server != new.server.server
        || active.server.protocol != new.server.protocol
        || active.server.basic_auth_user != new.server.basic_auth_user
        || active.server.basic_auth_password_file != new.server.basic_auth_password_file
        || active.server.bearer_token_file != new.server.bearer_token_file
        || active.server.tenant_id != new.server.tenant_id
        || active.server.headers != new.server.headers
        || active.server.upload_timeout != new.server.upload_timeout;
    if let (Some(exporter), true, true) =
        (live.exporter, client_changed, new.server.server.is_some())
    {
        match server_client(&new) {
            Err(err) => tracing::error!("reload: server settings unchanged: {}", error_line(&err)),
            Ok(None) => {}
            Ok(Some((client, _))) => {
                exporter.replace_client(client);
                let s = &mut active.server;
                s.server = new.server.server.clone();
                s.protocol = new.server.protocol;
                s.basic_auth_user = new.server.basic_auth_user.clone();
                s.basic_auth_password_file = new.server.basic_auth_password_file.clone();
                s.bearer_token_file = new.server.bearer_token_file.clone();
                s.tenant_id = new.server.tenant_id.clone();
                s.headers = new.server.headers.clone();
                s.upload_timeout = new.server.upload_timeout;
                applied.push("server");
            }
        }
    }

    if active.collect_interval != new.collect_interval
        || active.upload_interval != new.upload_interval
    {
        active.collect_interval = new.collect_interval;
        active.upload_interval = new.upload_interval;
        applied.push("intervals");
    }
    if applied.is_empty() {
        tracing::info!("reload: configuration read; nothing that can change live changed");
    } else {
        tracing::info!(
            "reload: applied {}; trigger history, queued and spooled profiles kept",
            applied.join(", ")
        );
    }
}

fn debug_text(value: &dyn std::fmt::Debug) -> String {
    format!("{value:?}")
}

fn describe_cgroups(targets: &[CgroupTarget]) -> String {
    targets
        .iter()
        .map(|t| t.relative.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_rules(rules: &Rules) -> String {
    let rule = |name: &str, rule: Option<&Rule>| match rule {
        Some(r) if name == "thread" => format!(
            "{name} {},{},{},{},{:?}",
            r.min, r.diff, r.abs, r.max, r.cooldown
        ),
        Some(r) => format!("{name} {},{},{},{:?}", r.min, r.diff, r.abs, r.cooldown),
        None => format!("{name} off"),
    };
    format!(
        "{}; {}; {}; cpu-max {}",
        rule("cpu", rules.cpu.as_ref()),
        rule("mem", rules.mem.as_ref()),
        rule("thread", rules.thread.as_ref()),
        if rules.cpu_max == 0 {
            "off".to_string()
        } else {
            rules.cpu_max.to_string()
        }
    )
}

/// Writes a kept profile (`<metric>.<event>.<time>.pb.gz` and `.svg`) and sends it.
fn write_kept(
    dump: Option<&mut DumpDir>,
    server: Option<(&Exporter, &LabelConfig)>,
    kept: &Kept,
    target: &TargetArgs,
    page_labels: &LabelConfig,
) {
    let processes: Vec<&ProcessProfile> = kept.window.processes.iter().collect();
    let mut comments = comments(&kept.window, target, None);
    comments.push(format!("kept for {} (event {})", kept.name, kept.event_id));
    comments.extend(kept.scenes.iter().map(Scene::describe));
    let metric = kept.scenes[0].metric.name();
    let reasons: Vec<String> = kept
        .scenes
        .iter()
        .map(|s| format!("{}: {}", s.metric.name(), s.reason.text()))
        .collect();
    let base = format!(
        "{metric}.{}.{}",
        kept.event_id,
        utc_timestamp(kept.fired_at)
    );
    let mut written = None;
    if let Some(dump) = dump {
        let profile = pprof::to_gzip(&pprof::encode(&kept.window, &processes, &comments));
        let title = format!("profilerd: {} — {}", kept.name, reasons.join("; "));
        let svg = flame_graph_svg(&folded_lines(&processes), &title);
        let summary = KeptSummary {
            fired_at: rfc3339(kept.fired_at),
            fired_unix: kept
                .fired_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            target: kept.name.clone(),
            service: kept.window.processes.first().map_or_else(
                || kept.name.clone(),
                |p| {
                    page_labels
                        .for_process(&p.info)
                        .into_iter()
                        .find(|(k, _)| k == "service_name")
                        .map_or_else(|| kept.name.clone(), |(_, v)| v)
                },
            ),
            trigger: metric.to_string(),
            reasons: reasons.clone(),
            top: top_functions(&processes, 3),
            samples: kept.window.samples(),
            window_seconds: kept.window.duration.as_secs_f64(),
            pprof: format!("{base}.pb.gz"),
            svg: Some(format!("{base}.svg")),
        };
        let result = dump
            .write(&format!("{base}.pb.gz"), &profile)
            .and_then(|path| {
                dump.write(&format!("{base}.svg"), &svg?)?;
                // The sidecar last: the page lists a profile only once its files exist.
                let sidecar = serde_json::to_vec_pretty(&summary).unwrap_or_default();
                dump.write(&format!("{base}{SIDECAR_SUFFIX}"), &sidecar)?;
                Ok(path)
            });
        match result {
            Ok(path) => written = Some(path),
            Err(err) => tracing::error!("kept profile {base} not written: {err}"),
        }
    }
    if let Some((exporter, labels)) = server {
        let until = kept.window.start + kept.window.duration;
        for process in &kept.window.processes {
            let mut series = labels.for_process(&process.info);
            series.push(("trigger".into(), metric.into()));
            series.push((
                "reason".into(),
                crate::labels::truncate(&reasons.join("; "), crate::labels::MAX_VALUE_LEN)
                    .to_string(),
            ));
            let parts = pprof::encode_split(
                &kept.window,
                process,
                &comments,
                pprof::MAX_SAMPLES,
                pprof::MAX_BYTES,
            );
            if parts.len() > 1 {
                exporter.count_split();
            }
            for part in parts {
                exporter.submit(
                    series.clone(),
                    kept.window.start,
                    until,
                    pprof::to_gzip(&part),
                );
            }
        }
    }
    let latency = SystemTime::now()
        .duration_since(kept.fired_at)
        .unwrap_or_default();
    tracing::info!(
        target = %kept.name,
        event = %kept.event_id,
        trigger = metric,
        file = %written.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
        samples = kept.window.samples(),
        window = ?kept.window.duration,
        on_disk_after = ?latency,
        "kept profile written"
    );
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

/// `profilerd check`: prints one line per host requirement and per setting; false when any
/// line is a problem.
pub fn check(args: &RunArgs) -> bool {
    use crate::check::{self, Host, Item, Status, Wanted};

    let mut dirs = Vec::new();
    if let Some(dir) = args.dump_dir() {
        dirs.push(("dump dir", dir));
    }
    if args.server.server.is_some() {
        dirs.push(("spool dir", args.server.spool_dir.clone()));
    }
    let wanted = Wanted {
        frequency: args.target.frequency,
        cgroups: !args.target.cgroups.is_empty(),
        dirs,
        server: args.server.server.clone(),
    };
    let mut items = check::report(&Host::real(), &wanted);
    // The settings themselves, checked exactly as `run` checks them at start-up.
    let targets = resolve_targets(&args.target, &args.sections).and_then(|t| {
        LabelConfig::new(args.server.service_name.clone(), &args.server.tags)?
            .with_sections(t.sections.clone())?;
        Ok(t)
    });
    items.push(match targets {
        Ok(t) => Item {
            name: "targets",
            status: Status::Ok,
            detail: if t.sections.is_empty() {
                describe_targets(&args.target)
            } else {
                let names: Vec<&str> = t.sections.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "{}; [[target]] sections: {}",
                    describe_targets(&args.target),
                    names.join(", ")
                )
            },
        },
        Err(err) => Item {
            name: "targets",
            status: Status::Problem,
            detail: error_line(&err),
        },
    });
    if args.server.server.is_some() {
        items.push(match server_client(args) {
            Ok(_) => Item {
                name: "server config",
                status: Status::Ok,
                detail: "URL, labels, auth and headers are valid".into(),
            },
            Err(err) => Item {
                name: "server config",
                status: Status::Problem,
                detail: error_line(&err),
            },
        });
    }
    let problems = items.iter().filter(|i| i.status == Status::Problem).count();
    for item in &items {
        println!("{item}");
    }
    if problems == 0 {
        println!("profilerd check: ready ({} checks)", items.len());
    } else {
        println!(
            "profilerd check: {problems} problem{} of {} checks",
            if problems == 1 { "" } else { "s" },
            items.len()
        );
    }
    problems == 0
}

/// The `n` functions with the most self samples (leaf frames, inlined callee first) over
/// `processes`, with their share of all samples in percent.
fn top_functions(processes: &[&ProcessProfile], n: usize) -> Vec<(String, f64)> {
    let mut by_function: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0;
    for process in processes {
        for (stack, count) in &process.stacks {
            total += count;
            if let Some(&leaf) = stack.first() {
                let name = process.locations[leaf as usize].function();
                *by_function.entry(name).or_insert(0) += count;
            }
        }
    }
    let mut ranked: Vec<(&str, u64)> = by_function.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(name, count)| (name.to_string(), count as f64 * 100.0 / total.max(1) as f64))
        .collect()
}

/// An error and its causes on one line. A cause whose text the message already includes is
/// left out: our error messages name their cause themselves ("--listen ADDR: Address already
/// in use: choose ..."), and `{:#}` would print it a second time.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_names_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = io.to_string();
        let bind = crate::web::WebError::Bind {
            addr: "127.0.0.1:7070".parse().unwrap(),
            source: io,
        };
        let err = anyhow::Error::from(bind).context("cannot start the listener");
        let line = error_line(&err);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(line.starts_with("cannot start the listener: --listen 127.0.0.1:7070: "));
        assert!(line.ends_with("--listen off"), "{line}");

        // A cause the message does not mention is still shown.
        let plain = anyhow::Error::from(std::io::Error::other("disk on fire")).context("writing");
        assert_eq!(error_line(&plain), "writing: disk on fire");
    }
}
