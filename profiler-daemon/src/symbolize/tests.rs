//! The symbolizer against this test binary and the real kernel: caches within their bounds,
//! files held while mapped and released after their ttl.

use std::os::unix::fs::MetadataExt;

use super::*;

/// A symbolizer with small caches: 8 processes, 16 kernel names.
fn small_symbols(max_user_symbols: usize, file_ttl: Duration) -> Symbols {
    Symbols::new(SymbolsConfig {
        max_processes: 8,
        max_kernel_symbols: 16,
        max_user_symbols,
        file_ttl,
        max_symbol_file_bytes: 1 << 40,
        max_symbol_bytes: 1 << 40,
        max_symbol_files: 4096,
    })
}

#[inline(never)]
fn marker_function() -> u64 {
    std::hint::black_box(7)
}

#[test]
fn user_names_are_cached_within_the_bound() {
    let mut symbols = small_symbols(16, Duration::from_secs(60));
    let pid = std::process::id();
    symbols.track(pid);
    let addr = marker_function as *const () as u64;
    let first = symbols.user(pid, &[addr]);
    assert!(first[0].function().contains("marker_function"), "{first:?}");
    assert_eq!(
        (
            symbols.stats.user_cache_hits,
            symbols.stats.user_cache_misses
        ),
        (0, 1)
    );
    assert_eq!(symbols.user(pid, &[addr]), first);
    assert_eq!(
        (
            symbols.stats.user_cache_hits,
            symbols.stats.user_cache_misses
        ),
        (1, 1)
    );

    let addrs: Vec<u64> = (0..40).map(|i| addr + i).collect();
    assert_eq!(symbols.user(pid, &addrs).len(), 40);
    assert!(symbols.user_symbols <= 16, "{}", symbols.user_symbols);
    assert_eq!(
        symbols.stats().user_cache_entries,
        symbols.user_symbols as u64
    );
    assert!(symbols.stats.user_cache_dropped > 0);
    let cached: usize = symbols.names.values().map(HashMap::len).sum();
    assert_eq!(cached, symbols.user_symbols);
    assert_eq!(
        symbols.user(pid, &[addr])[0].function(),
        first[0].function()
    );
}

#[test]
fn files_are_released_with_the_last_process_mapping_them() {
    let mut symbols = small_symbols(16, Duration::from_secs(60));
    symbols.track(std::process::id());
    let ours = symbols.stats().files_cached;
    assert!(ours > 0);
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
    let exe = exe.to_str().unwrap().to_string();
    // spawn() can return while execve is still mapping the new image, and the dynamic
    // loader maps libc after that.
    let maps = format!("/proc/{}/maps", child.id());
    for _ in 0..200 {
        if std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(&exe) && m.contains("/libc.so"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    symbols.track(child.id());
    let meta = std::fs::metadata(&exe).unwrap();
    let exe_id = (files::maps_dev(meta.dev()), meta.ino());
    let held = |symbols: &Symbols| symbols.files.held.get(&exe_id).map(|f| f.processes);
    assert_eq!(held(&symbols), Some(1));
    assert!(symbols.stats().files_cached > ours);
    // libc is mapped by both: held twice.
    assert!(symbols.files.held.values().any(|f| f.processes == 2));
    child.kill().unwrap();
    child.wait().unwrap();
    // The first round after a drain never forgets (the drain may still need the map).
    symbols.evict_exited();
    symbols.evict_exited();
    assert_eq!(held(&symbols), None);
    assert_eq!(symbols.stats().files_cached, ours);
    assert!(symbols.stats.files_evicted >= 1);
    assert!(symbols.files.held.values().all(|f| f.processes == 1));
}

#[test]
fn files_are_released_oldest_first_spread_over_the_ttl() {
    let mut symbols = small_symbols(64, Duration::from_secs(10));
    symbols.track(std::process::id());
    assert!(
        symbols.files.held.len() >= 3,
        "this test binary maps itself, libc and ld.so"
    );
    // The pacing over files with DWARF, whichever these are on this machine; one file
    // without it, which the TTL never releases.
    let symbol_table_only = *symbols.files.held.keys().next().unwrap();
    for file in symbols.files.held.values_mut() {
        file.facts.dwarf = true;
    }
    symbols
        .files
        .held
        .get_mut(&symbol_table_only)
        .unwrap()
        .facts
        .dwarf = false;
    let held = symbols.files.held.len() - 1;
    let since = |symbols: &Symbols| -> HashMap<FileId, Instant> {
        symbols
            .files
            .held
            .iter()
            .filter(|(id, _)| **id != symbol_table_only)
            .map(|(id, f)| (*id, f.since))
            .collect()
    };
    let kept_since = symbols.files.held[&symbol_table_only].since;
    let before = since(&symbols);
    let half_ttl = |symbols: &mut Symbols| {
        symbols.expire_checked = symbols
            .expire_checked
            .checked_sub(Duration::from_secs(5))
            .unwrap();
        symbols.expire_files();
    };

    // Half the TTL: half the files, the ones held longest.
    half_ttl(&mut symbols);
    assert_eq!(symbols.stats.files_expired, (held / 2) as u64);
    let first = since(&symbols);
    let released: Vec<_> = first
        .keys()
        .filter(|id| first[*id] != before[*id])
        .collect();
    let kept_oldest = first
        .keys()
        .filter(|id| first[*id] == before[*id])
        .map(|id| before[id])
        .min();
    if let Some(kept) = kept_oldest {
        assert!(released.iter().all(|id| before[*id] <= kept));
    }

    // The other half: every file released once in one TTL, none twice.
    half_ttl(&mut symbols);
    assert_eq!(symbols.stats.files_expired, held as u64);
    let second = since(&symbols);
    assert!(second.keys().all(|id| second[id] != before[id]));
    assert!(released.iter().all(|id| second[*id] == first[*id]));

    // No time passed: nothing is due.
    symbols.expire_files();
    assert_eq!(symbols.stats.files_expired, held as u64);
    assert_eq!(symbols.files.held[&symbol_table_only].since, kept_since);
}

#[test]
fn expired_files_are_read_again_for_new_addresses() {
    let mut symbols = small_symbols(64, Duration::ZERO);
    let pid = std::process::id();
    symbols.track(pid);
    let first = marker_function as *const () as u64;
    let named = symbols.user(pid, &[first]);
    // The test binary has DWARF (libc only with its -dbg package installed).
    let with_dwarf = symbols.files.held.values().filter(|f| f.expires()).count();
    assert!(with_dwarf >= 1);
    symbols.evict_exited();
    assert_eq!(
        symbols.stats.files_expired, with_dwarf as u64,
        "every held file with DWARF released"
    );
    // Known names need no file; a new address makes blazesym read the file again.
    assert_eq!(symbols.user(pid, &[first]), named);
    let second = expired_files_are_read_again_for_new_addresses as *const () as u64;
    let again = symbols.user(pid, &[second]);
    assert!(
        again[0]
            .function()
            .contains("expired_files_are_read_again_for_new_addresses"),
        "{again:?}"
    );
}

#[test]
fn kernel_names_are_held_per_function_within_the_bound() {
    let mut symbols = small_symbols(16, Duration::from_secs(60));
    let mut text = String::new();
    for i in 0..20u64 {
        text.push_str(&format!(
            "{:x} t fn_{i}\n",
            0xffff_ffff_8100_0000 + i * 0x100
        ));
    }
    symbols.kallsyms = Some(Kallsyms::parse(text.as_bytes()).unwrap());
    let base = 0xffff_ffff_8100_0000;
    // Three addresses in fn_0, one in fn_1, one below every symbol.
    let found = symbols.kernel(&[base + 0x10, base + 0x20, base + 0x110, base + 0x30, 0x1000]);
    let names: Vec<&str> = found.iter().map(Location::function).collect();
    assert_eq!(names, ["fn_0", "fn_0", "fn_1", "fn_0", "[kernel] 0x1000"]);
    assert_eq!(found[1].address, base + 0x20);
    assert!(Arc::ptr_eq(
        &found[0].lines[0].function,
        &found[3].lines[0].function
    ));
    assert_eq!(
        (
            symbols.stats.kernel_cache_hits,
            symbols.stats.kernel_cache_misses,
            symbols.stats.unknown_frames
        ),
        (2, 2, 1)
    );
    assert_eq!(symbols.stats().kernel_cache_entries, 2);

    // Sixteen functions fill the cache; the seventeenth empties it first.
    let addrs: Vec<u64> = (0..17).map(|i| base + i * 0x100 + 8).collect();
    let found = symbols.kernel(&addrs);
    assert_eq!(found[16].function(), "fn_16");
    assert_eq!(symbols.stats.kernel_cache_dropped, 16);
    assert_eq!(symbols.stats().kernel_cache_entries, 1);
}
