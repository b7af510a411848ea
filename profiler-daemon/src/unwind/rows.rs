//! A table's rows on their way into the kernel's rows array: [`KernelRows`] takes each page
//! of rows as the table builder makes it, places it in ranges of the array allocated as rows
//! come, and writes them a batch at a time, so a table is never held whole in memory.

use profiler_common::UnwindRow;

use super::{paging::RowSink, space::RowSpace, table::TableError};

/// Rows in a batch map update: a million-row table is never held whole.
pub(super) const BATCH: u32 = 16384;

/// Writes rows at an index of the kernel's rows array.
pub(super) trait RowWriter: FnMut(u32, &[UnwindRow]) -> std::io::Result<()> {}
impl<W: FnMut(u32, &[UnwindRow]) -> std::io::Result<()>> RowWriter for W {}

/// Why [`KernelRows`] refused rows.
#[derive(Debug)]
pub(super) enum Failure {
    /// No free range of the rows array holds the page.
    Full,
    Write(std::io::Error),
}

/// A table's rows on their way into the kernel's rows array, in ranges of it allocated as they
/// come (each page's rows in one range; on an array with room, the ranges follow one another),
/// written a batch at a time.
pub(super) struct KernelRows<'l, W> {
    write: W,
    space: &'l mut RowSpace,
    /// The ranges allocated: (first, count).
    ranges: Vec<(u32, u32)>,
    /// The free part of the last range.
    next: u32,
    end: u32,
    /// Rows not written yet, from `batch_first` on.
    batch: Vec<UnwindRow>,
    batch_first: u32,
    pub(super) failed: Option<Failure>,
}

impl<'l, W: RowWriter> KernelRows<'l, W> {
    pub(super) fn new(write: W, space: &'l mut RowSpace) -> Self {
        Self {
            write,
            space,
            ranges: Vec::new(),
            next: 0,
            end: 0,
            batch: Vec::new(),
            batch_first: 0,
            failed: None,
        }
    }

    fn flush(&mut self) -> Result<(), TableError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if let Err(err) = (self.write)(self.batch_first, &self.batch) {
            self.failed = Some(Failure::Write(err));
            return Err(TableError::NotStored);
        }
        self.batch_first += self.batch.len() as u32;
        self.batch.clear();
        Ok(())
    }

    /// Gives back the unused end of the last range.
    fn trim(&mut self) {
        if let Some(last) = self.ranges.last_mut() {
            if self.end > self.next {
                self.space.free(self.next, self.end - self.next);
                last.1 -= self.end - self.next;
                self.end = self.next;
            }
        }
    }

    /// Writes what is left; the ranges holding the table.
    pub(super) fn finish(&mut self) -> Result<Vec<(u32, u32)>, String> {
        self.flush().map_err(|err| err.to_string())?;
        self.trim();
        Ok(std::mem::take(&mut self.ranges))
    }

    /// Frees the ranges of a table that is not placed; why the rows were refused, if they
    /// were.
    pub(super) fn abandon(&mut self) -> Option<Failure> {
        let failed = self.failed.take();
        self.reset();
        failed
    }
}

impl<W: RowWriter> RowSink for KernelRows<'_, W> {
    fn page(&mut self, rows: &[UnwindRow]) -> Result<u32, TableError> {
        let n = u32::try_from(rows.len()).map_err(|_| TableError::NotStored)?;
        if self.end - self.next < n {
            self.flush()?;
            self.trim();
            // A batch's worth, or the longest free range if shorter and the page fits it.
            let len = n.max(BATCH.min(self.space.largest_free()));
            let Some(first) = self.space.allocate(len) else {
                self.failed = Some(Failure::Full);
                return Err(TableError::NotStored);
            };
            match self.ranges.last_mut() {
                Some(last) if last.0 + last.1 == first => last.1 += len,
                _ => self.ranges.push((first, len)),
            }
            (self.next, self.end, self.batch_first) = (first, first + len, first);
        }
        let first = self.next;
        self.batch.extend_from_slice(rows);
        self.next += n;
        if self.batch.len() >= BATCH as usize {
            self.flush()?;
        }
        Ok(first)
    }

    fn reset(&mut self) {
        self.failed = None;
        self.batch.clear();
        for (first, rows) in self.ranges.drain(..) {
            self.space.free(first, rows);
        }
        (self.next, self.end) = (0, 0);
    }
}
