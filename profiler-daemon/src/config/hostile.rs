//! Every flag and config key of `run` fed values past any range, on the command line and in
//! the config file (which SIGHUP re-reads the same way): an error naming the flag or key,
//! never a panic.

use std::{ffi::OsString, panic};

use super::{command, parse_from, ParseError};

/// Values no typed setting takes: past u64, past the longest duration, negative, not finite.
const HOSTILE: [&str; 6] = [
    "99999999999999999999s",
    "99999999999999999999",
    "18446744073709551616",
    "-1",
    "1e400",
    "NaN",
];

/// Flags whose value is a number, a duration or a size (the others take free text, paths or
/// addresses).
fn typed_flags() -> Vec<String> {
    let run = command().find_subcommand("run").expect("run").clone();
    let typed_by_default = |default: &str| {
        default.parse::<i64>().is_ok()
            || crate::types::parse_duration(default).is_ok()
            || crate::types::parse_bytes(default).is_ok()
    };
    run.get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter(|a| {
            let id = a.get_id().as_str();
            ["pid", "duration", "cpu_cores", "memory_limit"].contains(&id)
                || a.get_default_values()
                    .iter()
                    .any(|d| typed_by_default(&d.to_string_lossy()))
        })
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// The hostile values of one flag: `-1` is a fine nice value.
fn hostile_values(flag: &str) -> impl Iterator<Item = &'static str> + '_ {
    HOSTILE
        .into_iter()
        .filter(move |value| !(*value == "-1" && flag == "nice"))
}

fn parse_quietly(argv: Vec<OsString>) -> Result<(), String> {
    let result = panic::catch_unwind(|| parse_from(argv));
    match result {
        Err(_) => Err("panicked".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(ParseError::Clap(err))) => Err(format!("rejected: {err}")),
        Ok(Err(ParseError::Config(err))) => Err(format!("rejected: {err}")),
    }
}

#[test]
fn typed_flags_are_found() {
    let typed = typed_flags();
    for flag in [
        "frequency",
        "collect-interval",
        "upload-interval",
        "duration",
        "pre-trigger",
        "history-max-bytes",
        "upload-timeout",
        "upload-queue",
        "counts-map-entries",
        "symbol-file-ttl",
        "max-symbol-file-bytes",
        "max-symbol-bytes",
        "max-symbol-files",
        "spool-max-bytes",
        "nice",
        "upload-response-max-bytes",
        "listen-max-connections",
        "listen-header-timeout",
        "listen-idle-timeout",
        "listen-descriptor-reserve",
    ] {
        assert!(
            typed.iter().any(|f| f == flag),
            "{flag} missing from {typed:?}"
        );
    }
}

#[test]
fn out_of_range_flags_are_refused_by_name() {
    for flag in typed_flags() {
        for value in hostile_values(&flag) {
            // `--flag=VALUE`, so that `-1` is a value and not a flag.
            let argv = ["profilerd", "run", &format!("--{flag}={value}")];
            let result = parse_quietly(argv.iter().map(OsString::from).collect());
            match result {
                Err(text) if text.starts_with("rejected") => assert!(
                    text.contains(&format!("--{flag}")),
                    "--{flag} {value}: {text}"
                ),
                other => panic!("--{flag} {value}: {other:?}"),
            }
        }
    }
}

#[test]
fn out_of_range_config_keys_are_refused_by_line_and_key() {
    let dir = std::env::temp_dir().join(format!("profilerd-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    for flag in typed_flags() {
        for value in hostile_values(&flag) {
            std::fs::write(&path, format!("# hostile\n{flag} = \"{value}\"\n")).unwrap();
            let argv = ["profilerd", "run", "--config", path.to_str().unwrap()];
            let result = parse_quietly(argv.iter().map(OsString::from).collect());
            match result {
                Err(text) if text.starts_with("rejected") => assert!(
                    text.contains(":2") && text.contains(&flag.replace('-', "_"))
                        || text.contains(&flag),
                    "{flag} = {value:?}: {text}"
                ),
                other => panic!("{flag} = {value:?}: {other:?}"),
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
