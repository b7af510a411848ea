//! Emptying a BPF hash map with `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, and filling or pruning one
//! with `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` (Linux 5.6).
//!
//! Element by element, a drain costs three bpf() calls per entry (next key, lookup, delete),
//! and with thousands of distinct stacks per interval those calls were a fifth of the daemon's
//! CPU. A batch call moves hundreds of entries at once. aya 0.14 has no batch API, so this
//! issues the command itself on a duplicate of the map's descriptor.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use aya::{maps::Map, Pod};

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries written per update or delete call: the kernel copies each call's keys and values
/// at once, so a bounded call keeps that copy small.
const WRITE_CHUNK: usize = 16384;

/// Entries asked for per call. A hash map returns whole buckets, so a call fails with ENOSPC
/// if one bucket holds more; the drain then doubles the chunk.
const CHUNK: usize = 256;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A hash map's descriptor, for batch drains.
pub struct BatchMap {
    fd: OwnedFd,
}

impl BatchMap {
    /// A duplicate of `map`'s descriptor; `None` for map kinds the batch drain is not for.
    pub fn of(map: &Map) -> Option<Self> {
        let data = match map {
            Map::HashMap(data) | Map::LruHashMap(data) | Map::Array(data) => data,
            _ => return None,
        };
        let fd = data.fd().as_fd().try_clone_to_owned().ok()?;
        Some(Self { fd })
    }

    /// Takes every entry out of the map, handing each to `take`. Err(Unsupported) if the
    /// kernel has no batch command (before 5.6), before anything was taken; other errors may
    /// come after some entries were handed over.
    pub fn drain<K: Pod, V: Pod>(&self, mut take: impl FnMut(K, &V)) -> io::Result<()> {
        let mut chunk = CHUNK;
        let mut keys: Vec<MaybeUninit<K>> = Vec::new();
        let mut values: Vec<MaybeUninit<V>> = Vec::new();
        // The position token: a bucket index for hash maps; sized generously.
        let mut in_token = [0u64; 2];
        let mut out_token = [0u64; 2];
        let mut first = true;
        loop {
            keys.resize_with(chunk, MaybeUninit::uninit);
            values.resize_with(chunk, MaybeUninit::uninit);
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    in_token.as_mut_ptr() as u64
                },
                out_batch: out_token.as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: attr points at buffers of `chunk` keys and values and at tokens larger
            // than the kernel's; the kernel writes at most `count` entries.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_AND_DELETE_BATCH,
                    &mut attr as *mut BatchAttr,
                    size_of::<BatchAttr>(),
                )
            };
            let err = (ret < 0).then(io::Error::last_os_error);
            let got = (attr.count as usize).min(chunk);
            for (key, value) in keys.iter().zip(&values).take(got) {
                // SAFETY: the kernel filled the first `got` entries of both buffers.
                unsafe { take(key.assume_init(), value.assume_init_ref()) };
            }
            match err.as_ref().and_then(io::Error::raw_os_error) {
                None => {}
                Some(libc::ENOENT) => return Ok(()),
                Some(libc::ENOSPC) if got == 0 && chunk < 1 << 16 => {
                    chunk *= 2;
                    continue;
                }
                // ENOTSUPP (524), the kernel-internal code, is what a map without batch
                // operations returns.
                Some(libc::EINVAL | libc::ENOTSUP | libc::ENOSYS | 524) if first && got == 0 => {
                    return Err(io::ErrorKind::Unsupported.into());
                }
                // `err` is the error whose code was just matched.
                Some(_) => return Err(err.unwrap_or_else(io::Error::last_os_error)),
            }
            first = false;
            in_token = out_token;
        }
    }

    /// Writes `keys[i] -> values[i]` for every i, a chunk per call.
    pub fn update<K: Pod, V: Pod>(&self, keys: &[K], values: &[V]) -> io::Result<()> {
        debug_assert_eq!(keys.len(), values.len());
        for (keys, values) in keys.chunks(WRITE_CHUNK).zip(values.chunks(WRITE_CHUNK)) {
            let mut attr = BatchAttr {
                keys: keys.as_ptr() as u64,
                values: values.as_ptr() as u64,
                count: keys.len() as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            self.call(BPF_MAP_UPDATE_BATCH, &mut attr, keys.len())?;
        }
        Ok(())
    }

    /// Deletes every key of `keys` (absent ones are an error the caller may ignore).
    pub fn delete<K: Pod>(&self, keys: &[K]) -> io::Result<()> {
        for keys in keys.chunks(WRITE_CHUNK) {
            let mut attr = BatchAttr {
                keys: keys.as_ptr() as u64,
                count: keys.len() as u32,
                map_fd: self.fd.as_raw_fd() as u32,
                ..Default::default()
            };
            self.call(BPF_MAP_DELETE_BATCH, &mut attr, keys.len())?;
        }
        Ok(())
    }

    fn call(&self, command: libc::c_long, attr: &mut BatchAttr, count: usize) -> io::Result<()> {
        // SAFETY: attr points at `count` keys (and values) of the map's sizes, which the
        // kernel only reads.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                command,
                attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        if (attr.count as usize) < count {
            return Err(io::Error::other(format!(
                "the kernel took {} of {count} entries",
                attr.count
            )));
        }
        Ok(())
    }
}
