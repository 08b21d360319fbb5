//! Reading snapshots back: `list`, `extract-version`, `verify`.
//!
//! Never panics on a damaged file: every failure is a value naming the
//! file (and for `verify`, the first member) that failed.

use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use dbsnap_archive::snapshot::{self, ArchiveError, Metadata};
use dbsnap_archive::toc::ArchiveFacts;
use dbsnap_archive::{identify, pgdump};
use dbsnap_storage::{Repository, SnapshotRef, StorageError, Unlisted};
use serde::Serialize;

use crate::error::CoreError;

/// One row of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    /// File name.
    pub name: String,
    /// Where it is (`<repository>/<name>`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When the cut was taken (from the metadata).
    pub created_at: Option<String>,
    /// Target name.
    pub target: Option<String>,
    /// The Kubernetes workload it was taken for (`create --k8s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<dbsnap_archive::snapshot::KubernetesOrigin>,
    /// Database names.
    pub databases: Vec<String>,
    /// Schema version per database (display strings).
    pub versions: Vec<String>,
    /// Consistency method.
    pub consistency: Option<String>,
    /// Whether the cut is consistent across databases.
    pub consistent_cut: Option<bool>,
    /// Whether it is a safety snapshot (taken by `restore` before a change).
    pub safety: bool,
    /// The restore run this is a safety snapshot for, if it is one.
    pub safety_for: Option<String>,
    /// Pinned (`dbsnap pin`): prune keeps it, delete refuses it.
    pub pinned: bool,
    /// Its members are encrypted (age).
    pub encrypted: bool,
    /// The last `dbsnap drill` of it, if any.
    pub drill: Option<crate::drill::DrillRecord>,
    /// `ok`, or why it cannot be used: `not_snapshot`, `truncated`,
    /// `corrupt`, `unsupported` or `unreadable` (the same cause gives
    /// `verify`, `extract-version` and `restore` one exit code).
    pub status: Status,
    /// Why the file could not be read, if it could not.
    pub error: Option<String>,
}

impl ListEntry {
    /// A row for a file nothing has been read from yet.
    pub fn new(name: &str, path: String, size: u64) -> ListEntry {
        ListEntry {
            name: name.into(),
            path,
            size,
            created_at: None,
            target: None,
            kubernetes: None,
            databases: vec![],
            versions: vec![],
            consistency: None,
            consistent_cut: None,
            safety: false,
            safety_for: None,
            pinned: false,
            encrypted: false,
            drill: None,
            status: Status::Ok,
            error: None,
        }
    }

    /// Records why the file cannot be used.
    fn mark_unusable(&mut self, err: &CoreError) {
        self.status = problem(err);
        self.error = Some(err.to_string());
    }
}

/// The cheap check `list` makes beyond the metadata: the file ends where
/// its manifest says (reads only its last blocks), so a truncated snapshot
/// is flagged without reading it all.
pub fn check_complete(snapshot: &SnapshotRef, size: u64) -> Result<(), CoreError> {
    let len = size.min(identify::END_CHECK_BYTES) / 512 * 512;
    let mut tail = Vec::new();
    snapshot
        .repo
        .open_range(&snapshot.name, size - len)
        .and_then(|mut r| {
            r.read_to_end(&mut tail)
                .map_err(|e| StorageError::io(Path::new(&snapshot.display()), e))
        })
        .map_err(CoreError::Storage)?;
    identify::check_end(&tail, size).map_err(|e| archive_error(snapshot, e))
}

/// [`check_complete`] for a snapshot the repository lists (a path it does
/// not list is judged by reading it).
fn cheap_check(snapshot: &SnapshotRef) -> Result<(), CoreError> {
    match snapshot.repo.stat(&snapshot.name) {
        Ok(info) => check_complete(snapshot, info.size),
        Err(_) => Ok(()),
    }
}

/// The metadata of a snapshot that passes the cheap end check: what
/// `extract-version` reads (a truncated snapshot is refused as by `verify`).
pub fn read_checked_metadata(snapshot: &SnapshotRef) -> Result<Metadata, CoreError> {
    let metadata = read_metadata(snapshot)?;
    cheap_check(snapshot)?;
    Ok(metadata)
}

/// A snapshot's creation time as its metadata records it (RFC 3339).
pub fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Lists the snapshots in `repo`, newest first; unreadable files are
/// reported on their row (`status`, `error`): a truncated file is flagged
/// even when its metadata reads fine.
pub fn list(repo: &Arc<dyn Repository>) -> Result<Vec<ListEntry>, CoreError> {
    let mut out = Vec::new();
    let listed = repo.list()?;
    let pinned = repo.pinned()?;
    let drills = repo.drills()?;
    for f in listed {
        let snapshot = SnapshotRef::new(repo.clone(), &f.name);
        let mut e = ListEntry::new(&f.name, snapshot.display(), f.size);
        e.pinned = pinned.contains(&f.name);
        e.drill = drills
            .get(&f.name)
            .and_then(|b| crate::drill::DrillRecord::parse(b));
        match read_metadata(&snapshot) {
            Ok(m) => {
                e.created_at = Some(m.created_at.clone());
                e.target = m.target.clone();
                e.kubernetes = m.kubernetes.clone();
                e.databases = m.databases.iter().map(|d| d.name.clone()).collect();
                e.versions = m
                    .databases
                    .iter()
                    .map(|d| {
                        d.schema_version
                            .as_ref()
                            .map(|v| v.display())
                            .unwrap_or_else(|| "-".into())
                    })
                    .collect();
                e.consistency = Some(m.consistency.method.as_str().to_string());
                e.consistent_cut = Some(m.consistency.consistent_cut);
                e.safety = m.safety_for.is_some();
                e.safety_for = m.safety_for.clone();
                e.encrypted = m.encryption.is_some();
                if let Err(err) = check_complete(&snapshot, f.size) {
                    e.mark_unusable(&err);
                }
            }
            Err(err) => e.mark_unusable(&err),
        }
        out.push(e);
    }
    // RFC 3339 UTC strings sort chronologically; unreadable files keep mtime order at the end.
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(out)
}

/// Where `--file` points: a path as given (it has a directory part or
/// exists), else a name in the repository `repo`.
pub fn resolve_snapshot(
    file: &Path,
    locations: &crate::Locations,
    repo: impl FnOnce() -> Result<crate::Location, CoreError>,
) -> Result<SnapshotRef, CoreError> {
    if file.components().count() > 1 || file.exists() {
        Ok(locations.snapshot(file))
    } else {
        Ok(SnapshotRef::new(
            repo()?.repository(),
            file.to_string_lossy(),
        ))
    }
}

/// Reads only `dbsnap.json` from a snapshot.
pub fn read_metadata(snapshot: &SnapshotRef) -> Result<Metadata, CoreError> {
    let f = open(snapshot)?;
    snapshot::read_metadata(BufReader::with_capacity(64 * 1024, f))
        .map_err(|e| archive_error(snapshot, e))
}

/// The error for a snapshot that could not be read, one per cause:
/// not a snapshot at all, an I/O failure (not an early end), or a damaged
/// (truncated, corrupt, unsupported) snapshot.
pub fn archive_error(snapshot: &SnapshotRef, e: ArchiveError) -> CoreError {
    match e {
        ArchiveError::NotSnapshot(what) => CoreError::NotSnapshot {
            file: snapshot.display(),
            what,
        },
        ArchiveError::Io(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            CoreError::Storage(StorageError::Io {
                path: snapshot.display(),
                source: e,
            })
        }
        e => CoreError::Verify {
            file: snapshot.display(),
            message: e.to_string(),
        },
    }
}

/// Whether a read failure is damage to a snapshot (what `verify` reports)
/// rather than a file that is no snapshot or an I/O failure.
fn is_damage(e: &ArchiveError) -> bool {
    match e {
        ArchiveError::NotSnapshot(_) => false,
        ArchiveError::Io(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => true,
    }
}

/// Whether a listed file can be used, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A snapshot whose metadata and end read fine.
    Ok,
    /// Not a dbsnap snapshot at all.
    NotSnapshot,
    /// Cut short.
    Truncated,
    /// Damaged.
    Corrupt,
    /// Of a format this dbsnap does not read.
    Unsupported,
    /// Could not be read (the repository failed, not the file).
    Unreadable,
}

/// What a snapshot that could not be read is, for `list`'s `status`.
pub fn problem(e: &CoreError) -> Status {
    match e {
        CoreError::NotSnapshot { .. } | CoreError::Archive(ArchiveError::NotSnapshot(_)) => {
            Status::NotSnapshot
        }
        CoreError::Verify { message, .. } if message.starts_with("snapshot is truncated") => {
            Status::Truncated
        }
        CoreError::Verify { message, .. } if message.starts_with("snapshot format") => {
            Status::Unsupported
        }
        CoreError::Verify { .. } | CoreError::Archive(_) => Status::Corrupt,
        _ => Status::Unreadable,
    }
}

/// Opens a snapshot for reading; a missing one says how to find it.
pub fn open(snapshot: &SnapshotRef) -> Result<Box<dyn std::io::Read + Send>, CoreError> {
    snapshot.open().or_else(|e| match e {
        StorageError::NotFound(_) => open_foreign(snapshot),
        e => Err(CoreError::Storage(e)),
    })
}

/// A path the repository does not count as a snapshot (a directory, a
/// file not named `*.tar`): a directory is not a snapshot; a file is read
/// anyway, so that the error can say what it is; nothing there is "not
/// found".
fn open_foreign(snapshot: &SnapshotRef) -> Result<Box<dyn std::io::Read + Send>, CoreError> {
    match snapshot.open_unlisted()? {
        Unlisted::Directory => Err(CoreError::NotSnapshot {
            file: snapshot.display(),
            what: "it is a directory\nhint: pass a snapshot file; to use the snapshots in a \
                   directory, pass it as --dir (see `dbsnap list --dir DIR`)"
                .into(),
        }),
        Unlisted::File(f) => Ok(f),
        Unlisted::Missing => Err(CoreError::Config {
            message: format!("snapshot file \"{}\" not found", snapshot.display()),
            hint: "run `dbsnap list` to see the snapshots, or pass --dir".into(),
        }),
    }
}

/// One member in a verify report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedMember {
    /// Member name.
    pub name: String,
    /// Size.
    pub size: u64,
    /// SHA-256.
    pub sha256: String,
    /// For database members: number of TOC entries read.
    pub toc_entries: Option<usize>,
    /// For database members: data blocks read.
    pub data_blocks: Option<usize>,
    /// For database members: pg_dump archive format version.
    pub archive_version: Option<String>,
    /// For database members: roles, database properties and object lists
    /// read from its table of contents.
    #[serde(skip)]
    pub facts: ArchiveFacts,
}

/// Result of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The snapshot.
    pub file: SnapshotRef,
    /// Verified or not.
    pub ok: bool,
    /// First failure, naming the member.
    pub error: Option<String>,
    /// Members whose size and checksum matched the manifest, in order: all
    /// of them when verified, those before the first failing one when not
    /// (none when the snapshot ends before its manifest, which comes last).
    pub members: Vec<VerifiedMember>,
    /// Metadata, when readable.
    pub metadata: Option<Metadata>,
    /// Whether its members are encrypted.
    pub encrypted: bool,
    /// Whether the database members were read as pg_dump archives (not
    /// when encrypted and no key was given: checksums only).
    pub contents_checked: bool,
}

/// The members whose names start with `prefix` (small ones: each at most
/// 16 MiB), returned only once the whole snapshot has been read and every
/// member matched the manifest.
pub fn read_members(
    snapshot: &SnapshotRef,
    prefix: &str,
    crypto: &crate::crypt::Crypto,
) -> Result<Vec<(String, Vec<u8>)>, CoreError> {
    const MAX: u64 = 16 << 20;
    let f = open(snapshot)?;
    let mut found = Vec::new();
    snapshot::verify(BufReader::with_capacity(1 << 20, f), |visit, reader| {
        if !visit.name.starts_with(prefix) {
            return Ok(());
        }
        if visit.size > MAX {
            return Err(ArchiveError::Corrupt(format!(
                "member \"{}\" is {} bytes, more than such a member can be",
                visit.name, visit.size
            )));
        }
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        found.push((visit.name.to_string(), bytes));
        Ok(())
    })
    .map_err(|e| archive_error(snapshot, e))?;
    found
        .into_iter()
        .map(|(name, stored)| {
            let mut plain = Vec::new();
            crypto
                .reader(snapshot, &name, &stored[..])?
                .read_to_end(&mut plain)
                .map_err(|e| CoreError::Verify {
                    file: snapshot.display(),
                    message: format!("member \"{name}\": {e}"),
                })?;
            Ok((name, plain))
        })
        .collect()
}

/// Recomputes every member's checksum against the manifest and parses each
/// database member as a pg_dump custom archive.
/// An encrypted snapshot's dumps are parsed when `crypto` has a key
/// (else only their checksums are checked).
pub fn verify(
    snapshot: &SnapshotRef,
    crypto: &crate::crypt::Crypto,
) -> Result<VerifyReport, CoreError> {
    // A file that is not a snapshot says what it is; a truncated snapshot is
    // called truncated, as `list` calls it, before its members are read.
    if let Err(e) = read_metadata(snapshot) {
        if problem(&e) == Status::NotSnapshot {
            return Err(e);
        }
    }
    if let Err(e) = cheap_check(snapshot) {
        return match problem(&e) {
            Status::Truncated | Status::Corrupt | Status::Unsupported => Ok(VerifyReport {
                file: snapshot.clone(),
                ok: false,
                error: Some(e.to_string()),
                members: Vec::new(),
                metadata: read_metadata(snapshot).ok(),
                encrypted: false,
                contents_checked: false,
            }),
            _ => Err(e),
        };
    }
    // An encrypted snapshot's dumps are parsed with a key; without one,
    // only their checksums are checked.
    let encrypted = read_metadata(snapshot)
        .map(|m| m.encryption.is_some())
        .unwrap_or(false);
    let contents_checked = !encrypted || crypto.has_keys();
    if encrypted && contents_checked {
        crypto.check_keys(snapshot)?;
    }
    let f = open(snapshot)?;
    let mut details: Vec<(String, pgdump::PgDumpSummary)> = Vec::new();
    let mut confirmed = Vec::new();
    let outcome = snapshot::verify_confirming(
        BufReader::with_capacity(1 << 20, f),
        |visit, reader| {
            if visit.name.ends_with(".dump") && contents_checked {
                let mut plain = crypto
                    .reader(snapshot, visit.name, reader)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                let summary = pgdump::read_archive(&mut plain).map_err(|e| match e {
                    // The connection to the repository, not the snapshot.
                    pgdump::PgDumpError::Io(e) if e.kind() == dbsnap_storage::s3::LOST => {
                        ArchiveError::Io(e)
                    }
                    e => ArchiveError::Corrupt(format!(
                        "member \"{}\" is not a readable pg_dump archive: {e}",
                        visit.name
                    )),
                })?;
                details.push((visit.name.to_string(), summary));
            }
            Ok(())
        },
        &mut confirmed,
    );
    // The members that matched the manifest: all of them on success, those
    // before the first that did not on a failure.
    let members = confirmed
        .iter()
        .map(|m| {
            let d = details.iter().find(|(n, _)| n == &m.name).map(|(_, s)| s);
            VerifiedMember {
                name: m.name.clone(),
                size: m.size,
                sha256: m.sha256.clone(),
                toc_entries: d.map(|s| s.entries.len()),
                data_blocks: d.map(|s| s.data_blocks),
                archive_version: d
                    .map(|s| format!("{}.{}-{}", s.version.0, s.version.1, s.version.2)),
                facts: d
                    .map(|s| ArchiveFacts::from_entries(&s.entries))
                    .unwrap_or_default(),
            }
        })
        .collect();
    match outcome {
        Ok(v) => Ok(VerifyReport {
            file: snapshot.clone(),
            ok: true,
            error: None,
            members,
            metadata: Some(v.metadata),
            encrypted,
            contents_checked,
        }),
        Err(e) if !is_damage(&e) => Err(archive_error(snapshot, e)),
        Err(e) => Ok(VerifyReport {
            file: snapshot.clone(),
            ok: false,
            error: Some(e.to_string()),
            members,
            metadata: read_metadata(snapshot).ok(),
            encrypted,
            contents_checked,
        }),
    }
}
