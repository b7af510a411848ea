//! Spans to paged rows: the rules in address order with the gaps between FDEs marked, cut
//! into 64 KiB pages whose first row is always at `pc_low` 0. Spans that come in address order
//! (`.eh_frame_hdr`'s) are paged as they come, with no list of them held, and each page's rows
//! go to a [`RowSink`] once the page is complete.

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

/// Where a table's rows go, a page at a time: the kernel's rows array a batch at a time, so
/// that building a table never holds all of its rows (a vector in the tests).
pub(super) trait RowSink {
    /// Stores one page's rows (at least one) contiguously; the index of the first.
    fn page(&mut self, rows: &[UnwindRow]) -> Result<u32, TableError>;
    /// Forgets every row stored so far (the table is paged again, or not at all).
    fn reset(&mut self);
}

#[cfg(test)]
impl RowSink for Vec<UnwindRow> {
    fn page(&mut self, rows: &[UnwindRow]) -> Result<u32, TableError> {
        let first = u32::try_from(self.len()).map_err(|_| TableError::TooManyRows {
            rows: self.len() + rows.len(),
            max: u32::MAX as usize,
        })?;
        self.extend_from_slice(rows);
        Ok(first)
    }

    fn reset(&mut self) {
        self.clear();
    }
}

/// Why a [`Pager`] gave no table.
#[derive(Debug)]
pub(super) enum Unpaged {
    /// A span started before the one given before it: sort the spans and page them again.
    Unsorted,
    Failed(TableError),
}

/// Pages spans given in order of their start. Each span's rule is in force from its start to
/// the next span's start or its own end, whichever comes first; an address no span covers gets
/// [`Rule::UNSUPPORTED`], so a pc between functions never uses the previous function's rule.
/// Where spans overlap (crafted or broken CFI) the one that starts later wins, and at the same
/// start the one given last: deterministic, never a panic. Equal neighbouring rules are one
/// row.
///
/// A page whose first rule starts past its beginning starts with a copy of the rule in force
/// there; a page that a rule from an earlier page covers entirely gets that rule as its one
/// row; a page in a gap (or where a gap starts at its first byte) gets no entry. Rows beyond
/// `max_rows` fail before they are allocated (one crafted FDE can cover 2^47 bytes). Each page's
/// rows go to the sink once the page is complete: the pager holds one page's rows at most.
pub(super) struct Pager<'s, S> {
    sink: &'s mut S,
    max_rows: usize,
    /// Rows given to the sink.
    stored: usize,
    pages: Vec<PageEntry>,
    /// The last span given: its rule's extent depends on the next span's start.
    pending: Option<Span>,
    /// Whether any span was given (an empty one or one past [`MAX_ADDRESS`] included).
    any: bool,
    /// The rule of the last row (UNSUPPORTED before the first: a table never starts with a
    /// gap).
    last: Rule,
    /// The page being filled, and its rows.
    open: Option<u64>,
    rows: Vec<UnwindRow>,
    failed: Option<Unpaged>,
}

impl<'s, S: RowSink> Pager<'s, S> {
    pub(super) fn new(sink: &'s mut S, max_rows: usize) -> Self {
        Self {
            sink,
            max_rows,
            stored: 0,
            pages: Vec::new(),
            pending: None,
            any: false,
            last: Rule::UNSUPPORTED,
            open: None,
            rows: Vec::new(),
            failed: None,
        }
    }

    /// Adds the next span; once a span is out of order or the rows cannot be stored, the rest
    /// are ignored and [`Pager::finish`] says why.
    pub(super) fn push(&mut self, span: Span) {
        self.any = true;
        if self.failed.is_some() || span.start >= span.end || span.start >= MAX_ADDRESS {
            return;
        }
        let span = Span {
            end: span.end.min(MAX_ADDRESS),
            ..span
        };
        let Some(pending) = self.pending.replace(span) else {
            return;
        };
        if span.start < pending.start {
            self.failed = Some(Unpaged::Unsorted);
        } else if span.start > pending.start {
            // At the same start the later span replaces the pending one altogether.
            let ended = self.point(pending.start, pending.rule).and_then(|()| {
                if span.start > pending.end {
                    self.point(pending.end, Rule::UNSUPPORTED)
                } else {
                    Ok(())
                }
            });
            if let Err(err) = ended {
                self.failed = Some(Unpaged::Failed(err));
            }
        }
    }

    /// Whether any span was given.
    pub(super) fn any(&self) -> bool {
        self.any
    }

    /// The pages, the rows being in the sink.
    pub(super) fn finish(mut self) -> Result<Vec<PageEntry>, Unpaged> {
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        let last = match self.pending.take() {
            Some(span) => self
                .point(span.start, span.rule)
                .and_then(|()| self.point(span.end, Rule::UNSUPPORTED)),
            None => Ok(()),
        };
        last.and_then(|()| self.close(None))
            .map_err(Unpaged::Failed)?;
        Ok(self.pages)
    }

    /// The rule in force from `address` on; addresses strictly increase from call to call.
    fn point(&mut self, address: u64, rule: Rule) -> Result<(), TableError> {
        if rule == self.last {
            return Ok(());
        }
        let page = address >> UNWIND_PAGE_BITS;
        if self.open != Some(page) {
            self.close(Some(page))?;
            self.open = Some(page);
            if address & PAGE_MASK != 0 {
                self.row(self.last.row(0))?;
            }
        }
        self.row(rule.row((address & PAGE_MASK) as u16))?;
        self.last = rule;
        Ok(())
    }

    /// Ends the open page; `next` is the page of the next row, if any. The rule in force at
    /// the end of the page covers the pages up to `next`.
    fn close(&mut self, next: Option<u64>) -> Result<(), TableError> {
        let Some(page) = self.open.take() else {
            return Ok(());
        };
        let in_force = self.last;
        // A page of nothing but a gap from its start is the same as no entry.
        if in_force != Rule::UNSUPPORTED || self.rows.len() > 1 {
            self.store(page)?;
        }
        self.rows.clear();
        if in_force == Rule::UNSUPPORTED {
            return Ok(());
        }
        // The rows end with an unsupported rule, so a next page exists here.
        for covered in page + 1..next.unwrap_or(page + 1) {
            self.row(in_force.row(0))?;
            self.store(covered)?;
            self.rows.clear();
        }
        Ok(())
    }

    fn store(&mut self, page: u64) -> Result<(), TableError> {
        let first = self.sink.page(&self.rows)?;
        self.stored += self.rows.len();
        self.pages
            .push((page as u32, first, self.rows.len() as u32));
        Ok(())
    }

    fn row(&mut self, row: UnwindRow) -> Result<(), TableError> {
        let rows = self.stored + self.rows.len();
        if rows >= self.max_rows {
            return Err(TableError::TooManyRows {
                rows: rows + 1,
                max: self.max_rows,
            });
        }
        self.rows.push(row);
        Ok(())
    }
}

/// Pages spans in any order: sorted by start first (stable: at the same start the one read
/// last wins).
pub(super) fn pages(
    mut spans: Vec<Span>,
    max_rows: usize,
    sink: &mut impl RowSink,
) -> Result<Vec<PageEntry>, TableError> {
    spans.sort_by_key(|s| s.start);
    let mut pager = Pager::new(sink, max_rows);
    for span in spans {
        pager.push(span);
    }
    pager.finish().map_err(|unpaged| match unpaged {
        Unpaged::Failed(err) => err,
        // Not after the sort above; an error rather than a panic all the same.
        Unpaged::Unsorted => TableError::Malformed {
            section: "CFI",
            reason: "spans out of order after sorting".into(),
        },
    })
}
