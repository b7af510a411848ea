//! `profilerd record`: the hot function's share, the caller chain, every output format, and a
//! process that exits before the drain.

use profiler_tests::*;

#[test]
fn hot_function_share_and_caller_chain_in_pprof() {
    let fixture = Running::spawn(&fixture("split"), &["30"]);
    let dir = scratch("record-pprof");
    let out = dir.join("cpu.pb.gz");
    let pid = fixture.pid().to_string();
    let output = record_pid(&pid, "4s", &[], &out);

    let profile = read_pprof(&out);
    let stacks = stacks(&profile);
    let total = total(&stacks);

    // Every sample taken is either in the profile or in a counter with its reason.
    let acc = accounting(&String::from_utf8_lossy(&output.stderr));
    eprintln!("accounting: {acc:?}");
    assert_eq!(
        acc["taken"],
        acc["idle"] + acc["filtered"] + acc["recorded"] + acc["dropped_map_full"],
        "{acc:?}"
    );
    assert_eq!(acc["recorded"], acc["drained"], "{acc:?}");
    assert_eq!(
        acc["drained"],
        acc["in_profiles"] + acc["dropped_stack_limit"],
        "{acc:?}"
    );
    assert_eq!(acc["in_profiles"], total as u64, "{acc:?}");
    // 4 s at 99 Hz of one busy thread is ~396 samples; a shared VM loses some.
    assert!(
        total >= scenario::split::MIN_SAMPLES_4S,
        "only {total} samples in 4 s"
    );
    assert!(
        stacks.iter().all(|s| s.pid() == fixture.pid()),
        "a sample of another process"
    );
    assert!(stacks
        .iter()
        .all(|s| s.labels.get("comm").map(String::as_str) == Some("split")));

    let scenario::split::Share { share, three, one } = scenario::split::share(&stacks);
    eprintln!(
        "work_three share: {:.1}% ({three} vs {one} samples)",
        share * 100.0
    );
    assert!(
        scenario::split::SHARE_BAND.contains(&share),
        "work_three share {share:.3} outside 60-90%"
    );

    // The whole chain main -> work_three -> work_unit is walked, in order (leaf first).
    let chain = stacks
        .iter()
        .find(|s| s.has("work_three") && s.has("work_unit"))
        .expect("a sample inside work_unit called from work_three");
    let names: Vec<&str> = chain
        .frames
        .iter()
        .filter(|f| !f.kernel)
        .map(|f| f.function.as_str())
        .collect();
    for name in ["work_unit", "work_three", "main"] {
        assert!(names.contains(&name), "{name} missing in {names:?}");
    }
    assert!(scenario::split::chain_in_order(chain), "{names:?}");

    // The reference reader accepts the file and names both hot callers.
    let top = go_pprof(&["-top", "-nodecount=50"], &out);
    assert!(
        top.contains("work_three") && top.contains("work_one"),
        "go tool pprof -top:\n{top}"
    );
    let traces = go_pprof(&["-traces"], &out);
    assert!(
        traces.contains(&format!("pid:  {pid}")) || traces.contains(&pid),
        "{traces}"
    );
}

#[test]
fn folded_and_svg_outputs() {
    let fixture = Running::spawn(&fixture("split"), &["30"]);
    let dir = scratch("record-formats");
    let pid = fixture.pid().to_string();

    let folded = dir.join("cpu.folded");
    record_pid(&pid, "2s", &[], &folded);
    let text = std::fs::read_to_string(&folded).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(";main;work_three;work_unit "))
        .unwrap_or_else(|| panic!("no main;work_three;work_unit stack in:\n{text}"));
    assert!(line.starts_with("split;"), "{line}");
    let count: u64 = line
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("count at line end");
    assert!(count > 0);

    let svg = dir.join("flame.out");
    record_pid(&pid, "2s", &["--format", "svg"], &svg);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml") && text.contains("<svg"),
        "not an SVG"
    );
    assert!(
        text.contains("work_three") && text.contains("work_one"),
        "hot functions missing from the flame graph"
    );
}

#[test]
fn process_exiting_before_the_drain_keeps_its_symbols() {
    // The fixture lives 1.5 s; the first drain comes only after 4 s, long after it exited and
    // was reaped (its /proc entry is gone).
    let mut child = std::process::Command::new(fixture("split"))
        .arg("1.5")
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let reaper = std::thread::spawn(move || child.wait());
    let dir = scratch("record-exit");
    let out = dir.join("cpu.pb.gz");
    let output = record_pid(&pid, "20s", &["--collect-interval", "4s"], &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("every --pid has exited"),
        "record should end early:\n{stderr}"
    );
    let stacks = stacks(&read_pprof(&out));
    let total: i64 = stacks.iter().map(|s| s.count).sum();
    assert!(total >= 50, "only {total} samples");
    let named: i64 = stacks
        .iter()
        .filter(|s| s.has("work_unit") && s.has("main"))
        .map(|s| s.count)
        .sum();
    assert!(
        named * 10 >= total * 8,
        "{named} of {total} samples have named frames: {stacks:#?}"
    );
    assert!(reaper.join().unwrap().unwrap().success());
}

#[test]
fn code_mapped_after_the_first_sample_is_named() {
    let library = fixture_with("libhot", "libhot.so", &["-shared", "-fPIC"]);
    let program = fixture_with("dlopen", "dlopen", &["-ldl"]);
    let fixture = Running::spawn(&program, &[library.to_str().unwrap(), "30"]);
    let out = scratch("record-dlopen").join("cpu.pb.gz");
    let pid = fixture.pid().to_string();
    record_pid(&pid, "4s", &[], &out);
    let stacks = stacks(&read_pprof(&out));
    let warm: i64 = stacks
        .iter()
        .filter(|s| s.has("warm_up"))
        .map(|s| s.count)
        .sum();
    let hot: i64 = stacks
        .iter()
        .filter(|s| s.has("hot_in_library") && s.has("main"))
        .map(|s| s.count)
        .sum();
    assert!(
        warm > 20,
        "the process was sampled before the dlopen: {warm} samples"
    );
    assert!(
        hot > 100,
        "only {hot} samples named hot_in_library under main: {stacks:#?}"
    );
    let top = go_pprof(&["-top"], &out);
    assert!(top.contains("hot_in_library"), "{top}");
}
