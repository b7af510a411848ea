//! Spans to paged rows: the rules in address order with the gaps between FDEs marked, then
//! cut into 64 KiB pages whose first row is always at `pc_low` 0.

use profiler_common::{UnwindRow, UNWIND_PAGE_BITS};

use super::{
    cfi::{Rule, Span},
    table::TableError,
};

/// Addresses from here on are dropped: user space ends below 2^47 on x86_64, and every page
/// number below 2^48 fits the page index's u32.
const MAX_ADDRESS: u64 = 1 << 47;

/// (page, index of its first row, its row count), as in [`FileTable::pages`](super::FileTable).
pub(super) type PageEntry = (u32, u32, u32);

const PAGE_MASK: u64 = (1 << UNWIND_PAGE_BITS) - 1;

/// The rule in force from each address on, strictly increasing, equal neighbours merged. An
/// address no span covers gets [`Rule::UNSUPPORTED`], so a pc between functions never uses the
/// previous function's rule. Where spans overlap (crafted or broken CFI) the one that starts
/// later wins, and at the same start the one read last: deterministic, never a panic.
pub(super) fn points(mut spans: Vec<Span>) -> Vec<(u64, Rule)> {
    spans.retain(|s| s.start < s.end && s.start < MAX_ADDRESS);
    for span in &mut spans {
        span.end = span.end.min(MAX_ADDRESS);
    }
    // Stable: spans with the same start stay in the order they were read. Spans read in
    // address order (through .eh_frame_hdr's table) are not sorted again: a stable sort
    // takes a scratch copy of half of them.
    if !spans.is_sorted_by_key(|s| s.start) {
        spans.sort_by_key(|s| s.start);
    }
    let mut points: Vec<(u64, Rule)> = Vec::with_capacity(spans.len() + 1);
    let mut push = |address: u64, rule: Rule| {
        let same = points
            .last()
            .map_or(rule == Rule::UNSUPPORTED, |&(_, last)| last == rule);
        if !same {
            points.push((address, rule));
        }
    };
    for (i, span) in spans.iter().enumerate() {
        let next = spans.get(i + 1).map(|n| n.start);
        if next == Some(span.start) {
            continue;
        }
        push(span.start, span.rule);
        if next.is_none_or(|next| next > span.end) {
            push(span.end, Rule::UNSUPPORTED);
        }
    }
    points
}

/// Pages of the rules: (page, first row, row count) sorted by page, and the rows. A page whose
/// first rule starts past its beginning starts with a copy of the rule in force there; a page
/// that a rule from an earlier page covers entirely gets that rule as its one row; a page in
/// a gap (or where a gap starts at its first byte) gets no entry. Fails once the rows would exceed `max_rows` (before allocating them:
/// one crafted FDE can cover 2^47 bytes).
pub(super) fn pages(
    points: &[(u64, Rule)],
    max_rows: usize,
) -> Result<(Vec<UnwindRow>, Vec<PageEntry>), TableError> {
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(points.len().min(max_rows));
    let mut pages = Vec::new();
    let mut in_force = Rule::UNSUPPORTED;
    let push = |rows: &mut Vec<UnwindRow>, row: UnwindRow| {
        if rows.len() >= max_rows {
            return Err(TableError::TooManyRows {
                rows: rows.len() + 1,
                max: max_rows,
            });
        }
        rows.push(row);
        Ok(())
    };
    let mut i = 0;
    while i < points.len() {
        let page = points[i].0 >> UNWIND_PAGE_BITS;
        let first = rows.len();
        if points[i].0 & PAGE_MASK != 0 {
            push(&mut rows, in_force.row(0))?;
        }
        while let Some(&(address, rule)) = points.get(i).filter(|p| p.0 >> UNWIND_PAGE_BITS == page)
        {
            push(&mut rows, rule.row((address & PAGE_MASK) as u16))?;
            in_force = rule;
            i += 1;
        }
        if in_force == Rule::UNSUPPORTED && rows.len() - first == 1 {
            // Nothing but a gap from the page's start: the same as no entry.
            rows.truncate(first);
            continue;
        }
        pages.push((page as u32, first as u32, (rows.len() - first) as u32));
        if in_force == Rule::UNSUPPORTED {
            continue;
        }
        // The points end with an unsupported rule, so a next point exists here.
        let next_page = points.get(i).map_or(page + 1, |p| p.0 >> UNWIND_PAGE_BITS);
        for covered in page + 1..next_page {
            push(&mut rows, in_force.row(0))?;
            pages.push((covered as u32, rows.len() as u32 - 1, 1));
        }
    }
    Ok((rows, pages))
}
