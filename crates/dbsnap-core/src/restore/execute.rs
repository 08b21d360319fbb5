//! Carrying a plan out: stop the app (always started again), load every
//! new copy (swap, `--create`) at once while the safety snapshot is taken,
//! restore the data-only databases (together, each in its own transaction,
//! committed once all are loaded and checked) and the in-place ones (one
//! transaction each), swap the copies in last; journal every step for
//! `resume` and `rollback`.
//!
//! Never destroys live data before its replacement is complete and checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use dbsnap_archive::snapshot::ConsistencyMethod;
use dbsnap_pg::tools::{self, Program};

use dbsnap_storage::SnapshotRef;

use super::checks::{archive_row_counts, checks_sql, compare_row_counts, run_checks};
use super::state::{DbRecord, Phase, RestoreState};
use super::{
    blocking, data_only, pg_err, replace, Action, DbPlan, DbResult, Meter, Plan, RestoreOptions,
    RestoreResult,
};
use super::{commit, load, Commit, LoadEngine};
use crate::consistency::QuiesceHooks;
use crate::create::{self, CreateOptions, Progress};
use crate::error::CoreError;
use crate::hooks;

/// Carries out a plan. The app is stopped first and always started again;
/// each step is journaled for `resume` and `rollback`.
pub async fn execute(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<RestoreResult, CoreError> {
    let started = std::time::Instant::now();
    if plan.origin.refuses() && !opts.into_other_origin {
        return Err(plan.origin.refusal());
    }
    // Scratch files of restores killed with -9 hold the application's data.
    super::recover::leftovers(&*opts.file.repo, true);
    let now = time::OffsetDateTime::now_utc();
    let id = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let mut journal = new_journal(plan, opts.resolver.route(), &id, now);
    journal.create()?;
    let id = journal.id.clone();

    // Stop the app; the guard starts it again whatever happens (also if this future is dropped).
    let mut guard = hooks::StartGuard::new(None);
    if plan.stop_cmd.is_some() {
        guard = hooks::StartGuard::new(plan.start_cmd.as_deref());
        journal.app_stopped = true;
        journal.save()?;
    }
    // One listener for signals, around the stop command and every step.
    let outcome = tokio::select! {
        r = async {
            if let Some(stop) = &plan.stop_cmd {
                progress.phase("stopping the application");
                hooks::run("stop", stop).await?;
            }
            run_steps(plan, opts, progress, &mut journal).await
        } => r,
        s = hooks::termination_signal() => {
            // Nothing dbsnap started may keep a lock on the live databases.
            hooks::stop_everything().await;
            Err(CoreError::Interrupted(format!(" by {s}")))
        }
    };
    if outcome.is_err() {
        // Interrupted or failed with transactions prepared: finish them by
        // the run's decision now, so no lock outlives the run (what cannot
        // be reached is left for `resume`).
        commit::settle_all(plan, opts, &mut journal).await;
    }
    let start_failure = match guard.disarm() {
        Some(start) => {
            progress.phase("starting the application");
            hooks::run("start", &start)
                .await
                .err()
                .map(|e| e.to_string())
        }
        None => None,
    };
    journal.app_stopped = false;
    // A half-loaded copy (interrupted) is left for `resume` to remove.
    journal.finished = !journal.databases.iter().any(|d| d.interrupted());
    let _ = journal.save();
    let outcome = outcome.map_err(|e| commit::explain_failure(e, &journal));
    let (databases, safety, sessions) = outcome?;
    let removed = match &safety {
        Some(taken) => prune_safety_snapshots(taken, opts.keep_safety_snapshots),
        None => Vec::new(),
    };
    Ok(RestoreResult {
        id,
        file: plan.file.clone(),
        safety_snapshot: safety,
        databases,
        sessions_terminated: sessions,
        start_hook_failure: start_failure,
        removed_safety_snapshots: removed,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Removes the safety snapshots beyond the newest `keep` beside the one
/// just `taken`. The restore stands whatever happens here: a failure is
/// only logged.
fn prune_safety_snapshots(taken: &SnapshotRef, keep: usize) -> Vec<crate::retention::Removed> {
    crate::retention::prune_safety_snapshots(&taken.repo, keep, Some(&taken.name), false)
        .unwrap_or_else(|e| {
            tracing::warn!("could not remove old safety snapshots: {e}");
            Vec::new()
        })
}

/// The journal of a new run: every database planned, nothing done yet.
fn new_journal(plan: &Plan, route: &str, id: &str, now: time::OffsetDateTime) -> RestoreState {
    RestoreState {
        id: id.to_string(),
        file: plan.file.display(),
        route: route.to_string(),
        started_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        stop_cmd: plan.stop_cmd.clone(),
        start_cmd: plan.start_cmd.clone(),
        app_stopped: false,
        safety_snapshot: None,
        databases: plan
            .databases
            .iter()
            .map(|d| DbRecord {
                live: d.live_db.clone(),
                admin_conn: d
                    .info
                    .with_dbname("postgres")
                    .to_libpq_string_without_password(),
                new_name: None,
                old_name: None,
                phase: Phase::Planned,
                prepared: None,
                kept_dropped: false,
            })
            .collect(),
        finished: false,
        commit_decided: false,
    }
}

type Steps = (Vec<DbResult>, Option<SnapshotRef>, u64);

/// The steps, in the order that keeps every live database as it was until
/// everything that can fail has succeeded: missing roles; new copies (swap,
/// `--create`) loaded all at once under one `--jobs` budget while the
/// safety snapshot is taken (neither touches a live database); data-only
/// databases, committed together; in-place replacements; last, the copies
/// swapped in (created ones kept). A failure before the swaps drops every
/// copy.
async fn run_steps(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
    journal: &mut RestoreState,
) -> Result<Steps, CoreError> {
    for (info, roles) in &plan.role_servers {
        let (admin, _) = replace::admin_client(opts.resolver.as_ref(), info).await?;
        replace::create_roles(&admin, roles, &info.display()).await?;
    }
    let mut run = Run {
        plan,
        opts,
        progress,
        journal,
        restores: tools::find_all("pg_restore", &opts.pg_bin),
        sessions: 0,
        undropped: Default::default(),
    };
    let copies: Vec<usize> = plan
        .databases
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d.action, Action::SwapRestore | Action::Create))
        .map(|(i, _)| i)
        .collect();
    for &i in &copies {
        let d = &plan.databases[i];
        let name = match d.action {
            Action::Create => d.live_db.clone(),
            _ => replace::copy_name(&d.live_db, "new", &run.journal.id),
        };
        run.journal.databases[i].new_name = Some(name);
        run.journal(i, Phase::Loading)?;
    }
    let (safety, mut loaded, failure) = run.safety_and_copies(&copies).await;
    if let Some(file) = &safety {
        run.journal.safety_snapshot = Some(file.display());
        run.journal.save()?;
    }
    if let Some(e) = failure {
        // A copy that failed was dropped by its load (or never created);
        // one that could not be dropped stays loading, for `resume`.
        let undropped = run.undropped.lock().map(|u| u.clone()).unwrap_or_default();
        let loaded_ones = indices(&loaded);
        for &i in copies
            .iter()
            .filter(|i| !loaded_ones.contains(i) && !undropped.contains(i))
        {
            run.journal(i, Phase::Failed)?;
        }
        return Err(run.drop_copies(&loaded_ones, e).await);
    }
    let two_phase = run.two_phase();
    let rest = async {
        let mut data_only = load_data_only(plan, opts, progress, run.journal, two_phase).await?;
        let mut results = Vec::new();
        for (i, d) in plan.databases.iter().enumerate() {
            let mut result = DbResult::new(d);
            match d.action {
                Action::DataOnly => {
                    // Each database's own load (they commit together).
                    let (report, seconds) = data_only.remove(&i).unzip();
                    result.row_counts = report.as_ref().map_or(0, |r| r.tables.len());
                    result.rows = report
                        .as_ref()
                        .map_or(0, |r| r.tables.iter().map(|t| t.restored_rows).sum());
                    result.data_only = report;
                    result.seconds = seconds.unwrap_or_default();
                }
                Action::ReplaceInPlace => {
                    let t0 = std::time::Instant::now();
                    run.in_place(i, d, &mut result).await?;
                    result.seconds = t0.elapsed().as_secs_f64();
                }
                Action::SwapRestore | Action::Create => continue,
            }
            results.push((i, result));
        }
        Ok::<_, CoreError>(results)
    };
    let mut results = match rest.await {
        Ok(results) => results,
        Err(e) if two_phase => return Err(run.abandon(e).await),
        Err(e) => return Err(run.drop_copies(&indices(&loaded), e).await),
    };
    // Every copy is loaded and checked, every other database restored (or,
    // two-phase, prepared): swap.
    while !loaded.is_empty() {
        let (i, mut result) = loaded.remove(0);
        if let Err(e) = run.swap_in(i, &mut result).await {
            if two_phase {
                return Err(run.abandon(e).await);
            }
            return Err(run.drop_copies(&indices(&loaded), e).await);
        }
        results.push((i, result));
    }
    if two_phase {
        run.commit_all().await?;
    }
    results.sort_by_key(|(i, _)| *i);
    let results = results.into_iter().map(|(_, r)| r).collect();
    Ok((results, safety, run.sessions))
}

/// A safety snapshot of every existing database that will change.
async fn safety_snapshot(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
    run_id: &str,
) -> Result<Option<SnapshotRef>, CoreError> {
    let existing: Vec<&DbPlan> = plan.databases.iter().filter(|d| d.exists).collect();
    if !plan.safety_snapshot || existing.is_empty() {
        return Ok(None);
    }
    progress.phase("taking a safety snapshot of the live databases");
    let same_instance = existing
        .iter()
        .all(|d| d.info.hosts == existing[0].info.hosts && d.info.ports == existing[0].info.ports);
    let created = create::create(
        &CreateOptions {
            databases: Vec::new(),
            resolver: opts.resolver.clone(),
            resolved: existing.iter().map(|d| d.info.clone()).collect(),
            // The live databases' own origin: the restore's, else the
            // snapshot's when it is the same.
            target: opts.restore_target.clone().or_else(|| {
                plan.origin
                    .differences
                    .is_empty()
                    .then(|| plan.metadata.target.clone())
                    .flatten()
            }),
            kubernetes: opts.kubernetes.clone().or_else(|| {
                plan.origin
                    .differences
                    .is_empty()
                    .then(|| plan.metadata.kubernetes.clone())
                    .flatten()
            }),
            prefix: "safety".into(),
            safety_for: Some(run_id.to_string()),
            consistency: if same_instance {
                ConsistencyMethod::Snapshot
            } else {
                ConsistencyMethod::None
            },
            repo: opts.safety_repo.clone(),
            pg_bin: opts.pg_bin.clone(),
            hooks: QuiesceHooks::default(),
            compress: None,
            jobs: None,
            engine: Default::default(),
            version_spec: opts.version_spec.clone(),
            version_specs: opts.version_specs.clone(),
            limits: Default::default(),
            extra_members: Vec::new(),
            crypto: plan.safety_crypto.clone(),
        },
        progress,
    )
    .await?;
    tracing::info!("safety snapshot: {}", created.file);
    Ok(Some(created.file))
}

/// The copies loaded, in plan order, each with its result so far.
type Loaded = Vec<(usize, DbResult)>;

fn indices(loaded: &Loaded) -> Vec<usize> {
    loaded.iter().map(|(i, _)| *i).collect()
}

impl DbResult {
    fn new(d: &DbPlan) -> DbResult {
        DbResult {
            database: d.live_db.clone(),
            action: d.action,
            kept_as: None,
            data_only: None,
            ignored: vec![],
            row_counts: 0,
            rows: 0,
            seconds: 0.0,
        }
    }
}

/// State shared by the replacing steps of one run.
struct Run<'a> {
    plan: &'a Plan,
    opts: &'a RestoreOptions,
    progress: &'a Arc<dyn Progress>,
    journal: &'a mut RestoreState,
    restores: Vec<Program>,
    sessions: u64,
    /// Copies whose load failed and whose drop failed too: left loading in
    /// the journal, for `resume` to drop.
    undropped: std::sync::Mutex<Vec<usize>>,
}

impl Run<'_> {
    fn two_phase(&self) -> bool {
        self.plan.commit == Commit::TwoPhase
    }

    /// Two-phase: records that database `i`'s transaction is about to be
    /// prepared in `database` (before it is); returns its id.
    fn will_prepare(&mut self, i: usize, database: &str) -> Result<Option<String>, CoreError> {
        if !self.two_phase() {
            return Ok(None);
        }
        let p = commit::record(&self.journal.id, i, database);
        let gid = p.gid.clone();
        self.journal.databases[i].prepared = Some(p);
        self.journal(i, Phase::Prepared)?;
        Ok(Some(gid))
    }

    /// Two-phase: every database is prepared; decides (durably) to commit,
    /// then commits each. A failure after the decision is left for
    /// `resume`, which commits the rest.
    async fn commit_all(&mut self) -> Result<(), CoreError> {
        crate::failpoint("restore-prepared");
        self.journal.commit_decided = true;
        if let Err(e) = self.journal.save() {
            self.journal.commit_decided = false;
            return Err(self.abandon(e).await);
        }
        crate::failpoint("restore-decided");
        self.progress.phase("committing every database");
        for i in 0..self.plan.databases.len() {
            let d = &self.plan.databases[i];
            match self.journal.databases[i].phase {
                Phase::Prepared => {
                    let record = self.journal.databases[i].clone();
                    let database = record.prepared.as_ref().map(|p| p.database.clone());
                    let info = d
                        .info
                        .with_dbname(database.as_deref().unwrap_or(&d.live_db));
                    let client = self.opts.resolver.connect(&info).await?;
                    match commit::settle(&client, &record, true, &d.server).await? {
                        commit::Settled::Committed(then) => self.journal(i, then)?,
                        commit::Settled::RolledBack { .. } => {
                            return Err(CoreError::Internal("a decided commit rolled back".into()))
                        }
                    }
                }
                // A created database was complete once loaded.
                Phase::Loading if d.action == Action::Create => {
                    self.journal(i, Phase::Committed)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Two-phase, before the decision: rolls back every prepared
    /// transaction and drops every copy (created databases too), so no
    /// database changed; returns `e`, the run's error. What cannot be
    /// reached stays in the journal for `resume`.
    async fn abandon(&mut self, e: CoreError) -> CoreError {
        commit::settle_all(self.plan, self.opts, self.journal).await;
        let copies: Vec<usize> = (0..self.plan.databases.len())
            .filter(|&i| {
                let db = &self.journal.databases[i];
                matches!(db.phase, Phase::Loading | Phase::Ready) && db.new_name.is_some()
            })
            .collect();
        self.drop_copies(&copies, e).await
    }

    fn flags(&self, jobs: u32) -> replace::RestoreFlags {
        replace::RestoreFlags {
            no_owner: self.opts.no_owner,
            no_privileges: self.opts.no_privileges,
            jobs,
            lock_timeout: self.opts.lock_timeout,
        }
    }

    fn journal(&mut self, i: usize, phase: Phase) -> Result<(), CoreError> {
        let db = &mut self.journal.databases[i];
        if !db.phase.may_become(phase) {
            return Err(CoreError::Internal(format!(
                "journal: {} cannot go from {:?} to {phase:?}",
                db.live, db.phase
            )));
        }
        db.phase = phase;
        self.journal.save()
    }

    fn ended_sessions(&mut self, n: u64, d: &DbPlan, before: &str) {
        if n > 0 {
            tracing::warn!(
                "{}: ended {n} other session(s) on {} {before}",
                d.server,
                d.live_db
            );
        }
        self.sessions += n;
    }

    /// Replaces the database's objects inside one transaction (no CREATEDB).
    async fn in_place(
        &mut self,
        i: usize,
        d: &DbPlan,
        result: &mut DbResult,
    ) -> Result<(), CoreError> {
        self.progress
            .phase(&format!("replacing {} in place", d.live_db));
        let target = &d.server;
        let (admin, _) = replace::admin_client(self.opts.resolver.as_ref(), &d.info).await?;
        let server_major = dbsnap_pg::server_info(&admin, target).await?.major();
        let program =
            replace::pick_program("pg_restore", &self.restores, d.pg_dump_major, server_major)?;
        let n = replace::terminate_sessions(&admin, &d.live_db, target).await?;
        self.ended_sessions(n, d, "before replacing it");
        let (file, member, info) = (self.plan.file.clone(), d.member.clone(), d.info.clone());
        let crypto = self.opts.crypto.clone();
        let counts = {
            let (file, member, crypto) = (file.clone(), member.clone(), crypto.clone());
            blocking(move || archive_row_counts(&file, &member, &crypto)).await?
        };
        let epilogue = checks_sql(&counts, &self.opts.checks);
        let gid = self.will_prepare(i, &d.live_db)?;
        let (flags, psql) = (self.flags(1), replace::psql_beside(&program));
        let meter = Meter::new(self.progress, i, &d.live_db);
        let route = self.opts.resolver.clone();
        let out = blocking(move || {
            let source = replace::MemberRef {
                file: &file,
                member: &member,
                crypto: &crypto,
            };
            replace::replace_in_place(
                &program,
                &psql,
                source,
                &info,
                &*route,
                flags,
                &epilogue,
                gid.as_deref(),
                meter,
            )
        })
        .await?;
        result.ignored = out.ignored;
        result.row_counts = counts.len();
        if self.two_phase() {
            return Ok(());
        }
        self.journal(i, Phase::Committed)
    }

    /// The safety snapshot and every new copy, at the same time; a failure
    /// of either stops the other's loads. Returns the safety snapshot, the
    /// copies loaded, and the run's first failure. A failed copy is
    /// dropped; the caller drops the loaded ones when anything failed.
    async fn safety_and_copies(
        &self,
        copies: &[usize],
    ) -> (Option<SnapshotRef>, Loaded, Option<CoreError>) {
        let shared = load::Shared::new(self.opts.jobs as usize);
        let shared = &shared;
        let safety = async {
            let taken =
                safety_snapshot(self.plan, self.opts, self.progress, &self.journal.id).await;
            let first = taken.is_err() && shared.fail();
            (taken, first)
        };
        if !copies.is_empty() {
            let names: Vec<&str> = copies
                .iter()
                .map(|&i| self.plan.databases[i].live_db.as_str())
                .collect();
            self.progress
                .phase(&format!("restoring {}", names.join(", ")));
        }
        let loads = futures::future::join_all(copies.iter().map(|&i| async move {
            let loaded = self.load_new(i, shared).await;
            // Only the first failure is the cause; the others stopped for it.
            let first = loaded.is_err() && shared.fail();
            (i, loaded, first)
        }));
        let ((safety, safety_first), loads) = tokio::join!(safety, loads);
        let (mut loaded, mut failure) = (Vec::new(), None);
        let safety = match safety {
            Ok(s) => s,
            Err(e) => {
                failure = Some((e, safety_first));
                None
            }
        };
        for (i, result, first) in loads {
            match result {
                Ok(r) => loaded.push((i, r)),
                Err(e) if failure.as_ref().is_none_or(|(_, f)| first && !f) => {
                    failure = Some((e, first))
                }
                Err(_) => {}
            }
        }
        (safety, loaded, failure.map(|(e, _)| e))
    }

    /// Creates database `i`'s new copy (`--create`: the database itself)
    /// and loads and checks it; the live database is untouched. A failed
    /// copy is dropped.
    async fn load_new(&self, i: usize, shared: &load::Shared) -> Result<DbResult, CoreError> {
        let t0 = std::time::Instant::now();
        let d = &self.plan.databases[i];
        let load_name = self.journal.databases[i]
            .new_name
            .clone()
            .ok_or_else(|| CoreError::Internal("journal: no copy name".into()))?;
        let target = d.server.clone();
        let (mut admin, _) = replace::admin_client(self.opts.resolver.as_ref(), &d.info).await?;
        let like = replace::db_facts(&admin, &d.live_db, &target).await?;
        let how = replace::NewDatabase {
            props: d.archive.database.as_ref(),
            like: like.as_ref(),
            owner: d.new_owner.as_deref(),
        };
        replace::create_database(&admin, &load_name, how, &target).await?;
        let mut result = DbResult::new(d);
        let loaded = self
            .load_copy(i, d, &mut admin, &load_name, &mut result, shared)
            .await;
        if let Err(e) = loaded {
            // The live database was never touched; remove the partial copy.
            if let Err(drop_error) = replace::drop_database(&admin, &load_name, &target).await {
                tracing::warn!("could not drop the partial copy {load_name}: {drop_error}; `dbsnap resume` drops it");
                if let Ok(mut u) = self.undropped.lock() {
                    u.push(i);
                }
            }
            return Err(e);
        }
        result.seconds = t0.elapsed().as_secs_f64();
        Ok(result)
    }

    /// Drops the copies of databases `which` (nothing live changed for
    /// them) and records them as failed; returns `e`, the run's error.
    async fn drop_copies(&mut self, which: &[usize], e: CoreError) -> CoreError {
        for &i in which {
            let d = &self.plan.databases[i];
            if let Some(name) = self.journal.databases[i].new_name.clone() {
                let dropped = async {
                    let (admin, _) =
                        replace::admin_client(self.opts.resolver.as_ref(), &d.info).await?;
                    replace::drop_database(&admin, &name, &d.server).await?;
                    Ok::<_, CoreError>(())
                };
                if let Err(drop_error) = dropped.await {
                    tracing::warn!("could not drop the new copy {name}: {drop_error}");
                    // Left in its phase: `resume` drops it.
                    continue;
                }
            }
            if let Err(j) = self.journal(i, Phase::Failed) {
                tracing::warn!("{j}");
            }
        }
        e
    }

    /// Puts database `i`'s loaded copy in place: a created database is
    /// done; a replacement is swapped in, the previous database kept.
    async fn swap_in(&mut self, i: usize, result: &mut DbResult) -> Result<(), CoreError> {
        let d = &self.plan.databases[i];
        if d.action == Action::Create {
            // Two-phase: committed with the others (dropped if they are not).
            if self.two_phase() {
                return Ok(());
            }
            return self.journal(i, Phase::Committed);
        }
        let target = d.server.clone();
        let load_name = self.journal.databases[i]
            .new_name
            .clone()
            .unwrap_or_default();
        let (mut admin, admin_info) =
            replace::admin_client(self.opts.resolver.as_ref(), &d.info).await?;
        let old = replace::copy_name(&d.live_db, "old", &self.journal.id);
        self.journal.databases[i].old_name = Some(old.clone());
        self.journal(i, Phase::Ready)?;
        crate::failpoint("restore-copy-ready");
        let n = replace::terminate_sessions(&admin, &d.live_db, &target).await?;
        self.ended_sessions(n, d, "before the swap");
        let gid = self.will_prepare(i, &admin_info.dbname)?;
        replace::swap(
            &mut admin,
            &d.live_db,
            &load_name,
            &old,
            &target,
            gid.as_deref(),
        )
        .await?;
        result.kept_as = Some(old);
        if gid.is_some() {
            return Ok(());
        }
        crate::failpoint("restore-swapped");
        self.journal(i, Phase::Swapped)
    }

    /// pg_restore into `load_name`, row counts and checks on it, then the
    /// snapshot's database-level properties (comment, settings, per-role
    /// settings, grants), which stay with it across the rename.
    async fn load_copy(
        &self,
        i: usize,
        d: &DbPlan,
        admin: &mut tokio_postgres::Client,
        load_name: &str,
        result: &mut DbResult,
        shared: &load::Shared,
    ) -> Result<(), CoreError> {
        let target = &d.server;
        let server_major = dbsnap_pg::server_info(admin, target).await?.major();
        let program =
            replace::pick_program("pg_restore", &self.restores, d.pg_dump_major, server_major)?;
        let load_info = d.info.with_dbname(load_name);
        let (file, member) = (self.plan.file.clone(), d.member.clone());
        let meter = Meter::new(self.progress, i, &d.live_db);
        let layout = match self.opts.engine {
            LoadEngine::Native => {
                let (file, member) = (file.clone(), member.clone());
                let crypto = self.opts.crypto.clone();
                blocking(move || load::Layout::read(&file, &member, &crypto)).await?
            }
            LoadEngine::PgRestore => None,
        };
        let jobs = self.opts.jobs.max(1);
        let client = if let Some(layout) = layout {
            let to = load::Target {
                program,
                info: load_info.clone(),
                route: self.opts.resolver.clone(),
                flags: self.flags(jobs),
                jobs: jobs as usize,
                server_major,
                target,
                shared,
            };
            let (out, counts) = load::restore(layout, to, meter).await?;
            result.ignored = out.ignored;
            result.row_counts = counts.len();
            result.rows = counts.iter().map(|c| c.restored_rows).sum();
            self.opts.resolver.connect(&load_info).await?
        } else {
            let out = {
                let (file, member, load_info) = (file.clone(), member.clone(), load_info.clone());
                let flags = self.flags(jobs);
                let (route, crypto) = (self.opts.resolver.clone(), self.opts.crypto.clone());
                blocking(move || {
                    let source = replace::MemberRef {
                        file: &file,
                        member: &member,
                        crypto: &crypto,
                    };
                    replace::pg_restore(&program, source, &load_info, &*route, flags, meter)
                })
                .await?
            };
            result.ignored = out.ignored;
            let crypto = self.opts.crypto.clone();
            let mut counts = blocking(move || archive_row_counts(&file, &member, &crypto)).await?;
            result.row_counts = counts.len();
            let client = self.opts.resolver.connect(&load_info).await?;
            compare_row_counts(&client, target, &mut counts).await?;
            result.rows = counts.iter().map(|c| c.restored_rows).sum();
            client
        };
        run_checks(&client, target, &self.opts.checks).await?;
        if let Some(props) = &d.archive.database {
            let privileges = !self.opts.no_privileges;
            let ignored =
                replace::apply_database_properties(admin, props, load_name, privileges, target)
                    .await?;
            result.ignored.extend(ignored);
        }
        Ok(())
    }
}

async fn load_data_only(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
    journal: &mut RestoreState,
    two_phase: bool,
) -> Result<BTreeMap<usize, (data_only::DataOnlyReport, f64)>, CoreError> {
    let jobs: Vec<(usize, &DbPlan)> = plan
        .databases
        .iter()
        .enumerate()
        .filter(|(_, d)| d.action == Action::DataOnly)
        .collect();
    if jobs.is_empty() {
        return Ok(BTreeMap::new());
    }
    progress.phase(&format!(
        "loading {} (data-only)",
        jobs.iter()
            .map(|(_, d)| d.live_db.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut clients = Vec::new();
    for (_, d) in &jobs {
        clients.push(opts.resolver.connect(&d.info).await?);
    }
    let mut meters: Vec<Meter> = jobs
        .iter()
        .map(|(i, d)| Meter::new(progress, *i, &d.live_db))
        .collect();
    let prepared =
        futures::future::try_join_all(clients.iter_mut().zip(&jobs).zip(meters.iter_mut()).map(
            |((client, (_, d)), meter)| async move {
                let t0 = std::time::Instant::now();
                let (tx, report) = data_only::prepare(
                    client,
                    &d.server,
                    data_only::Member {
                        file: plan.file.clone(),
                        name: d.member.clone(),
                        crypto: opts.crypto.clone(),
                    },
                    &opts.checks,
                    opts.lock_timeout,
                    meter,
                )
                .await?;
                Ok::<_, CoreError>((tx, (report, t0.elapsed().as_secs_f64())))
            },
        ))
        .await?;
    meters.iter().for_each(Meter::finish);
    crate::failpoint("restore-data-loaded");
    let mut reports = BTreeMap::new();
    for ((tx, report), (i, d)) in prepared.into_iter().zip(&jobs) {
        if two_phase {
            // Journaled before it is sent: `resume` must know to look for it.
            let p = commit::record(&journal.id, *i, &d.live_db);
            let gid = p.gid.clone();
            journal.databases[*i].prepared = Some(p);
            journal.databases[*i].phase = Phase::Prepared;
            journal.save()?;
            dbsnap_pg::twophase::prepare(tx, &gid, &d.server).await?;
        } else {
            tx.commit()
                .await
                .map_err(pg_err(&d.server, "commit the restore"))?;
            journal.databases[*i].phase = Phase::Committed;
            journal.save()?;
        }
        reports.insert(*i, report);
    }
    Ok(reports)
}
