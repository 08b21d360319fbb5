//! Snapshot repositories: where snapshot files live.
//!
//! # Contract
//!
//! - [`LocalRepository::list`] returns only complete snapshots: files whose
//!   name ends in `.tar` and does not start with `.`. A snapshot being
//!   written lives under a hidden temporary name (`.<name>.partial`) and
//!   appears under its real name only after it was fully written, fsynced,
//!   and renamed (atomic on POSIX file systems), followed by an fsync of the
//!   directory. A crash at any point leaves nothing that `list` shows.
//! - "Not found" is [`StorageError::NotFound`], never an I/O error.
//! - A pending write holds an exclusive lock on its temporary file; leftovers
//!   of crashed writers (unlocked temporary files) are removed by
//!   [`LocalRepository::remove_stale`], which is idempotent and never touches
//!   a write in progress.
//! - Committing never overwrites an existing snapshot.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

/// Errors of a repository.
#[derive(Debug, Error)]
pub enum StorageError {
    /// No such snapshot.
    #[error("snapshot \"{0}\" not found")]
    NotFound(String),
    /// A snapshot of that name exists already.
    #[error("snapshot \"{0}\" already exists")]
    Exists(String),
    /// The file system is full.
    #[error("no space left on device while writing {0}\nhint: free space or choose another --dir")]
    NoSpace(String),
    /// Other I/O error, with the path concerned.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: io::Error,
    },
}

impl StorageError {
    /// Wraps an I/O error about `path`, recognising a full disk.
    pub fn io(path: &Path, e: io::Error) -> Self {
        if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
            StorageError::NoSpace(path.display().to_string())
        } else {
            StorageError::Io {
                path: path.display().to_string(),
                source: e,
            }
        }
    }
}

/// A complete snapshot file in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub modified: SystemTime,
}

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalRepository {
    dir: PathBuf,
}

const PARTIAL: &str = ".partial";
const SPOOL: &str = ".spool-";

impl LocalRepository {
    /// A repository at `dir` (not created until written to).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalRepository { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete snapshots, newest first (by modification time, then name).
    /// A missing directory is an empty repository.
    pub fn list(&self) -> Result<Vec<SnapshotFile>, StorageError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io(&self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".tar") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(SnapshotFile {
                name,
                path: entry.path(),
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| {
            b.modified
                .cmp(&a.modified)
                .then_with(|| b.name.cmp(&a.name))
        });
        Ok(out)
    }

    /// Finds a snapshot by file name or path.
    pub fn find(&self, name: &str) -> Result<SnapshotFile, StorageError> {
        let path = if name.contains('/') {
            PathBuf::from(name)
        } else {
            self.dir.join(name)
        };
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(SnapshotFile {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                path,
            }),
            Ok(_) => Err(StorageError::NotFound(name.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(name.into()))
            }
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// Starts writing snapshot `name`: creates the directory if needed and
    /// an exclusively locked hidden temporary file.
    pub fn begin(&self, name: &str) -> Result<PendingSnapshot, StorageError> {
        fs::create_dir_all(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        let final_path = self.dir.join(name);
        if final_path.exists() {
            return Err(StorageError::Exists(name.into()));
        }
        let tmp_path = self.dir.join(format!(".{name}{PARTIAL}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| StorageError::io(&tmp_path, e))?;
        file.try_lock()
            .map_err(|e| StorageError::io(&tmp_path, io::Error::other(e.to_string())))?;
        Ok(PendingSnapshot {
            file: Some(file),
            tmp_path,
            final_path,
            spools: Vec::new(),
            committed: false,
        })
    }

    /// Removes leftovers of writers that died: temporary files nobody holds
    /// a lock on, and their spool files. Returns the names removed.
    pub fn remove_stale(&self) -> Result<Vec<String>, StorageError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StorageError::io(&self.dir, e)),
        };
        let names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut removed = Vec::new();
        for name in names
            .iter()
            .filter(|n| n.starts_with('.') && n.ends_with(PARTIAL))
        {
            let path = self.dir.join(name);
            let Ok(f) = File::open(&path) else { continue };
            if f.try_lock().is_err() {
                continue; // a live writer holds it
            }
            let stem = &name[..name.len() - PARTIAL.len()];
            for spool in names
                .iter()
                .filter(|n| n.starts_with(&format!("{stem}{SPOOL}")))
            {
                if fs::remove_file(self.dir.join(spool)).is_ok() {
                    removed.push(spool.clone());
                }
            }
            if fs::remove_file(&path).is_ok() {
                removed.push(name.clone());
            }
        }
        Ok(removed)
    }
}

/// A snapshot being written. Dropped without [`commit`](Self::commit), it
/// removes its temporary and spool files.
pub struct PendingSnapshot {
    file: Option<File>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    spools: Vec<PathBuf>,
    committed: bool,
}

impl PendingSnapshot {
    /// The temporary file to write the archive into.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until commit")
    }

    /// A clone of the temporary file's handle (for writing on another thread).
    pub fn try_clone_file(&self) -> Result<File, StorageError> {
        self.file
            .as_ref()
            .expect("file present")
            .try_clone()
            .map_err(|e| StorageError::io(&self.tmp_path, e))
    }

    /// Path of the temporary file.
    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Path the snapshot will have once committed.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// A new hidden spool file next to the snapshot (for members written
    /// concurrently), removed with the pending snapshot.
    pub fn spool(&mut self, tag: &str) -> Result<(File, PathBuf), StorageError> {
        let stem = self.tmp_path.file_name().unwrap().to_string_lossy();
        let stem = &stem[..stem.len() - PARTIAL.len()];
        let path = self.tmp_path.with_file_name(format!("{stem}{SPOOL}{tag}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        self.spools.push(path.clone());
        Ok((f, path))
    }

    /// Fsyncs the file, renames it into place (never over an existing
    /// file) and fsyncs the directory. Returns the final path.
    pub fn commit(mut self) -> Result<PathBuf, StorageError> {
        let file = self.file.take().expect("file present");
        file.sync_all()
            .map_err(|e| StorageError::io(&self.tmp_path, e))?;
        // Hard link + unlink: fails instead of replacing an existing file.
        fs::hard_link(&self.tmp_path, &self.final_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                StorageError::Exists(self.final_path.display().to_string())
            } else {
                StorageError::io(&self.final_path, e)
            }
        })?;
        self.committed = true;
        let _ = fs::remove_file(&self.tmp_path);
        drop(file);
        if let Some(dir) = self.final_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io(dir, e))?;
        }
        for s in &self.spools {
            let _ = fs::remove_file(s);
        }
        Ok(self.final_path.clone())
    }
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        for s in &self.spools {
            let _ = fs::remove_file(s);
        }
        if !self.committed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn pending_is_invisible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = LocalRepository::new(dir.path().join("snaps"));
        assert!(repo.list().unwrap().is_empty());
        let mut p = repo.begin("a.tar").unwrap();
        p.file().write_all(b"data").unwrap();
        let (mut s, _) = p.spool("db1").unwrap();
        s.write_all(b"spool").unwrap();
        assert!(repo.list().unwrap().is_empty());
        // A live writer is not stale.
        assert!(repo.remove_stale().unwrap().is_empty());
        let path = p.commit().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"data");
        let names: Vec<_> = std::fs::read_dir(repo.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a.tar"]);
        assert_eq!(repo.list().unwrap()[0].name, "a.tar");
        assert!(matches!(repo.begin("a.tar"), Err(StorageError::Exists(_))));
        assert!(matches!(repo.find("b.tar"), Err(StorageError::NotFound(_))));
    }

    #[test]
    fn dropped_pending_leaves_nothing_and_stale_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = LocalRepository::new(dir.path());
        {
            let mut p = repo.begin("b.tar").unwrap();
            p.spool("x").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Simulate a writer killed with -9: files remain, no lock is held.
        std::fs::write(dir.path().join(".c.tar.partial"), b"x").unwrap();
        std::fs::write(dir.path().join(".c.tar.spool-db"), b"x").unwrap();
        assert!(repo.list().unwrap().is_empty());
        let mut removed = repo.remove_stale().unwrap();
        removed.sort();
        assert_eq!(removed, vec![".c.tar.partial", ".c.tar.spool-db"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
