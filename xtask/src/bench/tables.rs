//! Scenario 10: what the unwind tables cost: the time to build libc's and the host's largest
//! ELF file's, their bytes per row in kernel memory, and the daemon's peak RSS with 200
//! sampled processes beside the kernel memory of the unwind maps.

use std::{
    collections::HashMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use profiler_testkit::{procfs, wait_until};
use serde::Deserialize;

use super::{
    probe::{millis, unwind_tables, used},
    report::{Row, Verdict},
    stats::stat,
    Ctx, Procs,
};
use crate::output;

/// Loads a file into python3.11 with dlopen (a library and the libraries it needs), or, when
/// dlopen refuses it (an executable), maps its executable segments at their file offsets; then
/// burns CPU for `argv[2]` s so that it is sampled, then sleeps `argv[3]` s.
/// A file of `-` maps nothing: the baseline of python's own files.
const MAP_AND_BURN: &str = r#"
import ctypes, mmap, struct, sys, time
maps = []
try:
    if sys.argv[1] != '-':
        ctypes.CDLL(sys.argv[1])
except OSError:
    f = open(sys.argv[1], 'rb')
    h = f.read(64)
    phoff, = struct.unpack_from('<Q', h, 32)
    phentsize, phnum = struct.unpack_from('<HH', h, 54)
    for i in range(phnum):
        f.seek(phoff + i * phentsize)
        kind, flags, off, vaddr, paddr, size = struct.unpack('<IIQQQQ', f.read(40))
        if kind == 1 and flags & 1:
            start = off & ~4095
            maps.append(mmap.mmap(f.fileno(), size + off - start, flags=mmap.MAP_PRIVATE,
                                  prot=mmap.PROT_READ | mmap.PROT_EXEC, offset=start))
print('mapped', flush=True)
t = time.process_time() + float(sys.argv[2])
while time.process_time() < t: pass
time.sleep(float(sys.argv[3]))
"#;

/// Page index entry in kernel memory: an 8-byte key and an 8-byte value.
const PAGE_BYTES: f64 = 16.0;

/// The `unwind tables:` fields of `profilerd record --pid` of a process of `program ARGS`
/// that is busy from its start, once it maps `file` (if any).
fn record_one(
    ctx: &Ctx,
    program: &Path,
    args: &[&str],
    file: Option<&str>,
) -> Result<HashMap<String, String>> {
    let mut procs = Procs::default();
    let pid = procs.spawn(program, args)?;
    if let Some(file) = file {
        // python's start-up is slow on a busy machine: wait for the file's mapping.
        let mapped = wait_until(Duration::from_secs(20), || {
            fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains(file))
        });
        if !mapped {
            bail!("{file} was not mapped within 20 s");
        }
    }
    let out = ctx.dir.join("tables.folded");
    let child = ctx.profilerd(&[
        "record",
        "--pid",
        &pid.to_string(),
        "--duration",
        "3s",
        "--format",
        "folded",
        "-o",
        out.to_str().unwrap(),
    ])?;
    let output = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    unwind_tables(&stderr).context("profilerd logged no `unwind tables:` line")
}

/// (build ms, rows, pages) of one line.
fn figures(fields: &HashMap<String, String>) -> (f64, f64, f64) {
    let time = fields.get("build_time").map_or(f64::NAN, |t| millis(t));
    (time, used(fields, "rows"), used(fields, "pages"))
}

/// The three largest ELF executables or shared libraries under /usr/bin and /usr/lib,
/// largest first.
fn largest_elfs() -> Vec<(PathBuf, u64)> {
    let mut found: Vec<(PathBuf, u64)> = Vec::new();
    let mut dirs = vec![PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            if !kind.is_file() || found.len() == 3 && found[2].1 >= size {
                continue;
            }
            let mut head = [0u8; 18];
            let elf = fs::File::open(entry.path())
                .and_then(|mut f| f.read_exact(&mut head))
                .is_ok()
                && head.starts_with(b"\x7fELF")
                && matches!(u16::from_le_bytes([head[16], head[17]]), 2 | 3);
            if elf {
                found.push((entry.path(), size));
                found.sort_by_key(|f| std::cmp::Reverse(f.1));
                found.truncate(3);
            }
        }
    }
    found
}

/// (build ms, rows, pages) of the largest of `candidates` that gets a table, as the difference
/// of python3.11 mapping it and python3.11 alone; the skipped ones with why.
fn largest_table(
    ctx: &Ctx,
    candidates: &[(PathBuf, u64)],
    skipped: &mut Vec<String>,
) -> Result<(PathBuf, u64, f64, f64, f64, f64)> {
    let python = Path::new("/usr/bin/python3.11");
    let base = figures_of(record_one(
        ctx,
        python,
        &["-c", MAP_AND_BURN, "-", "5", "0"],
        None,
    )?);
    for (path, size) in candidates {
        let shown = path.display().to_string();
        let fields = record_one(
            ctx,
            python,
            &["-c", MAP_AND_BURN, &shown, "5", "0"],
            Some(&shown),
        )?;
        let with = figures_of(fields.clone());
        let rows = with.1 - base.1;
        if rows > 0.0 {
            let files = with.3 - base.3;
            return Ok((
                path.clone(),
                *size,
                with.0 - base.0,
                rows,
                with.2 - base.2,
                files,
            ));
        }
        let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
        let why = format!(
            "{shown} ({} MiB) got no table (full={} no_cfi={} rows={})",
            size >> 20,
            field("full"),
            field("no_cfi"),
            field("rows")
        );
        if !skipped.contains(&why) {
            skipped.push(why);
        }
    }
    bail!(
        "none of the largest ELF files got a table: {}",
        skipped.join("; ")
    )
}

/// Build time and bytes per row of libc and of the largest ELF file.
fn build_rows(ctx: &Ctx) -> Result<Vec<Row>> {
    let (mut libc, mut big, mut per_row) = (Vec::new(), Vec::new(), Vec::new());
    let candidates = largest_elfs();
    let mut skipped = Vec::new();
    let mut libc_files = 0.0;
    let mut largest = (PathBuf::new(), 0, 0.0, 0.0);
    for _ in 0..ctx.pairs {
        // The split fixture: its own tiny file, libc and ld.so; libc is nearly all of it.
        let split = figures_of(record_one(ctx, &ctx.fixture("split"), &["5"], None)?);
        libc_files = split.3;
        libc.push(split.0);
        per_row.push((8.0 * split.1 + PAGE_BYTES * split.2) / split.1);
        let (path, size, time, rows, pages, files) = largest_table(ctx, &candidates, &mut skipped)?;
        big.push(time);
        per_row.push((8.0 * rows + PAGE_BYTES * pages) / rows);
        largest = (path, size, rows, files);
    }
    let shown = largest.0.display().to_string();
    let (size, big_rows, big_files) = (largest.1, largest.2, largest.3);
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!("; larger files skipped: {}", skipped.join("; "))
    };
    let row = |figure: String, unit: &str, values: &[f64], workload: String| Row {
        figure,
        unit: unit.into(),
        ours: stat(values),
        peer: None,
        target: "report".into(),
        result: Verdict::Report,
        workload,
    };
    Ok(vec![
        row(
            "10a. table build time, libc.so.6".into(),
            "ms",
            &libc,
            format!("build_time of `record --pid` of the split fixture: {libc_files} files (the fixture, /lib/x86_64-linux-gnu/libc.so.6, ld.so); a fresh daemon per run"),
        ),
        row(
            format!("10b. table build time, largest ELF file with a table ({shown}, {} MiB)", size >> 20),
            "ms",
            &big,
            format!("build_time of python3.11 with it loaded (dlopen) minus python3.11 alone: {big_files} files (it and the libraries it loads), {big_rows} rows; a fresh daemon per run{skipped}"),
        ),
        row(
            "10c. kernel bytes per row (8 per row + 16 per page of the index)".into(),
            "B/row",
            &per_row,
            "rows and pages of the `unwind tables:` lines of 10a and 10b".into(),
        ),
    ])
}

/// (build ms, rows, pages, files).
fn figures_of(fields: HashMap<String, String>) -> (f64, f64, f64, f64) {
    let (time, rows, pages) = figures(&fields);
    (time, rows, pages, used(&fields, "files"))
}

/// The fields of `bpftool map show -j` the scenario reads.
#[derive(Deserialize)]
struct Map {
    #[serde(default)]
    name: String,
    #[serde(default)]
    bytes_memlock: u64,
    #[serde(default)]
    pids: Vec<MapPid>,
}

#[derive(Deserialize)]
struct MapPid {
    pid: u32,
}

/// memlock MiB of the unwind maps of daemon `pid` (by name when bpftool shows no owners).
fn unwind_memlock(pid: u32) -> Result<f64> {
    let json = output(std::process::Command::new("bpftool").args(["map", "show", "-j"]))?;
    let maps: Vec<Map> = serde_json::from_str(&json).context("bpftool JSON")?;
    let ours = |m: &&Map| m.pids.is_empty() || m.pids.iter().any(|p| p.pid == pid);
    let bytes: u64 = maps
        .iter()
        .filter(|m| ["UNWIND_ROWS", "UNWIND_PAGES", "UNWIND_MAPPINGS"].contains(&m.name.as_str()))
        .filter(ours)
        .map(|m| m.bytes_memlock)
        .sum();
    Ok(bytes as f64 / 1048576.0)
}

/// 200 processes of three Debian programs, each busy for 0.1 s of CPU (so that it is
/// sampled and gets its tables) and then asleep.
fn two_hundred(procs: &mut Procs, asleep: u64) -> Result<()> {
    let sleep = asleep.to_string();
    let python = format!("import time\nt = time.process_time() + 0.1\nwhile time.process_time() < t: pass\ntime.sleep({sleep})");
    let perl = format!("my $e = (times)[0] + 0.1; 1 while (times)[0] < $e; sleep {sleep}");
    let sqlite = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT count(*) FROM c;";
    let shell = format!(".shell sleep {sleep}");
    for i in 0..200 {
        match i % 5 {
            0 => procs.spawn(Path::new("/usr/bin/python3.11"), &["-S", "-c", &python])?,
            1 | 2 => procs.spawn(Path::new("/usr/bin/perl"), &["-e", &perl])?,
            _ => procs.spawn(Path::new("/usr/bin/sqlite3"), &[":memory:", sqlite, &shell])?,
        };
    }
    Ok(())
}

/// Peak RSS of `record` of all processes with the 200 processes, and the unwind maps' memlock.
fn peak_rss(ctx: &Ctx, secs: u64) -> Result<(f64, f64, HashMap<String, String>)> {
    let out = ctx.dir.join("tables-200.folded");
    let child = ctx.profilerd(&[
        "record",
        "--duration",
        &format!("{secs}s"),
        "--format",
        "folded",
        "-o",
        out.to_str().unwrap(),
    ])?;
    let pid = child.id();
    thread::sleep(Duration::from_secs(1));
    let mut procs = Procs::default();
    two_hundred(&mut procs, secs + 30)?;
    let started = Instant::now();
    let (mut peak, mut memlock) = (0.0_f64, 0.0_f64);
    while started.elapsed() < Duration::from_secs(secs - 2) {
        peak = peak.max(procfs::peak_rss_mib(pid).unwrap_or(0.0));
        memlock = memlock.max(unwind_memlock(pid).unwrap_or(0.0));
        thread::sleep(Duration::from_millis(500));
    }
    let output = child.wait_with_output()?;
    let fields = unwind_tables(&String::from_utf8_lossy(&output.stderr))
        .context("profilerd logged no `unwind tables:` line")?;
    Ok((peak, memlock, fields))
}

/// Separate debug files installed (`/usr/lib/debug/.build-id`): the symbolizer parses the DWARF
/// of those it finds (libc6-dbg's for libc adds about 20 MiB to the peak), so the figure
/// depends on them.
fn debug_files() -> String {
    let count = fs::read_dir("/usr/lib/debug/.build-id")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .filter_map(|d| fs::read_dir(d.path()).ok())
                .map(|files| {
                    files
                        .filter_map(Result::ok)
                        .filter(|f| f.file_name().to_string_lossy().ends_with(".debug"))
                        .count()
                })
                .sum::<usize>()
        })
        .unwrap_or(0);
    match count {
        0 => "no separate debug files installed".to_string(),
        n => format!(
            "{n} separate debug files installed under /usr/lib/debug (their DWARF is parsed)"
        ),
    }
}

/// Scenario 10.
pub(super) fn tables(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = build_rows(ctx)?;
    let secs = ctx.seconds(60, 40);
    let (mut peaks, mut memlocks) = (Vec::new(), Vec::new());
    let mut last = HashMap::new();
    for _ in 0..ctx.pairs {
        let (peak, memlock, fields) = peak_rss(ctx, secs)?;
        peaks.push(peak);
        memlocks.push(memlock);
        last = fields;
    }
    let peak = stat(&peaks);
    let memlock = stat(&memlocks);
    let get = |k: &str| last.get(k).cloned().unwrap_or_default();
    rows.push(Row {
        figure: format!(
            "10d. daemon peak RSS (VmHWM), 200 sampled processes; unwind maps' kernel memory {:.1} MiB (memlock of UNWIND_ROWS, UNWIND_PAGES, UNWIND_MAPPINGS)",
            memlock.median
        ),
        unit: "MiB".into(),
        ours: peak,
        peer: None,
        target: "<= 40 MiB".into(),
        result: Verdict::from(peak.median <= 40.0),
        workload: format!(
            "{secs} s `record` of all processes; 200 processes (40 python3.11, 80 perl, 80 sqlite3) each busy 0.1 CPU-s then asleep (python3.11 -S); last run's tables: files={} rows={} pages={} processes={}; {}",
            get("files"), get("rows"), get("pages"), get("processes"), debug_files()
        ),
    });
    Ok(rows)
}
