//! Snapshot repositories: where snapshot archives live.
//!
//! # Contract
//!
//! Every backend implements [`Repository`] and passes the shared suite in
//! [`contract`] (run on the local directory here, on S3 by its backend):
//!
//! - A snapshot is an archive named `<something>.tar`. [`Repository::list`]
//!   returns only complete snapshots, newest first (by time written, then
//!   name); names starting with `.` are never snapshots.
//! - Writing goes [`Repository::begin`] → [`PendingWrite`] →
//!   [`PendingWrite::commit`]. Until the commit returns, the snapshot is
//!   invisible to `list`, `stat` and `open`; after it returns, it is
//!   complete and durable. A commit never overwrites: a name that exists
//!   already is [`StorageError::Exists`], at `begin` or at `commit`.
//! - A pending write dropped without commit leaves nothing behind. One left
//!   by a process that died is removed by [`Repository::remove_stale`],
//!   which never touches a write in progress and is idempotent.
//! - A [`Scratch`] file from [`Repository::scratch`] (what a restore reading
//!   a snapshot writes for pg_restore) is removed on drop; one left by a
//!   process that died is removed by [`Repository::remove_stale`] too, one
//!   still in use never (see [`scratch`]). [`Repository::stale`] lists what
//!   `remove_stale` would remove.
//! - "Not found" is [`StorageError::NotFound`] (a snapshot) or
//!   [`StorageError::NoRepository`] (the repository itself), never an I/O
//!   error. Deleting a missing snapshot is `NotFound`.
//! - Reads stream: [`Repository::open`] from the start, [`Repository::open_range`]
//!   from an offset, without reading what comes before.
//!
//! Calls block. Object store requests run on the application's runtime
//! (the one a repository is opened from; storage starts none): a call
//! from a blocking thread waits there, one from async code on the
//! multi-threaded runtime hands the worker's other tasks over first.

mod local;
mod location;
pub mod s3;
pub mod scratch;

#[cfg(any(test, feature = "contract"))]
pub mod contract;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use dbsnap_archive::snapshot::{ArchiveOutput, Placeholder};
pub use local::LocalRepository;
pub use location::{Location, Locations, NamedLocation};
pub use scratch::Scratch;
use thiserror::Error;

/// Errors of a repository: what is wrong, in storage's terms; what to
/// do (which flag or setting to change) is the application's to say.
#[derive(Debug, Error)]
pub enum StorageError {
    /// No such snapshot.
    #[error("snapshot \"{0}\" not found")]
    NotFound(String),
    /// The repository itself does not exist.
    #[error("repository {0} does not exist")]
    NoRepository(String),
    /// The repository's location is something else (a file).
    #[error("repository {0} is not a directory")]
    NotARepository(String),
    /// The bucket of an object-store repository does not exist.
    #[error("the bucket of {0} does not exist")]
    NoBucket(String),
    /// A snapshot of that name exists already.
    #[error("snapshot \"{0}\" already exists")]
    Exists(String),
    /// The file system is full.
    #[error("no space left on device while writing {0}")]
    NoSpace(String),
    /// A repository that cannot be used as configured (a malformed URL,
    /// an unreadable CA file).
    #[error("{0}")]
    Config(String),
    /// A request to an object store failed.
    #[error("{location}: {message}{}", hint_line(.hint))]
    Remote {
        /// The repository or object.
        location: String,
        /// What the server or the connection said.
        message: String,
        /// What to do, or empty.
        hint: String,
    },
    /// The object store's endpoint is plain HTTP, which was not allowed.
    #[error("{0}: the endpoint is plain HTTP, and plain HTTP is not allowed for it")]
    PlainHttp(String),
    /// Other I/O error, with the path or object concerned.
    #[error("{path}: {source}")]
    Io {
        /// Path or object.
        path: String,
        /// Cause.
        source: io::Error,
    },
}

fn hint_line(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\nhint: {hint}")
    }
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

/// The umask this process started with, before [`make_new_files_private`].
static USER_UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Makes every file and directory this process creates from now on private
/// to its user (umask 077: files 0600, directories 0700): snapshots, spool
/// files, safety snapshots, journals and logs hold the application's data.
pub fn make_new_files_private() {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _ = USER_UMASK.set(old.bits());
}

/// The umask the user had, for commands of theirs that dbsnap runs (hooks).
pub fn user_umask() -> Option<u32> {
    USER_UMASK.get().copied()
}

/// Creates `dir` and its missing parents, 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StorageError::io(dir, e))
}

/// Creates the directory of the repository at `location` (and its
/// parents, 0700) unless it exists; a file in its place is
/// [`StorageError::NotARepository`], not an I/O error.
pub(crate) fn create_repository_dir(dir: &Path, location: &str) -> Result<(), StorageError> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(StorageError::NotARepository(location.to_string())),
        _ => create_private_dir(dir),
    }
}

/// Warns (once per directory) when an existing directory holding
/// snapshots can be read by other users.
pub fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    let Ok(mut warned) = WARNED.lock() else {
        return;
    };
    if warned.iter().any(|d| d == dir) {
        return;
    }
    warned.push(dir.to_path_buf());
    tracing::warn!(
        "the snapshot directory {} can be read by other users (mode {mode:04o}), and snapshots hold all of the application's data; run `chmod 700 {}`",
        dir.display(),
        dir.display()
    );
}

/// What [`SnapshotRef::open_unlisted`] found.
pub enum Unlisted {
    /// Nothing there.
    Missing,
    /// A directory.
    Directory,
    /// A file, opened for reading.
    File(Box<dyn Read + Send>),
}

/// A repository that could not be opened: every call says why.
#[derive(Debug)]
pub(crate) struct Unusable {
    pub(crate) location: String,
    pub(crate) why: String,
}

impl Unusable {
    fn err<T>(&self) -> Result<T, StorageError> {
        Err(StorageError::Config(self.why.clone()))
    }
}

impl Repository for Unusable {
    fn location(&self) -> String {
        self.location.clone()
    }
    fn list(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        self.err()
    }
    fn stat(&self, _: &str) -> Result<SnapshotInfo, StorageError> {
        self.err()
    }
    fn open_range(&self, _: &str, _: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        self.err()
    }
    fn begin(&self, _: &str) -> Result<Box<dyn PendingWrite>, StorageError> {
        self.err()
    }
    fn delete(&self, _: &str) -> Result<(), StorageError> {
        self.err()
    }
    fn pinned(&self) -> Result<std::collections::BTreeSet<String>, StorageError> {
        self.err()
    }
    fn set_pinned(&self, _: &str, _: bool) -> Result<(), StorageError> {
        self.err()
    }
    fn drills(&self) -> Result<std::collections::BTreeMap<String, Vec<u8>>, StorageError> {
        self.err()
    }
    fn set_drill(&self, _: &str, _: &[u8]) -> Result<(), StorageError> {
        self.err()
    }
    fn scratch(&self, _: &str) -> Result<Scratch, StorageError> {
        self.err()
    }
    fn remove_stale(&self) -> Result<Vec<String>, StorageError> {
        self.err()
    }
    fn stale(&self) -> Result<Vec<String>, StorageError> {
        self.err()
    }
}

/// Writes a small state file durably: a temporary name, fsync, rename over
/// `path`, fsync of the directory (created 0700 if missing); the file is
/// 0600. A crash leaves the old file or the new one, never a torn one.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| StorageError::io(path, e))
}

/// A complete snapshot in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Name (`<prefix>-<version>-<time>.tar`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was written.
    pub modified: SystemTime,
}

/// Sorts snapshots the way [`Repository::list`] returns them: newest
/// first, equal times (S3 records seconds) by name, descending.
pub fn newest_first(snapshots: &mut [SnapshotInfo]) {
    snapshots.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| b.name.cmp(&a.name))
    });
}

/// Where snapshots live. See the crate docs for the contract.
pub trait Repository: Send + Sync + fmt::Debug {
    /// Where it is, for messages: a directory, or a URL.
    fn location(&self) -> String;

    /// The local directory, when the repository is one (spool files and
    /// temporary copies go next to the snapshots there).
    fn local_dir(&self) -> Option<&Path> {
        None
    }

    /// Complete snapshots, newest first.
    fn list(&self) -> Result<Vec<SnapshotInfo>, StorageError>;

    /// One complete snapshot.
    fn stat(&self, name: &str) -> Result<SnapshotInfo, StorageError>;

    /// Reads a snapshot from its start.
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.open_range(name, 0)
    }

    /// Reads a snapshot from byte `offset` to its end.
    fn open_range(&self, name: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError>;

    /// Starts writing snapshot `name` (invisible until committed).
    fn begin(&self, name: &str) -> Result<Box<dyn PendingWrite>, StorageError>;

    /// Deletes a complete snapshot (and its pin and drill record, if any).
    fn delete(&self, name: &str) -> Result<(), StorageError>;

    /// The names of the pinned snapshots: `prune` keeps them and `delete`
    /// refuses them until they are unpinned.
    fn pinned(&self) -> Result<std::collections::BTreeSet<String>, StorageError>;

    /// Pins (or unpins) a complete snapshot; doing it twice is no error.
    fn set_pinned(&self, name: &str, pinned: bool) -> Result<(), StorageError>;

    /// The drill records (`dbsnap drill`'s last result, a small JSON
    /// document) of the snapshots that have one, by snapshot name.
    fn drills(&self) -> Result<std::collections::BTreeMap<String, Vec<u8>>, StorageError>;

    /// Writes (replaces) the drill record of a complete snapshot.
    fn set_drill(&self, name: &str, record: &[u8]) -> Result<(), StorageError>;

    /// A scratch file for a restore reading this repository's snapshots
    /// (see [`scratch`]): beside them for a local repository (the same
    /// file system), else in the temporary directory.
    fn scratch(&self, tag: &str) -> Result<Scratch, StorageError>;

    /// Removes what writers and restores that died left behind (partial
    /// snapshots, spool and scratch files); returns where each was.
    fn remove_stale(&self) -> Result<Vec<String>, StorageError>;

    /// What [`Repository::remove_stale`] would remove now.
    fn stale(&self) -> Result<Vec<String>, StorageError>;
}

/// A snapshot being written: an [`ArchiveOutput`] plus commit. Dropped
/// without commit, it leaves nothing behind.
pub trait PendingWrite: ArchiveOutput + Send {
    /// The name it will have.
    fn name(&self) -> &str;

    /// A scratch file for a member written concurrently with the archive,
    /// removed with the pending write (next to the snapshot for a local
    /// repository, in the temporary directory otherwise).
    fn spool(&mut self, tag: &str) -> Result<(File, PathBuf), StorageError>;

    /// Makes the snapshot durable and visible under its name.
    fn commit(self: Box<Self>) -> Result<SnapshotInfo, StorageError>;
}

impl ArchiveOutput for Box<dyn PendingWrite> {
    fn reserve(&mut self, len: usize) -> io::Result<Placeholder> {
        (**self).reserve(len)
    }

    fn fill(&mut self, at: Placeholder, data: &[u8]) -> io::Result<()> {
        (**self).fill(at, data)
    }
}

/// A reader that can seek.
pub trait ReadSeek: Read + io::Seek + Send {}
impl<T: Read + io::Seek + Send> ReadSeek for T {}

/// Forward seeks up to this far read on rather than start a new range.
pub const SEEK_BY_READING: u64 = 1 << 20;

/// Seeking over a repository's range reads.
struct RangeSeeker {
    snapshot: SnapshotRef,
    size: u64,
    pos: u64,
    inner: Option<Box<dyn Read + Send>>,
}

impl Read for RangeSeeker {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.is_none() {
            let r = self
                .snapshot
                .repo
                .open_range(&self.snapshot.name, self.pos)
                .map_err(io::Error::other)?;
            self.inner = Some(r);
        }
        let n = self.inner.as_mut().expect("opened").read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for RangeSeeker {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        match (&mut self.inner, target.checked_sub(self.pos)) {
            (Some(r), Some(ahead)) if ahead <= SEEK_BY_READING => {
                let skipped = io::copy(&mut r.take(ahead), &mut io::sink())?;
                self.pos += skipped;
                if skipped < ahead {
                    self.inner = None;
                    self.pos = target;
                }
            }
            _ => {
                self.inner = None;
                self.pos = target;
            }
        }
        Ok(self.pos)
    }
}

/// A snapshot named by its repository and its name: what commands, results
/// and the restore journal refer to, never a bare path.
#[derive(Clone)]
pub struct SnapshotRef {
    /// The repository.
    pub repo: Arc<dyn Repository>,
    /// The snapshot's name in it.
    pub name: String,
}

impl SnapshotRef {
    /// A snapshot in `repo`.
    pub fn new(repo: Arc<dyn Repository>, name: impl Into<String>) -> SnapshotRef {
        SnapshotRef {
            repo,
            name: name.into(),
        }
    }

    /// Reads it from the start.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, StorageError> {
        self.repo.open(&self.name)
    }

    /// Reads it with seeking: the file itself in a local repository, else
    /// range reads, a new one for each seek beyond [`SEEK_BY_READING`].
    pub fn open_seekable(&self) -> Result<Box<dyn ReadSeek>, StorageError> {
        if let Some(dir) = self.repo.local_dir() {
            let path = dir.join(&self.name);
            return match File::open(&path) {
                Ok(f) => Ok(Box::new(f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(StorageError::NotFound(self.name.clone()))
                }
                Err(e) => Err(StorageError::io(&path, e)),
            };
        }
        let size = self.repo.stat(&self.name)?.size;
        Ok(Box::new(RangeSeeker {
            snapshot: self.clone(),
            size,
            pos: 0,
            inner: None,
        }))
    }

    /// What is at a name the repository does not list as a snapshot (a
    /// path the user gave: a directory, a file not named `*.tar`), so that
    /// an error can say what it is rather than "not found".
    pub fn open_unlisted(&self) -> Result<Unlisted, StorageError> {
        let Some(path) = self.repo.local_dir().map(|d| d.join(&self.name)) else {
            return Ok(Unlisted::Missing);
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Unlisted::Directory),
            Ok(_) => File::open(&path)
                .map(|f| Unlisted::File(Box::new(f)))
                .map_err(|e| StorageError::io(&path, e)),
            Err(_) => Ok(Unlisted::Missing),
        }
    }

    /// Where it is: `<location>/<name>`.
    pub fn display(&self) -> String {
        let loc = self.repo.location();
        if loc.ends_with('/') {
            format!("{loc}{}", self.name)
        } else {
            format!("{loc}/{}", self.name)
        }
    }
}

impl fmt::Debug for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl serde::Serialize for SnapshotRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display())
    }
}
