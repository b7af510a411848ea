//! File descriptors: the soft `RLIMIT_NOFILE` raised to the hard one at start (idle
//! connections exhaust systemd's and most shells' soft default of 1024), and the
//! count of descriptors in use, which the listener checks so that its connections never take
//! the descriptors the pipeline needs for its own files.

use std::{fs, io};

/// The soft and hard `RLIMIT_NOFILE` before and after [`raise_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub after: u64,
}

fn get_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Raises the soft limit of open descriptors to the hard limit (no privilege needed).
pub fn raise_limit() -> io::Result<Raised> {
    let mut limit = get_limit()?;
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Raised {
        before,
        after: limit.rlim_cur,
    })
}

/// The soft limit of open descriptors now.
pub fn soft_limit() -> io::Result<u64> {
    get_limit().map(|l| l.rlim_cur)
}

/// Descriptors this process has open, from `/proc/self/fd` (the directory's own descriptor
/// not counted). Linux has no cheaper exact count; with a thousand open this takes about
/// 100 µs, paid once per accepted connection.
pub fn open_count() -> io::Result<u64> {
    let entries = fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(entries.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_count_sees_new_descriptors_and_the_limit_is_raised() {
        let before = open_count().unwrap();
        let files: Vec<fs::File> = (0..64)
            .map(|_| fs::File::open("/proc/self/stat").unwrap())
            .collect();
        // Other test threads open and close files meanwhile: most of the 64 show.
        let during = open_count().unwrap();
        assert!(during >= before + 48, "{before} -> {during}");
        drop(files);
        let raised = raise_limit().unwrap();
        assert!(raised.after >= raised.before);
        assert_eq!(soft_limit().unwrap(), raised.after);
        assert_eq!(raised.after, get_limit().unwrap().rlim_max);
    }
}
