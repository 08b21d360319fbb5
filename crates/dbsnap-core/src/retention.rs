//! Removing snapshots: `delete` of one named snapshot, and keeping only the
//! newest safety snapshots of a repository (`keep_safety_snapshots`).

use std::sync::Arc;

use dbsnap_storage::{Repository, SnapshotRef, StorageError};
use serde::Serialize;

use crate::error::CoreError;
use crate::inspect::{self, ListEntry};

/// Safety snapshots kept per repository when the config does not say.
pub const DEFAULT_KEEP_SAFETY_SNAPSHOTS: usize = 3;

/// A snapshot removed (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// File name.
    pub name: String,
    /// Where it was (`<repository>/<name>`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was taken, when its metadata was readable.
    pub created_at: Option<String>,
}

impl From<&ListEntry> for Removed {
    fn from(e: &ListEntry) -> Self {
        Removed {
            name: e.name.clone(),
            path: e.path.clone(),
            size: e.size,
            created_at: e.created_at.clone(),
        }
    }
}

/// Which safety snapshots of a newest-first list go beyond the newest
/// `keep`; `protect` (the one just taken) is never among them.
pub fn safety_snapshots_beyond(
    rows: &[ListEntry],
    keep: usize,
    protect: Option<&str>,
) -> Vec<ListEntry> {
    rows.iter()
        .filter(|r| r.safety && protect != Some(r.name.as_str()))
        .skip(keep.saturating_sub(usize::from(protect.is_some())))
        .cloned()
        .collect()
}

/// Deletes the safety snapshots of `repo` beyond the newest `keep` (never
/// `protect`); with `dry_run`, only says which. A missing repository has
/// none.
pub fn prune_safety_snapshots(
    repo: &Arc<dyn Repository>,
    keep: usize,
    protect: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Removed>, CoreError> {
    let rows = match inspect::list(repo) {
        Err(CoreError::Storage(StorageError::NoRepository(_))) => return Ok(Vec::new()),
        r => r?,
    };
    let pinned = repo.pinned()?;
    let rows: Vec<ListEntry> = rows
        .into_iter()
        .filter(|r| !pinned.contains(&r.name))
        .collect();
    let mut removed = Vec::new();
    for old in safety_snapshots_beyond(&rows, keep, protect) {
        if !dry_run {
            repo.delete(&old.name)?;
            tracing::info!("removed old safety snapshot {}", old.path);
        }
        removed.push(Removed::from(&old));
    }
    Ok(removed)
}

/// What `delete` would remove: the snapshot, which must exist and be a
/// dbsnap snapshot (a damaged one is fine; a foreign file is refused).
pub fn deletable(snapshot: &SnapshotRef) -> Result<Removed, CoreError> {
    let info = match snapshot.repo.stat(&snapshot.name) {
        Ok(info) => info,
        // Not a snapshot name in the repository: say what it is instead.
        Err(StorageError::NotFound(_)) => {
            inspect::read_metadata(snapshot)?;
            return Err(not_deletable(snapshot));
        }
        Err(e) => return Err(e.into()),
    };
    let created_at = match inspect::read_metadata(snapshot) {
        Ok(m) => Some(m.created_at),
        Err(e @ CoreError::NotSnapshot { .. }) => return Err(e),
        Err(_) => None,
    };
    Ok(Removed {
        name: info.name,
        path: snapshot.display(),
        size: info.size,
        created_at,
    })
}

fn not_deletable(snapshot: &SnapshotRef) -> CoreError {
    CoreError::NotSnapshot {
        file: snapshot.display(),
        what: "its name is not a snapshot's (*.tar)\nhint: dbsnap deletes only snapshot files"
            .into(),
    }
}

/// Refuses a pinned snapshot: `delete` never removes one (unpin first).
pub fn refuse_pinned(snapshot: &SnapshotRef) -> Result<(), CoreError> {
    if snapshot.repo.pinned()?.contains(&snapshot.name) {
        return Err(CoreError::Config {
            message: format!("{} is pinned", snapshot.display()),
            hint: format!(
                "`dbsnap unpin {}` first if it really should go",
                snapshot.name
            ),
        });
    }
    Ok(())
}

/// Deletes one snapshot (after [`deletable`] said what it is).
pub fn delete(snapshot: &SnapshotRef) -> Result<(), CoreError> {
    snapshot.repo.delete(&snapshot.name)?;
    tracing::info!("deleted snapshot {}", snapshot.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, safety: bool) -> ListEntry {
        ListEntry {
            safety,
            ..ListEntry::new(name, format!("/r/{name}"), 1)
        }
    }

    fn names(rows: Vec<ListEntry>) -> Vec<String> {
        rows.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn keeps_the_newest_safety_snapshots_and_never_the_one_just_taken() {
        let rows = vec![
            row("s5", true),
            row("app", false),
            row("s4", true),
            row("s3", true),
            row("s2", true),
            row("s1", true),
        ];
        assert_eq!(names(safety_snapshots_beyond(&rows, 3, None)), ["s2", "s1"]);
        assert_eq!(
            names(safety_snapshots_beyond(&rows, 3, Some("s5"))),
            ["s2", "s1"]
        );
        // The one just taken is kept even when it does not sort newest.
        assert_eq!(
            names(safety_snapshots_beyond(&rows, 1, Some("s3"))),
            ["s5", "s4", "s2", "s1"]
        );
        assert_eq!(
            names(safety_snapshots_beyond(&rows, 0, Some("s5"))),
            ["s4", "s3", "s2", "s1"]
        );
        assert!(safety_snapshots_beyond(&rows, 10, None).is_empty());
    }
}
