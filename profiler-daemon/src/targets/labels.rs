//! Series labels of uploaded profiles: the rules a Pyroscope server enforces, checked at
//! start-up for what the user configured, and applied (sanitized, truncated) at run time to
//! what comes from processes.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::{
    process::ProcessInfo,
    targets::section::{section_for, Section},
};

/// Most label names per series, `__name__` included.
pub const MAX_LABEL_NAMES: usize = 30;
pub const MAX_NAME_LEN: usize = 1024;
pub const MAX_VALUE_LEN: usize = 2048;
/// Label names profiles carry besides user tags: `__name__` and these (`trigger` and `reason`
/// on kept profiles of triggered mode).
pub const BUILTIN_LABELS: [&str; 8] = [
    "service_name",
    "pid",
    "comm",
    "exe",
    "cgroup",
    "hostname",
    "trigger",
    "reason",
];
/// What Pyroscope derives from our `cpu` sample type.
pub const PROFILE_NAME: &str = "process_cpu";
/// `__name__` of the profiles of every kind but CPU (whose is [`PROFILE_NAME`]): the kind's
/// own name, which its files carry too (memory growth `faults/count` and `memory/bytes`,
/// off-CPU `offcpu/nanoseconds`, thread creation `threads/count`).
pub const KIND_PROFILE_NAMES: [&str; 3] = ["memory", "offcpu", "threads"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("--tag {0:?} is not NAME=VALUE")]
    NotPair(String),
    #[error(
        "label name {0:?} is invalid: use letters, digits, '_' and '.', not starting with a digit"
    )]
    BadName(String),
    #[error("label name {0:?} is reserved (names starting with \"__\" belong to the server)")]
    Reserved(String),
    #[error("label name {name:?} is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong { name: String },
    #[error("value of label {name:?} is empty or longer than {MAX_VALUE_LEN} bytes")]
    BadValue { name: String },
    #[error("label {0:?} is given twice (tags may not repeat each other or the built-in labels service_name, pid, comm, exe, cgroup, hostname, trigger, reason)")]
    Duplicate(String),
    #[error("{count} label names per profile, the server accepts at most {MAX_LABEL_NAMES}: drop some --tag")]
    TooMany { count: usize },
    #[error("service name {0:?} is invalid: use letters, digits and _ . - /")]
    BadServiceName(String),
}

/// A label name as Pyroscope accepts it: `[A-Za-z_][A-Za-z0-9_.]*`, not `__`-prefixed.
pub fn check_name(name: &str) -> Result<(), LabelError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(LabelError::BadName(name.to_string()));
    }
    if name.starts_with("__") {
        return Err(LabelError::Reserved(name.to_string()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(LabelError::NameTooLong {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn check_value(name: &str, value: &str) -> Result<(), LabelError> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(LabelError::BadValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Characters of an application name in `/ingest`'s `name` parameter.
fn is_app_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

pub fn check_service_name(name: &str) -> Result<(), LabelError> {
    if name.is_empty() || name.len() > MAX_VALUE_LEN || !name.chars().all(is_app_char) {
        return Err(LabelError::BadServiceName(name.to_string()));
    }
    Ok(())
}

/// Parses and checks `--tag NAME=VALUE` arguments against each other and the built-in labels.
pub fn parse_tags(tags: &[String]) -> Result<Vec<(String, String)>, LabelError> {
    let mut seen: Vec<&str> = BUILTIN_LABELS.to_vec();
    let mut parsed = Vec::new();
    for tag in tags {
        let (name, value) = tag
            .split_once('=')
            .ok_or_else(|| LabelError::NotPair(tag.clone()))?;
        let (name, value) = (name.trim(), value.trim());
        check_name(name)?;
        check_value(name, value)?;
        if seen.contains(&name) {
            return Err(LabelError::Duplicate(name.to_string()));
        }
        seen.push(name);
        parsed.push((name.to_string(), value.to_string()));
    }
    let count = 1 + BUILTIN_LABELS.len() + parsed.len();
    if count > MAX_LABEL_NAMES {
        return Err(LabelError::TooMany { count });
    }
    Ok(parsed)
}

/// Replaces characters an application name may not hold.
pub fn sanitize_service_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if is_app_char(c) { c } else { '_' })
        .collect();
    let cleaned = truncate(&cleaned, MAX_VALUE_LEN);
    if cleaned.is_empty() {
        "unknown".to_string()
    } else {
        cleaned.to_string()
    }
}

/// `value` cut to at most `max` bytes on a character boundary.
pub fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The service a process belongs to, from its cgroup v2 path: the innermost systemd
/// `.service` unit, or the container id of a container runtime's scope; else its comm.
pub fn derive_service_name(info: &ProcessInfo) -> String {
    let components: Vec<&str> = info.cgroup.split('/').filter(|c| !c.is_empty()).collect();
    for component in components.iter().rev() {
        if let Some(id) = container_id(component) {
            return format!("container-{}", &id[..12]);
        }
        if let Some(unit) = component.strip_suffix(".service") {
            // user@1000.service is the user manager, not an application.
            if !unit.starts_with("user@") && !unit.is_empty() {
                return sanitize_service_name(unit);
            }
        }
    }
    sanitize_service_name(&info.comm)
}

/// A 64-hex container id in a cgroup path component (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or a bare id as under
/// `kubepods`).
fn container_id(component: &str) -> Option<&str> {
    let base = component.strip_suffix(".scope").unwrap_or(component);
    let id = base.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// This host's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Static part of every profile's labels: fixed at start-up, checked then.
#[derive(Clone, Debug)]
pub struct LabelConfig {
    pub service_name: Option<String>,
    pub hostname: String,
    pub tags: Vec<(String, String)>,
    /// `[[target]]` sections: the first that selects a process gives its service name and adds
    /// (or replaces) tags.
    pub sections: Vec<Section>,
}

impl LabelConfig {
    pub fn new(service_name: Option<String>, tags: &[String]) -> Result<Self, LabelError> {
        if let Some(name) = &service_name {
            check_service_name(name)?;
        }
        Ok(Self {
            service_name,
            hostname: hostname(),
            tags: parse_tags(tags)?,
            sections: Vec::new(),
        })
    }

    /// The same labels with `[[target]]` sections; the most labels a section's process gets
    /// must stay within the server's limit.
    pub fn with_sections(mut self, sections: Vec<Section>) -> Result<Self, LabelError> {
        for section in &sections {
            let mut names: Vec<&str> = self.tags.iter().map(|(n, _)| n.as_str()).collect();
            names.extend(section.tags.iter().map(|(n, _)| n.as_str()));
            names.sort_unstable();
            names.dedup();
            let combined: Vec<String> = names.iter().map(|n| format!("{n}=x")).collect();
            parse_tags(&combined)?;
        }
        self.sections = sections;
        Ok(self)
    }

    /// The labels of one process's profile, sorted by name, `__name__` first.
    pub fn for_process(&self, info: &ProcessInfo) -> Vec<(String, String)> {
        let section = section_for(&self.sections, info);
        let service = section
            .and_then(|s| s.service_name.clone())
            .or_else(|| self.service_name.clone())
            .unwrap_or_else(|| derive_service_name(info));
        let mut labels: BTreeMap<&str, String> = BTreeMap::new();
        labels.insert("service_name", service);
        labels.insert("pid", info.pid.to_string());
        labels.insert("comm", info.comm.clone());
        labels.insert("exe", info.exe.clone());
        labels.insert("cgroup", info.cgroup.clone());
        labels.insert("hostname", self.hostname.clone());
        for (name, value) in &self.tags {
            labels.insert(name, value.clone());
        }
        for (name, value) in section.map_or(&[][..], |s| &s.tags[..]) {
            labels.insert(name, value.clone());
        }
        let mut out = vec![("__name__".to_string(), PROFILE_NAME.to_string())];
        out.extend(labels.into_iter().map(|(name, value)| {
            let value = truncate(&value, MAX_VALUE_LEN);
            // Empty values (a kernel thread has no exe) would be dropped by the server.
            let value = if value.is_empty() { "unknown" } else { value };
            (name.to_string(), value.to_string())
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(comm: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            pid: 7,
            comm: comm.into(),
            cgroup: cgroup.into(),
            ..Default::default()
        }
    }

    #[test]
    fn service_name_from_systemd_unit_container_or_comm() {
        assert_eq!(
            derive_service_name(&info("nginx", "/system.slice/nginx.service")),
            "nginx"
        );
        assert_eq!(
            derive_service_name(&info(
                "app",
                "/user.slice/user-1000.slice/user@1000.service/app.slice/myapp.service"
            )),
            "myapp"
        );
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(
            derive_service_name(&info("java", &format!("/system.slice/docker-{id}.scope"))),
            "container-0123456789ab"
        );
        assert_eq!(
            derive_service_name(&info("go", &format!("/kubepods/burstable/pod1234/{id}"))),
            "container-0123456789ab"
        );
        assert_eq!(
            derive_service_name(&info("my prog", "/user.slice/session-3.scope")),
            "my_prog"
        );
        assert_eq!(derive_service_name(&info("", "/")), "unknown");
    }

    #[test]
    fn tags_are_checked_at_start_up() {
        assert_eq!(
            parse_tags(&["region=eu-west-1".into(), "pod.ip=10.0.0.1".into()]).unwrap(),
            [
                ("region".to_string(), "eu-west-1".to_string()),
                ("pod.ip".into(), "10.0.0.1".into())
            ]
        );
        assert_eq!(
            parse_tags(&["noequals".into()]),
            Err(LabelError::NotPair("noequals".into()))
        );
        assert_eq!(
            parse_tags(&["1abc=x".into()]),
            Err(LabelError::BadName("1abc".into()))
        );
        assert_eq!(
            parse_tags(&["a-b=x".into()]),
            Err(LabelError::BadName("a-b".into()))
        );
        assert_eq!(
            parse_tags(&["__x=1".into()]),
            Err(LabelError::Reserved("__x".into()))
        );
        assert_eq!(
            parse_tags(&["a=".into()]),
            Err(LabelError::BadValue { name: "a".into() })
        );
        assert_eq!(
            parse_tags(&[format!("a={}", "v".repeat(2049))]),
            Err(LabelError::BadValue { name: "a".into() })
        );
        assert!(matches!(
            parse_tags(&[format!("{}=1", "n".repeat(1025))]),
            Err(LabelError::NameTooLong { .. })
        ));
        assert_eq!(
            parse_tags(&["hostname=x".into()]),
            Err(LabelError::Duplicate("hostname".into()))
        );
        assert_eq!(
            parse_tags(&["a=1".into(), "a=2".into()]),
            Err(LabelError::Duplicate("a".into()))
        );
        let many: Vec<String> = (0..22).map(|i| format!("t{i}=v")).collect();
        assert_eq!(parse_tags(&many), Err(LabelError::TooMany { count: 31 }));
        assert!(parse_tags(&many[..21]).is_ok());
        assert_eq!(
            parse_tags(&["reason=x".into()]),
            Err(LabelError::Duplicate("reason".into()))
        );
    }

    #[test]
    fn process_labels_are_complete_sorted_and_bounded() {
        let config = LabelConfig {
            service_name: None,
            hostname: "host1".into(),
            tags: vec![("region".into(), "eu".into())],
            sections: Vec::new(),
        };
        let mut p = info("nginx", "/system.slice/nginx.service");
        p.exe = format!("/{}", "x".repeat(3000));
        let labels = config.for_process(&p);
        let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "__name__",
                "cgroup",
                "comm",
                "exe",
                "hostname",
                "pid",
                "region",
                "service_name"
            ]
        );
        assert!(labels
            .iter()
            .all(|(_, v)| !v.is_empty() && v.len() <= MAX_VALUE_LEN));
        assert_eq!(labels[7].1, "nginx");
        let fixed = LabelConfig {
            service_name: Some("api".into()),
            ..config
        };
        assert_eq!(fixed.for_process(&p)[7].1, "api");
        assert!(LabelConfig::new(Some("bad name!".into()), &[]).is_err());
    }

    #[test]
    fn a_section_names_its_processes_and_adds_tags() {
        use crate::targets::section::{Section, Selector};
        let section = Section {
            name: "web".into(),
            selector: Selector::Process("ngin*".into()),
            service_name: Some("web".into()),
            tags: vec![
                ("region".into(), "us".into()),
                ("team".into(), "edge".into()),
            ],
            cpu_trigger: None,
            mem_trigger: None,
            thread_trigger: None,
        };
        let config = LabelConfig::new(None, &["region=eu".into()])
            .unwrap()
            .with_sections(vec![section])
            .unwrap();
        let labels: BTreeMap<String, String> = config
            .for_process(&info("nginx", "/system.slice/nginx.service"))
            .into_iter()
            .collect();
        assert_eq!(labels["service_name"], "web");
        assert_eq!(labels["region"], "us", "the section's tag wins");
        assert_eq!(labels["team"], "edge");
        let other: BTreeMap<String, String> = config
            .for_process(&info("redis", "/system.slice/redis.service"))
            .into_iter()
            .collect();
        assert_eq!(other["service_name"], "redis");
        assert_eq!(other["region"], "eu");
        assert!(!other.contains_key("team"));
    }
}
