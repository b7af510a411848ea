//! In-kernel filters: `--pid` and `--cgroup` keep other busy processes out of the profile.

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

#[test]
fn cgroup_filter_profiles_only_the_process_moved_into_it() {
    let group = TestCgroup::create("profilerd-e2e");
    let name = group.name();

    let outside = Running::spawn(&fixture("split"), &["30"]);
    let inside = Running::spawn(&fixture("split"), &["30"]);
    group.add(inside.pid());
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
