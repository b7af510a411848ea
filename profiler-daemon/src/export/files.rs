//! How the daemon writes a file into its directories: the bytes go to a temporary file
//! created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) under an unpredictable name, which is
//! then renamed into place. A link planted at any name the daemon uses is never written
//! through: the temporary name cannot be guessed and is never opened if it exists, and the
//! rename replaces a link at the final name instead of following it. A failed write (a full
//! disk) removes its temporary file, and what a crash left is removed at the next start.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use crate::host::dirs::{ensure_private_dir, DirError, DirKind};

/// Temporary files are `.profilerd-<random>.tmp`: hidden, and recognisably ours.
const TMP_PREFIX: &str = ".profilerd-";
const TMP_SUFFIX: &str = ".tmp";
/// Random characters of a temporary name (62 possible each): beyond guessing.
const TMP_RANDOM: usize = 16;
/// Mode of the files written: the daemon's user writes, its group may read (as the 0750
/// directories allow).
const FILE_MODE: u32 = 0o640;
/// Suffixes of the files earlier versions wrote at predictable temporary names
/// (`<name>.tmp`), and the write probe they left after a crash.
const OLD_TMP_STEMS: [&str; 4] = [".pb.gz", ".svg", ".json", ".spool"];
const OLD_PROBE_PREFIX: &str = ".profilerd-write-test-";

/// Names of our temporary files: ours to recognize as leftovers, nobody's to predict.
fn temp_names() -> tempfile::Builder<'static, 'static> {
    let mut names = tempfile::Builder::new();
    names
        .prefix(TMP_PREFIX)
        .suffix(TMP_SUFFIX)
        .rand_bytes(TMP_RANDOM);
    names
}

/// Writes `bytes` to `path` through a temporary file in the same directory. With `replace`,
/// an existing file at `path` is replaced; without it, an existing `path` (a file, a link,
/// anything) is an `AlreadyExists` error and stays as it was.
pub(super) fn write_file(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut tmp = temp_names().make_in(dir, |name| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(FILE_MODE)
            .open(name)
    })?;
    // On any error below, dropping `tmp` removes the temporary file.
    tmp.write_all(bytes)?;
    let persisted = if replace {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    persisted.map(drop).map_err(|e| e.error)
}

/// Whether `name` is a temporary file of ours (this version's or an earlier one's).
pub(super) fn is_leftover(name: &str) -> bool {
    let ours = name.starts_with(TMP_PREFIX) && name.ends_with(TMP_SUFFIX);
    let old = name
        .strip_suffix(TMP_SUFFIX)
        .is_some_and(|stem| OLD_TMP_STEMS.iter().any(|s| stem.ends_with(s)));
    ours || old || name.starts_with(OLD_PROBE_PREFIX)
}

/// Removes what a crash or a full disk left in `dir`: temporary files of ours, and empty
/// files whose names `empty_is_leftover` accepts (no complete file of ours is empty).
/// Directories are left alone; a link is removed, never followed. Returns how many.
pub(super) fn remove_leftovers(dir: &Path, empty_is_leftover: fn(&str) -> bool) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let empty = meta.is_file() && meta.len() == 0 && empty_is_leftover(&name);
        if (is_leftover(&name) || empty) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            dir = %dir.display(),
            removed,
            "removed files an interrupted write left (temporary or empty)"
        );
    }
    removed
}

/// Makes `dir` ready for writing: created 0750 when missing, refused when another user owns
/// it or can write in it, and proven writable with a temporary file, so that a bad directory
/// is a start-up error rather than a lost profile later.
pub(super) fn prepare_dir(kind: DirKind, dir: &Path) -> Result<(), DirError> {
    ensure_private_dir(kind, dir)?;
    temp_names()
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| DirError::Unusable {
            kind,
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, MetadataExt};

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("profilerd-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporary_names_are_ours_and_unpredictable() {
        let dir = scratch("names");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let tmp = temp_names().tempfile_in(&dir).unwrap();
            let name = tmp
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(is_leftover(&name), "{name}");
            assert_eq!(name.len(), TMP_PREFIX.len() + TMP_RANDOM + TMP_SUFFIX.len());
            assert!(seen.insert(name), "a temporary name repeated");
        }
        for old in [
            "00000000000000000000.spool.tmp",
            "x.cpu.19700101T000000.000Z.pb.gz.tmp",
            "cpu.1.x.svg.tmp",
            "cpu.1.x.json.tmp",
            ".profilerd-write-test-4242",
        ] {
            assert!(is_leftover(old), "{old}");
        }
        for not_ours in ["notes.tmp", "x.pb.gz", ".profilerd-x", "a.txt"] {
            assert!(!is_leftover(not_ours), "{not_ours}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_at_the_old_temporary_and_the_final_names_redirect_nothing() {
        let dir = scratch("links");
        let victim = dir.join("victim");
        fs::write(&victim, b"secret").unwrap();
        let target = dir.join("out");
        fs::create_dir_all(&target).unwrap();
        for name in [
            "a.cpu.x.pb.gz.tmp",
            "00000000000000000000.spool.tmp",
            "a.cpu.x.pb.gz",
        ] {
            symlink(&victim, target.join(name)).unwrap();
        }
        write_file(&target.join("a.cpu.x.pb.gz"), b"profile", true).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
        let written = target.join("a.cpu.x.pb.gz");
        assert!(
            written.symlink_metadata().unwrap().is_file(),
            "the link was replaced"
        );
        assert_eq!(fs::read(&written).unwrap(), b"profile");
        assert_eq!(written.metadata().unwrap().mode() & 0o777, 0o640);
        // Without replacing, a link at the final name stays and is not written through.
        let err = write_file(&target.join("00000000000000000000.spool.tmp"), b"x", false);
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&victim).unwrap(), b"secret");
        // A write that fails after its temporary file exists removes it.
        fs::create_dir(target.join("taken.svg")).unwrap();
        assert!(write_file(&target.join("taken.svg"), b"x", true).is_err());
        assert_eq!(
            names(&target),
            [
                "00000000000000000000.spool.tmp",
                "a.cpu.x.pb.gz",
                "a.cpu.x.pb.gz.tmp",
                "taken.svg"
            ],
            "no temporary file is left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_are_removed_and_counted_the_rest_stays() {
        let dir = scratch("leftovers");
        fs::write(dir.join(".profilerd-AbCdEfGhIjKlMnOp.tmp"), b"half").unwrap();
        fs::write(dir.join("x.cpu.t.pb.gz.tmp"), b"").unwrap();
        fs::write(dir.join("empty.cpu.t.pb.gz"), b"").unwrap();
        fs::write(dir.join("full.cpu.t.pb.gz"), b"data").unwrap();
        fs::write(dir.join("notes.txt"), b"").unwrap();
        fs::create_dir(dir.join("d.json.tmp")).unwrap();
        symlink("/etc/passwd", dir.join("l.svg.tmp")).unwrap();
        let removed = remove_leftovers(&dir, |n| n.ends_with(".pb.gz"));
        assert_eq!(removed, 4);
        assert_eq!(names(&dir), ["d.json.tmp", "full.cpu.t.pb.gz", "notes.txt"]);
        assert!(Path::new("/etc/passwd").exists());
        assert_eq!(remove_leftovers(&dir, |_| true), 1, "notes.txt is empty");
        fs::remove_dir_all(&dir).unwrap();
    }
}
