//! Files a local user controls, symbolized by the root daemon (issue 16, cases 1 and 2): a
//! library swapped for a FIFO or another file after it was mapped, and a library whose
//! symbol table was blown up to 100 MB. The daemon keeps draining, answers `/healthz`, exits
//! on SIGTERM within 2 s and stays inside its memory bound; what it cannot read safely is
//! named by module and offset and counted.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use profiler_tests::*;

const START: Duration = Duration::from_secs(30);
/// The unprivileged user the attacks run as.
const NOBODY: u32 = 65534;

/// Drains the daemon has done, from its drain-duration histogram.
fn drains(address: &str) -> f64 {
    metric(
        &http_get(address, "/metrics").1,
        "profilerd_drain_duration_seconds_count",
    )
    .unwrap_or(-1.0)
}

/// A directory removed when the test ends, passed or failed (one holds a 100 MB library).
struct Removed(PathBuf);

impl std::ops::Deref for Removed {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A directory the unprivileged user owns (outside target/, which it may not traverse).
fn user_dir(name: &str) -> Removed {
    let dir = std::env::temp_dir().join(format!("profilerd-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    Removed(dir)
}

/// Copies `from` into the user's directory as a file the user owns.
fn give(from: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    fs::copy(from, &to).unwrap();
    std::os::unix::fs::chown(&to, Some(NOBODY), Some(NOBODY)).unwrap();
    to
}

/// `profilerd run` watching `pid`, behind `wrapper` (e.g. setpriv), logging to `dir`; once
/// `/healthz` says it drains.
fn start_daemon(wrapper: &[&str], pid: u32, extra: &[&str], dir: &Path) -> (Daemon, String) {
    let pid = pid.to_string();
    let mut args = vec![
        "run",
        "--mode",
        "continuous",
        "--pid",
        &pid,
        "--upload-interval",
        "60s",
        "--dump-dir",
        "profiles",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start_under(wrapper, &args, dir, "daemon");
    let address = daemon.http_address(START);
    assert!(
        wait_until(START, || http_get(&address, "/healthz").0 == 200),
        "healthz never became ok: {:?}\n{}",
        http_get(&address, "/healthz"),
        daemon.stderr()
    );
    (daemon, address)
}

/// Starts `command` as the unprivileged user.
fn as_nobody(command: &mut Command) -> Running {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Running::command(command).unwrap()
}

/// The samples of every profile in `DIR/profiles` whose name starts with `prefix`.
fn profiles_of(dir: &Path, prefix: &str) -> Vec<Stack> {
    let mut stacks = Vec::new();
    for entry in fs::read_dir(dir.join("profiles")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with(prefix) && file.ends_with(".pb.gz") {
            stacks.extend(profiler_tests::stacks(&read_pprof(&path)));
        }
    }
    stacks
}

/// What the user swaps in for the library.
#[derive(Clone, Copy, Debug)]
enum Swap {
    /// A symlink to a FIFO nobody writes to.
    Fifo,
    /// Another library with other function names at the same offsets.
    Impostor,
}

struct Replayed {
    stacks: Vec<Stack>,
    metrics: String,
    stderr: String,
}

/// The attack of case 1: as nobody, dlopen a library from a directory nobody owns, run code
/// from it for half a second, swap the library (`early`: right after the dlopen instead), exit.
/// Checks that the daemon keeps draining and answering, and stops on SIGTERM within 2 s.
fn replay(swap: Swap, early: bool, wrapper: &[&str]) -> Replayed {
    let library = fixture_with("libhostile", "libhostile.so", &["-shared", "-fPIC"]);
    let impostor = fixture_with(
        "libhostile",
        "libimpostor.so",
        &["-shared", "-fPIC", "-DSPIN=impostor_spin"],
    );
    let name = format!("hostile-{swap:?}-{early}").to_lowercase();
    let home = user_dir(&name);
    let program = give(
        &fixture_with("hostile_swap", "hostile_swap", &["-ldl"]),
        &home,
        "hostile_swap",
    );
    let lib = give(&library, &home, "libhostile.so");
    let next = home.join("next");
    match swap {
        Swap::Fifo => {
            let fifo = home.join("fifo");
            let path = CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o666) }, 0);
            std::os::unix::fs::symlink(&fifo, &next).unwrap();
        }
        Swap::Impostor => {
            give(&impostor, &home, "next");
        }
    }
    let mut command = Command::new(&program);
    command
        .args([lib.to_str().unwrap(), next.to_str().unwrap(), "0.5"])
        .args(early.then_some("early"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut attacker = as_nobody(&mut command);
    let dir = scratch(&name);
    let (daemon, address) = start_daemon(
        wrapper,
        attacker.pid(),
        &["--collect-interval", "500ms", "--frequency", "499"],
        &dir,
    );

    attacker.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        attacker.0.try_wait().unwrap().is_some()
    });
    assert!(exited, "the fixture did not finish");
    let status = attacker.0.wait().unwrap();
    assert!(status.success(), "fixture: {status}");
    assert!(
        fs::symlink_metadata(&next).is_err(),
        "the fixture did not swap the library"
    );

    // The exited process's last samples are named at the next drain; the ones after it must
    // still come.
    std::thread::sleep(Duration::from_secs(1));
    let before = drains(&address);
    std::thread::sleep(Duration::from_secs(2));
    let after = drains(&address);
    assert!(
        before >= 0.0 && after >= before + 2.0,
        "drains stopped after the swap: {before} then {after}; stderr:\n{}",
        daemon.stderr()
    );
    let (health, text) = http_get(&address, "/healthz");
    assert_eq!(health, 200, "{text}");
    let metrics = http_get(&address, "/metrics").1;

    let stderr = daemon.terminate_within(Duration::from_secs(2));
    let stacks = profiles_of(&dir, &format!("hostile_swap-{}.cpu.", attacker.pid()));
    Replayed {
        stacks,
        metrics,
        stderr,
    }
}

fn in_library(stacks: &[Stack], function: &str) -> i64 {
    stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.function.contains(function)))
        .map(|s| s.count)
        .sum()
}

/// The case 1 as written: the library becomes a symlink to a FIFO just before the
/// process exits, and its last samples are named after that.
#[test]
fn a_library_swapped_for_a_fifo_before_exit_does_not_stall_the_daemon() {
    let run = replay(Swap::Fifo, false, &[]);
    // Read through the descriptor opened while the process lived: the inode it mapped.
    let named = in_library(&run.stacks, "hostile_spin");
    assert!(
        named >= 10,
        "{named} samples in hostile_spin: {:#?}",
        run.stacks
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// The library swapped for another regular file: the impostor is never read.
#[test]
fn a_library_swapped_for_another_file_is_not_read() {
    for early in [false, true] {
        let run = replay(Swap::Impostor, early, &[]);
        let named = in_library(&run.stacks, "hostile_spin");
        let impostor = in_library(&run.stacks, "impostor_spin");
        assert!(
            named >= 10 && impostor == 0,
            "early {early}: {named} samples in hostile_spin, {impostor} in impostor_spin"
        );
    }
}

/// Without CAP_SYS_ADMIN (no `/proc/PID/map_files/`) the daemon has only the path, which
/// the user swapped for a FIFO before the first sample. The memory map then names the file
/// "(deleted)", and the daemon does not open what the path names now: nothing is read, the
/// frames are named by module and offset, the refusal is counted.
#[test]
fn a_fifo_at_the_path_of_a_mapped_library_is_refused_and_counted() {
    let wrapper = [
        "setpriv",
        "--bounding-set",
        "-sys_admin,-checkpoint_restore",
        "--",
    ];
    let run = replay(Swap::Fifo, true, &wrapper);
    let refused: f64 = ["not_regular", "unreachable"]
        .iter()
        .filter_map(|reason| {
            let sample = format!("profilerd_symbol_files_refused_total{{reason=\"{reason}\"}}");
            metric(&run.metrics, &sample)
        })
        .sum();
    assert!(refused >= 1.0, "{refused}:\n{}", run.metrics);
    let by_offset: i64 = run
        .stacks
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f.function.starts_with("libhostile.so") && f.function.contains("+0x"))
        })
        .map(|s| s.count)
        .sum();
    assert!(
        by_offset >= 10 && in_library(&run.stacks, "hostile_spin") == 0,
        "{by_offset} samples named libhostile.so+offset: {:#?}",
        run.stacks
    );
    assert!(
        run.stderr.contains("not reading a mapped file"),
        "{}",
        run.stderr
    );
}

/// Fields of a 64-bit little-endian ELF file.
fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// Blows the `.symtab` of a linked library up to `bytes`: its symbols, then copies of one of
/// them spread over `.text` (each a function symbol blazesym sorts by address), written at
/// the end of the file, with the section header pointed there.
fn blow_up_symtab(library: &Path, bytes: u64) {
    let mut elf = fs::read(library).unwrap();
    let table = u64_at(&elf, 0x28) as usize;
    let (entry, count) = (u16_at(&elf, 0x3a), u16_at(&elf, 0x3c));
    let header = |i: usize| table + i * entry;
    let names_at = u64_at(&elf, header(u16_at(&elf, 0x3e)) + 0x18) as usize;
    let name = |i: usize| {
        let at = names_at + u32_at(&elf, header(i));
        let end = elf[at..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8_lossy(&elf[at..at + end]).into_owned()
    };
    let find = |wanted: &str| (0..count).find(|&i| name(i) == wanted).unwrap();
    let (symtab, text) = (find(".symtab"), find(".text"));
    let (text_addr, text_size) = (
        u64_at(&elf, header(text) + 0x10),
        u64_at(&elf, header(text) + 0x20),
    );
    let (offset, size) = (
        u64_at(&elf, header(symtab) + 0x18) as usize,
        u64_at(&elf, header(symtab) + 0x20) as usize,
    );
    let mut symbols = elf[offset..offset + size].to_vec();
    // A symbol of the library itself, whose name the copies share.
    let model: Vec<u8> = symbols[symbols.len() - 24..].to_vec();
    let mut i = 0u64;
    while (symbols.len() as u64) < bytes {
        let mut copy = model.clone();
        copy[4] = 0x12; // STB_GLOBAL, STT_FUNC
        copy[6..8].copy_from_slice(&(text as u16).to_le_bytes());
        copy[8..16].copy_from_slice(&(text_addr + i % text_size).to_le_bytes());
        copy[16..24].copy_from_slice(&1u64.to_le_bytes());
        symbols.extend_from_slice(&copy);
        i += 1;
    }
    let at = elf.len().next_multiple_of(8);
    elf.resize(at, 0);
    elf.extend_from_slice(&symbols);
    let h = header(symtab);
    elf[h + 0x18..h + 0x20].copy_from_slice(&(at as u64).to_le_bytes());
    elf[h + 0x20..h + 0x28].copy_from_slice(&(symbols.len() as u64).to_le_bytes());
    fs::write(library, elf).unwrap();
}

/// Case 2: a library whose symbol table is blown up to 100 MB (4.4 million symbols) costs
/// the daemon nothing: over --max-symbol-file-bytes, it is not parsed, its frames are named
/// by module and offset, the refusal is counted.
#[test]
fn a_library_with_a_100_mb_symbol_table_is_not_parsed() {
    let build = Removed(scratch("hostile-bloated-build"));
    let library = build.join("libbloated.so");
    let built = fixture_with(
        "libhostile",
        "libhot_in_library.so",
        // No DWARF: blazesym names its code from the symbol table.
        &["-shared", "-fPIC", "-DSPIN=hot_in_library", "-g0"],
    );
    fs::copy(built, &library).unwrap();
    blow_up_symtab(&library, 100 << 20);
    // readelf, which knows nothing of the test, reads the new table (hex size).
    let readelf = Command::new("readelf")
        .args(["-SW"])
        .arg(&library)
        .output()
        .unwrap();
    let sections = String::from_utf8_lossy(&readelf.stdout).into_owned();
    let symtab_size = sections
        .lines()
        .find(|l| l.contains(".symtab"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|size| u64::from_str_radix(size, 16).ok());
    assert!(symtab_size >= Some(100 << 20), "{sections}");

    let home = user_dir("hostile-bloated");
    let lib = give(&library, &home, "libbloated.so");
    let program = give(
        &fixture_with("dlopen", "dlopen", &["-ldl"]),
        &home,
        "dlopen",
    );
    let mut command = Command::new(&program);
    command
        .args([lib.to_str().unwrap(), "3"])
        .stdout(Stdio::null());
    let dir = scratch("hostile-bloated");
    let mut victim = as_nobody(&mut command);
    let (daemon, address) = start_daemon(
        &[],
        victim.pid(),
        &["--collect-interval", "500ms", "--frequency", "499"],
        &dir,
    );
    let exited = wait_until(Duration::from_secs(20), || {
        victim.0.try_wait().unwrap().is_some()
    });
    assert!(exited, "the fixture did not finish");
    std::thread::sleep(Duration::from_secs(1));
    let (health, text) = http_get(&address, "/healthz");
    assert_eq!(health, 200, "{text}");
    let metrics = http_get(&address, "/metrics").1;
    let peak = procfs::peak_rss_mib(daemon.pid()).unwrap();
    daemon.terminate_within(Duration::from_secs(2));

    // Parsed, it cost 137 MB of RSS (its pages and an index by address), and the parse
    // outlasted SIGTERM's 2 s.
    assert!(peak < 96.0, "peak RSS {peak:.0} MiB");
    let refused = metric(
        &metrics,
        "profilerd_symbol_files_refused_total{reason=\"file_bound\"}",
    );
    assert!(refused >= Some(1.0), "{refused:?}:\n{metrics}");
    let stacks = profiles_of(&dir, &format!("dlopen-{}.cpu.", victim.pid()));
    let by_offset = in_library(&stacks, "libbloated.so+0x");
    assert!(
        by_offset >= 20 && in_library(&stacks, "hot_in_library") == 0,
        "{by_offset} samples named libbloated.so+offset: {stacks:#?}"
    );
    // The rest of the process is named as usual.
    assert!(in_library(&stacks, "warm_up") >= 20, "{stacks:#?}");
}

/// JIT code named from its perf map, which the process writes itself; made a FIFO by its
/// owner, the map is refused and counted and the daemon keeps draining.
#[test]
fn a_perf_map_names_jit_code_and_a_fifo_in_its_place_is_refused() {
    for fifo in [false, true] {
        let program = fixture("jit_perfmap");
        let mut command = Command::new(&program);
        command
            .args(["1.5"])
            .args(fifo.then_some("fifo"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let mut jit = as_nobody(&mut command);
        let dir = scratch(&format!("hostile-perfmap-{fifo}"));
        let (daemon, address) = start_daemon(
            &[],
            jit.pid(),
            &["--collect-interval", "500ms", "--frequency", "499"],
            &dir,
        );
        jit.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let exited = wait_until(Duration::from_secs(10), || {
            jit.0.try_wait().unwrap().is_some()
        });
        assert!(exited, "the fixture did not finish");
        assert!(jit.0.wait().unwrap().success());
        let before = drains(&address);
        std::thread::sleep(Duration::from_secs(2));
        let after = drains(&address);
        assert!(
            before >= 0.0 && after >= before + 2.0,
            "fifo {fifo}: drains stopped: {before} then {after}"
        );
        assert_eq!(http_get(&address, "/healthz").0, 200);
        let metrics = http_get(&address, "/metrics").1;
        daemon.terminate_within(Duration::from_secs(2));
        let stacks = profiles_of(&dir, &format!("jit_perfmap-{}.cpu.", jit.pid()));
        let named = in_library(&stacks, "jit_spin_function");
        let refused = metric(
            &metrics,
            "profilerd_symbol_files_refused_total{reason=\"not_regular\"}",
        );
        if fifo {
            assert_eq!(named, 0);
            assert!(refused >= Some(1.0), "{refused:?}:\n{metrics}");
        } else {
            assert!(
                named >= 20,
                "{named} samples in jit_spin_function: {stacks:#?}"
            );
        }
    }
}
