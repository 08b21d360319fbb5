//! Scratch files: temporary files a restore writes while it reads a
//! snapshot (an extracted member, a schema file, a pg_restore list: stock
//! pg_restore needs files it can seek in). They hold the application's
//! data, so none may outlive the run that made it, however that run ends.
//!
//! A scratch file is named `.dbsnap-<tag>-<random>`, and its creator holds
//! an exclusive lock (`flock`) on it for as long as the file exists;
//! dropping the [`Scratch`] removes the file, then lets the lock go. The
//! kernel releases the lock when the process ends, `kill -9` included, so
//! a scratch file nobody holds is the leftover of a run that died: [`sweep`]
//! finds (and removes) exactly those, and never a file that a running
//! dbsnap still uses. A lock rather than the owner's process id in the
//! name: process ids are reused (in a container, dbsnap is often the same
//! small pid run after run), while a lock cannot outlive its process.
//!
//! The name never contains a second `.`: the partial snapshots and spool
//! files of a pending write (`.<name>.tar.partial`, `.<name>.tar.spool-*`)
//! can never be taken for scratch files.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const PREFIX: &str = ".dbsnap-";

/// A locked scratch file, removed when dropped.
#[derive(Debug)]
pub struct Scratch(tempfile::NamedTempFile);

impl Scratch {
    /// Creates a scratch file in `dir`; `tag` (letters and digits) says what
    /// it holds, for whoever lists the directory.
    pub fn create(dir: &Path, tag: &str) -> io::Result<Scratch> {
        let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).collect();
        // A sweep that opened the new file before it was locked may have
        // removed it: then the next name is tried.
        for _ in 0..3 {
            let file = tempfile::Builder::new()
                .prefix(&format!("{PREFIX}{tag}-"))
                .tempfile_in(dir)?;
            if file.as_file().try_lock().is_ok() && still_named(&file)? {
                return Ok(Scratch(file));
            }
        }
        Err(io::Error::other(format!(
            "a scratch file in {} was removed while it was being created, three times",
            dir.display()
        )))
    }

    /// Creates a scratch file in the temporary directory.
    pub fn in_temp_dir(tag: &str) -> Result<Scratch, crate::StorageError> {
        let tmp = std::env::temp_dir();
        Scratch::create(&tmp, tag).map_err(|e| crate::StorageError::io(&tmp, e))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The open file.
    pub fn as_file(&self) -> &File {
        self.0.as_file()
    }
}

/// Whether `file`'s path still names the file that was opened.
fn still_named(file: &tempfile::NamedTempFile) -> io::Result<bool> {
    let opened = file.as_file().metadata()?;
    Ok(fs::symlink_metadata(file.path())
        .is_ok_and(|named| named.dev() == opened.dev() && named.ino() == opened.ino()))
}

/// Whether `name` is a scratch file's.
fn is_scratch_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.contains('-') && !rest.contains('.'))
}

/// The scratch files in `dir` that no process holds (leftovers of runs
/// that died), this user's only; with `remove`, each is removed while its
/// lock is held, so no run can take it up meanwhile. Returns their paths.
pub(crate) fn sweep(dir: &Path, remove: bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = rustix::process::geteuid().as_raw();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.metadata().is_ok_and(|m| m.is_file() && m.uid() == me);
        if !ours || !entry.file_name().to_str().is_some_and(is_scratch_name) {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // a running dbsnap uses it
        }
        if !remove || fs::remove_file(&path).is_ok() {
            found.push(path);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_scratch_files_and_of_pending_writes_never_meet() {
        assert!(is_scratch_name(".dbsnap-schema-Ab12Cd"));
        assert!(is_scratch_name(".dbsnap-list-x"));
        // A snapshot prefixed "dbsnap" being written, and its spool.
        assert!(!is_scratch_name(
            ".dbsnap-schema-1-20261122T101500Z.tar.partial"
        ));
        assert!(!is_scratch_name(".dbsnap-1-20261122T101500Z.tar.spool-db"));
        assert!(!is_scratch_name("dbsnap-schema-Ab12Cd"));
        assert!(!is_scratch_name(".dbsnap-"));
    }

    #[test]
    fn a_scratch_file_nobody_holds_is_swept_and_one_in_use_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let live = Scratch::create(dir.path(), "schema").unwrap();
        std::fs::write(live.path(), b"in use").unwrap();
        // What a run killed with -9 leaves: the file, no lock.
        let dead = dir.path().join(".dbsnap-list-k1lled");
        std::fs::write(&dead, b"left").unwrap();
        // Not scratch files: a pending write's, and someone else's name.
        let partial = dir.path().join(".dbsnap-1-x.tar.partial");
        let other = dir.path().join("dbsnap-schema-notours");
        std::fs::write(&partial, b"").unwrap();
        std::fs::write(&other, b"").unwrap();

        assert_eq!(sweep(dir.path(), false), std::slice::from_ref(&dead));
        assert!(dead.exists(), "listing removed a file");
        assert_eq!(sweep(dir.path(), true), std::slice::from_ref(&dead));
        assert!(!dead.exists());
        assert!(live.path().exists(), "a scratch file in use was removed");
        assert!(partial.exists() && other.exists());
        assert!(sweep(dir.path(), true).is_empty());

        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "a dropped scratch file stayed");
    }
}
