//! The shape of the daemon's source, checked: each top-level module of `src/` is a pipeline
//! stage that imports only the stages before it (so no import cycle can exist), `main.rs`
//! reaches only `config` and `app`, and no source file in the workspace is over 700 lines
//! nor any function over 100.
//!
//! `cargo test -p profiler-daemon --test layout` prints the import graph it checked.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// The stages in the order data flows; a module may import only those before it.
const STAGES: [&str; 14] = [
    "types",
    "process",
    "host",
    "sample",
    "symbolize",
    "unwind",
    "aggregate",
    "targets",
    "trigger",
    "encode",
    "export",
    "serve",
    "config",
    "app",
];

/// Items of `lib.rs` itself (generated protobuf types, the BPF object): leaves any stage uses.
const ROOT_ITEMS: [&str; 3] = ["pprof_proto", "push_proto", "BPF_OBJECT"];

const MAX_FILE_LINES: usize = 700;
const MAX_FN_LINES: usize = 100;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            // Build output (cargo marks its target dirs with CACHEDIR.TAG) is not source.
            if name != ".git" && !path.join("CACHEDIR.TAG").exists() {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The second segment of every `crate::x` path and `use crate::{x, ..}` tree in a file.
#[derive(Default)]
struct CrateRefs(BTreeSet<String>);

impl CrateRefs {
    fn tree(&mut self, tree: &syn::UseTree, under_crate: bool) {
        match tree {
            syn::UseTree::Path(p)
                if !under_crate && (p.ident == "crate" || p.ident == "profilerd") =>
            {
                self.tree(&p.tree, true)
            }
            syn::UseTree::Path(p) if under_crate => {
                self.0.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) if under_crate => {
                self.0.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) if under_crate => {
                self.0.insert(r.ident.to_string());
            }
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.tree(item, under_crate);
                }
            }
            _ => {}
        }
    }
}

impl<'ast> Visit<'ast> for CrateRefs {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.tree(&item.tree, false);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next()) {
            if first.ident == "crate" || first.ident == "profilerd" {
                self.0.insert(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, path);
    }
}

/// Module (first path component under `src/`) -> the crate modules it refers to.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src()).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = fs::read_to_string(&file).expect("readable source");
        let syntax = syn::parse_file(&text)
            .unwrap_or_else(|err| panic!("{} does not parse: {err}", file.display()));
        let mut refs = CrateRefs::default();
        refs.visit_file(&syntax);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(refs.0.into_iter().filter(|m| *m != module));
    }
    graph
}

#[test]
fn each_stage_imports_only_the_stages_before_it() {
    let graph = import_graph();
    for (module, deps) in &graph {
        eprintln!(
            "{module} -> {}",
            Vec::from_iter(deps.iter().cloned()).join(" ")
        );
    }
    let rank = |m: &str| STAGES.iter().position(|s| *s == m);
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        match module.as_str() {
            "lib" => continue,
            "main" => {
                wrong.extend(
                    deps.iter()
                        .filter(|d| !["app", "config"].contains(&d.as_str()))
                        .map(|d| format!("main.rs imports {d}: only config and app")),
                );
                continue;
            }
            _ => {}
        }
        let Some(own) = rank(module) else {
            wrong.push(format!(
                "src/{module} is not a stage: add it to STAGES in the order data flows"
            ));
            continue;
        };
        for dep in deps {
            if ROOT_ITEMS.contains(&dep.as_str()) {
                continue;
            }
            match rank(dep) {
                Some(r) if r < own => {}
                Some(_) => wrong.push(format!("{module} imports {dep}, a later stage")),
                None => wrong.push(format!("{module} imports {dep}, which is no stage")),
            }
        }
    }
    assert!(wrong.is_empty(), "layout broken:\n{}", wrong.join("\n"));
    for stage in STAGES {
        assert!(
            graph.contains_key(stage),
            "stage {stage} is listed but src/{stage} does not exist"
        );
    }
}

#[test]
fn the_types_leaf_imports_nothing_of_the_crate() {
    let graph = import_graph();
    assert_eq!(
        graph.get("types"),
        Some(&BTreeSet::new()),
        "types must stay a leaf"
    );
}

fn workspace_files() -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut files = Vec::new();
    for member in [
        "profiler-common",
        "profiler-daemon",
        "profiler-ebpf",
        "xtask",
        "tests",
    ] {
        rust_files(&workspace.join(member), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
}

/// Functions (free, in impls and traits, nested too) and their first and last lines.
#[derive(Default)]
struct Functions(Vec<(String, usize, usize)>);

impl Functions {
    fn add(&mut self, name: &syn::Ident, span: proc_macro2::Span) {
        self.0
            .push((name.to_string(), span.start().line, span.end().line));
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.add(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.add(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        self.add(&f.sig.ident, syn::spanned::Spanned::span(f));
        syn::visit::visit_trait_item_fn(self, f);
    }
}

#[test]
fn no_function_in_the_workspace_is_over_100_lines() {
    let mut long = Vec::new();
    for file in workspace_files() {
        let text = fs::read_to_string(&file).expect("readable source");
        let syntax = syn::parse_file(&text)
            .unwrap_or_else(|err| panic!("{} does not parse: {err}", file.display()));
        let mut functions = Functions::default();
        functions.visit_file(&syntax);
        for (name, first, last) in functions.0 {
            let lines = last + 1 - first;
            if lines > MAX_FN_LINES {
                long.push(format!(
                    "{}:{first} {name} has {lines} lines",
                    file.display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these functions:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_source_file_in_the_workspace_is_over_700_lines() {
    let files = workspace_files();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{} has {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
