//! The call tree and top table of hand-made pprof profiles.

use std::io::Write as _;

use flate2::{write::GzEncoder, Compression};

use super::*;

/// A profile builder: strings interned, one function and location per name (a location of
/// several names holds inlined frames, callee first as pprof has them).
#[derive(Default)]
struct Make {
    profile: pb::Profile,
}

impl Make {
    fn new(types: &[(&str, &str)]) -> Self {
        let mut make = Self::default();
        make.string("");
        for (kind, unit) in types {
            let (r#type, unit) = (make.string(kind), make.string(unit));
            make.profile
                .sample_type
                .push(pb::ValueType { r#type, unit });
        }
        make
    }

    fn string(&mut self, text: &str) -> i64 {
        let table = &mut self.profile.string_table;
        match table.iter().position(|s| s == text) {
            Some(i) => i as i64,
            None => {
                table.push(text.to_string());
                table.len() as i64 - 1
            }
        }
    }

    fn function(&mut self, name: &str) -> u64 {
        let name = self.string(name);
        if let Some(f) = self.profile.function.iter().find(|f| f.name == name) {
            return f.id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(pb::Function {
            id,
            name,
            ..Default::default()
        });
        id
    }

    /// A location of `names` (callee first).
    fn location(&mut self, names: &[&str]) -> u64 {
        let line = names
            .iter()
            .map(|n| pb::Line {
                function_id: self.function(n),
                ..Default::default()
            })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(pb::Location {
            id,
            address: 0x1000 * id,
            line,
            ..Default::default()
        });
        id
    }

    /// A sample of `stack` (leaf first, each a location's names) with labels.
    fn sample(&mut self, stack: &[&[&str]], value: &[i64], labels: &[(&str, &str)]) {
        let location_id = stack.iter().map(|names| self.location(names)).collect();
        let label = labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: self.string(k),
                str: self.string(v),
                ..Default::default()
            })
            .collect();
        self.profile.sample.push(pb::Sample {
            location_id,
            value: value.to_vec(),
            label,
        });
    }
}

const CPU: &[(&str, &str)] = &[("samples", "count"), ("cpu", "nanoseconds")];

fn spike() -> pb::Profile {
    let mut make = Make::new(CPU);
    make.profile.default_sample_type = make.string("cpu");
    make.sample(
        &[&["leaf", "hot<T>"], &["work"], &["main"]],
        &[10, 100],
        &[("phase", "before")],
    );
    make.sample(&[&["work"], &["main"]], &[5, 50], &[("phase", "after")]);
    make.sample(
        &[&["leaf"], &["other"], &["main"]],
        &[20, 200],
        &[("phase", "after")],
    );
    make.sample(&[&[]], &[1, 10], &[("phase", "firing")]);
    make.profile
}

#[test]
fn the_tree_follows_callers_and_inlined_frames_with_their_phases() {
    let flame = Flame::build(&spike(), None).unwrap();
    assert_eq!(flame.chosen, "cpu", "the default sample type");
    assert_eq!(flame.unit, "nanoseconds");
    assert_eq!(flame.types, ["samples", "cpu"]);
    assert_eq!((flame.total, flame.before, flame.after), (360, 100, 260));
    assert!(flame.has_phases());
    let row = |name: &str| flame.top.iter().find(|r| r.name == name).cloned().unwrap();
    // The inlined callee `leaf` is the leaf; `hot<T>`, into which it was inlined, its caller.
    assert_eq!((row("leaf").flat, row("leaf").cum), (300, 300));
    assert_eq!((row("hot<T>").flat, row("hot<T>").cum), (0, 100));
    assert_eq!((row("main").flat, row("main").cum), (0, 350));
    assert_eq!((row("work").flat, row("work").cum), (50, 150));
    assert_eq!(flame.top[0].name, "leaf", "sorted by flat");
    assert!(flame.top.iter().any(|r| r.name.starts_with("[unknown] 0x")));
    let json = flame.to_json();
    assert!(!json.contains('<'), "safe inside <script>: {json}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = value["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"hot<T>"));
    let tree = &value["tree"];
    assert_eq!(tree[1], 360);
    // main, widest first among the root's children, then work and other.
    let main = &tree[4][0];
    assert_eq!(names[main[0].as_u64().unwrap() as usize], "main");
    assert_eq!(
        (main[1].as_u64(), main[2].as_u64(), main[3].as_u64()),
        (Some(350), Some(100), Some(250))
    );
    let under_main: Vec<&str> = main[4]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| names[c[0].as_u64().unwrap() as usize])
        .collect();
    assert_eq!(under_main, ["other", "work"]);
}

#[test]
fn a_sample_type_is_chosen_by_name_and_an_unknown_one_refused() {
    let flame = Flame::build(&spike(), Some("samples")).unwrap();
    assert_eq!((flame.chosen.as_str(), flame.total), ("samples", 36));
    assert!(matches!(
        Flame::build(&spike(), Some("heap")),
        Err(FlameError::NoSuchType(t, known)) if t == "heap" && known == "samples, cpu"
    ));
    let mut untyped = spike();
    untyped.sample_type.clear();
    assert!(matches!(
        Flame::build(&untyped, None),
        Err(FlameError::NoTypes)
    ));
}

#[test]
fn processes_get_a_root_frame_each_when_there_are_several() {
    let mut make = Make::new(CPU);
    make.sample(&[&["a"]], &[1, 10], &[("pid", "1"), ("comm", "one")]);
    make.sample(&[&["a"]], &[1, 10], &[("pid", "2"), ("comm", "two")]);
    let flame = Flame::build(&make.profile, None).unwrap();
    assert_eq!(flame.chosen, "cpu", "the last type without a default");
    assert!(!flame.has_phases());
    // The process frames are in the graph, not in the table of functions.
    let names: Vec<&str> = flame.top.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    let value: serde_json::Value = serde_json::from_str(&flame.to_json()).unwrap();
    let roots: Vec<&str> = value["tree"][4]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            value["names"][c[0].as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(roots.len(), 2);
    assert!(
        roots.contains(&"one (1)") && roots.contains(&"two (2)"),
        "{roots:?}"
    );
}

#[test]
fn narrow_nodes_stay_off_the_page() {
    let mut make = Make::new(CPU);
    make.sample(&[&["wide"]], &[1, 1_000_000], &[]);
    for i in 0..100 {
        make.sample(&[&[&format!("thin{i}")]], &[1, 1], &[]);
    }
    let json = Flame::build(&make.profile, None).unwrap().to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["tree"][4].as_array().unwrap().len(), 1, "only `wide`");
    assert_eq!(
        value["names"],
        serde_json::json!(["all", "wide"]),
        "only names sent"
    );
}

#[test]
fn stacks_deeper_than_the_bound_are_cut_and_counted() {
    let mut make = Make::new(CPU);
    let names: Vec<String> = (0..MAX_DEPTH + 10).map(|i| format!("f{i}")).collect();
    let stack: Vec<Vec<&str>> = names.iter().rev().map(|n| vec![n.as_str()]).collect();
    let stack: Vec<&[&str]> = stack.iter().map(Vec::as_slice).collect();
    make.sample(&stack, &[1, 10], &[]);
    let flame = Flame::build(&make.profile, None).unwrap();
    assert_eq!(flame.truncated, 1);
    assert_eq!(
        flame.nodes.len(),
        MAX_DEPTH + 1,
        "the root and MAX_DEPTH frames"
    );
    let leaf = flame
        .top
        .iter()
        .find(|r| r.name == format!("f{}", MAX_DEPTH + 9))
        .unwrap();
    assert_eq!(
        (leaf.flat, leaf.cum),
        (10, 10),
        "the table counts the whole stack"
    );
}

#[test]
fn decode_reads_gzipped_pprof_and_refuses_other_bytes() {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&spike().encode_to_vec()).unwrap();
    let profile = decode(&gz.finish().unwrap()).unwrap();
    assert_eq!(profile.sample.len(), 4);
    assert!(matches!(decode(b"not gzip"), Err(FlameError::Gzip(_))));
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(b"\xff\xff\xff").unwrap();
    assert!(matches!(
        decode(&gz.finish().unwrap()),
        Err(FlameError::Decode(_))
    ));
}

#[test]
fn values_print_as_pprof_prints_them() {
    assert_eq!(format_value(1_740_000_000, "nanoseconds"), "1.74s");
    assert_eq!(format_value(2_500_000, "nanoseconds"), "2.50ms");
    assert_eq!(format_value(1 << 30, "bytes"), "1.00GB");
    assert_eq!(format_value(300, "count"), "300");
}
