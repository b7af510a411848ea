//! The directories the daemon writes, attacked (issue 16, cases 8 and 11): links planted at
//! the names it writes, a dump dir anyone can write in, a full disk, and empty or corrupt
//! spool files, each against the real daemon.

use std::{
    fs,
    os::unix::fs::{symlink, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use profiler_tests::{standin::StandIn, *};
use profilerd::export::{DumpDir, Spool, Upload};
use scenario::file_names as names;

const EXIT: Duration = Duration::from_secs(60);
const VICTIM: &[u8] = b"root's own secret\n";

/// A root-owned 0600 file, outside the daemon's directories, that a link points at.
fn victim(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, VICTIM).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn assert_untouched(victim: &Path) {
    let meta = fs::metadata(victim).unwrap();
    assert_eq!(
        fs::read(victim).unwrap(),
        VICTIM,
        "{} was written",
        victim.display()
    );
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "{} changed mode",
        victim.display()
    );
}

fn private_dir(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o750)).unwrap();
    path.to_path_buf()
}

/// A port nothing listens on: bound, noted, closed.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// `run` in continuous mode for `pid`, every window spooled at once (the server's port is
/// closed, no retries), then `extra`.
fn spooling_run(pid: &str, extra: &[&str]) -> Vec<String> {
    let url = closed_port_url();
    let base = [
        "run",
        "--mode",
        "continuous",
        "--pid",
        pid,
        "--server",
        &url,
        "--collect-interval",
        "500ms",
        "--upload-interval",
        "1s",
        "--upload-retries",
        "0",
        "--upload-timeout",
        "1s",
        "--spool-dir",
        "spool",
    ];
    base.iter().chain(extra).map(|a| a.to_string()).collect()
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A spooled profile older than the server takes: the daemon moves it to the dump dir under
/// a name anyone can compute from it.
fn too_old_upload(seq: u64) -> (Upload, String) {
    let from = now_nanos() - 3_700_000_000_000;
    let upload = Upload {
        seq,
        labels: vec![
            ("__name__".into(), "process_cpu".into()),
            ("comm".into(), "old".into()),
            ("pid".into(), "4242".into()),
        ],
        from_nanos: from,
        until_nanos: from + 15_000_000_000,
        pprof_gz: vec![0x1f, 0x8b, 0, 0],
    };
    let at = UNIX_EPOCH + Duration::from_nanos(from as u64);
    let name =
        DumpDir::profile_name("old", 4242, "cpu", at).replace(".cpu.", &format!(".cpu.part{seq}."));
    (upload, name)
}

#[test]
fn links_at_the_temporary_and_final_names_redirect_no_write() {
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("hostile-dirs-links");
    let spool = private_dir(&dir.join("spool"));
    let files = private_dir(&dir.join("files"));
    let (old, moved_name) = too_old_upload(0);
    Spool::open(&spool, 1 << 20).unwrap().push(&old).unwrap();
    // The names earlier versions wrote through: the final and `.tmp` names of the too-old
    // profile in the dump dir, and `<spool file>.tmp` for the next profiles spooled.
    let final_victim = victim(&dir, "victim-final");
    symlink(&final_victim, files.join(&moved_name)).unwrap();
    let tmp_victim = victim(&dir, "victim-tmp");
    symlink(&tmp_victim, files.join(format!("{moved_name}.tmp"))).unwrap();
    // And the final name of the next spool file: new profiles are numbered past it.
    let spool_victim = victim(&dir, "victim-spool-final");
    symlink(&spool_victim, spool.join(format!("{:020}.spool", 1))).unwrap();
    let mut victims = vec![final_victim, tmp_victim, spool_victim];

    let pid = fixture.pid().to_string();
    let args = spooling_run(&pid, &["--dump-dir", "files", "--duration", "5s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&args, &dir, "daemon");
    // Planted once the daemon runs (its start removes leftovers), before the first window.
    daemon.http_address(Duration::from_secs(30));
    for seq in 2..=9 {
        let v = victim(&dir, &format!("victim-spool-{seq}"));
        symlink(&v, spool.join(format!("{seq:020}.spool.tmp"))).unwrap();
        victims.push(v);
    }
    let stderr = daemon.wait_exit(EXIT);

    for v in &victims {
        assert_untouched(v);
    }
    let moved = files.join(&moved_name);
    assert!(
        moved.symlink_metadata().unwrap().is_file(),
        "the too-old profile replaced the link with a file of its own\n{stderr}"
    );
    assert_eq!(fs::read(&moved).unwrap(), old.pprof_gz);
    let spooled: Vec<String> = names(&spool)
        .into_iter()
        .filter(|n| n.ends_with(".spool"))
        .collect();
    assert!(
        spooled.len() >= 2,
        "nothing spooled while the server was away\n{stderr}"
    );
    assert_eq!(spooled[0], format!("{:020}.spool", 1), "the link stays");
    assert!(!stderr.contains("profile lost"), "{stderr}");
    for name in &spooled[1..] {
        assert!(
            spool.join(name).symlink_metadata().unwrap().is_file(),
            "{name}"
        );
    }
    assert!(
        names(&spool).iter().all(|n| !n.starts_with(".profilerd-")),
        "a temporary file was left: {:?}",
        names(&spool)
    );
}

#[test]
fn a_spool_number_at_u64_max_neither_wraps_nor_overwrites() {
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("hostile-dirs-wrap");
    let spool = private_dir(&dir.join("spool"));
    let mut undelivered = Spool::open(&spool, 1 << 20).unwrap();
    for seq in 0..2 {
        let (mut upload, _) = too_old_upload(seq);
        upload.from_nanos = now_nanos();
        undelivered.push(&upload).unwrap();
    }
    drop(undelivered);
    let kept: Vec<Vec<u8>> = (0..2)
        .map(|seq| fs::read(spool.join(format!("{seq:020}.spool"))).unwrap())
        .collect();
    let planted = spool.join(format!("{}.spool", u64::MAX));
    fs::write(&planted, b"planted").unwrap();

    let pid = fixture.pid().to_string();
    let args = spooling_run(&pid, &["--duration", "4s"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = Daemon::start(&args, &dir, "daemon").wait_exit(EXIT);
    for (seq, bytes) in kept.iter().enumerate() {
        let now = fs::read(spool.join(format!("{seq:020}.spool"))).unwrap();
        assert_eq!(
            &now, bytes,
            "undelivered profile {seq} was overwritten\n{stderr}"
        );
    }
    assert_eq!(fs::read(&planted).unwrap(), b"planted");
    let numbers: Vec<u64> = names(&spool)
        .iter()
        .filter_map(|n| n.strip_suffix(".spool")?.parse().ok())
        .filter(|&n| n != u64::MAX)
        .collect();
    assert!(
        numbers.len() > 2,
        "nothing new spooled: {numbers:?}\n{stderr}"
    );
    assert!(
        numbers.iter().all(|&n| n < 100),
        "numbers wrapped or jumped: {numbers:?}"
    );
    let line = stderr
        .lines()
        .rfind(|l| l.contains("delivery: sent="))
        .unwrap_or_else(|| panic!("no delivery line:\n{stderr}"));
    assert!(line.contains("dropped_spool_corrupt=0 "), "{line}");
    assert!(line.contains("dropped_spool_error=0 "), "{line}");
    assert!(
        stderr.contains("sequence number profilerd never writes"),
        "{stderr}"
    );
}

/// A dump dir anyone may write in (0777) and a spool dir another user owns, in a scratch
/// directory named `name`.
fn shared_and_foreign(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let shared = dir.join("profiles");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let foreign = private_dir(&dir.join("spool"));
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    (shared, foreign)
}

#[test]
fn a_world_writable_or_foreign_dir_is_refused_at_start_with_the_fix() {
    let (shared, foreign) = shared_and_foreign("hostile-dirs-refused");
    let shared_arg = shared.to_str().unwrap();
    let output = run_profilerd(&["run", "--dump-dir", shared_arg, "--duration", "5s"], EXIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    for part in [
        shared_arg,
        "mode 0777",
        &format!("chown root:root {shared_arg} && chmod 0750 {shared_arg}"),
        "--dump-dir",
    ] {
        assert!(lines[0].contains(part), "no {part:?} in: {}", lines[0]);
    }
    assert_eq!(
        fs::metadata(&shared).unwrap().mode() & 0o777,
        0o777,
        "the operator's directory is not changed"
    );
    assert!(names(&shared).is_empty(), "nothing was written into it");

    let foreign_arg = foreign.to_str().unwrap();
    let url = closed_port_url();
    let output = run_profilerd(
        &[
            "run",
            "--server",
            &url,
            "--spool-dir",
            foreign_arg,
            "--duration",
            "5s",
        ],
        EXIT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("spool dir {foreign_arg} is owned by uid 65534"))
            && stderr.contains("--spool-dir"),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_world_writable_or_foreign_dir_as_a_problem() {
    let (shared, foreign) = shared_and_foreign("hostile-dirs-check");
    let url = closed_port_url();
    let output = run_profilerd(
        &[
            "check",
            "--dump-dir",
            shared.to_str().unwrap(),
            "--server",
            &url,
            "--spool-dir",
            foreign.to_str().unwrap(),
        ],
        EXIT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.get(8..).is_some_and(|rest| rest.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} line:\n{stdout}"))
            .to_string()
    };
    let dump = line("dump dir");
    assert!(
        dump.starts_with("PROBLEM") && dump.contains("mode 0777"),
        "{dump}"
    );
    assert!(dump.contains("chmod 0750"), "{dump}");
    let spool = line("spool dir");
    assert!(
        spool.starts_with("PROBLEM") && spool.contains("uid 65534"),
        "{spool}"
    );
}

/// A tmpfs of one page at `path`, unmounted on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(path: &Path) -> Self {
        fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4k,mode=0750", "tmpfs"])
            .arg(path)
            .status()
            .expect("mount(8)");
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Self(path.to_path_buf())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_and_a_crash_leave_nothing_behind() {
    let fixture = Running::spawn(&fixture("split"), &["60"]);
    let dir = scratch("hostile-dirs-full");
    let disk = TinyDisk::mount(&dir.join("files"));
    // What a crash and an earlier full disk left: temporary files of this version and of
    // earlier ones, and an empty profile.
    fs::write(disk.0.join(".profilerd-AbCdEfGhIjKlMnOp.tmp"), b"").unwrap();
    fs::write(
        disk.0.join("split-1.cpu.20260101T000000.000Z.pb.gz.tmp"),
        b"",
    )
    .unwrap();
    fs::write(disk.0.join("split-1.cpu.20260101T000001.000Z.pb.gz"), b"").unwrap();
    // Then the disk fills up.
    let filler = disk.0.join("filler.bin");
    let mut file = fs::File::create(&filler).unwrap();
    let full = std::io::Write::write_all(&mut file, &[0; 64 << 10]).unwrap_err();
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    drop(file);

    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--mode",
        "continuous",
        "--pid",
        &pid,
        "--collect-interval",
        "500ms",
        "--upload-interval",
        "1s",
        "--dump-dir",
        "files",
        "--duration",
        "4s",
    ];
    let daemon = Daemon::start(&args, &dir, "daemon");
    let address = daemon.http_address(Duration::from_secs(30));
    let mut metrics = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            metrics = http_get(&address, "/metrics").1;
            metrics.contains("profilerd_leftover_files_removed_total{dir=\"dump\"} 3")
        }),
        "leftovers not counted:\n{metrics}\n{}",
        daemon.stderr()
    );
    let mut daemon = daemon;
    let stderr = daemon.wait_exit(EXIT);
    assert!(
        stderr.contains("No space left on device"),
        "the writes did fail:\n{stderr}"
    );
    assert_eq!(names(&disk.0), ["filler.bin"], "{stderr}");
}

#[test]
fn empty_and_corrupt_spool_files_are_set_aside_and_counted_once() {
    let standin = StandIn::start();
    let fixture = Running::spawn(&fixture("split"), &["120"]);
    let dir = scratch("hostile-dirs-corrupt");
    let spool = private_dir(&dir.join("spool"));
    fs::write(spool.join(format!("{:020}.spool", 0)), b"").unwrap();
    fs::write(spool.join(format!("{:020}.spool", 1)), [0xff; 64]).unwrap();
    let url = standin.url();
    let pid = fixture.pid().to_string();
    let args = [
        "run",
        "--mode",
        "continuous",
        "--pid",
        &pid,
        "--server",
        &url,
        "--collect-interval",
        "500ms",
        "--upload-interval",
        "1s",
        "--spool-dir",
        "spool",
        "--dump-dir",
        "files",
        "--duration",
        "3s",
    ];
    let last_delivery_line = |stderr: &str| {
        stderr
            .lines()
            .rfind(|l| l.contains("delivery: sent="))
            .unwrap_or_else(|| panic!("no delivery line:\n{stderr}"))
            .to_string()
    };
    let mut corrupt = Vec::new();
    for (run, expected) in [("first", 2), ("second", 0)] {
        let stderr = Daemon::start(&args, &dir, run).wait_exit(EXIT);
        let line = last_delivery_line(&stderr);
        assert!(
            line.contains(&format!("dropped_spool_corrupt={expected} ")),
            "{run} run: {line}\n{stderr}"
        );
        assert!(line.contains("spool_files=0 "), "{run} run: {line}");
        let dump = names(&dir.join("files"));
        assert!(
            dump.iter()
                .all(|n| !n.starts_with("unknown-0") && !n.contains(".19700101T")),
            "an empty spool file became a profile: {dump:?}"
        );
        for name in &dump {
            assert!(
                fs::metadata(dir.join("files").join(name)).unwrap().len() > 0,
                "{name}"
            );
        }
        corrupt = names(&spool.join("corrupt"));
        assert_eq!(
            corrupt,
            [format!("{:020}.spool", 0), format!("{:020}.spool", 1)],
            "{run} run: set aside for inspection\n{stderr}"
        );
    }
    assert_eq!(
        fs::read(spool.join("corrupt").join(&corrupt[1])).unwrap(),
        [0xff; 64]
    );
    assert!(!standin.accepted().is_empty(), "fresh profiles still flow");
}
