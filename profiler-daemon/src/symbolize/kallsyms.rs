//! Kernel function names from `/proc/kallsyms`, held compactly.
//!
//! blazesym keeps every kallsyms entry as its own boxed name (about 8 MiB for the 120 000
//! symbols of a distribution kernel, a sixth of the daemon's RSS). Here the names share one
//! buffer and the addresses one sorted array: about 4.5 MiB for the same table.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read},
};

#[derive(Default)]
pub struct Kallsyms {
    /// Symbol start addresses, ascending.
    addrs: Vec<u64>,
    /// `names[ends[i - 1]..ends[i]]` is the name of `addrs[i]`.
    ends: Vec<u32>,
    names: String,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`. Without the right to see kernel addresses (kptr_restrict) every
    /// address reads as 0 and the table is empty: kernel frames then stay unnamed.
    pub fn load() -> io::Result<Self> {
        Self::parse(File::open("/proc/kallsyms")?)
    }

    pub(super) fn parse(reader: impl Read) -> io::Result<Self> {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut names = String::new();
        // (address, start, end) in `names`, sorted by address below.
        let mut entries: Vec<(u64, u32, u32)> = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            // "ffffffff81000000 T _stext" or "ffffffffc0a00000 t fn\t[module]"
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(_kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let start = names.len();
            names.push_str(name);
            let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(names.len())) else {
                return Err(io::Error::other("kallsyms names exceed 4 GiB"));
            };
            entries.push((addr, start, end));
        }
        entries.sort_unstable_by_key(|e| e.0);
        let mut table = Self {
            addrs: Vec::with_capacity(entries.len()),
            ends: Vec::with_capacity(entries.len()),
            names: String::with_capacity(names.len()),
        };
        // Rebuilt in address order, so each name ends where the next begins.
        for (addr, start, end) in entries {
            table.addrs.push(addr);
            table.names.push_str(&names[start as usize..end as usize]);
            table.ends.push(table.names.len() as u32);
        }
        Ok(table)
    }

    /// The index of the function containing `addr`: the last symbol starting at or below it.
    /// kallsyms has no sizes, so an address past the end of the last function of a region
    /// still gets that function (as with blazesym and perf).
    pub fn symbol(&self, addr: u64) -> Option<u32> {
        let i = self.addrs.partition_point(|&a| a <= addr).checked_sub(1)?;
        // parse() refuses more names than u32 offsets reach, so there are fewer symbols.
        Some(i as u32)
    }

    /// The name of the symbol at `index` (from [`Kallsyms::symbol`]).
    pub fn name_of(&self, index: u32) -> &str {
        let i = index as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.names[start..self.ends[i] as usize]
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }
}

/// The kernel's symbols, or an empty table (with the reason logged) when they cannot be read.
pub fn load_kallsyms() -> Kallsyms {
    let table = Kallsyms::load().unwrap_or_else(|err| {
        tracing::warn!("cannot read /proc/kallsyms ({err}): kernel frames stay unnamed");
        Kallsyms::default()
    });
    if table.len() == 0 {
        tracing::warn!(
            "/proc/kallsyms shows no addresses: kernel frames stay unnamed; run profilerd as root or with CAP_SYSLOG, or set kernel.kptr_restrict to 0"
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Kallsyms {
        fn name(&self, addr: u64) -> Option<&str> {
            self.symbol(addr).map(|i| self.name_of(i))
        }
    }

    #[test]
    fn names_the_enclosing_symbol() {
        let text = "\
ffffffff81000200 T second
0000000000000000 A hidden
ffffffff81000100 t first
ffffffffc0a00000 t in_module\t[ext4]
bogus line
ffffffff81000300 W third
";
        let table = Kallsyms::parse(text.as_bytes()).unwrap();
        assert_eq!(table.len(), 4);
        assert_eq!(table.name(0xffffffff81000000), None);
        assert_eq!(table.name(0xffffffff81000100), Some("first"));
        assert_eq!(table.name(0xffffffff810001ff), Some("first"));
        assert_eq!(table.name(0xffffffff81000200), Some("second"));
        assert_eq!(table.name(0xffffffff81000350), Some("third"));
        assert_eq!(table.name(0xffffffffc0a00010), Some("in_module"));
    }

    #[test]
    fn reads_this_kernel() {
        // The tests run as root, who sees kernel addresses.
        let table = Kallsyms::load().unwrap();
        assert!(table.len() > 1000, "{} symbols", table.len());
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let at = |name: &str| {
            text.lines()
                .find(|l| l.split_ascii_whitespace().nth(2) == Some(name))
                .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
                .unwrap()
        };
        let addr = at("schedule");
        // Aliases share an address: any symbol at that address is a right answer.
        let found = table.name(addr + 1).unwrap();
        assert_eq!(at(found), addr, "{found}");
    }
}
