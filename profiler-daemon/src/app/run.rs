//! `profilerd run`: the run loop. Each collect tick drains the pipeline, applies reloads, and
//! then either exports the window (continuous) or feeds the watcher and captures (triggered),
//! publishes metrics, and every upload interval logs the status lines.

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, mpsc::Receiver},
    time::{Instant, SystemTime},
};

use anyhow::Result;

use super::{comments, describe_targets, prepare, tick};
use crate::{
    aggregate::{Pipeline, Window},
    config::{Mode, RunArgs},
    encode::pprof::Measure,
    export::{DumpDir, DumpSink, Exporter, KeptProfile, ServerSink, Sink, WindowProfile},
    host::privileges,
    serve::{
        metrics::{MapCapacity, Snapshot},
        ondemand::OnDemand,
        WebState,
    },
    targets::{named_pids, LabelConfig, Section},
    trigger::{Captures, Firing, Kept, WatchConfig, Watcher},
    types::{CgroupTarget, Rule, Rules},
    BPF_OBJECT,
};

/// What `run` keeps.
pub(super) enum Keeping {
    /// One profile per sampled process every upload interval.
    Windows,
    /// The profiles of targets whose rules fired.
    Triggers(Box<Watching>),
}

/// Triggered mode's state: the rules' history per target and the captures in progress.
pub(super) struct Watching {
    pub watcher: Watcher,
    pub captures: Captures,
}

/// The running daemon: the pipeline, what it keeps, and where it goes.
pub(super) struct RunLoop<'a> {
    /// What is in effect: the start-up settings, then whatever reloads changed.
    pub active: RunArgs,
    pub pipeline: Pipeline,
    pub keeping: Keeping,
    pub cgroup_targets: Vec<CgroupTarget>,
    pub sections: Vec<Section>,
    /// Series labels of uploads and the page's service names (the same rules as the server's).
    pub labels: LabelConfig,
    pub exporter: Option<&'a Exporter>,
    dump: Option<DumpSink>,
    server: Option<ServerSink<'a>>,
    pub web: &'a WebState,
    reloads: &'a Receiver<Box<RunArgs>>,
    stop: &'a AtomicBool,
    capacity: MapCapacity,
    triggers_fired: BTreeMap<&'static str, u64>,
    end: Option<Instant>,
    next_collect: Instant,
    next_report: Instant,
    /// The `/debug/pprof/` profiles being collected.
    ondemand: OnDemand,
    /// Continuous mode while on-demand profiles take each tick's slice: the window so far.
    partial: Option<Window>,
}

/// Where `run` keeps its files, opened (its leftovers removed) before delivery starts, which
/// may move spooled profiles into it at once.
pub(super) fn open_dump(args: &RunArgs) -> Result<Option<DumpDir>> {
    let Some(dir) = args.files_dir() else {
        return Ok(None);
    };
    Ok(Some(DumpDir::open(
        &dir,
        args.dump_max_files as usize,
        args.dump_max_bytes,
    )?))
}

/// Runs `profilerd run` until `stop`, `--duration` or a fatal drain error.
pub(super) fn run(
    args: &RunArgs,
    dump: Option<DumpDir>,
    stop: &AtomicBool,
    exporter: Option<&Exporter>,
    web: &WebState,
    reloads: &Receiver<Box<RunArgs>>,
    ondemand: OnDemand,
) -> Result<()> {
    let mut run = RunLoop::start(args, dump, stop, exporter, web, reloads, ondemand)?;
    while run.step()? {}
    tracing::info!(
        profiles_written = run.dump.as_ref().map_or(0, |d| d.dir.written),
        "profilerd stopped; last window flushed"
    );
    Ok(())
}

impl<'a> RunLoop<'a> {
    /// Checks and resolves everything, starts the pipeline and says what it does.
    fn start(
        args: &RunArgs,
        dump: Option<DumpDir>,
        stop: &'a AtomicBool,
        exporter: Option<&'a Exporter>,
        web: &'a WebState,
        reloads: &'a Receiver<Box<RunArgs>>,
        ondemand: OnDemand,
    ) -> Result<Self> {
        let (config, targets) = prepare(
            &args.target,
            &args.limits,
            &args.unwind,
            &args.sections,
            args.sources.sources(&args.profiles),
        )?;
        let labels = super::server::base_labels(args)?.with_sections(targets.sections.clone())?;
        let dump = dump.map(DumpSink::new);
        let pipeline = Pipeline::start(BPF_OBJECT, &config)?;
        super::daemon::warn_priority();
        privileges::drop_after_attach();
        if let Some(address) = web.address {
            let (scheme, security) = match &web.listener.security {
                Some(security) => {
                    let config = security.current();
                    let scheme = if config.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    let path = security.path().display();
                    (scheme, format!(" ({}; {path})", config.describe()))
                }
                None => ("http", String::new()),
            };
            tracing::info!(
                "HTTP listener on {scheme}://{address}/{security}: profiles at /, /debug/pprof/, /metrics, /healthz"
            );
            if web.listener.security.is_none() && !address.ip().is_loopback() {
                tracing::warn!(
                    "the listener on {address} has no TLS and no authentication: anyone who reaches it can read profiles and take new ones at /debug/pprof/; give --web-config-file, or listen on 127.0.0.1"
                );
            }
        }
        let started = Instant::now();
        let mut run = Self {
            active: args.clone(),
            pipeline,
            keeping: Keeping::Windows,
            cgroup_targets: targets.cgroup_targets,
            sections: targets.sections,
            labels,
            exporter,
            dump,
            server: exporter.map(|exporter| ServerSink { exporter }),
            web,
            reloads,
            stop,
            capacity: MapCapacity {
                counts: config.sampler.counts_map_entries,
                user_stacks: config.sampler.stack_map_entries,
                kernel_stacks: config.sampler.kernel_stack_map_entries,
            },
            triggers_fired: BTreeMap::new(),
            end: args.duration.map(|d| started + d),
            next_collect: started + args.collect_interval,
            next_report: started + args.upload_interval,
            ondemand,
            partial: None,
        };
        run.keeping = run.announce();
        Ok(run)
    }

    /// Logs what the daemon does and builds the watcher and captures of triggered mode.
    fn announce(&self) -> Keeping {
        let args = &self.active;
        let destination = format!(
            "{}{}",
            self.dump
                .as_ref()
                .map_or("no files".to_string(), |d| format!(
                    "files in {}",
                    d.dir.path().display()
                )),
            args.server
                .url()
                .map_or(String::new(), |s| format!(" and server {s}"))
        );
        match args.trigger.mode {
            Mode::Continuous => {
                tracing::info!(
                    targets = %describe_targets(&args.target),
                    frequency = args.target.frequency,
                    cpus = self.pipeline.cpus(),
                    collect_interval = ?args.collect_interval,
                    upload_interval = ?args.upload_interval,
                    "profilerd running in continuous mode: one pprof per sampled process every upload interval to {destination}; SIGINT/SIGTERM flush and exit"
                );
                Keeping::Windows
            }
            Mode::Triggered => {
                let rules = &args.trigger.rules;
                tracing::info!(
                    frequency = args.target.frequency,
                    collect_interval = ?args.collect_interval,
                    pre_trigger = ?rules.pre_trigger,
                    post_trigger = ?rules.post_trigger,
                    "profilerd running in triggered mode: watching {}; rules {}; kept profiles ({{cpu|mem|thread}}.<event>.<time>.pb.gz + .svg) go to {destination}; a status line every {:?}",
                    self.describe_watched(),
                    describe_rules(&rules.rules()),
                    args.upload_interval
                );
                Keeping::Triggers(Box::new(Watching {
                    watcher: Watcher::new(self.watch_config()),
                    captures: Captures::new(
                        rules.pre_trigger,
                        rules.post_trigger,
                        args.trigger.history_max_bytes as usize,
                        args.target.frequency,
                    ),
                }))
            }
        }
    }

    fn describe_watched(&self) -> String {
        let args = &self.active;
        let cgroups = describe_cgroups(&self.cgroup_targets);
        let processes = self.cgroup_targets.is_empty() || !args.target.pids.is_empty();
        match (processes, self.cgroup_targets.is_empty()) {
            (true, true) => format!("each process of {}", describe_targets(&args.target)),
            (true, false) => format!(
                "each of pids {:?} and each cgroup as a whole ({cgroups})",
                args.target.pids
            ),
            (false, _) => format!("each cgroup as a whole ({cgroups})"),
        }
    }

    /// The trigger watcher's settings from the active settings and the resolved cgroups.
    pub fn watch_config(&self) -> WatchConfig {
        let args = &self.active;
        WatchConfig {
            sections: self.sections.clone(),
            rules: args.trigger.rules.rules(),
            cores_flag: args.trigger.rules.cpu_cores,
            memory_flag: args.trigger.rules.memory_limit,
            frequency: args.target.frequency,
            processes: self.cgroup_targets.is_empty() || !args.target.pids.is_empty(),
            pids: named_pids(&args.target.pids, &self.sections),
            skip_pid: Some(std::process::id()).filter(|own| !args.target.pids.contains(own)),
            cgroups: self.cgroup_targets.clone(),
            max_targets: args.limits.max_processes as usize,
        }
    }

    /// One collect tick; false once the loop is over (its last window flushed).
    fn step(&mut self) -> Result<bool> {
        let running = tick(
            &mut self.pipeline,
            &mut self.next_collect,
            self.active.collect_interval,
            self.end,
            self.stop,
        )?;
        self.web.beat();
        while let Ok(new) = self.reloads.try_recv() {
            self.reload(*new);
        }
        let now = Instant::now();
        let report = now >= self.next_report || !running;
        if matches!(self.keeping, Keeping::Windows) {
            self.continuous(now, report);
        } else {
            self.watch(now, running, report);
        }
        self.publish();
        if report {
            self.report(now);
        }
        Ok(running)
    }

    /// Continuous mode: the window accumulates in the pipeline until the report. While
    /// on-demand profiles are being collected each tick's slice is taken for them and the
    /// window is built from the slices.
    fn continuous(&mut self, now: Instant, report: bool) {
        if self.ondemand.poll() {
            let slice = self.pipeline.take_window();
            self.ondemand.on_slice(&slice, now, SystemTime::now());
            match &mut self.partial {
                Some(window) => window.absorb(slice),
                None => self.partial = Some(slice),
            }
        }
        if report {
            let rest = self.pipeline.take_window();
            let window = match self.partial.take() {
                Some(mut window) => {
                    window.absorb(rest);
                    window
                }
                None => rest,
            };
            self.export_window(&window);
        }
    }

    /// Triggered mode: the watcher sees the slice, fired rules start captures, and finished
    /// captures are written and sent.
    fn watch(&mut self, now: Instant, running: bool, report: bool) {
        let slice = self.pipeline.take_window();
        self.ondemand.poll();
        self.ondemand.on_slice(&slice, now, SystemTime::now());
        let Keeping::Triggers(watching) = &mut self.keeping else {
            return;
        };
        let Watching { watcher, captures } = &mut **watching;
        let wall = SystemTime::now();
        for firing in watcher.tick(&slice, now) {
            log_firing(&firing, &mut self.triggers_fired);
            captures.fire(firing, wall);
        }
        captures.note_values(wall, |target| watcher.last_values(target));
        for target in watcher.take_gone() {
            captures.forget(&target);
        }
        let mut kept = captures.on_slice(slice, wall);
        if !running {
            kept.extend(captures.flush(SystemTime::now()));
        }
        // On disk at the firing's own tick; replaced by the complete profile when it is due.
        let started = captures.take_started(wall);
        for kept in started.into_iter().chain(kept) {
            self.write_kept(&kept);
        }
        if let (true, Keeping::Triggers(watching)) = (report, &self.keeping) {
            let Watching { watcher, captures } = &**watching;
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

    /// The sinks: the dump dir first (a kept profile is on disk and on the page before it is
    /// queued for the server), then the server.
    fn sinks<'s>(
        dump: &'s mut Option<DumpSink>,
        server: &'s mut Option<ServerSink<'a>>,
    ) -> impl Iterator<Item = &'s mut (dyn Sink + 'a)> {
        let dump = dump.iter_mut().map(|d| d as &mut (dyn Sink + 'a));
        dump.chain(server.iter_mut().map(|s| s as &mut (dyn Sink + 'a)))
    }

    /// Writes a kept profile (`<metric>.<event>.<time>.pb.gz` and `.svg`) and sends it.
    fn write_kept(&mut self, kept: &Kept) {
        let mut comments = comments(&kept.window, &self.active.target, None);
        comments.push(format!("kept for {} (event {})", kept.name, kept.event_id));
        comments.extend(kept.scenes.iter().map(|s| s.describe()));
        let profile = KeptProfile {
            kept,
            comments: &comments,
            labels: &self.labels,
        };
        let mut written = None;
        for sink in Self::sinks(&mut self.dump, &mut self.server) {
            if let Some(path) = sink.kept(&profile) {
                written = Some(path);
            }
        }
        let written_at = SystemTime::now();
        let latency = written_at.duration_since(kept.fired_at).unwrap_or_default();
        let late = written_at.duration_since(kept.due).unwrap_or_default();
        if !kept.complete {
            tracing::info!(
                target = %kept.name,
                event = %kept.event_id,
                file = %written.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
                samples = kept.window.samples(),
                window = ?kept.window.duration,
                on_disk_after = ?latency,
                "kept profile started: the history up to the firing, completed when the post-trigger window ends"
            );
            return;
        }
        tracing::info!(
            target = %kept.name,
            event = %kept.event_id,
            trigger = kept.scenes[0].metric.name(),
            file = %written.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
            samples = kept.window.samples(),
            fault_samples = kept.window.memory_samples(),
            window = ?kept.window.duration,
            on_disk_after = ?latency,
            after_due = ?late,
            "kept profile written"
        );
    }

    /// Continuous mode: one profile per sampled process of the window.
    fn export_window(&mut self, window: &Window) {
        let mut written = 0;
        let split = self.server.is_some();
        for (measure, profiles) in Measure::sources_of(window) {
            for process in profiles {
                let comments = comments(window, &self.active.target, Some(process));
                let labels = &self.labels;
                let mut profile =
                    WindowProfile::new(window, process, &comments, labels, split, measure);
                for sink in Self::sinks(&mut self.dump, &mut self.server) {
                    written += usize::from(sink.window(&mut profile).is_some());
                }
            }
        }
        for sink in Self::sinks(&mut self.dump, &mut self.server) {
            sink.window_done(window.start);
        }
        tracing::info!(
            processes = window.processes.len(),
            files = written,
            samples = window.samples(),
            fault_samples = window.memory_samples(),
            "window exported"
        );
    }

    /// Hands the numbers of this tick to `/metrics`.
    fn publish(&self) {
        let history_bytes = match &self.keeping {
            Keeping::Triggers(watching) => watching.captures.history_bytes() as u64,
            Keeping::Windows => 0,
        };
        let dump = self.dump.as_ref().map(|d| &d.dir);
        self.web.metrics.publish(Snapshot {
            accounting: self.pipeline.accounting,
            capacity: self.capacity,
            symbols: self.pipeline.symbols().stats(),
            tracked_processes: self.pipeline.symbols().tracked() as u64,
            triggers_fired: self.triggers_fired.clone(),
            profiles_written: dump.map_or(0, |d| d.written),
            dump_removed: dump.map_or(0, |d| d.removed),
            dump_leftovers: dump.map_or(0, |d| d.leftovers),
            history_bytes,
            spool: self.exporter.map(Exporter::spool_counts),
            unwind: self.pipeline.unwind_stats(),
        });
    }

    /// The status lines of each upload interval.
    fn report(&mut self, now: Instant) {
        self.next_report = now.max(self.next_report) + self.active.upload_interval;
        // A window's profiles were just freed: hand the freed pages back to the system so
        // that RSS follows what is live, not the high-water mark of the busiest window.
        // SAFETY: malloc_trim only releases unused heap memory.
        unsafe { libc::malloc_trim(0) };
        let accounting = &self.pipeline.accounting;
        tracing::info!(
            tracked_processes = self.pipeline.symbols().tracked(),
            last_drain = ?accounting.last_drain,
            counts_map_fill = accounting.counts_entries,
            user_stack_map_fill = accounting.stack_entries,
            kernel_stack_map_fill = accounting.kernel_stack_entries,
            dump_removed = self.dump.as_ref().map_or(0, |d| d.dir.removed),
            "samples: {}",
            accounting.summary()
        );
        if let Some(exporter) = self.exporter {
            tracing::info!("delivery: {}", exporter.summary());
        }
        if let Some(unwind) = self.pipeline.unwind_stats() {
            tracing::info!("unwind tables: {}", unwind.summary());
        }
    }
}

fn log_firing(firing: &Firing, fired: &mut BTreeMap<&'static str, u64>) {
    for scene in &firing.scenes {
        *fired.entry(scene.metric.name()).or_insert(0) += 1;
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
