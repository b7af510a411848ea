//! SIGHUP: a re-read configuration applied to the running loop. Targets, rules, tags, server
//! settings and intervals change now; trigger history, queued and spooled profiles stay. Each
//! group of settings is compared and copied as one value; a group that fails to apply is
//! logged and keeps its old value while the others still apply.

use super::{
    error_line,
    run::{Keeping, RunLoop, Watching},
    server::server_client,
};
use crate::{
    config::{ListenerArgs, RunArgs, TargetArgs},
    targets::{resolve_targets, LabelConfig},
};

/// Settings that only a restart changes: they size kernel maps, attach perf events, or own
/// files and sockets. A reload that changes them says so and leaves them as they are.
fn restart_only(old: &RunArgs, new: &RunArgs) -> Vec<&'static str> {
    let dump = |a: &RunArgs| (a.files_dir(), a.dump_max_files, a.dump_max_bytes);
    let bounds = |a: &RunArgs| ListenerArgs {
        web_config_file: None,
        ..a.listener.clone()
    };
    [
        ("--frequency", old.target.frequency != new.target.frequency),
        (
            "--profile / --memory-period / --offcpu-*",
            (&old.profiles, old.sources) != (&new.profiles, new.sources),
        ),
        ("--mode", old.trigger.mode != new.trigger.mode),
        ("map and cache limits", old.limits != new.limits),
        (
            "--dump-dir / --dump-max-files / --dump-max-bytes",
            dump(old) != dump(new),
        ),
        ("--listen", old.listen != new.listen),
        ("--listen-host", old.listen_host != new.listen_host),
        ("--listen-* bounds", bounds(old) != bounds(new)),
        (
            "--web-config-file (the file itself is re-read at each SIGHUP)",
            old.listener.web_config_file != new.listener.web_config_file,
        ),
        ("--page-window", old.page_window != new.page_window),
        ("--duration", old.duration != new.duration),
        ("--nice", old.priority != new.priority),
        (
            "--history-max-bytes",
            old.trigger.history_max_bytes != new.trigger.history_max_bytes,
        ),
        (
            "--server (added or removed)",
            old.server.url().is_some() != new.server.url().is_some(),
        ),
        (
            "spool and queue settings",
            old.server.delivery != new.server.delivery,
        ),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name)
    .collect()
}

/// The processes selected: what a reload of the targets compares.
fn selection(args: &RunArgs) -> TargetArgs {
    TargetArgs {
        frequency: 0,
        ..args.target.clone()
    }
}

impl RunLoop<'_> {
    /// Applies a reloaded configuration.
    pub(super) fn reload(&mut self, new: RunArgs) {
        for name in restart_only(&self.active, &new) {
            tracing::warn!("reload: {name} changed; that takes effect at the next restart");
        }
        let mut applied = Vec::new();
        if (selection(&self.active), &self.active.sections) != (selection(&new), &new.sections)
            && self.reload_targets(&new)
        {
            applied.push("targets");
        }
        if self.active.trigger.rules != new.trigger.rules {
            self.active.trigger.rules = new.trigger.rules.clone();
            applied.push("rules");
        }
        let config = self.watch_config();
        let rules = &self.active.trigger.rules;
        if let Keeping::Triggers(watching) = &mut self.keeping {
            let Watching { watcher, captures } = &mut **watching;
            // Targets or rules: the watcher keeps the history of every target that stays.
            watcher.reconfigure(config);
            captures.set_windows(rules.pre_trigger, rules.post_trigger);
        }
        if self.active.server.labels != new.server.labels && self.reload_labels(&new) {
            applied.push("tags");
        }
        if self.active.server.client != new.server.client && self.reload_client(&new) {
            applied.push("server");
        }
        let intervals = |a: &RunArgs| (a.collect_interval, a.upload_interval);
        if intervals(&self.active) != intervals(&new) {
            self.active.collect_interval = new.collect_interval;
            self.active.upload_interval = new.upload_interval;
            if let Some(pprof) = &self.web.pprof {
                pprof.set_grace(new.collect_interval);
            }
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

    /// New `--pid`, `--cgroup` and sections: resolved and labelled before anything changes,
    /// so that a failure leaves all as it was.
    fn reload_targets(&mut self, new: &RunArgs) -> bool {
        let resolved = resolve_targets(&new.target.pids, &new.target.cgroups, &new.sections)
            .map_err(anyhow::Error::from)
            .and_then(|t| {
                let labels = self.labels.clone().with_sections(t.sections.clone())?;
                Ok((t, labels))
            });
        let (targets, labels) = match resolved {
            Ok(resolved) => resolved,
            Err(err) => {
                tracing::error!("reload: targets unchanged: {}", error_line(&err));
                return false;
            }
        };
        if let Err(err) = self.pipeline.set_filters(&targets.pids, &targets.selectors) {
            tracing::error!("reload: targets unchanged: {err}");
            return false;
        }
        self.active.target = TargetArgs {
            frequency: self.active.target.frequency,
            ..new.target.clone()
        };
        self.active.sections = new.sections.clone();
        self.cgroup_targets = targets.cgroup_targets;
        self.sections = targets.sections;
        self.labels = labels;
        true
    }

    /// New `--service-name` and `--tag`s.
    fn reload_labels(&mut self, new: &RunArgs) -> bool {
        let wanted = &new.server.labels;
        let labels = LabelConfig::new(wanted.service_name.clone(), &wanted.tags)
            .and_then(|l| l.with_sections(self.sections.clone()));
        match labels {
            Err(err) => {
                tracing::error!("reload: tags unchanged: {err}");
                false
            }
            Ok(labels) => {
                self.labels = labels;
                self.active.server.labels = wanted.clone();
                true
            }
        }
    }

    /// New URL, protocol, credentials, tenant, headers or timeout: a new HTTP client for the
    /// delivery that keeps its queue and spool. Adding or removing the server needs a restart.
    fn reload_client(&mut self, new: &RunArgs) -> bool {
        let Some(exporter) = self.exporter else {
            return false;
        };
        if new.server.url().is_none() {
            return false;
        }
        match server_client(new) {
            Err(err) => {
                tracing::error!("reload: server settings unchanged: {}", error_line(&err));
                false
            }
            Ok(None) => false,
            Ok(Some(client)) => {
                exporter.replace_client(client);
                self.active.server.client = new.server.client.clone();
                true
            }
        }
    }
}
