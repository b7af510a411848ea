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
    /// Page slots of all the unwind tables together, in kernel memory (8 bytes each): a table
    /// takes one per 64 KiB of code from its first function to its last (libc about 25).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(64..=16_777_216), value_name = "N")]
    pub unwind_pages: u32,
    /// Processes unwound with tables at once (about 4 KiB of kernel memory each); further
    /// processes are walked with frame pointers, and counted.
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..=1_048_576), value_name = "N")]
    pub unwind_processes: u32,
    /// Rows each CPU keeps of the frames it unwound last (16 bytes each, per CPU; a power of
    /// two): a frame found there skips the search of its table. Misses are counted
    /// (`unwind_cache_misses`).
    #[arg(long, default_value_t = 1_024, value_parser = cache_entries, value_name = "N")]
    pub unwind_cache: u32,
}

/// `--unwind-cache`: a power of two from 64 to 65536.
fn cache_entries(value: &str) -> Result<u32, String> {
    let n: u32 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    if !(64..=65_536).contains(&n) || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two from 64 to 65536"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::cache_entries;

    #[test]
    fn the_row_cache_size_is_a_power_of_two_within_its_range() {
        assert_eq!(cache_entries("64"), Ok(64));
        assert_eq!(cache_entries("65536"), Ok(65536));
        for bad in ["0", "32", "1000", "131072", "x", "-1"] {
            assert!(cache_entries(bad).is_err(), "{bad}");
        }
    }
}
