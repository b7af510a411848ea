//! `--config FILE`: a TOML file that can say everything the flags of `profilerd run` say.
//!
//! Top-level keys are the flags' long names (`frequency = 99`; `dump-dir` or `dump_dir`),
//! repeatable flags take arrays (`pid = [1, 2]`), and `tag` also takes a table
//! (`tag = { region = "eu" }`). Each key becomes arguments appended to the command line,
//! except the keys the command line or the environment sets itself: flags override the file,
//! and the file overrides the defaults. Every key is checked with its flag's own parser first,
//! so a bad value is reported with the file's line, not as an anonymous argument error.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, ArgAction, ArgMatches, Command};
use thiserror::Error;
use toml::{Spanned, Value};

use crate::{
    targets::{SectionSpec, SelectorSpec},
    types::{parse_rule, RuleSetting},
};

/// Flags that make no sense inside the file.
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: unknown key `{key}`: {hint}")]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        hint: String,
    },
    #[error("{path}:{line}: key `{key}`: {message}")]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// One top-level key of the file, as the flag it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The flag's id (clap's argument id, e.g. `dump_dir`).
    pub id: String,
    /// The flag as written on a command line (`--dump-dir`).
    pub flag: String,
    /// Values in order; empty for a switch that is on.
    pub values: Vec<String>,
    /// Line of the key in the file (1-based).
    pub line: usize,
}

/// A parsed and checked config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
    /// `[[target]]` sections, in file order.
    pub targets: Vec<SectionSpec>,
}

/// Keys of a `[[target]]` section.
const TARGET_KEYS: &[&str] = &[
    "name",
    "pid",
    "cgroup",
    "process",
    "exe",
    "service_name",
    "tags",
    "cpu_trigger",
    "mem_trigger",
    "thread_trigger",
];

#[derive(serde::Deserialize)]
struct TargetTables {
    #[serde(default)]
    target: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>>,
}

impl ConfigFile {
    /// Reads `path` and checks every key against the flags of `command` (`profilerd run`).
    pub fn load(path: &Path, command: &Command) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text, command)
    }

    /// Parses `text` (the contents of `path`) against the flags of `command`.
    pub fn parse(path: &Path, text: &str, command: &Command) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table: BTreeMap<Spanned<String>, Spanned<Value>> =
            toml::from_str(text).map_err(|err| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: err.span().map_or(1, |span| line_of(span.start)),
                message: err.message().trim().to_string(),
            })?;
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);

        let mut settings = Vec::new();
        for (key, value) in entries {
            let line = line_of(key.span().start);
            if key.get_ref() == "target" {
                continue;
            }
            let name = key.get_ref().replace('_', "-");
            let value_err = |message: String| ConfigError::Value {
                path: path.to_path_buf(),
                line,
                key: key.get_ref().clone(),
                message,
            };
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(name.as_str()))
                .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    line,
                    key: key.get_ref().clone(),
                    hint: suggestion(&name, command),
                })?;
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            let takes_value = arg.get_action().takes_values();
            let values = match value.get_ref() {
                Value::Array(items) if repeatable => items
                    .iter()
                    .map(scalar)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(value_err)?,
                Value::Array(_) => {
                    return Err(value_err(format!(
                        "takes one value, not a list (--{name} is not repeatable)"
                    )))
                }
                Value::Table(items) if repeatable && arg.get_id() == "tags" => items
                    .iter()
                    .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(value_err)?,
                Value::Boolean(on) if !takes_value => {
                    if !on {
                        continue;
                    }
                    Vec::new()
                }
                other => vec![scalar(other).map_err(value_err)?],
            };
            let setting = Setting {
                id: arg.get_id().to_string(),
                flag: format!("--{name}"),
                values,
                line,
            };
            // The flag's own parser decides, exactly as on the command line.
            let probe = command
                .clone()
                .no_binary_name(true)
                .try_get_matches_from(setting.arguments());
            if let Err(err) = probe {
                return Err(value_err(clap_message(&err)));
            }
            settings.push(setting);
        }
        let tables: TargetTables = toml::from_str(text).map_err(|err| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: err.span().map_or(1, |span| line_of(span.start)),
            message: err.message().trim().to_string(),
        })?;
        let targets = tables
            .target
            .iter()
            .map(|table| parse_target(path, table, &line_of))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            settings,
            targets,
        })
    }

    /// Arguments for the settings that `command` has and that `given` (the command line's
    /// matches) does not set.
    pub fn arguments_for(&self, command: &Command, given: &ArgMatches) -> Vec<OsString> {
        let mut out = Vec::new();
        for setting in &self.settings {
            if !command
                .get_arguments()
                .any(|a| a.get_id().as_str() == setting.id)
            {
                continue;
            }
            let explicit = matches!(
                given.value_source(&setting.id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !explicit {
                out.extend(setting.arguments());
            }
        }
        out
    }
}

impl Setting {
    fn arguments(&self) -> Vec<OsString> {
        if self.values.is_empty() {
            return vec![OsString::from(&self.flag)];
        }
        self.values
            .iter()
            .map(|v| OsString::from(format!("{}={v}", self.flag)))
            .collect()
    }
}
/// A section's `pid`: one pid or an array of them.
fn target_pids(value: &Value) -> Result<Vec<u32>, String> {
    let items = match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    items
        .iter()
        .map(|v| match v {
            Value::Integer(i) if *i > 0 && *i <= i64::from(u32::MAX) => Ok(*i as u32),
            other => Err(format!("{other} is not a pid")),
        })
        .collect()
}

/// A section's `tags`: a table (`{ team = "payments" }`) or an array of `NAME=VALUE`.
fn target_tags(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Table(items) => items
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect(),
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => Err(format!(
            "expected a table like {{ team = \"payments\" }}, found {}",
            other.type_str()
        )),
    }
}

/// One `[[target]]` section.
fn parse_target(
    path: &Path,
    table: &Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<SectionSpec, ConfigError> {
    let section_line = line_of(table.span().start);
    let mut name = None;
    let mut selectors = Vec::new();
    let mut service_name = None;
    let mut tags = Vec::new();
    let mut rules: [Option<RuleSetting>; 3] = [None; 3];
    for (key, value) in table.get_ref() {
        let line = line_of(key.span().start);
        let err = |message: String| ConfigError::Value {
            path: path.to_path_buf(),
            line,
            key: format!("target.{}", key.get_ref()),
            message,
        };
        let string = || match value.get_ref() {
            Value::String(s) => Ok(s.clone()),
            other => Err(err(format!(
                "expected a string, found {}",
                other.type_str()
            ))),
        };
        match key.get_ref().as_str() {
            "name" => name = Some(string()?),
            "pid" => selectors.push(SelectorSpec::Pids(
                target_pids(value.get_ref()).map_err(err)?,
            )),
            "cgroup" => selectors.push(SelectorSpec::Cgroup(PathBuf::from(string()?))),
            "process" => selectors.push(SelectorSpec::Process(string()?)),
            "exe" => selectors.push(SelectorSpec::Exe(string()?)),
            "service_name" => service_name = Some(string()?),
            "tags" => tags = target_tags(value.get_ref()).map_err(err)?,
            rule @ ("cpu_trigger" | "mem_trigger" | "thread_trigger") => {
                let text = string()?;
                let index = ["cpu_trigger", "mem_trigger", "thread_trigger"]
                    .iter()
                    .position(|r| *r == rule)
                    .unwrap_or(0);
                let parsed = parse_rule(&text, index == 2).map_err(err)?;
                rules[index] = Some(RuleSetting(parsed));
            }
            other => {
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    line,
                    key: format!("target.{other}"),
                    hint: format!("a [[target]] section takes {}", TARGET_KEYS.join(", ")),
                })
            }
        }
    }
    if selectors.len() != 1 {
        return Err(ConfigError::Value {
            path: path.to_path_buf(),
            line: section_line,
            key: "target".into(),
            message: format!(
                "a [[target]] section selects with exactly one of pid, cgroup, process, exe (found {})",
                selectors.len()
            ),
        });
    }
    let spec = SectionSpec {
        line: section_line,
        name,
        selector: selectors.remove(0),
        service_name,
        tags,
        cpu_trigger: rules[0],
        mem_trigger: rules[1],
        thread_trigger: rules[2],
    };
    spec.check_labels().map_err(|err| ConfigError::Value {
        path: path.to_path_buf(),
        line: section_line,
        key: "target".into(),
        message: err.to_string(),
    })?;
    Ok(spec)
}

/// A TOML scalar as the text a flag would be given.
fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Datetime(_) => Err("a date is not a valid value here".into()),
        Value::Array(_) => Err("expected a single value, found a nested list".into()),
        Value::Table(_) => Err("expected a value, found a table".into()),
    }
}

/// The first line of a clap error without its `error: ` prefix.
fn clap_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// "did you mean" for an unknown key.
fn suggestion(name: &str, command: &Command) -> String {
    let closest = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !NOT_IN_FILE.contains(long))
        .map(|long| (edit_distance(name, long), long))
        .min();
    let mut hint = String::from("not a flag of `profilerd run`");
    if let Some((distance, long)) = closest {
        if distance <= 3 {
            let _ = write!(hint, " (did you mean `{}`?)", long.replace('-', "_"));
        }
    }
    hint
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_command() -> Command {
        crate::config::command()
            .find_subcommand("run")
            .expect("run subcommand")
            .clone()
    }

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("test.toml"), text, &run_command())
    }

    #[test]
    fn every_kind_of_key() {
        let file = parse(
            "# comment\n\
             frequency = 49\n\
             dump_dir = \"/var/lib/profilerd/profiles\"\n\
             upload-interval = \"30s\"\n\
             pid = [1, 2]\n\
             tag = { region = \"eu\", env = \"prod\" }\n\
             cpu_trigger = \"off\"\n",
        )
        .unwrap();
        let flat: Vec<(String, Vec<String>, usize)> = file
            .settings
            .iter()
            .map(|s| (s.flag.clone(), s.values.clone(), s.line))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("--frequency".into(), vec!["49".into()], 2),
                (
                    "--dump-dir".into(),
                    vec!["/var/lib/profilerd/profiles".into()],
                    3
                ),
                ("--upload-interval".into(), vec!["30s".into()], 4),
                ("--pid".into(), vec!["1".into(), "2".into()], 5),
                (
                    "--tag".into(),
                    vec!["env=prod".into(), "region=eu".into()],
                    6
                ),
                ("--cpu-trigger".into(), vec!["off".into()], 7),
            ]
        );
    }

    #[test]
    fn every_flag_of_run_can_be_a_key() {
        // A valid value for each flag without a default; the others take their default.
        let examples: &[(&str, &str)] = &[
            ("pid", "[1]"),
            ("cgroup", "[\"/system.slice\"]"),
            ("dump_dir", "\"profiles\""),
            ("duration", "\"1m\""),
            ("cpu_cores", "\"2\""),
            ("memory_limit", "\"1GiB\""),
            ("server", "\"http://pyroscope:4040\""),
            ("service_name", "\"api\""),
            ("tag", "{ region = \"eu\" }"),
            ("basic_auth_user", "\"user\""),
            ("basic_auth_password_file", "\"/etc/profilerd/password\""),
            ("bearer_token_file", "\"/etc/profilerd/token\""),
            ("tenant_id", "\"team-a\""),
            ("header", "[\"X-Env: prod\"]"),
            ("listen_host", "[\"profiler.internal\"]"),
            ("web_config_file", "\"/etc/profilerd/web.yml\""),
        ];
        let command = run_command();
        let mut covered = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if NOT_IN_FILE.contains(&arg.get_id().as_str()) {
                continue;
            }
            let key = long.replace('-', "_");
            let value = examples
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .or_else(|| {
                    arg.get_default_values()
                        .first()
                        .map(|d| format!("{:?}", d.to_string_lossy()))
                })
                .unwrap_or_else(|| panic!("no example value for --{long}"));
            let file = parse(&format!("{key} = {value}\n"))
                .unwrap_or_else(|err| panic!("--{long} as a key: {err}"));
            assert_eq!(file.settings.len(), 1, "--{long}");
            assert_eq!(file.settings[0].flag, format!("--{long}"));
            covered += 1;
        }
        assert!(covered >= 40, "only {covered} flags");
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let err = parse("frequency = 99\n\nfrequncy = 10\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.toml:3: unknown key `frequncy`: not a flag of `profilerd run` (did you mean `frequency`?)"
        );
        let err = parse("config = \"x.toml\"\n").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("test.toml:1: unknown key `config`"));
    }

    #[test]
    fn bad_values_name_line_key_and_cause() {
        let err = parse("frequency = 99\nupload_interval = \"soon\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("test.toml:2: key `upload_interval`: invalid value 'soon'"),
            "{text}"
        );
        assert!(text.contains("30s"), "{text}");

        let err = parse("frequency = 0\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("test.toml:1: key `frequency`: invalid value '0'"),
            "{err}"
        );
        let err = parse("\n\nfrequency = [1, 2]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.toml:3: key `frequency`: takes one value, not a list (--frequency is not repeatable)"
        );
        let err = parse("mode = \"sometimes\"\n").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("test.toml:1: key `mode`: invalid value 'sometimes'"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("frequency = 99\ndump_dir = \n").unwrap_err();
        assert!(err.to_string().starts_with("test.toml:2: "), "{err}");
    }

    #[test]
    fn target_sections() {
        let file = parse(
            "frequency = 99\n\
             [[target]]\n\
             name = \"api\"\n\
             cgroup = \"/system.slice/api.service\"\n\
             service_name = \"api\"\n\
             tags = { team = \"payments\" }\n\
             cpu_trigger = \"20,25,80,1m\"\n\
             [[target]]\n\
             process = \"worker-*\"\n\
             thread_trigger = \"off\"\n",
        )
        .unwrap();
        assert_eq!(file.settings.len(), 1);
        assert_eq!(file.targets.len(), 2);
        let api = &file.targets[0];
        assert_eq!(api.name.as_deref(), Some("api"));
        assert_eq!(
            api.selector,
            SelectorSpec::Cgroup(PathBuf::from("/system.slice/api.service"))
        );
        assert_eq!(api.tags, vec!["team=payments".to_string()]);
        assert_eq!(api.cpu_trigger.unwrap().0.unwrap().abs, 80);
        assert_eq!(api.mem_trigger, None);
        let worker = &file.targets[1];
        assert_eq!(worker.selector, SelectorSpec::Process("worker-*".into()));
        assert_eq!(worker.thread_trigger, Some(RuleSetting(None)));
        assert_eq!(worker.display_name(), "process worker-*");
    }

    #[test]
    fn target_section_mistakes_name_their_line() {
        let err = parse("[[target]]\npid = 1\nprocess = \"x\"\n").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "test.toml:1: key `target`: a [[target]] section selects with exactly one of"
            ),
            "{err}"
        );
        let err = parse("[[target]]\npid = 1\nservce_name = \"x\"\n").unwrap_err();
        assert!(
            err.to_string().starts_with("test.toml:3: unknown key `target.servce_name`: a [[target]] section takes name, pid"),
            "{err}"
        );
        let err = parse("[[target]]\npid = 1\ncpu_trigger = \"10,25\"\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("test.toml:3: key `target.cpu_trigger`: "),
            "{err}"
        );
        let err = parse("[[target]]\npid = -4\n").unwrap_err();
        assert!(err.to_string().contains("-4 is not a pid"), "{err}");
        let err = parse("[[target]]\npid = 1\ntags = { hostname = \"x\" }\n").unwrap_err();
        assert!(
            err.to_string().starts_with("test.toml:1: key `target`: "),
            "{err}"
        );
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let file = parse("frequency = 49\nupload_interval = \"30s\"\ntag = [\"a=1\"]\n").unwrap();
        let command = run_command();
        let given = command
            .clone()
            .no_binary_name(true)
            .try_get_matches_from(["--frequency", "199", "--tag", "b=2"])
            .unwrap();
        let args: Vec<String> = file
            .arguments_for(&command, &given)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(args, vec!["--upload-interval=30s".to_string()]);
    }
}
