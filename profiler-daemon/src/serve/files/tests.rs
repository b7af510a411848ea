//! Planted files in a dump dir: links, FIFOs, other users' files, the row bound.

use std::{
    os::unix::fs::symlink,
    path::PathBuf,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("profilerd-files-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn kept(base: &str, fired_unix: u64) -> KeptSummary {
    KeptSummary {
        fired_unix,
        target: base.into(),
        pprof: format!("{base}.pb.gz"),
        svg: Some(format!("{base}.svg")),
        ..KeptSummary::default()
    }
}

/// Writes a kept profile as the daemon does: pprof, svg, then the sidecar.
fn write_kept(dir: &Path, base: &str, fired_unix: u64) {
    let k = kept(base, fired_unix);
    fs::write(dir.join(&k.pprof), b"pprof").unwrap();
    fs::write(dir.join(k.svg.as_ref().unwrap()), b"<svg/>").unwrap();
    fs::write(
        dir.join(format!("{base}{SIDECAR_SUFFIX}")),
        serde_json::to_vec(&k).unwrap(),
    )
    .unwrap();
}

fn chown_to_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534))
        .expect("the unit tests run as root (chown to another user)");
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn listing_reads_sidecars_newest_first_within_the_window() {
    let dir = scratch("window");
    let now = now_unix();
    for (base, age) in [("old", 7200), ("new", 10), ("mid", 60)] {
        write_kept(&dir, base, now - age);
    }
    // A sidecar whose profile was removed by the dump-dir bounds is not listed.
    fs::write(
        dir.join(format!("gone{SIDECAR_SUFFIX}")),
        serde_json::to_vec(&kept("gone", now - 5)).unwrap(),
    )
    .unwrap();
    let stats = FileStats::default();
    let listing = list_kept(
        &dir,
        Duration::from_secs(3600),
        SystemTime::now(),
        &stats,
        |_| true,
    );
    let targets: Vec<&str> = listing.rows.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, vec!["new", "mid"]);
    assert!(!listing.truncated);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_planted_sidecar_and_a_symlink_to_a_secret_serve_nothing() {
    let dir = scratch("symlink");
    let secret = dir.join("secret");
    fs::write(&secret, b"root:$6$hash").unwrap();
    let now = now_unix();
    // The sidecar is the daemon's own (a real kept profile's), the pprof a link.
    write_kept(&dir, "leak", now);
    fs::remove_file(dir.join("leak.pb.gz")).unwrap();
    symlink(&secret, dir.join("leak.pb.gz")).unwrap();
    let stats = FileStats::default();
    let read = read_kept_file(&dir, "leak.pb.gz", DAY, SystemTime::now(), &stats);
    assert_eq!(read, None);
    assert_eq!(stats.refused(Refusal::Link), 1);
    // And the page does not list it.
    assert!(list_kept(&dir, DAY, SystemTime::now(), &stats, |_| true)
        .rows
        .is_empty());
    // A sidecar that is itself a link to a sidecar elsewhere is not read either.
    let elsewhere = scratch("symlink-elsewhere");
    write_kept(&elsewhere, "real", now);
    symlink(elsewhere.join("real.json"), dir.join("real.json")).unwrap();
    symlink(elsewhere.join("real.svg"), dir.join("real.svg")).unwrap();
    assert_eq!(
        read_kept_file(&dir, "real.svg", DAY, SystemTime::now(), &stats),
        None
    );
    assert_eq!(stats.refused(Refusal::Link), 2);
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&elsewhere).unwrap();
}

#[test]
fn a_fifo_named_like_a_sidecar_does_not_block_the_listing() {
    let dir = scratch("fifo");
    write_kept(&dir, "real", now_unix());
    let fifo = dir.join("x.json");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o666) }, 0);
    let (tx, rx) = mpsc::channel();
    let listed_dir = dir.clone();
    let started = Instant::now();
    thread::spawn(move || {
        let stats = FileStats::default();
        let listing = list_kept(&listed_dir, DAY, SystemTime::now(), &stats, |_| true);
        let fifo = read_ours(&listed_dir, "x.json", 1024, &stats);
        let _ = tx.send((listing.rows.len(), stats.refused(Refusal::NotRegular), fifo));
    });
    let (rows, not_regular, fifo) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the listing hung on the FIFO");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(rows, 1);
    assert_eq!(not_regular, 2);
    assert!(matches!(fifo, Err(ReadError::Refused(Refusal::NotRegular))));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_users_files_hard_links_and_oversized_files_are_refused() {
    let dir = scratch("owners");
    let now = now_unix();
    write_kept(&dir, "planted", now);
    chown_to_nobody(&dir.join("planted.json"));
    let stats = FileStats::default();
    assert!(list_kept(&dir, DAY, SystemTime::now(), &stats, |_| true)
        .rows
        .is_empty());
    assert_eq!(
        read_kept_file(&dir, "planted.pb.gz", DAY, SystemTime::now(), &stats),
        None
    );
    assert_eq!(stats.refused(Refusal::NotOurs), 2);

    // A hard link to a file of ours elsewhere (owned by root, like /etc/shadow).
    write_kept(&dir, "linked", now);
    let secret = dir.join("secret");
    fs::write(&secret, b"secret").unwrap();
    fs::remove_file(dir.join("linked.svg")).unwrap();
    fs::hard_link(&secret, dir.join("linked.svg")).unwrap();
    assert_eq!(
        read_kept_file(&dir, "linked.svg", DAY, SystemTime::now(), &stats),
        None
    );
    assert_eq!(stats.refused(Refusal::NotOurs), 3);
    // The daemon's own files are served.
    assert_eq!(
        read_kept_file(&dir, "linked.pb.gz", DAY, SystemTime::now(), &stats).as_deref(),
        Some(&b"pprof"[..])
    );
    fs::write(
        dir.join("big.json"),
        vec![b' '; MAX_SIDECAR_BYTES as usize + 1],
    )
    .unwrap();
    assert!(matches!(
        read_ours(&dir, "big.json", MAX_SIDECAR_BYTES, &stats),
        Err(ReadError::Refused(Refusal::TooLarge))
    ));
    // Names that would leave the directory are not even looked up.
    for name in ["../secret", "..", ".", ""] {
        assert!(matches!(
            read_ours(&dir, name, 1024, &stats),
            Err(ReadError::Io(_))
        ));
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_page_reads_only_the_newest_sidecars() {
    let dir = scratch("bound");
    let now = now_unix();
    let start = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..(MAX_SIDECARS + 20) {
        let base = format!("p{i:04}");
        write_kept(&dir, &base, now - 3600 + i as u64);
        let sidecar = fs::File::options()
            .write(true)
            .open(dir.join(format!("{base}{SIDECAR_SUFFIX}")))
            .unwrap();
        sidecar
            .set_modified(start + Duration::from_secs(i as u64))
            .unwrap();
    }
    let stats = FileStats::default();
    let listing = list_kept(&dir, DAY, SystemTime::now(), &stats, |_| true);
    assert!(listing.truncated);
    assert_eq!(listing.rows.len(), MAX_SIDECARS);
    assert_eq!(listing.rows[0].target, format!("p{:04}", MAX_SIDECARS + 19));
    assert_eq!(listing.rows[MAX_SIDECARS - 1].target, "p0020");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn continuous_windows_are_listed_from_one_sidecar_and_filtered() {
    let dir = scratch("continuous");
    let now = now_unix();
    let file = |comm: &str| format!("{comm}-1.cpu.20261206T174411.421Z.pb.gz");
    let rows: Vec<KeptSummary> = ["api", "db", "api2"]
        .iter()
        .map(|comm| {
            fs::write(dir.join(file(comm)), b"pprof").unwrap();
            KeptSummary {
                fired_unix: now - 5,
                target: format!("{comm}-1"),
                service: if comm.starts_with("api") { "api" } else { "db" }.into(),
                trigger: crate::export::CONTINUOUS.into(),
                pprof: file(comm),
                ..KeptSummary::default()
            }
        })
        .collect();
    fs::write(
        dir.join("continuous.20261206T174411.421Z.json"),
        serde_json::to_vec(&rows).unwrap(),
    )
    .unwrap();
    write_kept(&dir, "cpu.1.20261206T174500.000Z", now - 1);
    let stats = FileStats::default();
    let listing = list_kept(&dir, DAY, SystemTime::now(), &stats, |row| {
        row.service == "api"
    });
    let targets: Vec<&str> = listing.rows.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert!(targets.contains(&"api-1") && targets.contains(&"api2-1"));
    assert_eq!(
        listing.services.len(),
        2,
        "every row read is a filter value"
    );
    assert_eq!(listing.targets.len(), 4);
    // A continuous file is found through its window's sidecar.
    let found = find_listed(&dir, &file("db"), DAY, SystemTime::now(), &stats).expect("listed");
    assert_eq!(found.target, "db-1");
    assert_eq!(
        read_kept_file(&dir, &file("db"), DAY, SystemTime::now(), &stats).as_deref(),
        Some(&b"pprof"[..])
    );
    assert!(find_listed(
        &dir,
        "other-1.cpu.20261206T174411.421Z.pb.gz",
        DAY,
        SystemTime::now(),
        &stats
    )
    .is_none());
    fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn past_the_queue_requests_are_turned_away_at_once() {
    let workers = std::sync::Arc::new(FileWorkers::default());
    let stats = std::sync::Arc::new(FileStats::default());
    let mut waiting = Vec::new();
    for _ in 0..(FILE_WORKERS + FILE_QUEUE) {
        let (workers, stats) = (workers.clone(), stats.clone());
        waiting.push(tokio::spawn(async move {
            workers
                .run(&stats, || thread::sleep(Duration::from_millis(300)))
                .await
        }));
    }
    // Let every spawned request take its place in the queue.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert!(workers.run(&stats, || ()).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(stats.queue_full.load(Ordering::Relaxed), 1);
    for request in waiting {
        assert!(request.await.unwrap().is_ok());
    }
    // Once the queue drained, requests are served again.
    assert!(workers.run(&stats, || ()).await.is_ok());
}

#[tokio::test]
async fn requests_dropped_while_waiting_give_their_place_back() {
    let workers = std::sync::Arc::new(FileWorkers::default());
    let stats = std::sync::Arc::new(FileStats::default());
    // Clients that go away mid-request: hyper drops their futures while they wait.
    let mut gone = Vec::new();
    for _ in 0..(FILE_WORKERS + FILE_QUEUE) {
        let (workers, stats) = (workers.clone(), stats.clone());
        gone.push(tokio::spawn(async move {
            workers
                .run(&stats, || thread::sleep(Duration::from_millis(300)))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for request in &gone {
        request.abort();
    }
    for request in gone {
        let _ = request.await;
    }
    assert_eq!(workers.waiting.load(Ordering::Relaxed), 0);
    assert!(workers.run(&stats, || ()).await.is_ok(), "not turned away");
    assert_eq!(stats.queue_full.load(Ordering::Relaxed), 0);
}
