//! A pprof file read back for the page: the call tree of one sample type (the flame graph's
//! data, with each node's share before and after the firing for the differential graph) and
//! the functions by self and cumulative value (the top table). In: the gzipped pprof the
//! daemon wrote. Out: a [`Flame`], bounded in nodes and rows whatever the file holds.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
};

use flate2::read::GzDecoder;
use prost::Message;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use thiserror::Error;

use crate::pprof_proto as pb;

/// Largest decompressed profile read: the daemon's own kept profiles are a few MiB; this
/// bounds what two page workers hold at once, decoded, whatever a file holds.
const MAX_DECOMPRESSED: u64 = 64 << 20;
/// Deepest stack put in the tree (frames beyond count at the node reached, in
/// [`Flame::truncated`]): two walks of 127 frames with inlined functions stay under it, and
/// the serializers and the page's script recurse this deep at most.
const MAX_DEPTH: usize = 512;
/// Most nodes of the tree built; deeper frames of the samples beyond it count at the node
/// reached (counted in [`Flame::truncated`]).
const MAX_NODES: usize = 200_000;
/// Most nodes sent to the page: narrower ones are left out (they would be under a pixel).
const MAX_SHOWN: usize = 20_000;
/// Nodes narrower than this share of the total are left out at first.
const MIN_SHARE: u64 = 2_000;
/// Rows of the top table: the first by self and the first by cumulative value.
const TOP_ROWS: usize = 250;

#[derive(Debug, Error)]
pub enum FlameError {
    #[error("not a gzipped pprof profile: {0}")]
    Gzip(std::io::Error),
    #[error("the profile decompresses to more than {} MiB", MAX_DECOMPRESSED >> 20)]
    TooLarge,
    #[error("not a pprof profile: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the profile has no sample type {0:?}: use ?type= with one of {1}")]
    NoSuchType(String, String),
    #[error("the profile has no sample types")]
    NoTypes,
}

/// Decodes a gzipped pprof profile.
pub fn decode(gzipped: &[u8]) -> Result<pb::Profile, FlameError> {
    let mut bytes = Vec::new();
    GzDecoder::new(gzipped)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut bytes)
        .map_err(FlameError::Gzip)?;
    if bytes.len() as u64 > MAX_DECOMPRESSED {
        return Err(FlameError::TooLarge);
    }
    Ok(pb::Profile::decode(bytes.as_slice())?)
}

/// One function of the call tree at one place.
#[derive(Debug, Default)]
struct Node {
    name: u32,
    value: u64,
    /// Of `value`, the samples taken before and after the firing (`phase` label).
    before: u64,
    after: u64,
    children: Vec<u32>,
}

/// One function's row of the top table.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow {
    pub name: String,
    /// Where it is the leaf.
    pub flat: u64,
    /// Where it is anywhere in the stack, once per sample.
    pub cum: u64,
}

/// One sample type of a profile as the page shows it.
#[derive(Debug)]
pub struct Flame {
    names: Vec<String>,
    nodes: Vec<Node>,
    /// Sample types in the file (`go tool pprof -sample_index`), and the one shown.
    pub types: Vec<String>,
    pub chosen: String,
    pub unit: String,
    /// Sum of the chosen values, and its parts before and after the firing; both 0 when the
    /// samples carry no `phase` label (a continuous-mode window, a `record`).
    pub total: u64,
    pub before: u64,
    pub after: u64,
    pub top: Vec<TopRow>,
    /// Samples whose stack went past [`MAX_NODES`] or [`MAX_DEPTH`].
    pub truncated: u64,
}

/// Tree and top table under construction.
struct Builder {
    names: Vec<String>,
    ids: HashMap<String, u32>,
    nodes: Vec<Node>,
    children: HashMap<(u32, u32), u32>,
    flat: HashMap<u32, u64>,
    cum: HashMap<u32, u64>,
    truncated: u64,
}

impl Builder {
    fn new() -> Self {
        let mut builder = Self {
            names: Vec::new(),
            ids: HashMap::new(),
            nodes: Vec::new(),
            children: HashMap::new(),
            flat: HashMap::new(),
            cum: HashMap::new(),
            truncated: 0,
        };
        let root = builder.intern("all");
        builder.nodes.push(Node {
            name: root,
            ..Node::default()
        });
        builder
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    /// Adds one sample: `frames` root first, the first `pseudo` of them not functions (a
    /// process's frame), `phase` whether it was before (`Some(true)`) or after the firing.
    fn add(&mut self, frames: &[u32], pseudo: usize, value: u64, phase: Option<bool>) {
        let functions = frames.get(pseudo..).unwrap_or_default();
        let mut seen = HashSet::new();
        for &name in functions {
            if seen.insert(name) {
                *self.cum.entry(name).or_default() += value;
            }
        }
        if let Some(&leaf) = functions.last() {
            *self.flat.entry(leaf).or_default() += value;
        }
        let mut node = 0u32;
        self.count(0, value, phase);
        if frames.len() > MAX_DEPTH {
            self.truncated += 1;
        }
        for &name in frames.iter().take(MAX_DEPTH) {
            let next = match self.children.get(&(node, name)) {
                Some(&child) => child,
                None if self.nodes.len() >= MAX_NODES => {
                    self.truncated += 1;
                    break;
                }
                None => {
                    let child = self.nodes.len() as u32;
                    self.nodes.push(Node {
                        name,
                        ..Node::default()
                    });
                    self.nodes[node as usize].children.push(child);
                    self.children.insert((node, name), child);
                    child
                }
            };
            node = next;
            self.count(node, value, phase);
        }
    }

    fn count(&mut self, node: u32, value: u64, phase: Option<bool>) {
        let node = &mut self.nodes[node as usize];
        node.value += value;
        match phase {
            Some(true) => node.before += value,
            Some(false) => node.after += value,
            None => {}
        }
    }

    fn top(&self) -> Vec<TopRow> {
        let mut names: Vec<u32> = self.cum.keys().copied().collect();
        let flat = |n: &u32| self.flat.get(n).copied().unwrap_or(0);
        let cum = |n: &u32| self.cum.get(n).copied().unwrap_or(0);
        let mut chosen = HashSet::new();
        names.sort_by(|a, b| flat(b).cmp(&flat(a)).then(a.cmp(b)));
        chosen.extend(names.iter().take(TOP_ROWS).copied());
        names.sort_by(|a, b| cum(b).cmp(&cum(a)).then(a.cmp(b)));
        chosen.extend(names.iter().take(TOP_ROWS).copied());
        let mut rows: Vec<TopRow> = chosen
            .into_iter()
            .map(|n| TopRow {
                name: self.names[n as usize].clone(),
                flat: flat(&n),
                cum: cum(&n),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.flat
                .cmp(&a.flat)
                .then(b.cum.cmp(&a.cum))
                .then(a.name.cmp(&b.name))
        });
        rows
    }
}

/// The frame names of each location, caller first (a location's lines list the inlined
/// callee first).
fn location_frames(profile: &pb::Profile, builder: &mut Builder) -> HashMap<u64, Vec<u32>> {
    let text = |i: i64| {
        profile
            .string_table
            .get(i as usize)
            .map_or("", String::as_str)
    };
    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| (f.id, text(f.name)))
        .collect();
    profile
        .location
        .iter()
        .map(|loc| {
            let mut frames: Vec<u32> = loc
                .line
                .iter()
                .rev()
                .map(|line| builder.intern(functions.get(&line.function_id).unwrap_or(&"?")))
                .collect();
            if frames.is_empty() {
                frames.push(builder.intern(&format!("[unknown] {:#x}", loc.address)));
            }
            (loc.id, frames)
        })
        .collect()
}

impl Flame {
    /// The call tree of `profile`'s sample type `wanted` (else its default, else its last).
    pub fn build(profile: &pb::Profile, wanted: Option<&str>) -> Result<Self, FlameError> {
        let text = |i: i64| {
            profile
                .string_table
                .get(i as usize)
                .map_or("", String::as_str)
        };
        let types: Vec<String> = profile
            .sample_type
            .iter()
            .map(|t| text(t.r#type).to_string())
            .collect();
        let index = match wanted {
            Some(name) => types
                .iter()
                .position(|t| t == name)
                .ok_or_else(|| FlameError::NoSuchType(name.to_string(), types.join(", ")))?,
            None => types
                .iter()
                .position(|t| {
                    profile.default_sample_type != 0 && t == text(profile.default_sample_type)
                })
                .or(types.len().checked_sub(1))
                .ok_or(FlameError::NoTypes)?,
        };
        let mut builder = Builder::new();
        let frames_of = location_frames(profile, &mut builder);
        let pids: HashSet<&str> = profile
            .sample
            .iter()
            .flat_map(|s| {
                s.label
                    .iter()
                    .filter(|l| text(l.key) == "pid")
                    .map(|l| text(l.str))
            })
            .collect();
        let by_process = pids.len() > 1;
        let (mut total, mut before, mut after) = (0, 0, 0);
        let mut frames = Vec::new();
        for sample in &profile.sample {
            let value = sample.value.get(index).copied().unwrap_or(0).max(0) as u64;
            if value == 0 {
                continue;
            }
            let label = |key: &str| {
                sample
                    .label
                    .iter()
                    .find(|l| text(l.key) == key)
                    .map(|l| text(l.str))
            };
            // The baseline is the seconds before the firing; the interval that fired the rule
            // and those after it are the spike.
            let phase = label("phase").map(|p| p == "before");
            frames.clear();
            if by_process {
                let process = format!(
                    "{} ({})",
                    label("comm").unwrap_or("?"),
                    label("pid").unwrap_or("?")
                );
                frames.push(builder.intern(&process));
            }
            for id in sample.location_id.iter().rev() {
                frames.extend(frames_of.get(id).into_iter().flatten());
            }
            builder.add(&frames, usize::from(by_process), value, phase);
            total += value;
            match phase {
                Some(true) => before += value,
                Some(false) => after += value,
                None => {}
            }
        }
        let unit = profile
            .sample_type
            .get(index)
            .map_or("count", |t| text(t.unit))
            .to_string();
        Ok(Self {
            top: builder.top(),
            names: builder.names,
            nodes: builder.nodes,
            chosen: types[index].clone(),
            types,
            unit,
            total,
            before,
            after,
            truncated: builder.truncated,
        })
    }

    /// Whether the samples can be split at the firing: some were taken on each side.
    pub fn has_phases(&self) -> bool {
        self.before > 0 && self.after > 0
    }

    /// The least value a node needs to be sent to the page, so that at most [`MAX_SHOWN`]
    /// are (at the last step, at most 32 a level of [`MAX_DEPTH`]: 16,384): a node narrower than its share of the whole graph's width, or of the after-part
    /// (the differential graph's), is left out with everything above it.
    fn cutoff(&self) -> (u64, u64) {
        let mut share = MIN_SHARE;
        loop {
            let cut = (self.total / share, self.after / share);
            let shown = self.nodes.iter().filter(|n| self.shown(n, cut)).count();
            if shown <= MAX_SHOWN || share <= 16 {
                return cut;
            }
            share /= 2;
        }
    }

    fn shown(&self, node: &Node, (cut, after_cut): (u64, u64)) -> bool {
        node.value > cut || (self.after > 0 && node.after > after_cut)
    }

    /// The tree as JSON for the page's script: `{"names": [...], "tree": NODE, ...}` where a
    /// node is `[name index, value, before, after, [children]]`, children widest first, and
    /// `names` holds only the names of the nodes sent. `<` is escaped so that the text can sit
    /// in a `<script>` element.
    pub fn to_json(&self) -> String {
        let cut = self.cutoff();
        // The names of the nodes sent, renumbered in the order they are met.
        let mut index: HashMap<u32, u32> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        let mut pending = vec![0u32];
        while let Some(node) = pending.pop() {
            let node = &self.nodes[node as usize];
            index.entry(node.name).or_insert_with(|| {
                names.push(&self.names[node.name as usize]);
                names.len() as u32 - 1
            });
            pending.extend(
                node.children
                    .iter()
                    .filter(|&&c| self.shown(&self.nodes[c as usize], cut)),
            );
        }
        let page = PageData {
            names,
            tree: Shown {
                flame: self,
                node: 0,
                cut,
                index: &index,
            },
            unit: &self.unit,
            kind: &self.chosen,
            total: self.total,
            before: self.before,
            after: self.after,
        };
        serde_json::to_string(&page)
            .unwrap_or_default()
            .replace('<', "\\u003c")
    }
}

/// What the page's script reads.
#[derive(serde::Serialize)]
struct PageData<'a> {
    names: Vec<&'a str>,
    tree: Shown<'a>,
    unit: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    total: u64,
    before: u64,
    after: u64,
}

/// A node of the tree with its children above the cut-off, serialized as an array.
struct Shown<'a> {
    flame: &'a Flame,
    node: u32,
    cut: (u64, u64),
    /// The node names' indexes in the names sent.
    index: &'a HashMap<u32, u32>,
}

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let node = &self.flame.nodes[self.node as usize];
        let mut children: Vec<u32> = node
            .children
            .iter()
            .copied()
            .filter(|&c| self.flame.shown(&self.flame.nodes[c as usize], self.cut))
            .collect();
        children.sort_by_key(|&c| std::cmp::Reverse(self.flame.nodes[c as usize].value));
        let children: Vec<Shown<'_>> = children
            .into_iter()
            .map(|node| Shown { node, ..*self })
            .collect();
        let mut seq = serializer.serialize_seq(Some(5))?;
        seq.serialize_element(&self.index.get(&node.name).copied().unwrap_or(0))?;
        seq.serialize_element(&node.value)?;
        seq.serialize_element(&node.before)?;
        seq.serialize_element(&node.after)?;
        seq.serialize_element(&children)?;
        seq.end()
    }
}

/// A value in the unit of its sample type, as `go tool pprof` prints it: `1.74s`, `12MB`, `300`.
pub fn format_value(value: u64, unit: &str) -> String {
    let v = value as f64;
    if value == 0 {
        return "0".to_string();
    }
    match unit {
        "nanoseconds" => match value {
            0..1_000 => format!("{value}ns"),
            1_000..1_000_000 => format!("{:.2}us", v / 1e3),
            1_000_000..1_000_000_000 => format!("{:.2}ms", v / 1e6),
            _ => format!("{:.2}s", v / 1e9),
        },
        "bytes" => match value {
            0..1024 => format!("{value}B"),
            1024..1_048_576 => format!("{:.1}kB", v / 1024.0),
            1_048_576..1_073_741_824 => format!("{:.1}MB", v / 1_048_576.0),
            _ => format!("{:.2}GB", v / 1_073_741_824.0),
        },
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests;
