//! The daemon's listener: /metrics read by the Prometheus text parser (python3-prometheus-client)
//! while counters move in a real run, /healthz, and the local page of kept profiles rendered
//! by headless Chromium after a real trigger.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use profiler_tests::*;

const START: Duration = Duration::from_secs(30);

/// Parses a text exposition with prometheus_client's parser; returns `name{labels}` -> value.
/// Asserts that every family has a type (a sample outside its family's `# TYPE` would come
/// out untyped) and that the ones scrapers rely on have the documented one.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(f"TYPE {family.name}\t{family.type}")
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}}\t{s.value}")
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (cargo xtask setup installs python3-prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let types: HashMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("TYPE ")?.split_once('\t'))
        .collect();
    for (family, kind) in [
        ("profilerd_samples", "counter"),
        ("profilerd_map_entries", "gauge"),
        ("profilerd_map_capacity", "gauge"),
        ("profilerd_drain_duration_seconds", "histogram"),
        ("profilerd_profiles", "counter"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(types.get(family), Some(&kind), "{family} in {stdout}");
    }
    assert!(
        types
            .values()
            .all(|kind| *kind != "untyped" && *kind != "unknown"),
        "{stdout}"
    );
    stdout
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once('\t')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_parse_and_move_during_a_real_run() {
    let busy = Running::spawn(&fixture("split"), &["30"]);
    let dir = scratch("web-metrics");
    let pid = busy.pid().to_string();
    let daemon = Daemon::continuous(&pid, "20s", &dir);
    let address = daemon.http_address(START);
    assert!(
        wait_until(START, || http_get(&address, "/healthz").0 == 200),
        "healthz never became ok: {:?}",
        http_get(&address, "/healthz")
    );

    let first = parse_metrics(&http_get(&address, "/metrics").1);
    std::thread::sleep(Duration::from_secs(4));
    let (status, text) = http_get(&address, "/metrics");
    assert_eq!(status, 200);
    let second = parse_metrics(&text);

    let taken = "profilerd_samples_total{outcome=\"taken\"}";
    let recorded = "profilerd_samples_total{outcome=\"recorded\"}";
    for name in [taken, recorded, "profilerd_samples_in_profiles_total{}"] {
        assert!(
            second[name] > first[name],
            "{name} did not move: {} -> {}",
            first[name],
            second[name]
        );
    }
    // Four seconds of one busy CPU at 99 Hz: about 400 recorded samples, give or take a drain.
    let moved = second[recorded] - first[recorded];
    assert!(
        (250.0..=600.0).contains(&moved),
        "recorded moved by {moved}"
    );
    assert!(second["profilerd_drain_duration_seconds_count{}"] >= 4.0);
    assert!(second["profilerd_profiles_total{event=\"written\"}"] >= 1.0);
    assert_eq!(second["profilerd_map_capacity{map=\"counts\"}"], 16384.0);
    assert!(second["profilerd_map_entries{map=\"user_stacks\"}"] >= 1.0);
    let rss = second["process_resident_memory_bytes{}"];
    assert!((1e6..256e6).contains(&rss), "rss {rss}");
    assert!(second["process_cpu_seconds_total{}"] > 0.0);
    for reason in ["user_stack_lost", "kernel_stack_lost"] {
        let name = format!("profilerd_stack_problems_total{{reason=\"{reason}\"}}");
        assert_eq!(second[&name], 0.0, "{name}");
    }
    drop(daemon);
    drop(busy);
}

/// Pixels of the screenshot in the flame graph's palette (inferno "hot": red to yellow).
fn flame_pixels(png: &Path) -> usize {
    let decoder = png::Decoder::new(fs::File::open(png).expect("screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| channels >= 3 && px[0] > 200 && px[1] > 60 && px[1] < 230 && px[2] < 90)
        .count()
}

fn artifacts() -> PathBuf {
    let dir = target_dir().join("test-artifacts");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The quoted name that follows the first `prefix` in `page`.
fn link_after(page: &str, prefix: &str) -> Option<String> {
    page.split(prefix)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .map(str::to_string)
}

/// A headless chromium screenshot of the daemon's page, in the artifacts directory.
fn screenshot(address: &str, dir: &Path) -> PathBuf {
    let shot = artifacts().join("local-page.png");
    let _ = fs::remove_file(&shot);
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1100",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{address}/"))
        .env("HOME", dir)
        .output()
        .expect("chromium (cargo xtask setup installs it)");
    assert!(
        shot.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    shot
}

#[test]
fn local_page_shows_a_real_trigger_and_its_flame_graph_in_chromium() {
    // 6 s light (past the rules' warm-up of 10 collections of 500 ms), 3 s burn: the CPU rule
    // fires on it.
    let fixture = Running::spawn(&fixture("spike"), &["6", "3", "0", "0"]);
    let dir = scratch("web-page");
    let pid = fixture.pid().to_string();
    let daemon = Daemon::start(
        &[
            "run",
            "--pid",
            &pid,
            "--collect-interval",
            "500ms",
            "--pre-trigger",
            "5s",
            "--post-trigger",
            "1s",
            "--dump-dir",
            "kept",
            "--duration",
            "40s",
        ],
        &dir,
        "daemon",
    );
    let address = daemon.http_address(START);
    let kept_json = |dir: &Path| {
        fs::read_dir(dir.join("kept"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(30), || kept_json(&dir)),
        "no kept profile; stderr:\n{}",
        daemon.stderr()
    );

    let (status, page) = http_get(&address, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<tr class=\"profile\">"), "{page}");
    assert!(page.contains(&format!("spike-{pid}")), "{page}");
    assert!(page.contains(">cpu<"), "{page}");
    assert!(page.contains("meet "), "reason shown: {page}");
    // The burn loop (spin_until reading the clock) is what the kept window is made of.
    let top_cell = page
        .split("<tr class=\"profile\">")
        .nth(1)
        .expect("a row")
        .to_string();
    assert!(
        ["spin_until", "now", "clock_gettime"]
            .iter()
            .any(|f| top_cell.contains(&format!("<code>{f}"))),
        "top functions: {top_cell}"
    );
    let svg = link_after(&page, "src=\"/profiles/").expect("flame graph link");
    let pprof = link_after(&page, "<a href=\"/profiles/").expect("pprof link");
    let (status, body) = http_get(&address, &format!("/profiles/{svg}"));
    assert_eq!(status, 200);
    assert!(body.contains("<svg"), "not an SVG");
    // The download is the pprof the daemon wrote, readable by go tool pprof.
    let bytes = reqwest::blocking::get(format!("http://{address}/profiles/{pprof}"))
        .unwrap()
        .bytes()
        .unwrap();
    let downloaded = dir.join("downloaded.pb.gz");
    fs::write(&downloaded, &bytes).unwrap();
    let top = go_pprof(&["-top"], &downloaded);
    assert!(top.contains("burn_cpu"), "{top}");
    // Names outside the kept list are not served.
    assert_eq!(http_get(&address, "/profiles/..%2Fdaemon.stderr").0, 404);
    assert_eq!(http_get(&address, "/profiles/daemon.stderr").0, 404);

    let shot = screenshot(&address, &dir);
    let flame = flame_pixels(&shot);
    assert!(
        flame > 5_000,
        "the flame graph did not render ({flame} flame-coloured pixels); see {}",
        shot.display()
    );
    drop(daemon);
    drop(fixture);
}
