//! What a named frame is: user or kernel, its address and mapping, and its source lines
//! (inlined callees first).

use std::sync::Arc;

use blazesym::symbolize::{CodeInfo, Reason, Symbolized};

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

fn code_file(info: &CodeInfo<'_>) -> Arc<str> {
    info.to_path().to_string_lossy().into()
}

/// pprof lines of one symbolization result, innermost inlined function first.
pub(super) fn symbolized_lines(result: Symbolized<'_>) -> Result<Vec<Line>, Reason> {
    let sym = match result {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(reason) => return Err(reason),
    };
    let mut lines = Vec::with_capacity(1 + sym.inlined.len());
    for inlined in sym.inlined.iter().rev() {
        lines.push(Line {
            function: inlined.name.as_ref().into(),
            file: inlined.code_info.as_ref().map(code_file),
            line: inlined.code_info.as_ref().and_then(|c| c.line).unwrap_or(0),
        });
    }
    lines.push(Line {
        function: sym.name.as_ref().into(),
        file: sym.code_info.as_deref().map(code_file),
        line: sym.code_info.as_ref().and_then(|c| c.line).unwrap_or(0),
    });
    Ok(lines)
}
