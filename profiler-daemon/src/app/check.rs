//! `profilerd check`: the host report of [`crate::host::check`] and the settings themselves,
//! checked exactly as `run` checks them at start-up, printed one line each.

use super::{describe_targets, error_line, server::server_client};
use crate::{
    config::{RunArgs, UnwindArgs, Unwinder},
    host::{
        check::{report, Item, Status, Wanted},
        dirs::DirKind,
        parse_kernel_version, Host,
    },
    serve::auth::webconfig::WebConfig,
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
    items.push(unwind_item(&args.unwind, &Host::real()));
    if let Some(path) = &args.listener.web_config_file {
        items.push(match WebConfig::load(path) {
            Ok(config) => Item {
                name: "web config",
                status: Status::Ok,
                detail: format!("{}: {}", path.display(), config.describe()),
            },
            Err(err) => Item {
                name: "web config",
                status: Status::Problem,
                detail: err.to_string(),
            },
        });
    }
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

/// How user stacks will be walked, and the kernel memory the unwind maps take.
fn unwind_item(unwind: &UnwindArgs, host: &Host) -> Item {
    if unwind.unwind == Unwinder::Fp {
        return Item {
            name: "unwinding",
            status: Status::Ok,
            detail: "frame pointers only (--unwind fp): code without them loses its callers".into(),
        };
    }
    let release = host.read("/proc/sys/kernel/osrelease").unwrap_or_default();
    // The unwinder reads a kernel-mode sample's user registers with bpf_task_pt_regs (5.15).
    if parse_kernel_version(&release).is_some_and(|v| v < (5, 15)) {
        return Item {
            name: "unwinding",
            status: Status::Problem,
            detail: format!(
                "unwind tables need Linux 5.15 or later (this is {}): pass --unwind fp",
                release.trim()
            ),
        };
    }
    // Rows and page slots are 8 bytes; a mapping list 4 KiB and its entry; a row cache
    // entry 16 bytes on every CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let bytes = u64::from(unwind.unwind_rows) * 8
        + u64::from(unwind.unwind_pages) * 8
        + u64::from(unwind.unwind_processes) * 4160
        + u64::from(unwind.unwind_cache) * 16 * cpus;
    Item {
        name: "unwinding",
        status: Status::Ok,
        detail: format!(
            ".eh_frame tables in the kernel, frame pointers where a file has none: {} rows, {} pages, {} processes, a {}-row cache per CPU, about {} MiB of kernel memory",
            unwind.unwind_rows,
            unwind.unwind_pages,
            unwind.unwind_processes,
            unwind.unwind_cache,
            bytes.div_ceil(1 << 20)
        ),
    }
}
