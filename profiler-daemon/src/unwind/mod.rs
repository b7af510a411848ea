//! Unwind tables for the BPF unwinder, built from each file's call frame information. In: the
//! executable file mappings of each process the symbolizer tracks (its checked descriptors),
//! and exits. Out: the tables and mapping lists in the kernel's unwind maps, and
//! [`UnwindStats`]. The [`Unwind`] loader thread builds each file's table once, from the
//! bytes of an ELF file (x86_64) and, optionally, of its separate debug file: a
//! [`FileTable`]: the CFI as compact [`profiler_common::UnwindRow`]s in 64 KiB pages (the
//! first row of every page at `pc_low` 0), and the executable segments that turn a mapping of
//! the file into a bias. The rows go to the kernel a batch at a time as they are built, into
//! ranges of the one rows array shared by all files that [`RowSpace`] allocates.
//!
//! The CFI comes from `.eh_frame` (its FDEs listed by `.eh_frame_hdr` where present) and, for
//! code it does not describe, from `.debug_frame` in the file, else in the separate debug file
//! the symbolizer found. Only the ELF headers and those sections are read, with positioned
//! reads through a read cache. Rules the BPF side cannot apply are marked unsupported, never
//! guessed; a crafted file is hostile input (no panic, memory within O(rows + section
//! sizes), every loop bounded).

mod cfi;
mod loader;
mod paging;
mod rows;
mod space;
mod table;

pub use loader::{LoaderLimits, Unwind, UnwindStats};

#[cfg(test)]
mod tests;
