//! Two-phase commit of a restore of several databases: every database's
//! transaction (its data-only load, its in-place replacement, or its swap)
//! is prepared first, each one's id journaled before it is sent; once all
//! are prepared the journal records the decision, durably, and only then
//! does any `COMMIT PREPARED` run. A run stopped before the decision rolls
//! every prepared transaction back; one stopped after commits every one.
//! Whoever finishes a run (the run itself, `resume`) does so through
//! [`settle`], with the journal's decision, never another way.

use dbsnap_pg::twophase;
use tokio_postgres::Client;

use super::state::{DbRecord, Phase, PreparedTransaction, Recovery, RestoreState};
use super::{Plan, RestoreOptions};
use crate::error::CoreError;

/// The prepared transaction id of database `index` in run `run`.
pub(crate) fn gid(run: &str, index: usize) -> String {
    format!("dbsnap-{run}-{index}")
}

/// The record of a transaction about to be prepared in `database`.
pub(crate) fn record(run: &str, index: usize, database: &str) -> PreparedTransaction {
    PreparedTransaction {
        gid: gid(run, index),
        database: database.to_string(),
    }
}

/// What settling a prepared database did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Committed (or found committed): the database is in this phase now.
    Committed(Phase),
    /// Rolled back (or found never prepared): the live database is as it
    /// was; a swap's copy is left for the caller to drop.
    RolledBack {
        /// The swap's copy.
        copy: Option<String>,
    },
}

/// Finishes database `db`'s prepared transaction by the run's decision;
/// `client` is connected to the database it was prepared in. Does not
/// change `db`: the caller journals the outcome.
pub(crate) async fn settle(
    client: &Client,
    db: &DbRecord,
    decided: bool,
    target: &str,
) -> Result<Settled, CoreError> {
    let Some(p) = &db.prepared else {
        return Err(CoreError::Internal(format!(
            "journal: {} is prepared without a transaction id",
            db.live
        )));
    };
    let still = twophase::is_prepared(client, &p.gid, target).await?;
    match db.recovery(false, decided, still) {
        Recovery::CommitPrepared { prepared, then } => {
            if let Some(p) = prepared {
                twophase::commit(client, &p.gid, target).await?;
            }
            Ok(Settled::Committed(then))
        }
        Recovery::RollBackPrepared { prepared, copy } => {
            if let Some(p) = prepared {
                twophase::rollback(client, &p.gid, target).await?;
            }
            Ok(Settled::RolledBack { copy })
        }
        other => Err(CoreError::Internal(format!(
            "journal: {} is prepared but its recovery is {other:?}",
            db.live
        ))),
    }
}

/// Finishes every prepared transaction of the run by its decision (commit
/// once decided, else roll back), journaling each outcome; a swap rolled
/// back goes back to ready, for its copy to be dropped. One that cannot be
/// reached is a warning and stays prepared, for `resume`.
pub(super) async fn settle_all(plan: &Plan, opts: &RestoreOptions, journal: &mut RestoreState) {
    for i in 0..plan.databases.len() {
        let record = journal.databases[i].clone();
        if record.phase != Phase::Prepared {
            continue;
        }
        let d = &plan.databases[i];
        let database = record.prepared.as_ref().map(|p| p.database.clone());
        let info = d
            .info
            .with_dbname(database.as_deref().unwrap_or(&d.live_db));
        let settled = async {
            let client = opts.resolver.connect(&info).await?;
            settle(&client, &record, journal.commit_decided, &d.server).await
        };
        let db = &mut journal.databases[i];
        match settled.await {
            Ok(Settled::Committed(then)) => db.phase = then,
            Ok(Settled::RolledBack { copy: Some(_) }) => db.phase = Phase::Ready,
            Ok(Settled::RolledBack { copy: None }) => db.phase = Phase::Failed,
            Err(e) => tracing::warn!(
                "{}: could not finish its prepared transaction: {e}; `dbsnap resume` finishes it",
                d.live_db
            ),
        }
        let _ = journal.save();
    }
}

/// Completes a failed run's error with what it left: an interruption says
/// whether `resume` has work to do; a safety snapshot taken first is named.
pub(super) fn explain_failure(e: CoreError, journal: &RestoreState) -> CoreError {
    if let Some(s) = &journal.safety_snapshot {
        tracing::warn!("the safety snapshot taken before the failure is kept: {s}");
    }
    let changed = journal
        .databases
        .iter()
        .filter(|d| matches!(d.phase, Phase::Committed | Phase::Swapped))
        .map(|d| d.live.as_str())
        .collect::<Vec<_>>();
    let CoreError::Interrupted(how) = e else {
        // Copies swap in last, so only databases committed one after the
        // other (no two-phase commit) can leave some restored.
        if changed.is_empty() && !journal.commit_decided {
            return e;
        }
        let prepared: Vec<&str> = journal
            .databases
            .iter()
            .filter(|d| d.phase == Phase::Prepared)
            .map(|d| d.live.as_str())
            .collect();
        let note = if journal.commit_decided {
            format!(
                "the restore had decided to commit: {} are restored; {} could not be committed yet\nhint: run `dbsnap resume` to commit {} (their changes are prepared and hold their locks until then)",
                changed.join(", "),
                prepared.join(", "),
                if prepared.len() == 1 { "it" } else { "them" }
            )
        } else {
            format!(
                "{} had been committed before the failure and stay restored{}\nhint: {}`dbsnap rollback` swaps a replaced database back",
                changed.join(", "),
                journal
                    .safety_snapshot
                    .as_ref()
                    .map(|s| format!("; the safety snapshot {s} holds them as they were before"))
                    .unwrap_or_default(),
                if journal.safety_snapshot.is_some() {
                    "restore the safety snapshot (with --only for those databases) to undo them; "
                } else {
                    ""
                }
            )
        };
        return CoreError::Left {
            error: Box::new(e),
            note,
        };
    };
    let left = if !journal.finished {
        "; a half-restored copy is left: run `dbsnap resume` to remove it".to_string()
    } else if !changed.is_empty() {
        format!(
            "; {} had been restored before and stay restored (`dbsnap rollback` swaps a replaced one back)",
            changed.join(", ")
        )
    } else {
        "; nothing was changed".to_string()
    };
    CoreError::Interrupted(format!("{how}{left}"))
}
