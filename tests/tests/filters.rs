//! In-kernel filters: `--pid` and `--cgroup` keep other busy processes out of the profile.

use std::{fs, path::PathBuf, time::Duration};

use profiler_tests::*;

#[test]
fn pid_filter_excludes_a_second_busy_process() {
    let wanted = Running::spawn(&fixture("split"), &["30"]);
    let other = Running::spawn(&fixture("split"), &["30"]);
    let pid = wanted.pid().to_string();
    let stacks = record_stacks("filter-pid", &["--pid", &pid, "--duration", "3s"]);
    assert_only_pid(
        &stacks,
        wanted.pid(),
        &format!("{} is busy too", other.pid()),
    );
}

fn cgroup2_mount() -> PathBuf {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| PathBuf::from(left.split_whitespace().nth(4).unwrap()))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

/// A child cgroup made for the test, removed (after its processes are gone) on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn cgroup_filter_profiles_only_the_process_moved_into_it() {
    let mount = cgroup2_mount();
    let name = format!("profilerd-e2e-{}", std::process::id());
    let group = TestCgroup(mount.join(&name));
    fs::create_dir(&group.0).expect("create a child cgroup (needs root)");

    let outside = Running::spawn(&fixture("split"), &["30"]);
    let inside = Running::spawn(&fixture("split"), &["30"]);
    fs::write(group.0.join("cgroup.procs"), inside.pid().to_string())
        .expect("move the fixture into the cgroup");
    let context = format!(
        "only {} is in the cgroup, {} is not",
        inside.pid(),
        outside.pid()
    );

    // Relative to the cgroup2 root, as a user would name a systemd unit's cgroup.
    let relative = format!("/{name}");
    let stacks = record_stacks(
        "filter-cgroup",
        &["--cgroup", &relative, "--duration", "3s"],
    );
    assert_only_pid(&stacks, inside.pid(), &context);

    // The absolute path form selects the same cgroup.
    let absolute = group.0.to_str().unwrap();
    let stacks = record_stacks(
        "filter-cgroup-abs",
        &["--cgroup", absolute, "--duration", "2s"],
    );
    assert_only_pid(&stacks, inside.pid(), &context);
    drop(inside);
}
