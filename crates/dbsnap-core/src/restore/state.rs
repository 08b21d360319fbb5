//! The journal of a restore: one JSON file per run in
//! `$DBSNAP_HOME/state/`, rewritten (write, fsync, rename) before and after
//! every step that changes something, so an interrupted run (kill -9, power
//! loss) can be completed by `dbsnap resume` and a swap undone by
//! `dbsnap rollback`. It holds connection settings without passwords.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dbsnap_storage::Repository;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Where a database stands in a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing done yet.
    Planned,
    /// A new database is being filled (swap method).
    Loading,
    /// The new database is complete; the swap has not happened.
    Ready,
    /// A two-phase restore prepared this database's transaction (its data,
    /// its objects, or its swap) under [`DbRecord::prepared`], or was about
    /// to: `resume` commits it if the run's [`RestoreState::commit_decided`]
    /// is set, and rolls it back otherwise.
    Prepared,
    /// Names were swapped: the restored copy is live, the old one kept.
    Swapped,
    /// Restored in place (data-only or replace-in-transaction): committed.
    Committed,
    /// Failed and rolled back: live database unchanged.
    Failed,
    /// Swapped back by `dbsnap rollback`.
    RolledBack,
}

impl Phase {
    /// The phase in plain words.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Planned => "not started",
            Phase::Loading => "loading a new copy",
            Phase::Ready => "new copy loaded, not swapped in",
            Phase::Prepared => "prepared (two-phase commit), not committed",
            Phase::Swapped => "replaced (previous database kept)",
            Phase::Committed => "restored",
            Phase::Failed => "failed, unchanged",
            Phase::RolledBack => "rolled back",
        }
    }

    /// Whether a database in `self` may move to `next`. The journal never
    /// records anything else: `Loading -> Ready -> Swapped` for a copy that
    /// replaces the live database, `Loading -> Committed` for a created
    /// one, `Planned -> Committed` in place, with two-phase commit
    /// `Planned -> Prepared -> Committed` and `Ready -> Prepared ->
    /// Swapped`, `-> Failed` before anything live changed, `Swapped ->
    /// RolledBack` by `rollback`.
    pub fn may_become(self, next: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Planned, Loading | Prepared | Committed | Failed)
                | (Loading, Ready | Committed | Failed)
                | (Ready, Prepared | Swapped | Failed)
                | (Prepared, Committed | Swapped | Failed)
                | (Swapped, RolledBack)
        )
    }
}

/// What `resume` does for a database an interrupted run left in a phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was half-done.
    Nothing,
    /// The swap committed before the journal recorded it: the previous
    /// database is kept under `kept`.
    SwapHadCompleted {
        /// Kept name.
        kept: String,
    },
    /// The copy never replaced the live database: drop it (`None`: there
    /// was no separate copy) and record the database as failed.
    DropCopy {
        /// The copy to drop.
        copy: Option<String>,
    },
    /// The run had decided to commit: commit the prepared transaction
    /// (`None`: it had committed) and record `then`.
    CommitPrepared {
        /// The transaction to commit.
        prepared: Option<PreparedTransaction>,
        /// The phase it leaves the database in.
        then: Phase,
    },
    /// The run had not decided: roll the prepared transaction back
    /// (`None`: it never was prepared), drop the copy of a swap, and
    /// record the database as failed (unchanged).
    RollBackPrepared {
        /// The transaction to roll back.
        prepared: Option<PreparedTransaction>,
        /// The copy to drop.
        copy: Option<String>,
    },
}

impl DbRecord {
    /// The recovery for this record. `kept_exists`: whether the database's
    /// kept name exists on the server (asked only for a ready copy);
    /// `decided`: the run's [`RestoreState::commit_decided`];
    /// `still_prepared`: whether its prepared transaction is still on the
    /// server (asked only in [`Phase::Prepared`]).
    pub fn recovery(&self, kept_exists: bool, decided: bool, still_prepared: bool) -> Recovery {
        // A created database carries the live name: it is the copy too.
        let copy = self.new_name.clone().filter(|n| n != &self.live);
        match self.phase {
            Phase::Ready if kept_exists && self.old_name.is_some() => Recovery::SwapHadCompleted {
                kept: self.old_name.clone().expect("checked"),
            },
            Phase::Loading | Phase::Ready => Recovery::DropCopy { copy },
            Phase::Prepared => {
                let prepared = self.prepared.clone().filter(|_| still_prepared);
                if decided {
                    // Every database was prepared: each one commits (one no
                    // longer prepared had committed already).
                    Recovery::CommitPrepared {
                        prepared,
                        then: if self.old_name.is_some() {
                            Phase::Swapped
                        } else {
                            Phase::Committed
                        },
                    }
                } else {
                    // Not every database was prepared: none may commit (one no
                    // longer prepared never finished preparing).
                    Recovery::RollBackPrepared { prepared, copy }
                }
            }
            _ => Recovery::Nothing,
        }
    }

    /// Whether the run stopped while this database's copy was being loaded
    /// or swapped in, or with its transaction prepared: only then does
    /// `resume` need its server.
    pub fn interrupted(&self) -> bool {
        matches!(self.phase, Phase::Loading | Phase::Ready | Phase::Prepared)
    }

    /// Whether a `__dbsnap_` database this restore made may still be on
    /// the server: the previous database kept by a swap, the restored one
    /// kept by a rollback, or the copy an interrupted run was loading. Only
    /// then does `cleanup` need the server: a database created, restored in
    /// place, or whose failed copy was dropped left none there.
    pub fn may_have_kept_copy(&self) -> bool {
        if self.kept_dropped {
            return false;
        }
        match self.phase {
            Phase::Swapped | Phase::RolledBack => true,
            // A created database carries the live name: not a copy.
            Phase::Loading | Phase::Ready | Phase::Prepared => {
                self.new_name.as_ref().is_some_and(|n| n != &self.live)
            }
            Phase::Planned | Phase::Committed | Phase::Failed => false,
        }
    }
}

/// One database's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbRecord {
    /// Live database name.
    pub live: String,
    /// Connection to a maintenance database on its server (no password).
    pub admin_conn: String,
    /// Name of the copy being loaded (swap method).
    pub new_name: Option<String>,
    /// Name the previous live database was kept under (after a swap).
    pub old_name: Option<String>,
    /// Phase.
    pub phase: Phase,
    /// The prepared transaction of a two-phase restore (recorded before
    /// `PREPARE TRANSACTION` is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PreparedTransaction>,
    /// `cleanup --yes` dropped the copy this restore kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept_dropped: bool,
}

/// A transaction prepared for two-phase commit, and where: `COMMIT
/// PREPARED` must run in the database it was prepared in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTransaction {
    /// Its global id (`dbsnap-<run>-<n>`).
    pub gid: String,
    /// The database it was prepared in (the live one, or the maintenance
    /// database for a swap).
    pub database: String,
}

/// One restore run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreState {
    /// Run id (UTC timestamp).
    pub id: String,
    /// The snapshot file restored.
    pub file: String,
    /// How the databases were reached (`direct`); recovery must use the same route.
    #[serde(default = "direct")]
    pub route: String,
    /// When it started.
    pub started_at: String,
    /// Command that stops the app.
    pub stop_cmd: Option<String>,
    /// Command that starts it.
    pub start_cmd: Option<String>,
    /// True between a successful stop command and the start command.
    pub app_stopped: bool,
    /// Safety snapshot taken before destructive steps.
    pub safety_snapshot: Option<String>,
    /// Per database.
    pub databases: Vec<DbRecord>,
    /// True once the run ended (successfully or not) and the app was started.
    pub finished: bool,
    /// Two-phase commit: set (durably) once every database's transaction
    /// is prepared, before the first `COMMIT PREPARED`. From then on the
    /// restore commits everywhere; before, it rolls back everywhere.
    #[serde(default)]
    pub commit_decided: bool,
}

fn direct() -> String {
    "direct".into()
}

/// The state directory: `$DBSNAP_HOME/state`.
pub fn state_dir() -> PathBuf {
    crate::config::home().join("state")
}

impl RestoreState {
    /// Path of this run's file.
    pub fn path(&self) -> PathBuf {
        state_dir().join(format!("restore-{}.json", self.id))
    }

    /// The repository of the snapshot restored: where the run's scratch
    /// files were.
    pub fn repository(&self, locations: &dbsnap_storage::Locations) -> Arc<dyn Repository> {
        locations.snapshot(Path::new(&self.file)).repo
    }

    /// Writes the file durably (temporary name, fsync, rename; 0600).
    pub fn save(&self) -> Result<(), CoreError> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| CoreError::Internal(e.to_string()))?;
        Ok(dbsnap_storage::write_durably(&self.path(), &json)?)
    }

    /// Writes the file of a new run, claiming its id: the file appears
    /// complete or not at all (a hard link of a written temporary file),
    /// and never over another run's. A run started in the same second
    /// keeps its file; this one takes the next free id (`…Z-2`, `…Z-3`).
    pub fn create(&mut self) -> Result<(), CoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::write_io(&dir, e))?;
        let base = self.id.clone();
        for n in 1..=100 {
            if n > 1 {
                self.id = format!("{base}-{n}");
            }
            let json =
                serde_json::to_vec_pretty(self).map_err(|e| CoreError::Internal(e.to_string()))?;
            let tmp = dir.join(format!(".restore-{}.{}.tmp", self.id, std::process::id()));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(&json).and_then(|_| f.sync_all()));
            let linked = written.and_then(|_| std::fs::hard_link(&tmp, self.path()));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CoreError::write_io(&self.path(), e)),
            }
        }
        Err(CoreError::Internal(format!(
            "no free restore id after {base}: {} holds 100 runs started in that second",
            dir.display()
        )))
    }

    /// Reads one state file.
    pub fn load(path: &Path) -> Result<RestoreState, CoreError> {
        let bytes = std::fs::read(path).map_err(|e| CoreError::write_io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| CoreError::Config {
            message: format!("state file \"{}\" is unreadable: {e}", path.display()),
            hint:
                "inspect it by hand; delete it once the databases and the app are known to be fine"
                    .into(),
        })
    }

    /// Every recorded run, newest first.
    pub fn all() -> Result<Vec<RestoreState>, CoreError> {
        let dir = state_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CoreError::write_io(&dir, e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("restore-") && name.ends_with(".json") {
                out.push(Self::load(&e.path())?);
            }
        }
        out.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use Phase::*;
        let all = [
            Planned, Loading, Ready, Prepared, Swapped, Committed, Failed, RolledBack,
        ];
        let allowed: Vec<(Phase, Phase)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.may_become(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Planned, Loading),
                (Planned, Prepared),
                (Planned, Committed),
                (Planned, Failed),
                (Loading, Ready),
                (Loading, Committed),
                (Loading, Failed),
                (Ready, Prepared),
                (Ready, Swapped),
                (Ready, Failed),
                (Prepared, Swapped),
                (Prepared, Committed),
                (Prepared, Failed),
                (Swapped, RolledBack),
            ]
        );
    }

    fn record(phase: Phase, new: Option<&str>, old: Option<&str>) -> DbRecord {
        DbRecord {
            live: "app".into(),
            admin_conn: String::new(),
            new_name: new.map(str::to_string),
            old_name: old.map(str::to_string),
            phase,
            prepared: None,
            kept_dropped: false,
        }
    }

    #[test]
    fn which_records_need_their_server_after_the_run() {
        let copy = Some("app__dbsnap_new_1");
        // resume: only a copy being loaded or swapped in.
        for (phase, interrupted) in [
            (Phase::Planned, false),
            (Phase::Loading, true),
            (Phase::Ready, true),
            (Phase::Prepared, true),
            (Phase::Swapped, false),
            (Phase::Committed, false),
            (Phase::Failed, false),
            (Phase::RolledBack, false),
        ] {
            assert_eq!(
                record(phase, copy, None).interrupted(),
                interrupted,
                "{phase:?}"
            );
        }
        // cleanup: only where a `__dbsnap_` database may be left.
        let kept = |phase, new| record(phase, new, Some("app__dbsnap_old_1")).may_have_kept_copy();
        assert!(kept(Phase::Swapped, copy));
        assert!(kept(Phase::RolledBack, copy));
        assert!(kept(Phase::Loading, copy));
        assert!(kept(Phase::Ready, copy));
        // A created database (its copy is the database itself), one
        // restored in place, one whose copy failed and was dropped.
        assert!(!kept(Phase::Loading, Some("app")));
        assert!(!kept(Phase::Committed, Some("app")));
        assert!(!kept(Phase::Committed, None));
        assert!(!kept(Phase::Failed, copy));
        assert!(!kept(Phase::Planned, None));
    }

    #[test]
    fn recovery_after_an_interruption() {
        // Killed while loading the copy: drop it.
        let r = record(Phase::Loading, Some("app__dbsnap_new_1"), None);
        assert_eq!(
            r.recovery(false, false, false),
            Recovery::DropCopy {
                copy: Some("app__dbsnap_new_1".into())
            }
        );
        // Killed while creating a missing database: it is the copy.
        let r = record(Phase::Loading, Some("app"), None);
        assert_eq!(
            r.recovery(false, false, false),
            Recovery::DropCopy { copy: None }
        );
        // Ready, and the kept name exists: the swap had committed.
        let r = record(
            Phase::Ready,
            Some("app__dbsnap_new_1"),
            Some("app__dbsnap_old_1"),
        );
        assert_eq!(
            r.recovery(true, false, false),
            Recovery::SwapHadCompleted {
                kept: "app__dbsnap_old_1".into()
            }
        );
        // Ready, no kept database: the swap never happened.
        assert_eq!(
            r.recovery(false, false, false),
            Recovery::DropCopy {
                copy: Some("app__dbsnap_new_1".into())
            }
        );
        // Finished phases need nothing.
        for p in [
            Phase::Planned,
            Phase::Swapped,
            Phase::Committed,
            Phase::Failed,
            Phase::RolledBack,
        ] {
            assert_eq!(
                record(p, Some("x"), Some("y")).recovery(true, false, false),
                Recovery::Nothing
            );
        }
    }

    #[test]
    fn prepared_transactions_follow_the_runs_decision() {
        let prepared = PreparedTransaction {
            gid: "dbsnap-1-0".into(),
            database: "app".into(),
        };
        let mut data = record(Phase::Prepared, None, None);
        data.prepared = Some(prepared.clone());
        let mut swap = record(
            Phase::Prepared,
            Some("app__dbsnap_new_1"),
            Some("app__dbsnap_old_1"),
        );
        swap.prepared = Some(prepared.clone());
        // Decided: commit what is still prepared; a gone one had committed.
        assert_eq!(
            data.recovery(false, true, true),
            Recovery::CommitPrepared {
                prepared: Some(prepared.clone()),
                then: Phase::Committed
            }
        );
        assert_eq!(
            swap.recovery(false, true, false),
            Recovery::CommitPrepared {
                prepared: None,
                then: Phase::Swapped
            }
        );
        // Not decided: roll back, and drop a swap's copy.
        assert_eq!(
            swap.recovery(false, false, true),
            Recovery::RollBackPrepared {
                prepared: Some(prepared),
                copy: Some("app__dbsnap_new_1".into())
            }
        );
        assert_eq!(
            data.recovery(false, false, false),
            Recovery::RollBackPrepared {
                prepared: None,
                copy: None
            }
        );
    }
}
