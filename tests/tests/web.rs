//! The daemon's listener: /metrics read by the Prometheus text parser (python3-prometheus-client)
//! while counters move in a real run, /healthz, and the local page of kept profiles rendered
//! by headless Chromium after a real trigger.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use profiler_tests::{browser::Browser, *};

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
    let out = run_with_input(
        Command::new("/usr/bin/python3").args(["-c", script]),
        text.as_bytes(),
        "python3 (cargo xtask setup installs python3-prometheus-client)",
    );
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
    // Continuous-mode windows are on the page, each file with its view.
    let (status, page) = http_get(&address, "/?rule=continuous");
    assert_eq!(status, 200);
    assert!(page.contains(&format!("<td>split-{pid}</td>")), "{page}");
    let view = link_after(&page, "href=\"/view/").expect("a view link");
    assert!(view.starts_with(&format!("split-{pid}.cpu.")), "{view}");
    let (status, body) = http_get(&address, &format!("/view/{view}"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("id=\"flame-data\"") && body.contains("work_"),
        "{body}"
    );
    assert!(http_get(&address, "/?rule=cpu").1.contains("id=\"empty\""));
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

/// The kept profile's sidecar in `dir/kept`, once the complete profile replaced the one
/// written at the firing.
fn complete_sidecar(dir: &Path) -> Option<String> {
    fs::read_dir(dir.join("kept"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .find(|text| !text.contains("\"capturing\""))
}

/// Numbers of a data attribute over the elements matching `css`, in document order.
fn numbers(browser: &Browser, css: &str, attribute: &str) -> Vec<f64> {
    browser
        .script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => Number(e.getAttribute(arguments[1])));",
            serde_json::json!([css, attribute]),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Screenshot of the whole page (the window resized to its height), in the artifacts dir.
fn full_screenshot(browser: &Browser, name: &str) -> PathBuf {
    let height = browser
        .script(
            "return document.documentElement.scrollHeight;",
            serde_json::json!([]),
        )
        .as_u64()
        .unwrap_or(1100)
        .clamp(600, 4000);
    browser.resize(1400, height as u32 + 100);
    let shot = artifacts().join(name);
    browser.screenshot(&shot);
    shot
}

/// The list page: the kept profile, filters that keep and drop it.
fn check_list(browser: &Browser, address: &str, pid: &str) {
    browser.goto(&format!("http://{address}/"));
    let rows = browser.find_all("table#kept tr.profile");
    assert_eq!(rows.len(), 1);
    assert!(browser.text(&rows[0]).contains(&format!("goflow-{pid}")));
    browser.goto(&format!("http://{address}/?rule={}", "continuous"));
    assert!(browser
        .text(&browser.find("#empty"))
        .contains("No profile matches"));
    browser.goto(&format!("http://{address}/?rule=cpu&target=GOFLOW"));
    assert_eq!(
        browser.find_all("table#kept tr.profile").len(),
        1,
        "a part of the name, any case"
    );
    full_screenshot(browser, "page-list.png");
    browser.click(&browser.find("a.view"));
}

/// The profile's page: why it fired, the timeline, the flame graph's search and zoom, the
/// differential graph, the sortable top table.
fn check_view(browser: &Browser) {
    let rule = browser.find("table#rules tr[data-metric=cpu]");
    let cells: Vec<f64> = ["td.cur", "td.avg"]
        .iter()
        .map(|c| {
            browser
                .text(&browser.find(&format!("table#rules tr[data-metric=cpu] {c}")))
                .parse()
                .unwrap()
        })
        .collect();
    assert!(cells[0] > cells[1], "cur over avg: {}", browser.text(&rule));
    assert!(browser
        .text(&browser.find("#window"))
        .contains("around the firing"));
    // The timeline: values each collect interval, the spike after the firing over the
    // thresholds drawn.
    let plot = "svg.timeline[data-metric=cpu]";
    let values = numbers(browser, &format!("{plot} circle.value"), "data-value");
    let at = numbers(browser, &format!("{plot} circle.value"), "data-at-ms");
    assert!(
        values.len() >= 8,
        "one point per 500 ms interval: {values:?}"
    );
    let min = numbers(
        browser,
        &format!("{plot} line.threshold[data-rule=min]"),
        "data-value",
    );
    assert_eq!(min, [10.0], "the cpu rule's min");
    let before_peak = values
        .iter()
        .zip(&at)
        .filter(|(_, t)| **t < 0.0)
        .map(|(v, _)| *v)
        .fold(0.0, f64::max);
    let fired = values
        .iter()
        .zip(&at)
        .filter(|(_, t)| **t >= 0.0)
        .map(|(v, _)| *v)
        .fold(0.0, f64::max);
    assert!(
        fired >= 10.0 && fired > before_peak,
        "spike after the firing: {values:?} at {at:?}"
    );
    assert_eq!(browser.find_all(&format!("{plot} line.firing")).len(), 1);
    check_flame_graph(browser);
    check_diff_and_top(browser);
}

/// The flame graph: sized to its stacks, search, zoom and reset.
fn check_flame_graph(browser: &Browser) {
    // The flame graph, as tall as its stacks.
    let flame = browser.find("#flame");
    let frames: usize = browser
        .attribute(&flame, "data-frames")
        .unwrap()
        .parse()
        .unwrap();
    assert!(frames >= 6, "{frames} frames drawn");
    let height = browser.script(
        "return document.getElementById('flame').clientHeight;",
        serde_json::json!([]),
    );
    assert!(
        (60..=600).contains(&height.as_u64().unwrap()),
        "sized to the data: {height}"
    );
    // Search: the burn loop is most of the samples.
    let search = browser.find("#search");
    browser.type_text(&search, "FlowAdv");
    let matched = browser.text(&browser.find("#matched"));
    let share: f64 = matched
        .strip_prefix("Matched: ")
        .and_then(|m| m.split('%').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("matched: {matched:?}"));
    assert!(share > 50.0, "{matched}");
    assert!(!browser.find_all("#flame div.match").is_empty());
    // Zoom on FlowAdv, then reset.
    browser.click(&browser.find("#flame div[data-name='main.FlowAdv']"));
    assert_eq!(
        browser.attribute(&flame, "data-zoomed").as_deref(),
        Some("main.FlowAdv")
    );
    assert!(
        !browser.find_all("#flame div.dim").is_empty(),
        "callers greyed out"
    );
    browser.click(&browser.find("#reset"));
    assert_eq!(
        browser.attribute(&flame, "data-zoomed").as_deref(),
        Some("all")
    );
    assert_eq!(browser.text(&browser.find("#matched")), "");
}

/// The differential graph and the top table's sorting.
fn check_diff_and_top(browser: &Browser) {
    // The differential graph: the burn grew against the quiet seconds before the firing.
    let grew = browser.script(
        "const d = document.querySelector('#diff div[data-name=\"main.FlowAdv\"]'); return d ? getComputedStyle(d).backgroundColor : null;",
        serde_json::json!([]),
    );
    let grew = grew
        .as_str()
        .unwrap_or_else(|| panic!("no main.FlowAdv in the differential graph"));
    let rgb: Vec<u32> = grew
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(", ")
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(rgb[0] == 255 && rgb[1] < 200, "red for growth: {grew}");

    // The top table sorts by cumulative value, then the other way.
    let flat = numbers(browser, "table#top tbody tr", "data-flat");
    assert!(
        flat.windows(2).all(|w| w[0] >= w[1]),
        "by self first: {flat:?}"
    );
    let cum_heading = browser.find("table#top th[data-sort=cum]");
    browser.click(&cum_heading);
    let cum = numbers(browser, "table#top tbody tr", "data-cum");
    assert!(cum.windows(2).all(|w| w[0] >= w[1]), "by cum: {cum:?}");
    assert!(cum[0] > flat[0] || cum[0] == flat[0] && cum.len() == 1);
    assert_eq!(
        browser.attribute(&cum_heading, "aria-sort").as_deref(),
        Some("descending")
    );
    browser.click(&cum_heading);
    let cum = numbers(browser, "table#top tbody tr", "data-cum");
    assert!(cum.windows(2).all(|w| w[0] <= w[1]), "ascending: {cum:?}");
    // The article's lesson: FlowAdv has little self time and most of the cumulative time.
    let total = browser
        .script(
            "return JSON.parse(document.getElementById('flame-data').textContent).total;",
            serde_json::json!([]),
        )
        .as_f64()
        .unwrap();
    let row = "table#top tr[data-name='main.FlowAdv']";
    let (flat, cum) = (
        numbers(browser, row, "data-flat"),
        numbers(browser, row, "data-cum"),
    );
    assert!(cum[0] > 0.5 * total, "FlowAdv cum {} of {total}", cum[0]);
    assert!(
        flat[0] < 0.5 * cum[0],
        "FlowAdv flat {} cum {}",
        flat[0],
        cum[0]
    );
}

/// The listing's links: the SVG, the pprof (read by go tool pprof), the view; names outside
/// the listing are not served. Returns the view's file name.
fn check_files(address: &str, page: &str, dir: &Path) -> String {
    let view = link_after(page, "href=\"/view/").expect("view link");
    let pprof = link_after(page, "<a href=\"/profiles/").expect("pprof link");
    let svg = pprof.replace(".pb.gz", ".svg");
    assert!(
        page.contains(&format!("href=\"/profiles/{svg}\"")),
        "{page}"
    );
    let (status, body) = http_get(address, &format!("/profiles/{svg}"));
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
    assert!(top.contains("main.FlowAdv"), "{top}");
    // Names outside the kept list are not served.
    assert_eq!(http_get(address, "/profiles/..%2Fdaemon.stderr").0, 404);
    assert_eq!(http_get(address, "/profiles/daemon.stderr").0, 404);

    assert_eq!(view, pprof, "the view of the downloadable profile");
    assert_eq!(http_get(address, &format!("/view/{view}?type=heap")).0, 400);
    assert_eq!(http_get(address, "/view/daemon.stderr").0, 404);
    view
}

#[test]
fn local_page_shows_a_real_trigger_and_its_flame_graph_in_chromium() {
    // 6 s light (past the rules' warm-up of 10 collections of 500 ms), 3 s burn: the CPU rule
    // fires on it.
    let fixture = Running::spawn(&fixture("goflow"), &["6", "3"]);
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
    assert!(
        wait_until(Duration::from_secs(40), || complete_sidecar(&dir).is_some()),
        "no complete kept profile; stderr:\n{}",
        daemon.stderr()
    );
    let (status, page) = http_get(&address, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<tr class=\"profile\">"), "{page}");
    assert!(page.contains(&format!("goflow-{pid}")), "{page}");
    assert!(page.contains(">cpu<"), "{page}");
    assert!(page.contains("meet "), "reason shown: {page}");
    let top_cell = page
        .split("<tr class=\"profile\">")
        .nth(1)
        .expect("a row")
        .to_string();
    assert!(top_cell.contains("<code>"), "top functions: {top_cell}");
    let view = check_files(&address, &page, &dir);

    // The browser runs the page's own script only (it must work under this policy below).
    let answer = reqwest::blocking::get(format!("http://{address}/view/{view}")).unwrap();
    let policy = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("script-src 'sha256-") && policy.contains("default-src 'none'"),
        "{policy}"
    );

    let browser = Browser::start(&dir, 1400, 1100);
    check_list(&browser, &address, &pid);
    check_view(&browser);
    // The screenshot in the README: FlowAdv found, the table by cumulative time.
    browser.type_text(&browser.find("#search"), "FlowAdv");
    browser.click(&browser.find("table#top th[data-sort=cum]"));
    let shot = full_screenshot(&browser, "page-view.png");
    drop(browser);
    let flame = flame_pixels(&shot);
    assert!(
        flame > 5_000,
        "the flame graph did not render ({flame} flame-coloured pixels); see {}",
        shot.display()
    );
    drop(daemon);
    drop(fixture);
}
