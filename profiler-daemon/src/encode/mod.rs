//! Encodings of per-process profiles. In: a [`Window`](crate::aggregate::Window) and its
//! [`ProcessProfile`](crate::aggregate::ProcessProfile)s. Out: gzipped pprof (whole, or split
//! within a server's limits), collapsed stacks, and SVG flame graphs.

mod folded;
mod measure;
mod phase;
pub mod pprof;
mod tables;

pub use folded::{flame_graph_svg, folded_lines, EncodeError};
