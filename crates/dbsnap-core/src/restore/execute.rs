//! Carrying a plan out: stop the app (always started again), take a safety
//! snapshot, restore every database (data-only ones together, each in its
//! own transaction, committed once all are loaded and checked; replaced
//! ones by a checked copy swapped in, or in place in one transaction),
//! journal every step for `resume` and `rollback`.
//!
//! Never destroys live data before its replacement is complete and checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use dbsnap_archive::snapshot::ConsistencyMethod;
use dbsnap_pg::tools::{self, Program};
use dbsnap_pg::{PgError, PgErrorKind};
use dbsnap_storage::SnapshotRef;

use super::checks::{archive_row_counts, checks_sql, compare_row_counts, run_checks};
use super::state::{DbRecord, Phase, RestoreState};
use super::{
    blocking, data_only, pg_err, replace, Action, DbPlan, DbResult, Meter, Plan, RestoreOptions,
    RestoreResult,
};
use super::{load, LoadEngine};
use crate::consistency::QuiesceHooks;
use crate::create::{self, CreateOptions, Progress};
use crate::error::CoreError;
use crate::hooks;

fn pick_program(
    name: &str,
    all: &[Program],
    archive_major: u32,
    server_major: u32,
) -> Result<Program, CoreError> {
    let need = archive_major.max(server_major);
    tools::oldest_at_least(all, need)
        // None new enough for both: the newest that still reads the archive.
        .or_else(|| all.iter().filter(|p| p.major >= archive_major).max_by_key(|p| p.major))
        .cloned()
        .ok_or_else(|| {
            PgError::new(
                PgErrorKind::Tooling,
                format!("{name} {need} or newer is needed (archive from pg_dump {archive_major}, server {server_major})"),
            )
            .hint(format!("install postgresql-client-{need}, or set pg_bin / DBSNAP_PG_BIN"))
            .into()
        })
}

/// Carries out a plan. The app is stopped first and always started again;
/// each step is journaled for `resume` and `rollback`.
pub async fn execute(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<RestoreResult, CoreError> {
    let started = std::time::Instant::now();
    let now = time::OffsetDateTime::now_utc();
    let id = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let mut journal = new_journal(plan, opts.resolver.route(), &id, now);
    journal.save()?;

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
    journal.finished = !journal
        .databases
        .iter()
        .any(|d| matches!(d.phase, Phase::Loading | Phase::Ready));
    let _ = journal.save();
    let outcome = outcome.map_err(|e| explain_failure(e, &journal));
    let (databases, safety, sessions) = outcome?;
    Ok(RestoreResult {
        id,
        file: plan.file.clone(),
        safety_snapshot: safety,
        databases,
        sessions_terminated: sessions,
        start_hook_failure: start_failure,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Completes a failed run's error with what it left: an interruption says
/// whether `resume` has work to do; a safety snapshot taken first is named.
fn explain_failure(e: CoreError, journal: &RestoreState) -> CoreError {
    if let Some(s) = &journal.safety_snapshot {
        tracing::warn!("the safety snapshot taken before the failure is kept: {s}");
    }
    let CoreError::Interrupted(how) = e else {
        return e;
    };
    let changed = journal
        .databases
        .iter()
        .filter(|d| matches!(d.phase, Phase::Committed | Phase::Swapped))
        .map(|d| d.live.as_str())
        .collect::<Vec<_>>();
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
            })
            .collect(),
        finished: false,
    }
}

type Steps = (Vec<DbResult>, Option<SnapshotRef>, u64);

async fn run_steps(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
    journal: &mut RestoreState,
) -> Result<Steps, CoreError> {
    let safety = safety_snapshot(plan, opts, progress, journal).await?;
    // Data-only databases load concurrently, each in its own transaction;
    // they commit only once all are loaded and checked.
    let loading = std::time::Instant::now();
    let mut data_only_reports = load_data_only(plan, opts, progress, journal).await?;
    let data_only_secs = loading.elapsed().as_secs_f64();
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
    };
    let mut results = Vec::new();
    for (i, d) in plan.databases.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let mut result = DbResult {
            database: d.live_db.clone(),
            action: d.action,
            kept_as: None,
            data_only: None,
            ignored: vec![],
            row_counts: 0,
            seconds: 0.0,
        };
        match d.action {
            Action::DataOnly => {
                // Loaded together with the other data-only databases, above.
                result.data_only = data_only_reports.remove(&i);
                result.row_counts = result.data_only.as_ref().map_or(0, |r| r.tables.len());
                result.seconds = data_only_secs;
                results.push(result);
                continue;
            }
            Action::ReplaceInPlace => run.in_place(i, d, &mut result).await?,
            Action::SwapRestore | Action::Create => run.by_copy(i, d, &mut result).await?,
        }
        result.seconds = t0.elapsed().as_secs_f64();
        results.push(result);
    }
    Ok((results, safety, run.sessions))
}

/// A safety snapshot of every existing database that will change.
async fn safety_snapshot(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
    journal: &mut RestoreState,
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
            target: plan.metadata.target.clone(),
            prefix: "safety".into(),
            safety_for: Some(journal.id.clone()),
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
        },
        progress,
    )
    .await?;
    tracing::info!("safety snapshot: {}", created.file);
    journal.safety_snapshot = Some(created.file.display());
    journal.save()?;
    Ok(Some(created.file))
}

/// State shared by the replacing steps of one run.
struct Run<'a> {
    plan: &'a Plan,
    opts: &'a RestoreOptions,
    progress: &'a Arc<dyn Progress>,
    journal: &'a mut RestoreState,
    restores: Vec<Program>,
    sessions: u64,
}

impl Run<'_> {
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
        let program = pick_program("pg_restore", &self.restores, d.pg_dump_major, server_major)?;
        let n = replace::terminate_sessions(&admin, &d.live_db, target).await?;
        self.ended_sessions(n, d, "before replacing it");
        let (file, member, info) = (self.plan.file.clone(), d.member.clone(), d.info.clone());
        let counts = {
            let (file, member) = (file.clone(), member.clone());
            blocking(move || archive_row_counts(&file, &member)).await?
        };
        let epilogue = checks_sql(&counts, &self.opts.checks);
        let (flags, psql) = (self.flags(1), replace::psql_beside(&program));
        let meter = Meter::new(self.progress, i, &d.live_db);
        let route = self.opts.resolver.clone();
        let out = blocking(move || {
            let source = replace::MemberRef {
                file: &file,
                member: &member,
            };
            replace::replace_in_place(
                &program, &psql, source, &info, &*route, flags, &epilogue, meter,
            )
        })
        .await?;
        result.ignored = out.ignored;
        result.row_counts = counts.len();
        self.journal(i, Phase::Committed)
    }

    /// Restores into a new database (`--create`: the database itself; a
    /// replacement: a copy), checks it, gives it the snapshot's
    /// database-level properties, and swaps it in for a replacement. The
    /// live database is untouched until the swap; a failed copy is dropped.
    async fn by_copy(
        &mut self,
        i: usize,
        d: &DbPlan,
        result: &mut DbResult,
    ) -> Result<(), CoreError> {
        self.progress.phase(&format!("restoring {}", d.live_db));
        let target = d.server.clone();
        let (mut admin, _) = replace::admin_client(self.opts.resolver.as_ref(), &d.info).await?;
        let load_name = if d.action == Action::Create {
            d.live_db.clone()
        } else {
            replace::copy_name(&d.live_db, "new", &self.journal.id)
        };
        self.journal.databases[i].new_name = Some(load_name.clone());
        self.journal(i, Phase::Loading)?;
        let like = replace::db_facts(&admin, &d.live_db, &target).await?;
        let how = replace::NewDatabase {
            props: d.archive.database.as_ref(),
            like: like.as_ref(),
            owner: d.new_owner.as_deref(),
        };
        replace::create_database(&admin, &load_name, how, &target).await?;
        let loaded = self.load_copy(i, d, &mut admin, &load_name, result).await;
        if let Err(e) = loaded {
            // The live database was never touched; remove the partial copy.
            let _ = replace::drop_database(&admin, &load_name, &target).await;
            self.journal(i, Phase::Failed)?;
            return Err(e);
        }
        if d.action == Action::Create {
            return self.journal(i, Phase::Committed);
        }
        let old = replace::copy_name(&d.live_db, "old", &self.journal.id);
        self.journal.databases[i].old_name = Some(old.clone());
        self.journal(i, Phase::Ready)?;
        crate::failpoint("restore-copy-ready");
        let n = replace::terminate_sessions(&admin, &d.live_db, &target).await?;
        self.ended_sessions(n, d, "before the swap");
        replace::swap(&mut admin, &d.live_db, &load_name, &old, &target).await?;
        crate::failpoint("restore-swapped");
        self.journal(i, Phase::Swapped)?;
        result.kept_as = Some(old);
        Ok(())
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
    ) -> Result<(), CoreError> {
        let target = &d.server;
        let server_major = dbsnap_pg::server_info(admin, target).await?.major();
        let program = pick_program("pg_restore", &self.restores, d.pg_dump_major, server_major)?;
        let load_info = d.info.with_dbname(load_name);
        let (file, member) = (self.plan.file.clone(), d.member.clone());
        let meter = Meter::new(self.progress, i, &d.live_db);
        let layout = match self.opts.engine {
            LoadEngine::Native => {
                let (file, member) = (file.clone(), member.clone());
                blocking(move || load::Layout::read(&file, &member)).await?
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
            };
            let (out, counts) = load::restore(layout, to, meter).await?;
            result.ignored = out.ignored;
            result.row_counts = counts.len();
            self.opts.resolver.connect(&load_info).await?
        } else {
            let out = {
                let (file, member, load_info) = (file.clone(), member.clone(), load_info.clone());
                let flags = self.flags(jobs);
                let route = self.opts.resolver.clone();
                blocking(move || {
                    replace::pg_restore(&program, &file, &member, &load_info, &*route, flags, meter)
                })
                .await?
            };
            result.ignored = out.ignored;
            let mut counts = blocking(move || archive_row_counts(&file, &member)).await?;
            result.row_counts = counts.len();
            let client = self.opts.resolver.connect(&load_info).await?;
            compare_row_counts(&client, target, &mut counts).await?;
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
) -> Result<BTreeMap<usize, data_only::DataOnlyReport>, CoreError> {
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
            |((client, (_, d)), meter)| {
                data_only::prepare(
                    client,
                    &d.server,
                    plan.file.clone(),
                    d.member.clone(),
                    &opts.checks,
                    opts.lock_timeout,
                    meter,
                )
            },
        ))
        .await?;
    meters.iter().for_each(Meter::finish);
    crate::failpoint("restore-data-loaded");
    let mut reports = BTreeMap::new();
    for ((tx, report), (i, d)) in prepared.into_iter().zip(&jobs) {
        tx.commit()
            .await
            .map_err(pg_err(&d.server, "commit the restore"))?;
        journal.databases[*i].phase = Phase::Committed;
        journal.save()?;
        reports.insert(*i, report);
    }
    Ok(reports)
}
