//! `profilerd check`: the host report of [`crate::host::check`] and the settings themselves,
//! checked exactly as `run` checks them at start-up, printed one line each.

use super::{describe_targets, error_line, server::server_client};
use crate::{
    config::RunArgs,
    host::{
        check::{report, Item, Status, Wanted},
        dirs::DirKind,
        Host,
    },
    targets::{resolve_targets, LabelConfig},
};

/// Prints one line per host requirement and per setting; false when any line is a problem.
pub(super) fn check(args: &RunArgs) -> bool {
    let mut dirs = Vec::new();
    if let Some(dir) = args.dump_dir() {
        dirs.push((DirKind::Dump, dir));
    }
    if args.server.url().is_some() {
        dirs.push((DirKind::Spool, args.server.delivery.spool_dir.clone()));
    }
    let wanted = Wanted {
        frequency: args.target.frequency,
        cgroups: !args.target.cgroups.is_empty(),
        dirs,
        server: args.server.client.server.clone(),
    };
    let mut items = report(&Host::real(), &wanted);
    items.push(targets_item(args));
    if args.server.url().is_some() {
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

/// `--pid`, `--cgroup` and the sections, resolved and labelled as `run` would.
fn targets_item(args: &RunArgs) -> Item {
    let labels = &args.server.labels;
    let targets = resolve_targets(&args.target.pids, &args.target.cgroups, &args.sections)
        .map_err(anyhow::Error::from)
        .and_then(|t| {
            LabelConfig::new(labels.service_name.clone(), &labels.tags)?
                .with_sections(t.sections.clone())?;
            Ok(t)
        });
    match targets {
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
    }
}
