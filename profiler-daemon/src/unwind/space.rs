//! Room in the BPF rows array: every file's table takes ranges of it (each page's rows in one
//! range), allocated as its rows are built.

use std::collections::BTreeMap;

/// Allocator of contiguous ranges of a fixed-capacity array: first fit over the free ranges
/// in address order, which are coalesced on free.
#[derive(Clone, Debug)]
pub struct RowSpace {
    capacity: u32,
    /// Free ranges: first index -> length, none adjacent to another.
    free: BTreeMap<u32, u32>,
    used: u32,
    failed: u64,
}

impl RowSpace {
    pub fn new(capacity: u32) -> Self {
        let free = if capacity == 0 {
            BTreeMap::new()
        } else {
            BTreeMap::from([(0, capacity)])
        };
        Self {
            capacity,
            free,
            used: 0,
            failed: 0,
        }
    }

    /// The first index of `n` contiguous free rows, now in use; `None` (counted) if no free
    /// range is that long. `n` = 0 gets `None` and is not counted.
    pub fn allocate(&mut self, n: u32) -> Option<u32> {
        if n == 0 {
            return None;
        }
        let Some((&first, &len)) = self.free.iter().find(|(_, &len)| len >= n) else {
            self.failed += 1;
            return None;
        };
        self.free.remove(&first);
        if len > n {
            self.free.insert(first + n, len - n);
        }
        self.used += n;
        Some(first)
    }

    /// Returns `n` rows from `first` to the free ranges. `false`, and nothing changes, if
    /// they are not all in use (outside the array, or overlapping a free range: a double
    /// free).
    pub fn free(&mut self, first: u32, n: u32) -> bool {
        let Some(end) = first
            .checked_add(n)
            .filter(|&end| n > 0 && end <= self.capacity)
        else {
            return false;
        };
        let before = self.free.range(..first).next_back().map(|(&s, &l)| (s, l));
        let after = self.free.range(first..).next().map(|(&s, &l)| (s, l));
        if before.is_some_and(|(s, l)| s + l > first) || after.is_some_and(|(s, _)| s < end) {
            return false;
        }
        let (mut start, mut len) = (first, n);
        if let Some((s, l)) = before.filter(|&(s, l)| s + l == first) {
            self.free.remove(&s);
            (start, len) = (s, l + len);
        }
        if let Some((s, l)) = after.filter(|&(s, _)| s == end) {
            self.free.remove(&s);
            len += l;
        }
        self.free.insert(start, len);
        self.used -= n;
        true
    }

    /// Rows in use.
    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The longest allocation that would succeed now.
    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// Allocations refused for want of a free range long enough.
    pub fn failed(&self) -> u64 {
        self.failed
    }
}
