//! CFI to x86_64 rules: evaluates every FDE's program with gimli and translates each row into
//! what the BPF unwinder can apply.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EhFrameHdr, EndianSlice,
    FrameDescriptionEntry, LittleEndian, Register, RegisterRule, UnwindContext, UnwindSection,
    UnwindTableRow,
};
use profiler_common::{cfa, rbp, UnwindRow};

use super::table::{CfiSource, TableError, TableStats};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// DWARF register numbers (x86_64 psABI).
const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// The PLT's CFA expression (binutils' lazy PLT): `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15;
/// DW_OP_and; DW_OP_lit11; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`.
const PLT_EXPRESSION: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];

/// CIEs longer than this are not evaluated: a CIE's initial instructions run again for every
/// FDE that uses it, so a crafted long one shared by many FDEs would cost their product.
/// Compilers' CIEs are a few dozen bytes.
const MAX_CIE_BYTES: usize = 512;

/// One CFI section, with the addresses its pointers may be relative to.
pub(super) enum Cfi<'a> {
    EhFrame {
        data: &'a [u8],
        address: u64,
        /// `.eh_frame_hdr`'s bytes and address.
        hdr: Option<(&'a [u8], u64)>,
        text: Option<u64>,
        got: Option<u64>,
    },
    DebugFrame {
        data: &'a [u8],
    },
}

impl<'a> Cfi<'a> {
    pub(super) fn debug_frame(data: &'a [u8]) -> Self {
        Cfi::DebugFrame { data }
    }
}

/// What the BPF side applies at an address: the CFA rule and how to recover the caller's rbp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rule {
    pub cfa_rule: u8,
    pub cfa_offset: u16,
    pub rbp_rule: u8,
    pub rbp_offset: i16,
}

impl Rule {
    /// Also the rule of addresses no FDE covers. The offsets of rules without a CFA are 0 so
    /// that equal ones merge.
    pub const UNSUPPORTED: Rule = Rule::without_cfa(cfa::UNSUPPORTED);
    pub const END: Rule = Rule::without_cfa(cfa::END);

    const fn without_cfa(cfa_rule: u8) -> Rule {
        Rule {
            cfa_rule,
            cfa_offset: 0,
            rbp_rule: rbp::SAME,
            rbp_offset: 0,
        }
    }

    pub fn row(self, pc_low: u16) -> UnwindRow {
        UnwindRow {
            pc_low,
            cfa_offset: self.cfa_offset,
            rbp_offset: self.rbp_offset,
            cfa_rule: self.cfa_rule,
            rbp_rule: self.rbp_rule,
        }
    }
}

/// The rule for `start..end` (file addresses), from one row of one FDE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub start: u64,
    pub end: u64,
    pub rule: Rule,
}

/// Hands `out` the spans of every FDE of the section that evaluates, one FDE's at a time, each
/// FDE's in address order; the FDEs come in `.eh_frame_hdr`'s order (by address) where it
/// lists them, else in the section's.
pub(super) fn spans(
    cfi: &Cfi<'_>,
    stats: &mut TableStats,
    out: &mut impl FnMut(&[Span]),
) -> Result<(), TableError> {
    let mut out = Fdes {
        ctx: UnwindContext::new(),
        spans: Vec::new(),
        out,
    };
    match *cfi {
        Cfi::EhFrame {
            data,
            address,
            hdr,
            text,
            got,
        } => {
            let mut section = EhFrame::new(data, LittleEndian);
            section.set_address_size(8);
            let mut bases = BaseAddresses::default().set_eh_frame(address);
            if let Some(text) = text {
                bases = bases.set_text(text);
            }
            if let Some(got) = got {
                bases = bases.set_got(got);
            }
            if let Some((hdr, hdr_address)) = hdr {
                let bases = bases.clone().set_eh_frame_hdr(hdr_address);
                if let Some(offsets) = hdr_fde_offsets(hdr, &bases, address, data.len()) {
                    stats.source = CfiSource::EhFrameHdr;
                    listed_fdes(&section, &bases, &offsets, stats, &mut out);
                    return Ok(());
                }
            }
            stats.source = CfiSource::EhFrame;
            all_fdes(&section, &bases, ".eh_frame", stats, &mut out)?;
        }
        Cfi::DebugFrame { data } => {
            let mut section = DebugFrame::new(data, LittleEndian);
            section.set_address_size(8);
            stats.source = CfiSource::DebugFrame;
            all_fdes(
                &section,
                &BaseAddresses::default(),
                ".debug_frame",
                stats,
                &mut out,
            )?;
        }
    }
    Ok(())
}

/// Evaluates FDEs one at a time and hands on the spans of those that evaluate.
struct Fdes<'o, O> {
    ctx: UnwindContext<usize>,
    /// The spans of the FDE at hand: none of them is handed on if a later row fails.
    spans: Vec<Span>,
    out: &'o mut O,
}

/// The `.eh_frame` offsets of the FDEs `.eh_frame_hdr`'s table lists, in its order (sorted
/// by address, so that the spans come out sorted), each once (a crafted table listing one
/// large FDE many times must not make us evaluate it many times).
/// `None` if the header has no table or any entry is unusable (an offset past 4 GiB too): then
/// every entry of `.eh_frame` is read instead.
fn hdr_fde_offsets(
    hdr: &[u8],
    bases: &BaseAddresses,
    eh_frame_address: u64,
    eh_frame_len: usize,
) -> Option<Vec<u32>> {
    let parsed = EhFrameHdr::new(hdr, LittleEndian).parse(bases, 8).ok()?;
    let table = parsed.table()?;
    let mut entries = table.iter(bases);
    let mut offsets = Vec::new();
    // Each entry takes at least two bytes of the header, which bounds the loop.
    while let Some((_, fde)) = entries.next().ok()? {
        let offset = fde.direct().ok()?.checked_sub(eh_frame_address)?;
        let offset = u32::try_from(offset)
            .ok()
            .filter(|&o| (o as usize) < eh_frame_len)?;
        offsets.push(offset);
    }
    // The first listing of each FDE is kept. A sorted copy marks those seen: 5 bytes an FDE
    // where a hash set takes about 20 (libLLVM lists 130 000).
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let mut seen = vec![false; sorted.len()];
    offsets.retain(|offset| match sorted.binary_search(offset) {
        Ok(i) => !std::mem::replace(&mut seen[i], true),
        Err(_) => false,
    });
    (!offsets.is_empty()).then_some(offsets)
}

fn listed_fdes<'a>(
    section: &EhFrame<Reader<'a>>,
    bases: &BaseAddresses,
    offsets: &[u32],
    stats: &mut TableStats,
    out: &mut Fdes<'_, impl FnMut(&[Span])>,
) {
    for &offset in offsets {
        let fde = section
            .partial_fde_from_offset(bases, (offset as usize).into())
            .and_then(|partial| partial.parse(EhFrame::cie_from_offset));
        match fde {
            Ok(fde) => evaluate(section, bases, &fde, stats, out),
            Err(_) => stats.fdes_malformed += 1,
        }
    }
}

/// Reads the section's entries in order. An entry whose length cannot be read ends the
/// section (nothing after it can be found); that is an error only if no FDE came before.
fn all_fdes<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    name: &'static str,
    stats: &mut TableStats,
    out: &mut Fdes<'_, impl FnMut(&[Span])>,
) -> Result<(), TableError> {
    let mut entries = section.entries(bases);
    // Each entry takes at least four bytes of the section, which bounds the loop.
    loop {
        match entries.next() {
            Ok(None) => return Ok(()),
            Ok(Some(CieOrFde::Cie(_))) => {}
            Ok(Some(CieOrFde::Fde(partial))) => match partial.parse(S::cie_from_offset) {
                Ok(fde) => evaluate(section, bases, &fde, stats, out),
                Err(_) => stats.fdes_malformed += 1,
            },
            Err(err) if stats.fdes == 0 && stats.fdes_malformed == 0 => {
                return Err(TableError::Malformed {
                    section: name,
                    reason: err.to_string(),
                });
            }
            Err(_) => {
                stats.fdes_malformed += 1;
                return Ok(());
            }
        }
    }
}

/// Hands on the spans of one FDE, or none of them (counted) if its program does not evaluate.
fn evaluate<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    fde: &FrameDescriptionEntry<Reader<'a>>,
    stats: &mut TableStats,
    out: &mut Fdes<'_, impl FnMut(&[Span])>,
) {
    if fde.cie().entry_len() > MAX_CIE_BYTES {
        stats.fdes_malformed += 1;
        return;
    }
    let before = *stats;
    out.spans.clear();
    match fde_spans(section, bases, fde, &mut out.ctx, stats, &mut out.spans) {
        Ok(()) => {
            stats.fdes += 1;
            (out.out)(&out.spans);
        }
        Err(_) => {
            *stats = TableStats {
                fdes_malformed: before.fdes_malformed + 1,
                ..before
            };
        }
    }
}

fn fde_spans<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    fde: &FrameDescriptionEntry<Reader<'a>>,
    ctx: &mut UnwindContext<usize>,
    stats: &mut TableStats,
    out: &mut Vec<Span>,
) -> gimli::Result<()> {
    let (start, end) = (fde.initial_address(), fde.end_address());
    let signal = fde.is_signal_trampoline();
    let mut rows = fde.rows(section, bases, ctx)?;
    // Each row but the last takes at least one instruction byte, which bounds the loop.
    while let Some(row) = rows.next_row()? {
        let (row_start, row_end) = (row.start_address().max(start), row.end_address().min(end));
        if row_start >= row_end {
            continue;
        }
        let rule = if signal {
            Rule::END
        } else {
            translate(row, section)
        };
        count(stats, rule, row_end - row_start);
        out.push(Span {
            start: row_start,
            end: row_end,
            rule,
        });
    }
    Ok(())
}

fn count(stats: &mut TableStats, rule: Rule, bytes: u64) {
    stats.cfi_rows += 1;
    stats.code_bytes = stats.code_bytes.saturating_add(bytes);
    match rule.cfa_rule {
        cfa::UNSUPPORTED => {
            stats.unsupported_cfa += 1;
            stats.unsupported_bytes = stats.unsupported_bytes.saturating_add(bytes);
        }
        cfa::END => stats.end_rows += 1,
        _ if rule.rbp_rule == rbp::UNSUPPORTED => stats.unsupported_rbp += 1,
        _ => {}
    }
}

/// The x86_64 rule of one CFI row (of an FDE whose CIE is not a signal trampoline's).
pub(super) fn translate<'a, S: UnwindSection<Reader<'a>>>(
    row: &UnwindTableRow<usize>,
    section: &S,
) -> Rule {
    match row.register(RA) {
        Some(RegisterRule::Undefined) => return Rule::END,
        Some(RegisterRule::Offset(-8)) => {}
        _ => return Rule::UNSUPPORTED,
    }
    let (cfa_rule, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let rule = match *register {
                RSP => cfa::RSP,
                RBP => cfa::RBP,
                _ => return Rule::UNSUPPORTED,
            };
            match u16::try_from(*offset) {
                Ok(offset) => (rule, offset),
                Err(_) => return Rule::UNSUPPORTED,
            }
        }
        CfaRule::Expression(expression) => match expression.get(section) {
            Ok(e) if e.0.slice() == PLT_EXPRESSION => (cfa::PLT, 8),
            _ => return Rule::UNSUPPORTED,
        },
    };
    let (rbp_rule, rbp_offset) = match row.register(RBP) {
        None | Some(RegisterRule::SameValue) => (rbp::SAME, 0),
        Some(RegisterRule::Offset(offset)) => match i16::try_from(offset) {
            Ok(offset) => (rbp::AT_CFA, offset),
            Err(_) => (rbp::UNSUPPORTED, 0),
        },
        Some(_) => (rbp::UNSUPPORTED, 0),
    };
    Rule {
        cfa_rule,
        cfa_offset,
        rbp_rule,
        rbp_offset,
    }
}
