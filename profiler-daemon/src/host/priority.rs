//! The daemon's scheduling priority. During the incident it records, a runaway competes for
//! the CPUs at the ordinary priority: at the same nice value the drains slow down and a kept
//! profile lands late. Raised once at start, before any other thread exists, so that every
//! thread (the pipeline's, the listener's, delivery's) inherits it.

use std::io;

/// Why the priority could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PriorityError {
    #[error(
        "cannot set the daemon's nice value to {nice} ({source}): run as root or with \
         CAP_SYS_NICE, set Nice={nice} in the systemd unit, or pass --nice 0 to keep the \
         inherited priority"
    )]
    Denied { nice: i32, source: io::Error },
}

/// The calling thread's nice value.
pub fn current() -> io::Result<i32> {
    // getpriority returns -1 both as a value and as an error: errno tells them apart.
    // SAFETY: errno is this thread's; getpriority reads no memory of ours.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: as above.
    let value = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let errno = io::Error::last_os_error();
    if value == -1 && errno.raw_os_error() != Some(0) {
        return Err(errno);
    }
    Ok(value)
}

/// Sets the calling thread's nice value to `nice` unless it already runs at that priority or
/// above (a unit's `Nice=`); `Ok(None)` when nothing changed, else the value it had. On Linux
/// the value is per thread and inherited by the threads it starts.
pub fn raise_to(nice: i32) -> Result<Option<i32>, PriorityError> {
    let was = current().map_err(|source| PriorityError::Denied { nice, source })?;
    if was <= nice {
        return Ok(None);
    }
    // SAFETY: setpriority changes only the calling thread's nice value.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(PriorityError::Denied {
            nice,
            source: io::Error::last_os_error(),
        });
    }
    Ok(Some(was))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_priority_is_never_set_and_a_thread_keeps_its_own() {
        let here = current().unwrap();
        // Asking for less than the thread has changes nothing.
        assert!(raise_to(19).unwrap().is_none() || here > 19);
        // A thread of its own, lowered: the test thread keeps its value.
        let lowered = std::thread::spawn(move || {
            // SAFETY: only this new thread's nice value changes.
            assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) }, 0);
            let inherited = std::thread::spawn(current).join().unwrap().unwrap();
            (current().unwrap(), inherited)
        })
        .join()
        .unwrap();
        assert_eq!(
            lowered,
            (10, 10),
            "set on the thread and inherited by its threads"
        );
        assert_eq!(current().unwrap(), here);
    }
}
