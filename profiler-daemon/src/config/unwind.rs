//! How user stacks are walked, and the bounds of the unwind tables (kernel memory).

use clap::{Args, ValueEnum};

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unwinder {
    /// Unwind tables from each file's `.eh_frame` (or `.debug_frame`), walked in the kernel;
    /// frame pointers where a file has none (JIT code, Go, anonymous memory).
    Tables,
    /// Frame pointers only: no tables, no kernel memory for them; code built without frame
    /// pointers (most distribution binaries) loses its callers.
    Fp,
}

/// `--unwind*`: sized at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
#[command(next_help_heading = "Unwinding")]
pub struct UnwindArgs {
    /// How user stacks are walked: `tables` (`.eh_frame`, with frame pointers where there is
    /// none) or `fp` (frame pointers only, the cheapest).
    #[arg(long, value_enum, default_value_t = Unwinder::Tables)]
    pub unwind: Unwinder,
    /// Rows of all the unwind tables together, in kernel memory (8 bytes each; libc needs
    /// about 30 thousand, python3.11 about 100 thousand). A file whose table does not fit is
    /// walked with frame pointers, and counted.
    #[arg(long, default_value_t = 2_097_152, value_parser = clap::value_parser!(u32).range(1024..=268_435_456), value_name = "N")]
    pub unwind_rows: u32,
    /// Pages (64 KiB of code each) of all the unwind tables together, in kernel memory (about
    /// 50 bytes each).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(64..=16_777_216), value_name = "N")]
    pub unwind_pages: u32,
    /// Processes unwound with tables at once (about 4 KiB of kernel memory each); further
    /// processes are walked with frame pointers, and counted.
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..=1_048_576), value_name = "N")]
    pub unwind_processes: u32,
}
