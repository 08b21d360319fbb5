//! The local directory repository: snapshots are files in one directory.
//!
//! A snapshot being written lives under a hidden temporary name
//! (`.<name>.partial`), exclusively locked by its writer, with its spool
//! files (`.<name>.spool-<tag>`) beside it. Commit fsyncs the file, links
//! it to its real name (which fails rather than replace an existing file),
//! removes the temporary name and fsyncs the directory: a crash at any
//! point leaves nothing that `list` shows. Leftovers of a writer that died
//! hold no lock and are removed by `remove_stale`.
//!
//! A restore's scratch files go beside the snapshots too, or into the
//! temporary directory when this one cannot be written (read-only media);
//! `remove_stale` sweeps both places for those no process holds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{
    scratch, ArchiveOutput, PendingWrite, Placeholder, Repository, Scratch, SnapshotInfo,
    StorageError,
};

const PARTIAL: &str = ".partial";
const SPOOL: &str = ".spool-";
/// A pin is an empty file `.<name>.pin` beside the snapshot.
const PIN: &str = ".pin";
/// A drill record is `.<name>.drill` beside the snapshot (JSON).
const DRILL: &str = ".drill";

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalRepository {
    dir: PathBuf,
}

impl LocalRepository {
    /// A repository at `dir` (created by the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalRepository { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_dir(&self) -> Result<Option<fs::ReadDir>, StorageError> {
        match fs::read_dir(&self.dir) {
            Ok(rd) => Ok(Some(rd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                Err(StorageError::NotARepository(self.location()))
            }
            Err(e) => Err(StorageError::io(&self.dir, e)),
        }
    }

    fn info(name: &str, meta: &fs::Metadata) -> SnapshotInfo {
        SnapshotInfo {
            name: name.to_string(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// The path of a complete snapshot (NotFound otherwise).
    fn pin_path(&self, name: &str) -> PathBuf {
        self.sidecar(name, PIN)
    }

    /// The file beside snapshot `name` that holds its `kind` (pin, drill).
    fn sidecar(&self, name: &str, kind: &str) -> PathBuf {
        self.dir.join(format!(".{name}{kind}"))
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(&self.dir, e))
    }

    fn existing(&self, name: &str) -> Result<PathBuf, StorageError> {
        if !is_snapshot_name(name) {
            return Err(StorageError::NotFound(name.into()));
        }
        let path = self.dir.join(name);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(StorageError::NotFound(name.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(name.into()))
            }
            Err(e) => Err(StorageError::io(&path, e)),
        }
    }

    /// The leftovers of runs that died: partial snapshots with their spool
    /// files (no writer holds them), pins of snapshots removed by hand, and
    /// scratch files no restore holds, here and in the temporary
    /// directory; removed when `remove`.
    fn sweep(&self, remove: bool) -> Result<Vec<String>, StorageError> {
        let names: Vec<String> = match self.read_dir()? {
            Some(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            None => Vec::new(),
        };
        let mut found = Vec::new();
        let mut take = |path: PathBuf| {
            if !remove || fs::remove_file(&path).is_ok() {
                found.push(path.display().to_string());
            }
        };
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
                take(self.dir.join(spool));
            }
            take(path);
        }
        // A pin (or drill record) whose snapshot was removed by hand would
        // speak for a new snapshot that takes the name.
        for name in &names {
            let Some(snapshot) = [PIN, DRILL]
                .iter()
                .find_map(|kind| name.strip_prefix('.')?.strip_suffix(kind))
            else {
                continue;
            };
            if is_snapshot_name(snapshot) && !names.iter().any(|n| n == snapshot) {
                take(self.dir.join(name));
            }
        }
        for dir in [self.dir.clone(), std::env::temp_dir()] {
            found.extend(
                scratch::sweep(&dir, remove)
                    .iter()
                    .map(|p| p.display().to_string()),
            );
        }
        Ok(found)
    }
}

fn is_snapshot_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".tar") && !name.contains('/')
}

impl Repository for LocalRepository {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        let Some(rd) = self.read_dir()? else {
            return Err(StorageError::NoRepository(self.location()));
        };
        crate::warn_if_shared(&self.dir);
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StorageError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_snapshot_name(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                out.push(Self::info(&name, &meta));
            }
        }
        crate::newest_first(&mut out);
        Ok(out)
    }

    fn stat(&self, name: &str) -> Result<SnapshotInfo, StorageError> {
        let path = self.existing(name)?;
        let meta = fs::metadata(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(Self::info(name, &meta))
    }

    fn open_range(&self, name: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let path = self.existing(name)?;
        crate::warn_if_shared(&self.dir);
        let mut f = File::open(&path).map_err(|e| StorageError::io(&path, e))?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| StorageError::io(&path, e))?;
        }
        Ok(Box::new(f))
    }

    fn begin(&self, name: &str) -> Result<Box<dyn PendingWrite>, StorageError> {
        if !is_snapshot_name(name) {
            return Err(StorageError::Io {
                path: name.into(),
                source: io::Error::other("a snapshot name ends in .tar and does not start with ."),
            });
        }
        crate::create_repository_dir(&self.dir, &self.location())?;
        crate::warn_if_shared(&self.dir);
        let final_path = self.dir.join(name);
        if final_path.exists() {
            return Err(StorageError::Exists(name.into()));
        }
        let tmp_path = self.dir.join(format!(".{name}{PARTIAL}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    // Another writer holds this name right now.
                    StorageError::Exists(name.into())
                } else {
                    StorageError::io(&tmp_path, e)
                }
            })?;
        file.try_lock()
            .map_err(|e| StorageError::io(&tmp_path, io::Error::other(e.to_string())))?;
        Ok(Box::new(LocalPending {
            name: name.into(),
            file: Some(file),
            tmp_path,
            final_path,
            spools: Vec::new(),
            committed: false,
        }))
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.existing(name)?;
        fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        for kind in [PIN, DRILL] {
            let side = self.sidecar(name, kind);
            match fs::remove_file(&side) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(StorageError::io(&side, e))
                }
                _ => {}
            }
        }
        self.sync_dir()
    }

    fn pinned(&self) -> Result<std::collections::BTreeSet<String>, StorageError> {
        let Some(rd) = self.read_dir()? else {
            return Ok(Default::default());
        };
        Ok(rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let snapshot = name.strip_prefix('.')?.strip_suffix(PIN)?.to_string();
                is_snapshot_name(&snapshot).then_some(snapshot)
            })
            // A pin left by a snapshot deleted by hand pins nothing.
            .filter(|n| self.dir.join(n).is_file())
            .collect())
    }

    fn set_pinned(&self, name: &str, pinned: bool) -> Result<(), StorageError> {
        self.existing(name)?;
        let pin = self.pin_path(name);
        let done = if pinned {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&pin)
                .and_then(|f| f.sync_all())
        } else {
            match fs::remove_file(&pin) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        done.map_err(|e| StorageError::io(&pin, e))?;
        self.sync_dir()
    }

    fn drills(&self) -> Result<std::collections::BTreeMap<String, Vec<u8>>, StorageError> {
        let Some(rd) = self.read_dir()? else {
            return Ok(Default::default());
        };
        let mut out = std::collections::BTreeMap::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(snapshot) = name.strip_prefix('.').and_then(|n| n.strip_suffix(DRILL)) else {
                continue;
            };
            // A record left by a snapshot deleted by hand speaks for nothing.
            if !is_snapshot_name(snapshot) || !self.dir.join(snapshot).is_file() {
                continue;
            }
            // One record that cannot be read is that snapshot's lack of a
            // record, not a repository that cannot be listed.
            match fs::read(e.path()) {
                Ok(bytes) => {
                    out.insert(snapshot.to_string(), bytes);
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => tracing::warn!("cannot read {}: {err}", e.path().display()),
            }
        }
        Ok(out)
    }

    fn set_drill(&self, name: &str, record: &[u8]) -> Result<(), StorageError> {
        self.existing(name)?;
        crate::write_durably(&self.sidecar(name, DRILL), record)
    }

    fn scratch(&self, tag: &str) -> Result<Scratch, StorageError> {
        Scratch::create(&self.dir, tag).or_else(|_| Scratch::in_temp_dir(tag))
    }

    fn remove_stale(&self) -> Result<Vec<String>, StorageError> {
        self.sweep(true)
    }

    fn stale(&self) -> Result<Vec<String>, StorageError> {
        self.sweep(false)
    }
}

/// A snapshot being written into a local directory.
struct LocalPending {
    name: String,
    file: Option<File>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    spools: Vec<PathBuf>,
    committed: bool,
}

impl LocalPending {
    fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until commit")
    }
}

impl Write for LocalPending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl ArchiveOutput for LocalPending {
    fn reserve(&mut self, len: usize) -> io::Result<Placeholder> {
        self.file().reserve(len)
    }

    fn fill(&mut self, at: Placeholder, data: &[u8]) -> io::Result<()> {
        self.file().fill(at, data)
    }
}

impl PendingWrite for LocalPending {
    fn name(&self) -> &str {
        &self.name
    }

    fn spool(&mut self, tag: &str) -> Result<(File, PathBuf), StorageError> {
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir_path().join(format!(".{}{SPOOL}{tag}", self.name));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        self.spools.push(path.clone());
        Ok((f, path))
    }

    fn commit(mut self: Box<Self>) -> Result<SnapshotInfo, StorageError> {
        let file = self.file.take().expect("file present");
        file.sync_all()
            .map_err(|e| StorageError::io(&self.tmp_path, e))?;
        // Hard link + unlink: fails instead of replacing an existing file.
        fs::hard_link(&self.tmp_path, &self.final_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                StorageError::Exists(self.name.clone())
            } else {
                StorageError::io(&self.final_path, e)
            }
        })?;
        self.committed = true;
        let _ = fs::remove_file(&self.tmp_path);
        let meta = file
            .metadata()
            .map_err(|e| StorageError::io(&self.final_path, e))?;
        drop(file);
        let dir = self.dir_path().to_path_buf();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(&dir, e))?;
        Ok(LocalRepository::info(&self.name, &meta))
    }
}

impl LocalPending {
    fn dir_path(&self) -> &Path {
        self.final_path.parent().unwrap_or(Path::new("."))
    }
}

impl Drop for LocalPending {
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

    #[test]
    fn the_local_directory_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::cell::Cell::new(0);
        crate::contract::check(&|| {
            n.set(n.get() + 1);
            Box::new(LocalRepository::new(
                dir.path().join(format!("repo{}", n.get())),
            ))
        });
    }

    #[test]
    fn a_missing_directory_is_no_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = LocalRepository::new(dir.path().join("typo"));
        assert!(matches!(repo.list(), Err(StorageError::NoRepository(_))));
        assert!(repo.remove_stale().unwrap().is_empty());
    }

    #[test]
    fn a_file_is_not_a_repository_also_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"mine").unwrap();
        let repo = LocalRepository::new(&file);
        assert!(matches!(repo.list(), Err(StorageError::NotARepository(_))));
        // Not an I/O error ("File exists") when a write would make it.
        assert!(matches!(
            repo.begin("s.tar").map(|_| ()),
            Err(StorageError::NotARepository(_))
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    }

    #[test]
    fn leftovers_of_killed_runs_are_removed_and_those_in_use_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let repo = LocalRepository::new(dir.path());
        let mut live = repo.begin("live.tar").unwrap();
        live.spool("db").unwrap();
        let scratch = repo.scratch("schema").unwrap();
        // A writer and a restore killed with -9: files remain, no lock is held.
        for name in [".c.tar.partial", ".c.tar.spool-db", ".dbsnap-schema-k1lled"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert!(repo.list().unwrap().is_empty());
        let at = |names: &[&str]| -> Vec<String> {
            names
                .iter()
                .map(|n| dir.path().join(n).display().to_string())
                .collect()
        };
        let dead = at(&[".c.tar.partial", ".c.tar.spool-db", ".dbsnap-schema-k1lled"]);
        let mut listed = repo.stale().unwrap();
        listed.sort();
        assert_eq!(listed, dead);
        let mut removed = repo.remove_stale().unwrap();
        removed.sort();
        assert_eq!(removed, dead);
        assert_eq!(repo.remove_stale().unwrap(), Vec::<String>::new());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        left.sort();
        let mut in_use = at(&[".live.tar.partial", ".live.tar.spool-db"]);
        in_use.push(scratch.path().display().to_string());
        in_use.sort();
        assert_eq!(left, in_use);
        drop(live);
        drop(scratch);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
