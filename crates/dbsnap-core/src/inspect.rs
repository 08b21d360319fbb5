//! Reading snapshots back: `list`, `extract-version`, `verify`.
//!
//! Never panics on a damaged file: every failure is a value naming the
//! file (and for `verify`, the first member) that failed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use dbsnap_archive::pgdump;
use dbsnap_archive::snapshot::{self, ArchiveError, Metadata};
use dbsnap_archive::toc::ArchiveFacts;
use dbsnap_storage::LocalRepository;
use serde::Serialize;

use crate::error::CoreError;

/// One row of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    /// File name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// When the cut was taken (from the metadata).
    pub created_at: Option<String>,
    /// Target name.
    pub target: Option<String>,
    /// Database names.
    pub databases: Vec<String>,
    /// Schema version per database (display strings).
    pub versions: Vec<String>,
    /// Consistency method.
    pub consistency: Option<String>,
    /// Whether the cut is consistent across databases.
    pub consistent_cut: Option<bool>,
    /// Why the file could not be read, if it could not.
    pub error: Option<String>,
}

/// Lists the snapshots in `dir`, newest first; unreadable files are
/// reported on their row.
pub fn list(dir: &Path) -> Result<Vec<ListEntry>, CoreError> {
    let repo = LocalRepository::new(dir);
    let mut out = Vec::new();
    for f in repo.list()? {
        let mut e = ListEntry {
            name: f.name.clone(),
            path: f.path.clone(),
            size: f.size,
            created_at: None,
            target: None,
            databases: vec![],
            versions: vec![],
            consistency: None,
            consistent_cut: None,
            error: None,
        };
        match read_metadata(&f.path) {
            Ok(m) => {
                e.created_at = Some(m.created_at.clone());
                e.target = m.target.clone();
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
            }
            Err(err) => e.error = Some(err.to_string()),
        }
        out.push(e);
    }
    // RFC 3339 UTC strings sort chronologically; unreadable files keep mtime order at the end.
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(out)
}

/// Where `--file` points: a path as given (it has a directory part or
/// exists), else a file name in the repository `dir`.
pub fn resolve_snapshot(
    file: &Path,
    dir: impl FnOnce() -> Result<PathBuf, CoreError>,
) -> Result<PathBuf, CoreError> {
    if file.components().count() > 1 || file.exists() {
        Ok(file.to_path_buf())
    } else {
        Ok(dir()?.join(file))
    }
}

/// Reads only `dbsnap.json` from a snapshot file.
pub fn read_metadata(path: &Path) -> Result<Metadata, CoreError> {
    let f = open(path)?;
    snapshot::read_metadata(BufReader::with_capacity(64 * 1024, f)).map_err(|e| CoreError::Verify {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

fn open(path: &Path) -> Result<File, CoreError> {
    File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CoreError::Config {
                message: format!("snapshot file \"{}\" not found", path.display()),
                hint: "run `dbsnap list` to see the snapshots, or pass --dir".into(),
            }
        } else {
            CoreError::Storage(dbsnap_storage::StorageError::io(path, e))
        }
    })
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
    /// File.
    pub file: PathBuf,
    /// Verified or not.
    pub ok: bool,
    /// First failure, naming the member.
    pub error: Option<String>,
    /// Members that passed (in order), up to the failure.
    pub members: Vec<VerifiedMember>,
    /// Metadata, when readable.
    pub metadata: Option<Metadata>,
}

/// Recomputes every member's checksum against the manifest and parses each
/// database member as a pg_dump custom archive.
pub fn verify(path: &Path) -> Result<VerifyReport, CoreError> {
    let f = open(path)?;
    let mut details: Vec<(String, pgdump::PgDumpSummary)> = Vec::new();
    let outcome = snapshot::verify(BufReader::with_capacity(1 << 20, f), |visit, reader| {
        if visit.name.ends_with(".dump") {
            let summary = pgdump::read_archive(reader).map_err(|e| {
                ArchiveError::Corrupt(format!(
                    "member \"{}\" is not a readable pg_dump archive: {e}",
                    visit.name
                ))
            })?;
            details.push((visit.name.to_string(), summary));
        }
        Ok(())
    });
    match outcome {
        Ok(v) => {
            let members = v
                .manifest
                .members
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
            Ok(VerifyReport {
                file: path.to_path_buf(),
                ok: true,
                error: None,
                members,
                metadata: Some(v.metadata),
            })
        }
        Err(ArchiveError::Io(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => Err(
            CoreError::Storage(dbsnap_storage::StorageError::io(path, e)),
        ),
        Err(e) => Ok(VerifyReport {
            file: path.to_path_buf(),
            ok: false,
            error: Some(e.to_string()),
            members: Vec::new(),
            metadata: read_metadata(path).ok(),
        }),
    }
}
