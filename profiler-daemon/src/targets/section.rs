//! `[[target]]` sections of the config file: processes selected by pid, cgroup, process name or
//! executable path, each section with its own service name, tags and trigger rules (a rule a
//! section does not set falls back to the global one).
//!
//! Sections do not change which processes are sampled (all of them, or `--pid`/`--cgroup`
//! plus the sections' pids and cgroups): they change how the processes they select are named
//! and watched. The first section (in file order) that selects a process wins. A cgroup
//! section is watched as a whole, like `--cgroup`; the processes in it are not watched one by
//! one.

use std::{collections::BTreeSet, path::PathBuf};

use crate::{
    process::ProcessInfo,
    targets::labels::{check_service_name, parse_tags, LabelError},
    types::{CgroupTarget, RuleSetting, Rules},
};

/// How a section selects processes, as written in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorSpec {
    Pids(Vec<u32>),
    Cgroup(PathBuf),
    /// Glob (`*`, `?`) on the process name (`comm`).
    Process(String),
    /// Glob on the executable's path.
    Exe(String),
}

/// A section as parsed from the file (cgroups not resolved on the host yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionSpec {
    /// Line of its `[[target]]` header.
    pub line: usize,
    pub name: Option<String>,
    pub selector: SelectorSpec,
    pub service_name: Option<String>,
    /// `name=value` tags, checked like `--tag`.
    pub tags: Vec<String>,
    pub cpu_trigger: Option<RuleSetting>,
    pub mem_trigger: Option<RuleSetting>,
    pub thread_trigger: Option<RuleSetting>,
}

impl SectionSpec {
    /// Label checks that need no host (service name, tags).
    pub fn check_labels(&self) -> Result<(), LabelError> {
        if let Some(name) = &self.service_name {
            check_service_name(name)?;
        }
        parse_tags(&self.tags).map(|_| ())
    }

    /// The section's name for logs and the page: `name`, else its selector.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.selector {
            SelectorSpec::Pids(pids) => format!("pids {pids:?}"),
            SelectorSpec::Cgroup(path) => path.display().to_string(),
            SelectorSpec::Process(glob) => format!("process {glob}"),
            SelectorSpec::Exe(glob) => format!("exe {glob}"),
        }
    }
}

/// How a resolved section selects processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Pids(Vec<u32>),
    Cgroup(CgroupTarget),
    Process(String),
    Exe(String),
}

/// A section ready for use: cgroup resolved, tags parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub selector: Selector,
    pub service_name: Option<String>,
    pub tags: Vec<(String, String)>,
    pub cpu_trigger: Option<RuleSetting>,
    pub mem_trigger: Option<RuleSetting>,
    pub thread_trigger: Option<RuleSetting>,
}

impl Section {
    /// Resolves `spec`; `cgroup` turns its cgroup path into the cgroup2 directory.
    pub fn resolve<E>(
        spec: &SectionSpec,
        cgroup: impl FnOnce(&PathBuf) -> Result<CgroupTarget, E>,
    ) -> Result<Self, SectionError<E>> {
        let tags = parse_tags(&spec.tags).map_err(SectionError::Labels)?;
        if let Some(name) = &spec.service_name {
            check_service_name(name).map_err(SectionError::Labels)?;
        }
        let selector = match &spec.selector {
            SelectorSpec::Pids(pids) => Selector::Pids(pids.clone()),
            SelectorSpec::Cgroup(path) => {
                Selector::Cgroup(cgroup(path).map_err(SectionError::Cgroup)?)
            }
            SelectorSpec::Process(glob) => Selector::Process(glob.clone()),
            SelectorSpec::Exe(glob) => Selector::Exe(glob.clone()),
        };
        Ok(Self {
            name: spec.display_name(),
            selector,
            service_name: spec.service_name.clone(),
            tags,
            cpu_trigger: spec.cpu_trigger,
            mem_trigger: spec.mem_trigger,
            thread_trigger: spec.thread_trigger,
        })
    }

    pub fn selects(&self, info: &ProcessInfo) -> bool {
        match &self.selector {
            Selector::Pids(pids) => pids.contains(&info.pid),
            Selector::Cgroup(cgroup) => cgroup.contains(&info.cgroup),
            Selector::Process(glob) => glob_match(glob, &info.comm),
            Selector::Exe(glob) => !info.exe.is_empty() && glob_match(glob, &info.exe),
        }
    }

    /// The global rules with this section's own rules in their place.
    pub fn rules(&self, global: &Rules) -> Rules {
        Rules {
            cpu: self.cpu_trigger.map_or(global.cpu, |r| r.0),
            mem: self.mem_trigger.map_or(global.mem, |r| r.0),
            thread: self.thread_trigger.map_or(global.thread, |r| r.0),
            cpu_max: global.cpu_max,
        }
    }

    pub fn cgroup(&self) -> Option<&CgroupTarget> {
        match &self.selector {
            Selector::Cgroup(cgroup) => Some(cgroup),
            _ => None,
        }
    }
}

/// Why a section could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SectionError<E> {
    #[error(transparent)]
    Labels(LabelError),
    #[error(transparent)]
    Cgroup(E),
}

/// The first section that selects `info`.
pub fn section_for<'a>(sections: &'a [Section], info: &ProcessInfo) -> Option<&'a Section> {
    sections.iter().find(|s| s.selects(info))
}

/// Every process named by pid: `pids` (`--pid`) and the pid sections' pids.
pub fn named_pids(pids: &[u32], sections: &[Section]) -> BTreeSet<u32> {
    let mut named: BTreeSet<u32> = pids.iter().copied().collect();
    for section in sections {
        if let Selector::Pids(pids) = &section.selector {
            named.extend(pids);
        }
    }
    named
}

/// `*` matches any run of characters, `?` one character; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::Rule;

    fn info(pid: u32, comm: &str, exe: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            comm: comm.into(),
            exe: exe.into(),
            cgroup: cgroup.into(),
            ..Default::default()
        }
    }

    fn section(selector: Selector) -> Section {
        Section {
            name: "s".into(),
            selector,
            service_name: None,
            tags: vec![],
            cpu_trigger: None,
            mem_trigger: None,
            thread_trigger: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("api-*", "api-server"));
        assert!(glob_match("api-*", "api-"));
        assert!(!glob_match("api-*", "ap"));
        assert!(glob_match("*worker?", "my-worker1"));
        assert!(!glob_match("*worker?", "my-worker"));
        assert!(glob_match("/usr/*/bin/*", "/usr/local/bin/x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn selectors() {
        let p = info(
            7,
            "api-server",
            "/opt/api/bin/api",
            "/system.slice/api.service",
        );
        assert!(section(Selector::Pids(vec![7])).selects(&p));
        assert!(!section(Selector::Pids(vec![8])).selects(&p));
        assert!(section(Selector::Process("api-*".into())).selects(&p));
        assert!(section(Selector::Exe("/opt/api/*".into())).selects(&p));
        let cgroup = CgroupTarget {
            dir: PathBuf::from("/sys/fs/cgroup/system.slice"),
            relative: "/system.slice".into(),
        };
        assert!(section(Selector::Cgroup(cgroup)).selects(&p));
        let kernel_thread = info(2, "kthreadd", "", "/");
        assert!(!section(Selector::Exe("*".into())).selects(&kernel_thread));
    }

    #[test]
    fn first_section_wins_and_rules_fall_back() {
        let rule = |abs| Rule {
            min: 10,
            diff: 25,
            abs,
            max: 0,
            cooldown: Duration::from_secs(60),
        };
        let global = Rules {
            cpu: Some(rule(70)),
            mem: Some(rule(80)),
            thread: None,
            cpu_max: 0,
        };
        let mut first = section(Selector::Process("api*".into()));
        first.name = "first".into();
        first.cpu_trigger = Some(RuleSetting(Some(rule(90))));
        first.mem_trigger = Some(RuleSetting(None));
        let mut second = section(Selector::Process("*".into()));
        second.name = "second".into();
        let sections = [first, second];
        let p = info(1, "api", "", "/");
        let chosen = section_for(&sections, &p).unwrap();
        assert_eq!(chosen.name, "first");
        let rules = chosen.rules(&global);
        assert_eq!(rules.cpu.unwrap().abs, 90);
        assert_eq!(rules.mem, None, "off in the section");
        assert_eq!(rules.thread, None);
        let other = info(2, "db", "", "/");
        assert_eq!(section_for(&sections, &other).unwrap().name, "second");
    }
}
