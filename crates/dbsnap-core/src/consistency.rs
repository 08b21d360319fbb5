//! Establishing one moment across several databases (docs/guide/create.md,
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
use dbsnap_pg::ConnInfo;
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
    /// How its database is reached (the barrier opens more connections).
    pub route: &'a dyn dbsnap_pg::Resolver,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuiesceHooks {
    /// Stops the app.
    pub stop_cmd: Option<String>,
    /// Starts it again.
    pub start_cmd: Option<String>,
    /// What the commands do, in words, when dbsnap made them (`--scale`):
    /// plans say this instead of the commands.
    pub described: Option<String>,
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

/// One attempt at a cut: done, or to be retried (with why).
enum Attempt<T> {
    Done(T),
    Again(String),
}

/// How a bounded retry ended.
#[derive(Debug, PartialEq, Eq)]
enum Retried<T> {
    Done { value: T, attempts: u32 },
    GaveUp { attempts: u32, last: String },
}

/// Runs `attempt` until it is done: at least once, at most
/// `limits.max_attempts` times, and no new attempt once `elapsed()` has
/// reached `limits.max_wait`. The clock is a parameter so that the bounds
/// are tested without waiting.
async fn retry<T, F, Fut>(
    limits: &CutLimits,
    elapsed: impl Fn() -> Duration,
    mut attempt: F,
) -> Result<Retried<T>, CoreError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Attempt<T>, CoreError>>,
{
    let mut attempts = 0;
    let mut last = String::new();
    while attempts < limits.max_attempts.max(1) && (attempts == 0 || elapsed() < limits.max_wait) {
        attempts += 1;
        match attempt(attempts).await? {
            Attempt::Done(value) => return Ok(Retried::Done { value, attempts }),
            Attempt::Again(why) => last = why,
        }
        tokio::task::yield_now().await;
    }
    Ok(Retried::GaveUp { attempts, last })
}

async fn identical_snapshots(leaders: &[Leader<'_>], limits: &CutLimits) -> Result<Cut, CoreError> {
    let started = Instant::now();
    let outcome = retry(
        limits,
        || started.elapsed(),
        |attempt| async move {
            begin_all(leaders).await?;
            let snapshots = take_all(leaders).await?;
            if snapshots
                .iter()
                .all(|s| s.snapshot == snapshots[0].snapshot)
            {
                return Ok(Attempt::Done(snapshots));
            }
            let diff = snapshots
                .iter()
                .map(|s| s.snapshot.as_str())
                .collect::<Vec<_>>()
                .join(" vs ");
            tracing::debug!(attempt, snapshots = %diff, "snapshots differ; retrying");
            rollback_all(leaders.iter().map(|l| l.client)).await;
            Ok(Attempt::Again(diff))
        },
    )
    .await?;
    match outcome {
        Retried::Done { value: snapshots, attempts } => {
            tracing::info!(attempts, snapshot = %snapshots[0].snapshot, "identical snapshots in every database");
            Ok(Cut {
                consistency: Consistency {
                    method: ConsistencyMethod::Snapshot,
                    consistent_cut: true,
                    attempts,
                    snapshot: Some(snapshots[0].snapshot.clone()),
                },
                snapshots,
                start_failure: None,
            })
        }
        Retried::GaveUp { attempts, last } => Err(CoreError::Consistency {
            message: format!(
                "could not take identical snapshots in {attempts} attempts over {:.1}s (the databases are too busy; last: {last})",
                started.elapsed().as_secs_f64()
            ),
            hint: "use --consistency barrier (writers wait a few milliseconds) or --consistency quiesce (stop the app)".into(),
        }),
    }
}

async fn barrier(leaders: &[Leader<'_>], limits: &CutLimits) -> Result<Cut, CoreError> {
    // Separate connections hold the locks: leaders are READ ONLY and must
    // not keep writers blocked for the whole dump.
    let mut lockers = Vec::new();
    for l in leaders {
        let c = l.route.connect(l.info).await?;
        let tables = snapshot::barrier_tables(&c, &l.display).await?;
        lockers.push((c, tables, l.display.clone()));
    }
    let lockers = &lockers;
    let started = Instant::now();
    let outcome = retry(
        limits,
        || started.elapsed(),
        |attempt| async move {
            let results = join_all(
                lockers
                    .iter()
                    .map(|(c, t, d)| snapshot::lock_tables(c, t, limits.lock_timeout, d)),
            )
            .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                rollback_all(lockers.iter().map(|(c, _, _)| c)).await;
                if e.is(&dbsnap_pg::error::SqlState::LOCK_NOT_AVAILABLE) {
                    tracing::info!(attempt, "write barrier: lock wait timed out; retrying");
                    return Ok(Attempt::Again(e.to_string()));
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
            tracing::info!(
                attempt,
                "write barrier held while snapshots were taken ({:.0} ms in all)",
                held.as_secs_f64() * 1000.0
            );
            Ok(Attempt::Done(taken?))
        },
    )
    .await?;
    match outcome {
        Retried::Done {
            value: snapshots,
            attempts,
        } => Ok(Cut {
            consistency: Consistency {
                method: ConsistencyMethod::Barrier,
                consistent_cut: true,
                attempts,
                snapshot: None,
            },
            snapshots,
            start_failure: None,
        }),
        Retried::GaveUp { attempts, last } => Err(CoreError::Consistency {
            message: format!("could not take the write barrier in {attempts} attempts: {last}"),
            hint:
                "long transactions hold conflicting locks; retry later or use --consistency quiesce"
                    .into(),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn limits(max_attempts: u32, max_wait_ms: u64) -> CutLimits {
        CutLimits {
            max_attempts,
            max_wait: Duration::from_millis(max_wait_ms),
            lock_timeout: Duration::from_secs(1),
        }
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn retries_until_an_attempt_succeeds() {
        let r = run(retry(
            &limits(10, 1000),
            || Duration::ZERO,
            |n| async move {
                Ok(if n == 3 {
                    Attempt::Done("cut")
                } else {
                    Attempt::Again(format!("differ {n}"))
                })
            },
        ))
        .unwrap();
        assert_eq!(
            r,
            Retried::Done {
                value: "cut",
                attempts: 3
            }
        );
    }

    #[test]
    fn gives_up_after_max_attempts_with_the_last_reason() {
        let r = run(retry(
            &limits(4, 1000),
            || Duration::ZERO,
            |n| async move { Ok(Attempt::<()>::Again(format!("differ {n}"))) },
        ))
        .unwrap();
        assert_eq!(
            r,
            Retried::GaveUp {
                attempts: 4,
                last: "differ 4".into()
            }
        );
    }

    #[test]
    fn stops_when_time_is_up_but_always_tries_once() {
        // Every attempt "takes" 40 ms on the fake clock; 100 ms allow 3 starts.
        let clock = Cell::new(Duration::ZERO);
        let r = run(retry(
            &limits(100, 100),
            || clock.get(),
            |_| {
                clock.set(clock.get() + Duration::from_millis(40));
                async { Ok(Attempt::<()>::Again("busy".into())) }
            },
        ))
        .unwrap();
        assert_eq!(
            r,
            Retried::GaveUp {
                attempts: 3,
                last: "busy".into()
            }
        );
        // No time at all still makes one attempt; zero attempts means one.
        let r = run(retry(
            &limits(0, 0),
            || Duration::from_secs(9),
            |n| async move { Ok(Attempt::Again(n.to_string())) },
        ))
        .unwrap();
        assert_eq!(
            r,
            Retried::<()>::GaveUp {
                attempts: 1,
                last: "1".into()
            }
        );
    }

    #[test]
    fn an_error_ends_the_retries_at_once() {
        let calls = Cell::new(0);
        let r = run(retry(
            &limits(10, 1000),
            || Duration::ZERO,
            |_| {
                calls.set(calls.get() + 1);
                async { Err::<Attempt<()>, _>(CoreError::Internal("server gone".into())) }
            },
        ));
        assert!(matches!(r, Err(CoreError::Internal(_))));
        assert_eq!(calls.get(), 1);
    }
}
