//! Establishing one moment across several databases (README,
//! "Consistency").
//!
//! Every method ends with one open REPEATABLE READ transaction per database
//! (the leader) whose snapshot was exported for pg_dump. The methods differ
//! in how they make those snapshots agree:
//!
//! - `snapshot`: take them at nearly the same instant and accept only when
//!   every `pg_current_snapshot()` is identical (transaction ids are
//!   instance-wide, so identical snapshots see the same committed set).
//! - `barrier`: hold SHARE locks on every table of every database (writers
//!   wait, briefly) while the snapshots are taken.
//! - `quiesce`: stop the application with a hook, take them, start it again
//!   (always, also on failure or a signal).
//! - `none`: per-database consistency only, like pg_dump.

use std::time::{Duration, Instant};

use dbsnap_archive::snapshot::{Consistency, ConsistencyMethod};
use dbsnap_pg::snapshot::{self, TakenSnapshot};
use dbsnap_pg::{ConnInfo, PgError};
use futures::future::join_all;
use tokio_postgres::Client;

use crate::error::CoreError;
use crate::hooks;

/// One database's leader connection.
pub struct Leader<'a> {
    /// Printable name (`user@host:port/db`).
    pub display: String,
    /// Connection settings.
    pub info: &'a ConnInfo,
    /// The open connection.
    pub client: &'a Client,
    /// `server_version_num`.
    pub version_num: u32,
}

/// Limits for the consistency methods.
#[derive(Debug, Clone)]
pub struct CutLimits {
    /// Most attempts for `snapshot` and `barrier`.
    pub max_attempts: u32,
    /// Most time spent on attempts.
    pub max_wait: Duration,
    /// `lock_timeout` of each barrier attempt.
    pub lock_timeout: Duration,
}

impl Default for CutLimits {
    fn default() -> Self {
        CutLimits {
            max_attempts: 200,
            max_wait: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(2),
        }
    }
}

/// Hook commands for `quiesce`.
#[derive(Debug, Clone, Default)]
pub struct QuiesceHooks {
    /// Stops the app.
    pub stop_cmd: Option<String>,
    /// Starts it again.
    pub start_cmd: Option<String>,
}

/// The established cut.
pub struct Cut {
    /// What the manifest records.
    pub consistency: Consistency,
    /// Per leader, in order.
    pub snapshots: Vec<TakenSnapshot>,
    /// A start hook failed after the cut (the snapshot is still good).
    pub start_failure: Option<String>,
}

async fn begin_all(leaders: &[Leader<'_>]) -> Result<(), CoreError> {
    for r in join_all(
        leaders
            .iter()
            .map(|l| snapshot::begin(l.client, &l.display)),
    )
    .await
    {
        r?;
    }
    Ok(())
}

async fn take_all(leaders: &[Leader<'_>]) -> Result<Vec<TakenSnapshot>, CoreError> {
    let results = join_all(
        leaders
            .iter()
            .map(|l| snapshot::take_snapshot(l.client, l.version_num, &l.display)),
    )
    .await;
    results
        .into_iter()
        .map(|r| r.map_err(CoreError::from))
        .collect()
}

async fn rollback_all(clients: impl Iterator<Item = &Client>) {
    join_all(clients.map(snapshot::rollback)).await;
}

/// Opens the leader transactions per `method`.
pub async fn establish(
    method: ConsistencyMethod,
    leaders: &[Leader<'_>],
    limits: &CutLimits,
    hooks: &QuiesceHooks,
) -> Result<Cut, CoreError> {
    match method {
        ConsistencyMethod::Snapshot => identical_snapshots(leaders, limits).await,
        ConsistencyMethod::Barrier => barrier(leaders, limits).await,
        ConsistencyMethod::Quiesce => quiesce(leaders, hooks).await,
        ConsistencyMethod::None => {
            begin_all(leaders).await?;
            let snapshots = take_all(leaders).await?;
            Ok(Cut {
                consistency: Consistency {
                    method,
                    consistent_cut: false,
                    attempts: 1,
                    snapshot: None,
                },
                snapshots,
                start_failure: None,
            })
        }
    }
}

async fn identical_snapshots(leaders: &[Leader<'_>], limits: &CutLimits) -> Result<Cut, CoreError> {
    let started = Instant::now();
    let mut attempts = 0;
    let mut last_diff = String::new();
    while attempts < limits.max_attempts.max(1)
        && (attempts == 0 || started.elapsed() < limits.max_wait)
    {
        attempts += 1;
        begin_all(leaders).await?;
        let snapshots = take_all(leaders).await?;
        if snapshots
            .iter()
            .all(|s| s.snapshot == snapshots[0].snapshot)
        {
            tracing::info!(attempts, snapshot = %snapshots[0].snapshot, "identical snapshots in every database");
            return Ok(Cut {
                consistency: Consistency {
                    method: ConsistencyMethod::Snapshot,
                    consistent_cut: true,
                    attempts,
                    snapshot: Some(snapshots[0].snapshot.clone()),
                },
                snapshots,
                start_failure: None,
            });
        }
        last_diff = snapshots
            .iter()
            .map(|s| s.snapshot.as_str())
            .collect::<Vec<_>>()
            .join(" vs ");
        tracing::debug!(attempts, snapshots = %last_diff, "snapshots differ; retrying");
        rollback_all(leaders.iter().map(|l| l.client)).await;
        tokio::task::yield_now().await;
    }
    Err(CoreError::Consistency {
        message: format!(
            "could not take identical snapshots in {attempts} attempts over {:.1}s (the databases are too busy; last: {last_diff})",
            started.elapsed().as_secs_f64()
        ),
        hint: "use --consistency barrier (writers wait a few milliseconds) or --consistency quiesce (stop the app)".into(),
    })
}

async fn barrier(leaders: &[Leader<'_>], limits: &CutLimits) -> Result<Cut, CoreError> {
    // Separate connections hold the locks: leaders are READ ONLY and must
    // not keep writers blocked for the whole dump.
    let mut lockers = Vec::new();
    for l in leaders {
        let c = dbsnap_pg::connect(l.info).await?;
        let tables = snapshot::barrier_tables(&c, &l.display).await?;
        lockers.push((c, tables, l.display.clone()));
    }
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let results = join_all(
            lockers
                .iter()
                .map(|(c, t, d)| snapshot::lock_tables(c, t, limits.lock_timeout, d)),
        )
        .await;
        let failure: Option<PgError> = results.into_iter().find_map(Result::err);
        if let Some(e) = failure {
            rollback_all(lockers.iter().map(|(c, _, _)| c)).await;
            let timed_out = e.is(&dbsnap_pg::error::SqlState::LOCK_NOT_AVAILABLE);
            if timed_out && attempts < limits.max_attempts && started.elapsed() < limits.max_wait {
                tracing::info!(attempts, "write barrier: lock wait timed out; retrying");
                continue;
            }
            if timed_out {
                return Err(CoreError::Consistency {
                    message: format!("could not take the write barrier in {attempts} attempts: {e}"),
                    hint: "long transactions hold conflicting locks; retry later or use --consistency quiesce".into(),
                });
            }
            return Err(e.into());
        }
        let taken = async {
            begin_all(leaders).await?;
            take_all(leaders).await
        }
        .await;
        let held = started.elapsed();
        rollback_all(lockers.iter().map(|(c, _, _)| c)).await;
        let snapshots = taken?;
        tracing::info!(
            attempts,
            "write barrier held while snapshots were taken ({:.0} ms in all)",
            held.as_secs_f64() * 1000.0
        );
        return Ok(Cut {
            consistency: Consistency {
                method: ConsistencyMethod::Barrier,
                consistent_cut: true,
                attempts,
                snapshot: None,
            },
            snapshots,
            start_failure: None,
        });
    }
}

async fn quiesce(leaders: &[Leader<'_>], hooks: &QuiesceHooks) -> Result<Cut, CoreError> {
    let Some(stop) = hooks.stop_cmd.as_deref() else {
        return Err(CoreError::Config {
            message: "--consistency quiesce needs a command that stops the application".into(),
            hint: "pass --stop-cmd and --start-cmd (or stop_cmd/start_cmd in dbsnap.toml)".into(),
        });
    };
    // Armed before the stop command: a half-run stop still gets its start.
    // Signals are handled by the caller, which drops this future; the
    // guard's drop then runs the start command (a second listener here
    // could race the caller's and leave the start half-run).
    let mut guard = hooks::StartGuard::new(hooks.start_cmd.as_deref());
    let outcome = async {
        hooks::run("stop", stop).await?;
        begin_all(leaders).await?;
        take_all(leaders).await
    }
    .await;
    let start_failure = match guard.disarm() {
        Some(start) => hooks::run("start", &start)
            .await
            .err()
            .map(|e| e.to_string()),
        None => {
            if hooks.start_cmd.is_none() {
                tracing::warn!("no --start-cmd given: the application stays stopped");
            }
            None
        }
    };
    let snapshots = match outcome {
        Ok(s) => s,
        Err(e) => {
            rollback_all(leaders.iter().map(|l| l.client)).await;
            return Err(match start_failure {
                Some(f) => CoreError::Hook(format!("{e}\nalso: {f}")),
                None => e,
            });
        }
    };
    Ok(Cut {
        consistency: Consistency {
            method: ConsistencyMethod::Quiesce,
            consistent_cut: true,
            attempts: 1,
            snapshot: None,
        },
        snapshots,
        start_failure,
    })
}
