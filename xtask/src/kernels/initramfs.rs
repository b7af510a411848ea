//! The guests' initramfs: busybox, the release `profilerd`, the driver, util-linux's setpriv
//! and the fixtures, each with the shared libraries it links.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{FIXTURES, SETPRIV};
use crate::{output, status};

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

/// Copies `from` to `to`, creating its directory.
fn copy_into(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to.parent().context("a file path")?)?;
    // fs::copy follows symlinks: the guest gets the library's content under its listed name.
    fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    Ok(())
}

/// Copies `binary` to `into/<dest>` and every shared library `ldd` lists to the same path
/// under `into`, so a dynamically linked binary runs in the guest as it does here.
fn copy_with_libraries(binary: &Path, into: &Path, dest: &str) -> Result<()> {
    copy_into(binary, &into.join(dest.trim_start_matches('/')))?;
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
        copy_into(Path::new(path), &into.join(path.trim_start_matches('/')))?;
    }
    Ok(())
}

/// One initramfs for every kernel: the cloud kernels build in all the guest needs (serial
/// console, BPF, perf events, cgroups), so no modules go in.
pub(super) fn build(root: &Path, dir: &Path, fixtures: &Path) -> Result<PathBuf> {
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
    for (node, major, minor) in [("console", "5", "1"), ("null", "1", "3")] {
        status(
            Command::new("mknod")
                .arg(tree.join("dev").join(node))
                .args(["c", major, minor]),
        )?;
    }
    status(Command::new("chmod").arg("0755").arg(&init))?;
    let image = dir.join("initramfs.cpio");
    let archive = fs::File::create(&image)?;
    status(
        Command::new("sh")
            .current_dir(&tree)
            .args(["-c", "find . | cpio --quiet -o -H newc"])
            .stdout(archive),
    )
    .context("building the initramfs (cpio)")?;
    Ok(image)
}
