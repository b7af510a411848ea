//! Spans to paged rows: the rules in address order with the gaps between FDEs marked, cut
//! into 64 KiB pages whose first row is always at `pc_low` 0. Spans that come in address order
//! (`.eh_frame_hdr`'s) are paged as they come: the table holds its final rows only, never a
//! list of its spans.

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

/// Why a [`Pager`] gave no table.
#[derive(Debug)]
pub(super) enum Unpaged {
    /// A span started before the one given before it: sort the spans and page them again.
    Unsorted,
    TooManyRows(TableError),
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
/// `max_rows` fail before they are allocated (one crafted FDE can cover 2^47 bytes).
pub(super) struct Pager {
    max_rows: usize,
    rows: Vec<UnwindRow>,
    pages: Vec<PageEntry>,
    /// The last span given: its rule's extent depends on the next span's start.
    pending: Option<Span>,
    /// Whether any span was given (an empty one or one past [`MAX_ADDRESS`] included).
    any: bool,
    /// The rule of the last row written (UNSUPPORTED before the first: a table never starts
    /// with a gap).
    last: Rule,
    /// The page being filled, and the index of its first row.
    open: Option<(u64, usize)>,
    failed: Option<Unpaged>,
}

impl Pager {
    pub(super) fn new(max_rows: usize) -> Self {
        Self {
            max_rows,
            rows: Vec::new(),
            pages: Vec::new(),
            pending: None,
            any: false,
            last: Rule::UNSUPPORTED,
            open: None,
            failed: None,
        }
    }

    /// Adds the next span; once a span is out of order or the rows are too many, the rest are
    /// ignored and [`Pager::finish`] says why.
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
                self.failed = Some(Unpaged::TooManyRows(err));
            }
        }
    }

    /// Whether any span was given.
    pub(super) fn any(&self) -> bool {
        self.any
    }

    /// The rows, page after page, and the pages.
    pub(super) fn finish(mut self) -> Result<(Vec<UnwindRow>, Vec<PageEntry>), Unpaged> {
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
            .map_err(Unpaged::TooManyRows)?;
        Ok((self.rows, self.pages))
    }

    /// The rule in force from `address` on; addresses strictly increase from call to call.
    fn point(&mut self, address: u64, rule: Rule) -> Result<(), TableError> {
        if rule == self.last {
            return Ok(());
        }
        let page = address >> UNWIND_PAGE_BITS;
        if self.open.is_none_or(|(open, _)| open != page) {
            self.close(Some(page))?;
            self.open = Some((page, self.rows.len()));
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
        let Some((page, first)) = self.open.take() else {
            return Ok(());
        };
        let in_force = self.last;
        if in_force == Rule::UNSUPPORTED && self.rows.len() - first == 1 {
            // Nothing but a gap from the page's start: the same as no entry.
            self.rows.truncate(first);
            return Ok(());
        }
        self.pages
            .push((page as u32, first as u32, (self.rows.len() - first) as u32));
        if in_force == Rule::UNSUPPORTED {
            return Ok(());
        }
        // The rows end with an unsupported rule, so a next page exists here.
        for covered in page + 1..next.unwrap_or(page + 1) {
            self.row(in_force.row(0))?;
            self.pages
                .push((covered as u32, self.rows.len() as u32 - 1, 1));
        }
        Ok(())
    }

    fn row(&mut self, row: UnwindRow) -> Result<(), TableError> {
        if self.rows.len() >= self.max_rows {
            return Err(TableError::TooManyRows {
                rows: self.rows.len() + 1,
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
) -> Result<(Vec<UnwindRow>, Vec<PageEntry>), TableError> {
    spans.sort_by_key(|s| s.start);
    let mut pager = Pager::new(max_rows);
    for span in spans {
        pager.push(span);
    }
    pager.finish().map_err(|unpaged| match unpaged {
        Unpaged::TooManyRows(err) => err,
        // Not after the sort above; an error rather than a panic all the same.
        Unpaged::Unsorted => TableError::Malformed {
            section: "CFI",
            reason: "spans out of order after sorting".into(),
        },
    })
}
