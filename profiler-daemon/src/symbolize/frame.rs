//! What a named frame is: user or kernel, its address and mapping, and its source lines
//! (inlined callees first).

use std::sync::Arc;

use crate::process::Vma;

/// Whether a frame ran in user space or in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    User,
    Kernel,
}

/// One source-level function at a location (several when functions were inlined).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: u32,
}

/// A symbolized instruction address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub kind: FrameKind,
    pub address: u64,
    /// The file mapping of a user frame, when it is in one.
    pub vma: Option<Arc<Vma>>,
    /// Innermost function first; never empty.
    pub lines: Vec<Line>,
}

impl Location {
    /// Name of the outermost function at this location (what a flat profile shows).
    pub fn function(&self) -> &str {
        // Every constructor gives a location at least one line; "" would show an empty name.
        self.lines.last().map_or("", |line| &line.function)
    }

    pub(super) fn named(
        kind: FrameKind,
        address: u64,
        vma: Option<Arc<Vma>>,
        function: String,
    ) -> Self {
        Self {
            kind,
            address,
            vma,
            lines: vec![Line {
                function: function.into(),
                file: None,
                line: 0,
            }],
        }
    }
}
