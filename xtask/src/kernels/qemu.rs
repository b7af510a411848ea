//! One guest under QEMU, its console read for the driver's lines; and the same driver on this
//! host's kernel.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use profiler_testkit::{matrix::find_report, tail};

use super::{fetch::Kernel, Row, SETPRIV, TAIL_LINES};

/// Upper bound of one guest, boot to power-off (a healthy one takes well under a minute).
const GUEST_LIMIT: Duration = Duration::from_secs(150);

/// Lines of the driver, echoed while it runs.
const DRIVER_PREFIX: &str = "kernel-check: ";

fn start_qemu(kernel: &Kernel, initramfs: &Path) -> std::io::Result<Child> {
    Command::new("timeout")
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
        .spawn()
}

/// Reads the guest's console to its end, echoing the driver's lines and logging every line.
fn read_console(child: &mut Child, log_path: &Path, label: &str) -> Vec<String> {
    let mut log = fs::File::create(log_path).ok();
    let mut lines = Vec::new();
    let Some(stdout) = child.stdout.take() else {
        return lines;
    };
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        // The serial console ends lines with \r\n and the firmware writes escape sequences.
        let line = line.replace('\r', "");
        if line.starts_with(DRIVER_PREFIX) {
            eprintln!("  [{label}] {line}");
        }
        if let Some(log) = log.as_mut() {
            let _ = writeln!(log, "{line}");
        }
        lines.push(line);
    }
    lines
}

/// Why a guest failed, with the end of its console and QEMU's stderr.
fn problem(status: std::io::Result<ExitStatus>, log: &Path, text: &str, stderr: &str) -> String {
    let why = match status {
        Ok(s) if s.code() == Some(124) => {
            format!("no result within {}s (timeout)", GUEST_LIMIT.as_secs())
        }
        Ok(s) => format!("qemu exited ({s})"),
        Err(err) => format!("qemu: {err}"),
    };
    format!(
        "{why}; console {}; its last {TAIL_LINES} lines:\n{}{}",
        log.display(),
        tail(text, TAIL_LINES),
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!("\nqemu stderr: {}", stderr.trim())
        }
    )
}

/// Boots one kernel with the initramfs and reads its console.
pub(super) fn boot(dir: &Path, kernel: &Kernel, initramfs: &Path) -> Row {
    let label = kernel.version.clone();
    eprintln!(
        "xtask: booting {} under QEMU (TCG)",
        kernel.vmlinuz.display()
    );
    let started = Instant::now();
    let mut child = match start_qemu(kernel, initramfs) {
        Ok(child) => child,
        Err(err) => return Row::failed(label, format!("cannot start qemu-system-x86_64: {err}")),
    };
    let log_path = dir.join(format!("console-{label}.log"));
    let lines = read_console(&mut child, &log_path, &label);
    let status = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = lines.join("\n");
    // The firmware's escape sequences may share a line with the first output of /init.
    let pass = lines.iter().any(|l| l.trim().ends_with("init: success"));
    let kernel_name = text
        .lines()
        .find_map(|l| l.split_once("init: kernel "))
        .map(|(_, name)| name.trim().to_string());
    Row {
        kernel: match kernel_name {
            Some(name) => format!("{} ({name})", upstream(&label)),
            None => upstream(&label),
        },
        pass,
        result: find_report(&text),
        seconds,
        problem: (!pass).then(|| problem(status, &log_path, &text, &stderr)),
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
pub(super) fn host(root: &Path, dir: &Path, fixtures: &Path) -> Row {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let label = format!("{} (host)", release.trim());
    eprintln!(
        "xtask: running the checks on this host's kernel {}",
        release.trim()
    );
    let started = Instant::now();
    // Bounded like a guest: a stuck check fails its row instead of hanging the matrix.
    let output = Command::new("timeout")
        .arg(GUEST_LIMIT.as_secs().to_string())
        .arg(root.join("target/release/kernel-check"))
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
    for line in text.lines().filter(|l| l.starts_with(DRIVER_PREFIX)) {
        eprintln!("  {line}");
    }
    Row {
        kernel: label,
        pass: output.status.success(),
        result: find_report(&text),
        seconds: started.elapsed().as_secs_f64(),
        problem: (!output.status.success()).then(|| match output.status.code() {
            // timeout(1)'s exit code when the limit ran out.
            Some(124) => format!(
                "no result within {}s (timeout)\n{}",
                GUEST_LIMIT.as_secs(),
                tail(&text, TAIL_LINES)
            ),
            _ => tail(&text, TAIL_LINES),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::upstream;

    #[test]
    fn upstream_release_of_a_debian_version() {
        assert_eq!(upstream("6.1.192-2"), "6.1.192");
        assert_eq!(upstream("6.12.117-1~deb12u1"), "6.12.117");
    }
}
