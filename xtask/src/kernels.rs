//! `cargo xtask test --kernels`: the end-to-end checks of `kernel-check` on the kernels users
//! run. Debian's cloud kernels for 6.1 and 6.12 boot under QEMU (TCG: the host's /dev/kvm is a
//! nested software hypervisor that stock kernels stall under) from an initramfs that holds
//! the release `profilerd`, the C fixtures and the driver; the host's own kernel runs the same
//! driver directly.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Kernel series booted under QEMU: Debian 12's own kernel and its backported one.
const SERIES: &[&str] = &["6.1", "6.12"];

/// Fixtures the driver runs, built as `tests/src/lib.rs` builds them.
const FIXTURES: &[&str] = &["split", "reader", "spike"];

/// util-linux's setpriv, for the check as a non-root user (installed by setup: util-linux).
const SETPRIV: &str = "/usr/bin/setpriv";

/// Upper bound of one guest, boot to power-off (a healthy one takes well under a minute).
const GUEST_LIMIT: Duration = Duration::from_secs(150);

/// Console lines shown when a guest fails.
const TAIL_LINES: usize = 40;

/// Runs the matrix: every guest, then the host. Fails when any row fails.
pub fn kernels(root: &Path) -> Result<()> {
    let started = Instant::now();
    let dir = root.join("target/kernels");
    fs::create_dir_all(&dir)?;
    let fixtures = build_fixtures(root, &dir)?;
    let initramfs = build_initramfs(root, &dir, &fixtures)?;

    let mut rows = Vec::new();
    for series in SERIES {
        let row = match fetch_kernel(&dir, series) {
            Ok(kernel) => boot(&dir, &kernel, &initramfs),
            Err(err) => Row::failed(format!("{series} (not fetched)"), format!("{err:#}")),
        };
        rows.push(row);
    }
    rows.push(host(root, &dir, &fixtures));

    let wall = started.elapsed();
    print_table(&rows);
    println!("kernel matrix: {:.0} s wall time", wall.as_secs_f64());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on: {}", failed.join(", "));
    }
    Ok(())
}

/// One kernel's line of the table.
struct Row {
    kernel: String,
    pass: bool,
    result: Option<Value>,
    seconds: f64,
    problem: Option<String>,
}

impl Row {
    fn failed(kernel: String, problem: String) -> Self {
        Row {
            kernel,
            pass: false,
            result: None,
            seconds: 0.0,
            problem: Some(problem),
        }
    }
}

fn compile_fixture(root: &Path, name: &str, out: &Path) -> Result<()> {
    // The flags of tests/src/lib.rs: -O0 keeps a frame in every function, leaf included.
    let source = root.join("tests/fixtures").join(format!("{name}.c"));
    crate::status(
        Command::new("gcc")
            .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
            .arg(out)
            .arg(source),
    )
}

fn build_fixtures(root: &Path, dir: &Path) -> Result<PathBuf> {
    let fixtures = dir.join("fixtures");
    fs::create_dir_all(&fixtures)?;
    for name in FIXTURES {
        compile_fixture(root, name, &fixtures.join(name))?;
    }
    Ok(fixtures)
}

/// A kernel image unpacked from its Debian package.
struct Kernel {
    /// The package's version (`6.1.192-2`), which names the upstream release.
    version: String,
    vmlinuz: PathBuf,
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Numeric parts of a version-like string, for ordering `6.1.0-56` after `6.1.0-9`.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The newest `linux-image-<series>.*-cloud-amd64-unsigned` package apt knows. The names move
/// with every security update, so they are looked up, never written down.
fn newest_package(series: &str) -> Result<Option<String>> {
    let prefix = format!("linux-image-{series}.");
    let found = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!(
            "^linux-image-{}\\..*-cloud-amd64-unsigned$",
            series.replace('.', "\\.")
        ),
    ]))?;
    Ok(found
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .max_by_key(|name| numbers(&name[prefix.len()..]))
        .map(str::to_string))
}

fn fetch_kernel(dir: &Path, series: &str) -> Result<Kernel> {
    let package = match newest_package(series)? {
        Some(package) => package,
        None => {
            // A fresh machine may have no package lists yet.
            crate::status(Command::new("apt-get").args(["update", "-qq"]))?;
            newest_package(series)?.with_context(|| {
                format!("apt knows no linux-image-{series}.*-cloud-amd64-unsigned package: is the Debian 12 (bookworm) archive with its security updates in the apt sources?")
            })?
        }
    };
    let policy = output(Command::new("apt-cache").args(["policy", &package]))?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let unpacked = dir.join(&package);
    let boot = unpacked.join("boot");
    if !boot.is_dir() {
        eprintln!("xtask: downloading {package} {version}");
        let download = dir.join("download");
        let _ = fs::remove_dir_all(&download);
        fs::create_dir_all(&download)?;
        // The sandbox user _apt cannot write into target/: root downloads, as apt falls back
        // to anyway, without the warning.
        crate::status(Command::new("apt-get").current_dir(&download).args([
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            "download",
            &package,
        ]))?;
        let deb = fs::read_dir(&download)?
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        let partial = dir.join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        crate::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &unpacked)?;
        fs::remove_dir_all(&download)?;
    }
    let vmlinuz = fs::read_dir(&boot)?
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    Ok(Kernel { version, vmlinuz })
}

/// The guest's /init: mounts what profilerd and the checks use, runs the driver, powers off.
/// `quiet` keeps the kernel's own lines off the console; the driver's lines carry the result.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
echo "init: kernel $(uname -r)"
if /bin/kernel-check --profilerd /bin/profilerd --fixtures /fixtures --work /tmp/kernel-check \
    --setpriv /opt/util-linux/setpriv --guest; then
    echo "init: success"
else
    echo "init: failure"
fi
poweroff -f
"#;

/// Copies `binary` to `into/<dest>` and every shared library `ldd` lists to the same path
/// under `into`, so a dynamically linked binary runs in the guest as it does here.
fn copy_with_libraries(binary: &Path, into: &Path, dest: &str) -> Result<()> {
    let target = into.join(dest.trim_start_matches('/'));
    fs::create_dir_all(target.parent().unwrap())?;
    fs::copy(binary, &target).with_context(|| format!("copy {}", binary.display()))?;
    let listed = output(Command::new("ldd").arg(binary))?;
    for line in listed.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let lib_target = into.join(path.trim_start_matches('/'));
        fs::create_dir_all(lib_target.parent().unwrap())?;
        // fs::copy follows symlinks: the guest gets the library's content under its listed name.
        fs::copy(path, &lib_target).with_context(|| format!("copy {path}"))?;
    }
    Ok(())
}

/// One initramfs for every kernel: the cloud kernels build in all the guest needs (serial
/// console, BPF, perf events, cgroups), so no modules go in.
fn build_initramfs(root: &Path, dir: &Path, fixtures: &Path) -> Result<PathBuf> {
    let tree = dir.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for sub in ["bin", "dev", "proc", "sys", "tmp", "fixtures"] {
        fs::create_dir_all(tree.join(sub))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox"))
        .context("no /bin/busybox: cargo xtask setup installs busybox-static")?;
    let init = tree.join("init");
    fs::write(&init, INIT)?;
    let release = root.join("target/release");
    copy_with_libraries(&release.join("profilerd"), &tree, "/bin/profilerd")?;
    copy_with_libraries(&release.join("kernel-check"), &tree, "/bin/kernel-check")?;
    // Outside busybox's directories: its own setpriv (installed into /bin) cannot change uids.
    copy_with_libraries(Path::new(SETPRIV), &tree, "/opt/util-linux/setpriv")?;
    for name in FIXTURES {
        copy_with_libraries(&fixtures.join(name), &tree, &format!("/fixtures/{name}"))?;
    }
    // The console node must exist before devtmpfs is mounted, or early output is lost.
    crate::status(
        Command::new("mknod")
            .arg(tree.join("dev/console"))
            .args(["c", "5", "1"]),
    )?;
    crate::status(
        Command::new("mknod")
            .arg(tree.join("dev/null"))
            .args(["c", "1", "3"]),
    )?;
    crate::status(Command::new("chmod").arg("0755").arg(&init))?;
    let image = dir.join("initramfs.cpio");
    let archive = fs::File::create(&image)?;
    crate::status(
        Command::new("sh")
            .current_dir(&tree)
            .args(["-c", "find . | cpio --quiet -o -H newc"])
            .stdout(archive),
    )
    .context("building the initramfs (cpio)")?;
    Ok(image)
}

/// The driver's `kernel-check: result {json}` line, if the output has one.
fn result_line(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .find_map(|l| l.split_once("kernel-check: result "))
        .and_then(|(_, json)| serde_json::from_str(json.trim()).ok())
}

fn tail(lines: &[String], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Boots one kernel with the initramfs and reads its console.
fn boot(dir: &Path, kernel: &Kernel, initramfs: &Path) -> Row {
    let label = kernel.version.clone();
    eprintln!(
        "xtask: booting {} under QEMU (TCG)",
        kernel.vmlinuz.display()
    );
    let started = Instant::now();
    let child = Command::new("timeout")
        .arg(GUEST_LIMIT.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => return Row::failed(label, format!("cannot start qemu-system-x86_64: {err}")),
    };
    let log_path = dir.join(format!("console-{label}.log"));
    let mut log = fs::File::create(&log_path).ok();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let Ok(line) = line else { break };
        // The serial console ends lines with \r\n and the firmware writes escape sequences.
        let line = line.replace('\r', "");
        if line.starts_with("kernel-check: ") {
            eprintln!("  {line}");
        }
        if let Some(log) = log.as_mut() {
            let _ = writeln!(log, "{line}");
        }
        lines.push(line);
    }
    let status = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = lines.join("\n");
    // The firmware's escape sequences may share a line with the first output of /init.
    let pass = lines.iter().any(|l| l.trim().ends_with("init: success"));
    let kernel_name = text
        .lines()
        .find_map(|l| l.split_once("init: kernel "))
        .map(|(_, name)| name.trim().to_string());
    let problem = if pass {
        None
    } else {
        let why = match status {
            Ok(s) if s.code() == Some(124) => {
                format!("no result within {}s (timeout)", GUEST_LIMIT.as_secs())
            }
            Ok(s) => format!("qemu exited ({s})"),
            Err(err) => format!("qemu: {err}"),
        };
        Some(format!(
            "{why}; console {}; its last {TAIL_LINES} lines:\n{}{}",
            log_path.display(),
            tail(&lines, TAIL_LINES),
            if stderr.trim().is_empty() {
                String::new()
            } else {
                format!("\nqemu stderr: {}", stderr.trim())
            }
        ))
    };
    Row {
        kernel: match kernel_name {
            Some(name) => format!("{} ({name})", upstream(&label)),
            None => upstream(&label),
        },
        pass,
        result: result_line(&text),
        seconds,
        problem,
    }
}

/// `6.1.192-2` -> `6.1.192`, `6.12.117-1~deb12u1` -> `6.12.117`.
fn upstream(version: &str) -> String {
    version
        .split(['-', '+', '~'])
        .next()
        .unwrap_or(version)
        .to_string()
}

/// The driver on this host's kernel, directly.
fn host(root: &Path, dir: &Path, fixtures: &Path) -> Row {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let label = format!("{} (host)", release.trim());
    eprintln!(
        "xtask: running the checks on this host's kernel {}",
        release.trim()
    );
    let started = Instant::now();
    let output = Command::new(root.join("target/release/kernel-check"))
        .arg("--profilerd")
        .arg(root.join("target/release/profilerd"))
        .arg("--fixtures")
        .arg(fixtures)
        .arg("--work")
        .arg(dir.join("host-work"))
        .args(["--setpriv", SETPRIV])
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) => return Row::failed(label, format!("cannot start kernel-check: {err}")),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for line in lines.iter().filter(|l| l.starts_with("kernel-check: ")) {
        eprintln!("  {line}");
    }
    Row {
        kernel: label,
        pass: output.status.success(),
        result: result_line(&text),
        seconds: started.elapsed().as_secs_f64(),
        problem: (!output.status.success()).then(|| tail(&lines, TAIL_LINES)),
    }
}

fn print_table(rows: &[Row]) {
    let header = [
        "kernel",
        "result",
        "attach",
        "CAP_BPF after attach",
        "work_three",
        "kernel frames (distinct, share)",
        "cgroup filter (in/out)",
        "triggered profile",
        "CAP_BPF+CAP_PERFMON, no root",
        "time",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for row in rows {
        let get = |key: &str| row.result.as_ref().and_then(|r| r.get(key)).cloned();
        let num = |key: &str| get(key).and_then(|v| v.as_f64());
        let failed: Vec<String> = get("failed")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let verdict = if row.pass {
            "pass".to_string()
        } else if failed.is_empty() {
            "FAIL".to_string()
        } else {
            format!("FAIL: {}", failed.join(", "))
        };
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        table.push(vec![
            row.kernel.clone(),
            verdict,
            or_dash(num("attach_ms").map(|ms| format!("{ms:.0} ms"))),
            or_dash(
                get("cap_bpf_kept")
                    .and_then(|v| v.as_bool())
                    .map(|kept| if kept { "kept" } else { "dropped" }.to_string()),
            ),
            or_dash(num("work_three_pct").map(|p| format!("{p:.1}%"))),
            or_dash(
                num("kernel_frames")
                    .map(|n| format!("{n:.0}, {:.0}%", num("kernel_pct").unwrap_or(0.0))),
            ),
            or_dash(
                num("cgroup_inside").map(|inside| {
                    format!("{inside:.0}/{:.0}", num("cgroup_outside").unwrap_or(0.0))
                }),
            ),
            or_dash(num("trigger_kept").map(|kept| {
                format!(
                    "{kept:.0} kept, {:.0} samples",
                    num("trigger_samples").unwrap_or(0.0)
                )
            })),
            or_dash(get("non_root").and_then(|v| v.as_str().map(str::to_string))),
            format!("{:.0} s", row.seconds),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    println!();
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
    for row in rows {
        let notes: Vec<String> = row
            .result
            .as_ref()
            .and_then(|r| r.get("notes"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for note in notes {
            println!("{}: profilerd check: {note}", row.kernel);
        }
    }
    for row in rows {
        if let Some(problem) = &row.problem {
            println!("\n{} failed: {problem}", row.kernel);
        }
    }
}
