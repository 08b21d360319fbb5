//! How long dbsnap keeps its own files: run logs (`$DBSNAP_HOME/logs/`) and
//! the journals of finished restores (`$DBSNAP_HOME/state/`). Set in
//! `dbsnap.toml` under `[retention]`; pruned by every command that writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::restore::state::{self, Phase, RestoreState};

/// Limits on kept logs and journals: a file goes when it is older than
/// its `*_days` or not among the newest `*_files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Days a run log is kept (default 30).
    pub log_days: u64,
    /// Run logs kept at most (default 100).
    pub log_files: usize,
    /// Days the journal of a finished restore is kept (default 30).
    pub journal_days: u64,
    /// Journals of finished restores kept at most (default 100).
    pub journal_files: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            log_days: 30,
            log_files: 100,
            journal_days: 30,
            journal_files: 100,
        }
    }
}

/// Which of `files` (path, last modified) to remove: those older than
/// `days`, and all but the newest `count`.
pub fn expired(
    mut files: Vec<(PathBuf, SystemTime)>,
    days: u64,
    count: usize,
    now: SystemTime,
) -> Vec<PathBuf> {
    let max_age = Duration::from_secs(days.saturating_mul(24 * 60 * 60));
    files.sort_by_key(|f| std::cmp::Reverse(f.1));
    files
        .into_iter()
        .enumerate()
        .filter(|(i, (_, modified))| {
            *i >= count || now.duration_since(*modified).unwrap_or_default() > max_age
        })
        .map(|(_, (path, _))| path)
        .collect()
}

/// The files in `dir` named `<prefix>…<suffix>` (none if it is missing).
fn named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Removes `paths`, but never `keep`; returns how many went.
fn remove(paths: Vec<PathBuf>, keep: Option<&Path>) -> usize {
    paths
        .into_iter()
        .filter(|p| Some(p.as_path()) != keep)
        .filter(|p| match std::fs::remove_file(p) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("could not prune {}: {e}", p.display());
                false
            }
        })
        .count()
}

/// Prunes the run logs (`dbsnap-*.log`) in `dir`, never `current`;
/// returns how many were removed.
pub fn prune_logs(dir: &Path, current: Option<&Path>, r: &Retention) -> usize {
    let logs = named(dir, "dbsnap-", ".log")
        .into_iter()
        .filter_map(|p| modified(&p).map(|m| (p, m)))
        .collect();
    remove(
        expired(logs, r.log_days, r.log_files, SystemTime::now()),
        current,
    )
}

/// Whether a journal may be pruned: its run finished and it has nothing
/// left for `rollback` or `cleanup` (no database swapped with the previous
/// one kept). An unreadable journal is never pruned.
fn prunable(path: &Path) -> bool {
    RestoreState::load(path)
        .is_ok_and(|s| s.finished && !s.databases.iter().any(|d| d.phase == Phase::Swapped))
}

/// Prunes the journals of finished restores that nothing needs any more
/// (see [`prunable`]); returns how many were removed. Journals of
/// unfinished runs, which `resume` and `rollback` need, are never touched.
pub fn prune_journals(r: &Retention) -> usize {
    let journals = named(&state::state_dir(), "restore-", ".json")
        .into_iter()
        .filter(|p| prunable(p))
        .filter_map(|p| modified(&p).map(|m| (p, m)))
        .collect();
    remove(
        expired(journals, r.journal_days, r.journal_files, SystemTime::now()),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_by_age_and_by_count() {
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 60 * 60);
        let f = |name: &str, age: Duration| (PathBuf::from(name), now - age);
        let files = vec![
            f("old", day * 40),
            f("new", Duration::ZERO),
            f("mid", day * 2),
            f("older", day * 31),
        ];
        assert_eq!(
            expired(files.clone(), 30, 100, now),
            [PathBuf::from("older"), PathBuf::from("old")]
        );
        assert_eq!(
            expired(files.clone(), 365, 1, now),
            [
                PathBuf::from("mid"),
                PathBuf::from("older"),
                PathBuf::from("old")
            ]
        );
        assert!(expired(files, 365, 4, now).is_empty());
    }
}
