//! `restore`: put a snapshot back, as the README's decision table says.
//!
//! [`plan`] verifies the archive, connects to every live database, compares
//! schema versions and decides an action per database, changing nothing.
//! [`execute`] carries a plan out: stop the app (always started again),
//! take a safety snapshot, restore each database (data-only in one
//! transaction; drop-and-restore by swapping in a complete copy, or by
//! replacing objects in one transaction), check, journal every step.

pub mod data_only;
pub mod decide;
pub mod recover;
pub mod replace;
pub mod select;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use dbsnap_archive::snapshot::{ConsistencyMethod, DatabaseEntry, Metadata};
use dbsnap_archive::toc::ArchiveFacts;
use dbsnap_archive::version::Comparison;
use dbsnap_pg::schema_version::{self, VersionSpec};
use dbsnap_pg::tools::{self, Program, Secrets};
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind};
use serde::Serialize;

use crate::consistency::QuiesceHooks;
use crate::create::{self, CreateOptions, Progress};
use crate::error::{exit, CoreError};
use crate::hooks;
use crate::inspect;
use state::{DbRecord, Phase, RestoreState};

/// What to restore, where, and how.
#[derive(Clone, Default)]
pub struct RestoreOptions {
    /// The snapshot file.
    pub file: PathBuf,
    /// Connection strings of the databases to restore into (or of a server
    /// with `--create`); empty: the snapshot target's, from the config.
    pub databases: Vec<String>,
    /// Config targets (name -> connection strings), to find the snapshot's.
    pub targets: BTreeMap<String, Vec<String>>,
    /// Restore only these snapshot databases.
    pub only: Vec<String>,
    /// Snapshot database name -> live database name.
    pub map: BTreeMap<String, String>,
    /// Force drop-and-restore for all.
    pub drop: bool,
    /// Create missing databases.
    pub create: bool,
    /// Do not restore object ownership.
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE), like pg_restore's `-x`.
    pub no_privileges: bool,
    /// Restore a snapshot from a newer PostgreSQL into an older one.
    pub allow_downgrade: bool,
    /// Asks for a password on a terminal (None: never ask).
    pub password_prompt: Option<PasswordPrompt>,
    /// Create (NOLOGIN) the roles the archive's objects belong to when missing.
    pub create_roles: bool,
    /// Parallel pg_restore jobs for drop-and-restore by swap and --create
    /// (above 1 the member is extracted to a temporary file first).
    pub jobs: u32,
    /// Skip the safety snapshot.
    pub no_safety_snapshot: bool,
    /// Repository for the safety snapshot.
    pub dir: PathBuf,
    /// Stop/start hooks.
    pub hooks: QuiesceHooks,
    /// Extra directories with pg_dump/pg_restore/psql.
    pub pg_bin: Vec<PathBuf>,
    /// SQL checks that must return true after the restore.
    pub checks: Vec<String>,
    /// Schema-version settings.
    pub version_spec: VersionSpec,
    /// Per-database overrides.
    pub version_specs: BTreeMap<String, VersionSpec>,
}

/// What will happen to one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace the rows, keep the schema: one transaction.
    DataOnly,
    /// Restore into a new database, then swap names (old one kept).
    SwapRestore,
    /// Drop the role's objects and recreate them: one transaction.
    ReplaceInPlace,
    /// The database does not exist: create it and restore.
    Create,
}

impl Action {
    /// Whether the action replaces the schema (needs typed confirmation).
    pub fn drops_schema(self) -> bool {
        matches!(self, Action::SwapRestore | Action::ReplaceInPlace)
    }
}

/// The plan for one database.
#[derive(Debug, Clone, Serialize)]
pub struct DbPlan {
    /// Name in the snapshot.
    pub snapshot_db: String,
    /// Archive member.
    pub member: String,
    /// Live database name.
    pub live_db: String,
    /// Where (`user@host:port/db`, no password).
    pub server: String,
    /// Whether the live database exists.
    pub exists: bool,
    /// Live schema version (display).
    pub live_version: Option<String>,
    /// Snapshot schema version (display).
    pub snapshot_version: Option<String>,
    /// How they compare.
    pub comparison: Option<Comparison>,
    /// What will be done.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Owner of the new database (replace, create); None: the connecting role.
    pub new_owner: Option<String>,
    #[serde(skip)]
    info: ConnInfo,
    #[serde(skip)]
    pg_dump_major: u32,
    #[serde(skip)]
    archive: ArchiveFacts,
}

/// A complete plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Snapshot file.
    pub file: PathBuf,
    /// Its metadata.
    pub metadata: Metadata,
    /// Per database, in snapshot order.
    pub databases: Vec<DbPlan>,
    /// Commands that will stop and start the app.
    pub stop_cmd: Option<String>,
    /// Start command.
    pub start_cmd: Option<String>,
    /// Whether a safety snapshot will be taken first.
    pub safety_snapshot: bool,
    /// Warnings (roles, version noise, ...).
    pub warnings: Vec<String>,
    /// Roles that will be created (`--create-roles`).
    pub roles_to_create: Vec<String>,
    #[serde(skip)]
    role_servers: Vec<(ConnInfo, Vec<String>)>,
}

impl Plan {
    /// Whether any database's schema will be replaced.
    pub fn destructive(&self) -> bool {
        self.databases.iter().any(|d| d.action.drops_schema())
    }
}

/// Builds the plan: verifies the archive, reads the live side, decides.
/// Changes nothing. Every database is checked before any refusal is
/// reported; a refusal is an error with its exit code.
pub async fn plan(opts: &RestoreOptions, progress: &dyn Progress) -> Result<Plan, CoreError> {
    progress.phase("verifying the snapshot");
    let report = inspect::verify(&opts.file)?;
    if !report.ok {
        return Err(CoreError::Verify {
            file: opts.file.display().to_string(),
            message: format!(
                "{}; nothing was changed",
                report.error.unwrap_or_else(|| "verification failed".into())
            ),
        });
    }
    let metadata = report.metadata.expect("verified snapshot has metadata");
    let chosen = select::select(&metadata, &opts.only, &opts.map)?;
    let selected = connections(opts, &metadata, &chosen)?;
    progress.phase("reading the live databases");
    let choices = decide::Choices {
        drop: opts.drop,
        create: opts.create,
        no_owner: opts.no_owner,
        no_privileges: opts.no_privileges,
        create_roles: opts.create_roles,
        allow_downgrade: opts.allow_downgrade,
    };
    let mut passwords = Passwords::new(opts.password_prompt.clone());
    let (mut plans, mut warnings, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    let mut role_servers: Vec<(ConnInfo, Vec<String>)> = Vec::new();
    for mut s in selected {
        let entry = &metadata.databases[s.index];
        let archive = report
            .members
            .iter()
            .find(|m| m.name == entry.member)
            .map(|m| m.facts.clone())
            .unwrap_or_default();
        let facts = gather(opts, &mut s, entry, archive, &mut passwords).await?;
        let target = s.info.display();
        let decision = match decide::decide(&facts, choices) {
            Ok(d) => d,
            Err(r) => {
                refusals.push((target, r));
                continue;
            }
        };
        warnings.extend(decision.warnings.iter().map(|w| format!("{target}: {w}")));
        if !decision.roles_to_create.is_empty() {
            role_servers.push((s.info.clone(), decision.roles_to_create.clone()));
        }
        plans.push(DbPlan {
            snapshot_db: entry.name.clone(),
            member: entry.member.clone(),
            live_db: s.live_db,
            server: target,
            exists: facts.exists,
            live_version: facts.live_version.as_ref().map(|v| v.display()),
            snapshot_version: facts.snapshot_version.as_ref().map(|v| v.display()),
            comparison: facts
                .live_version
                .as_ref()
                .zip(facts.snapshot_version.as_ref())
                .map(|(l, s)| l.compare(s)),
            action: decision.action,
            reason: decision.reason,
            new_owner: decision.new_owner,
            info: s.info,
            pg_dump_major: major_of(&entry.pg_dump_version),
            archive: facts.archive,
        });
    }
    if !refusals.is_empty() {
        return Err(refused(refusals));
    }
    let roles_to_create = role_servers.iter().flat_map(|(_, r)| r.clone()).collect();
    Ok(Plan {
        file: opts.file.clone(),
        metadata,
        databases: plans,
        stop_cmd: opts.hooks.stop_cmd.clone(),
        start_cmd: opts.hooks.start_cmd.clone(),
        safety_snapshot: !opts.no_safety_snapshot,
        warnings,
        roles_to_create,
        role_servers,
    })
}

/// One error for every refusal: the code of the most specific one (live
/// older first: its advice, upgrade first, comes before anything else).
fn refused(refusals: Vec<(String, decide::Refusal)>) -> CoreError {
    let first = refusals
        .iter()
        .find(|(_, r)| r.code() == exit::LIVE_OLDER)
        .unwrap_or(&refusals[0]);
    let (code, hint) = (first.1.code(), first.1.hint());
    let message = format!(
        "restore refused, nothing was changed:\n  {}",
        refusals
            .iter()
            .map(|(target, r)| format!("{target}: {}", r.message()))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let kind = match code {
        exit::NO_DATABASE => Some(PgErrorKind::NoDatabase),
        exit::PRIVILEGE => Some(PgErrorKind::Privilege),
        _ => None,
    };
    match kind {
        Some(kind) => PgError::new(kind, message).hint(hint).into(),
        None if code == exit::USAGE => CoreError::Config {
            message,
            hint: hint.into(),
        },
        None => CoreError::Refused {
            message,
            hint: hint.into(),
            code,
        },
    }
}

/// Asks for a password once per server and user, on a terminal.
pub type PasswordPrompt = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct Passwords {
    prompt: Option<PasswordPrompt>,
    known: BTreeMap<String, String>,
}

impl Passwords {
    fn new(prompt: Option<PasswordPrompt>) -> Passwords {
        Passwords {
            prompt,
            known: BTreeMap::new(),
        }
    }

    fn key(info: &ConnInfo) -> String {
        info.with_dbname("").display()
    }

    /// Connects to a maintenance database of `info`'s server; when the
    /// server wants a password none of libpq's sources gave, asks once.
    async fn admin(&mut self, info: &mut ConnInfo) -> Result<tokio_postgres::Client, CoreError> {
        if info.password.is_none() {
            info.password = self.known.get(&Self::key(info)).cloned();
        }
        match replace::admin_client(info).await {
            Err(CoreError::Pg(e)) if e.kind == PgErrorKind::Auth && info.password.is_none() => {
                let Some(ask) = &self.prompt else {
                    return Err(CoreError::Pg(e));
                };
                let Some(pw) = ask(&Self::key(info)) else {
                    return Err(CoreError::Pg(e));
                };
                self.known.insert(Self::key(info), pw.clone());
                info.password = Some(pw);
                Ok(replace::admin_client(info).await?.0)
            }
            r => Ok(r?.0),
        }
    }
}

/// Reads what `decide` needs about one database from its live server.
async fn gather(
    opts: &RestoreOptions,
    s: &mut select::Selected,
    entry: &DatabaseEntry,
    archive: ArchiveFacts,
    passwords: &mut Passwords,
) -> Result<decide::Facts, CoreError> {
    let admin = passwords.admin(&mut s.info).await?;
    let target = s.info.display();
    let role = replace::role_facts(&admin, &target).await?;
    let server_major = dbsnap_pg::server_info(&admin, &target).await?.major();
    let exists = replace::db_facts(&admin, &s.live_db, &target)
        .await?
        .is_some();
    let mut named: BTreeSet<String> = archive.owners.clone();
    named.extend(archive.privilege_roles.iter().cloned());
    named.extend(archive.other_roles.iter().cloned());
    if let Some(db) = &archive.database {
        named.extend(db.roles(true));
        named.extend(db.owner.iter().cloned());
    }
    let named: Vec<String> = named.into_iter().collect();
    let roles = replace::role_statuses(&admin, &named, server_major, &target).await?;
    let (mut live_version, mut data_only_obstacles) = (None, Vec::new());
    if exists {
        let client = dbsnap_pg::connect(&s.info).await?;
        let spec = opts
            .version_specs
            .get(&s.live_db)
            .or(opts.version_specs.get(&entry.name))
            .unwrap_or(&opts.version_spec);
        live_version = schema_version::detect(&client, spec, &target).await?;
        data_only_obstacles = data_only::preflight(&client, &target, &archive).await?;
    }
    Ok(decide::Facts {
        snapshot_db: entry.name.clone(),
        live_db: s.live_db.clone(),
        exists,
        live_version,
        snapshot_version: entry.schema_version.clone(),
        snapshot_major: entry.server_version_num / 10000,
        server_major,
        role,
        roles,
        archive,
        data_only_obstacles,
    })
}

/// Maps a tokio-postgres error about `target` while `doing` something.
pub(crate) fn pg_err(
    target: &str,
    doing: &str,
) -> impl Fn(tokio_postgres::Error) -> CoreError + use<> {
    let (target, doing) = (target.to_string(), doing.to_string());
    move |e| CoreError::Pg(PgError::from_pg(e, &target, &doing))
}

fn major_of(version: &str) -> u32 {
    version
        .split_whitespace()
        .find_map(|w| {
            w.split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .filter(|m| *m >= 9)
        })
        .unwrap_or(0)
}

/// Pairs the chosen databases with connections: `-d` flags, else the
/// snapshot target's in the config, else those recorded in the snapshot.
fn connections(
    opts: &RestoreOptions,
    metadata: &Metadata,
    chosen: &[(usize, String)],
) -> Result<Vec<select::Selected>, CoreError> {
    let resolve = |strings: &[String]| -> Result<Vec<ConnInfo>, CoreError> {
        strings
            .iter()
            .map(|s| ConnInfo::resolve(s).map_err(|e| PgError::from(e).into()))
            .collect()
    };
    if !opts.databases.is_empty() {
        let given = resolve(&opts.databases)?;
        return select::assign(metadata, chosen, &given, select::Source::Flags);
    }
    if let Some(t) = metadata.target.as_ref().and_then(|t| opts.targets.get(t)) {
        return select::assign(metadata, chosen, &resolve(t)?, select::Source::Target);
    }
    select::recorded(metadata, chosen, |s| {
        ConnInfo::resolve(s).map_err(|e| PgError::from(e).into())
    })
    .map_err(|e| match e {
        CoreError::Config { message, .. } => CoreError::Config {
            message: format!(
                "{message}{}",
                metadata
                    .target
                    .as_ref()
                    .map(|t| format!(" (target \"{t}\" is not in the config)"))
                    .unwrap_or_default()
            ),
            hint: "pass -d <connection string> for each database (or one -d …/postgres for the server)".into(),
        },
        e => e,
    })
}

/// One database's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DbResult {
    /// Live database.
    pub database: String,
    /// What was done.
    pub action: Action,
    /// Where the previous database was kept (swap).
    pub kept_as: Option<String>,
    /// Data-only details (tables, row counts).
    pub data_only: Option<data_only::DataOnlyReport>,
    /// Harmless errors pg_restore reported (version noise).
    pub ignored: Vec<String>,
    /// Tables whose row counts were checked against the snapshot.
    pub row_counts: usize,
    /// Seconds taken.
    pub seconds: f64,
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    /// Run id (state file name).
    pub id: String,
    /// Snapshot restored.
    pub file: PathBuf,
    /// The safety snapshot taken first.
    pub safety_snapshot: Option<PathBuf>,
    /// Per database.
    pub databases: Vec<DbResult>,
    /// Sessions ended on the live databases.
    pub sessions_terminated: u64,
    /// The start command failed after the restore (the restore stands).
    pub start_hook_failure: Option<String>,
    /// Wall time.
    pub duration_secs: f64,
}

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
    let mut journal = RestoreState {
        id: id.clone(),
        file: plan.file.display().to_string(),
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
    };
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
        s = hooks::termination_signal() => Err(CoreError::Interrupted(format!(" by {s}; see `dbsnap resume`"))),
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

type Steps = (Vec<DbResult>, Option<PathBuf>, u64);

async fn run_steps(
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
    journal: &mut RestoreState,
) -> Result<Steps, CoreError> {
    // A safety snapshot of every existing database that will change.
    let mut safety = None;
    let existing: Vec<&DbPlan> = plan.databases.iter().filter(|d| d.exists).collect();
    if plan.safety_snapshot && !existing.is_empty() {
        progress.phase("taking a safety snapshot of the live databases");
        let same_instance = existing.iter().all(|d| {
            d.info.hosts == existing[0].info.hosts && d.info.ports == existing[0].info.ports
        });
        let created = create::create(
            &CreateOptions {
                databases: Vec::new(),
                resolved: existing.iter().map(|d| d.info.clone()).collect(),
                target: plan.metadata.target.clone(),
                prefix: "safety".into(),
                consistency: if same_instance {
                    ConsistencyMethod::Snapshot
                } else {
                    ConsistencyMethod::None
                },
                dir: opts.dir.clone(),
                pg_bin: opts.pg_bin.clone(),
                hooks: QuiesceHooks::default(),
                compress: None,
                version_spec: opts.version_spec.clone(),
                version_specs: opts.version_specs.clone(),
                limits: Default::default(),
            },
            progress,
        )
        .await?;
        tracing::info!("safety snapshot: {}", created.file.display());
        journal.safety_snapshot = Some(created.file.display().to_string());
        journal.save()?;
        safety = Some(created.file);
    }
    // Data-only databases load concurrently, each in its own transaction;
    // they commit only once all are loaded and checked.
    let loading = std::time::Instant::now();
    let mut data_only_reports = load_data_only(plan, opts, progress, journal).await?;
    let data_only_secs = loading.elapsed().as_secs_f64();
    for (info, roles) in &plan.role_servers {
        let (admin, _) = replace::admin_client(info).await?;
        replace::create_roles(&admin, roles, &info.display()).await?;
    }
    let restores = tools::find_all("pg_restore", &opts.pg_bin);
    let secrets = Arc::new(Secrets::new()?);
    let mut results = Vec::new();
    let mut sessions = 0;
    for (i, d) in plan.databases.iter().enumerate() {
        let t0 = std::time::Instant::now();
        progress.phase(&format!("restoring {} ({:?})", d.live_db, d.action));
        let target = d.server.clone();
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
                // Loaded together with the other data-only databases, below.
                result.row_counts = data_only_reports
                    .get(&i)
                    .map(|r| r.tables.len())
                    .unwrap_or(0);
                result.data_only = data_only_reports.remove(&i);
                result.seconds = data_only_secs;
                results.push(result);
                continue;
            }
            Action::ReplaceInPlace => {
                let (admin, _) = replace::admin_client(&d.info).await?;
                let server_major = dbsnap_pg::server_info(&admin, &target).await?.major();
                let program = pick_program("pg_restore", &restores, d.pg_dump_major, server_major)?;
                let n = replace::terminate_sessions(&admin, &d.live_db, &target).await?;
                if n > 0 {
                    tracing::warn!(
                        "{target}: ended {n} other session(s) on {} before replacing it",
                        d.live_db
                    );
                }
                sessions += n;
                let (file, member, info) = (plan.file.clone(), d.member.clone(), d.info.clone());
                let flags = replace::RestoreFlags {
                    no_owner: opts.no_owner,
                    no_privileges: opts.no_privileges,
                    jobs: 1,
                };
                let psql = replace::psql_beside(&program);
                let counts = {
                    let (file, member) = (file.clone(), member.clone());
                    blocking(move || archive_row_counts(&file, &member)).await?
                };
                let epilogue = checks_sql(&counts, &opts.checks);
                let secrets = secrets.clone();
                let meter = Meter::new(progress, i, &d.live_db);
                let out = blocking(move || {
                    replace::replace_in_place(
                        &program,
                        &psql,
                        replace::MemberRef {
                            file: &file,
                            member: &member,
                        },
                        &info,
                        flags,
                        &secrets,
                        &epilogue,
                        meter,
                    )
                })
                .await?;
                result.ignored = out.ignored;
                result.row_counts = counts.len();
                journal.databases[i].phase = Phase::Committed;
                journal.save()?;
            }
            Action::SwapRestore | Action::Create => {
                let (mut admin, _) = replace::admin_client(&d.info).await?;
                let server_major = dbsnap_pg::server_info(&admin, &target).await?.major();
                let program = pick_program("pg_restore", &restores, d.pg_dump_major, server_major)?;
                let facts = replace::db_facts(&admin, &d.live_db, &target).await?;
                let load_name = if d.action == Action::Create {
                    d.live_db.clone()
                } else {
                    replace::copy_name(&d.live_db, "new", &journal.id)
                };
                journal.databases[i].new_name = Some(load_name.clone());
                journal.databases[i].phase = Phase::Loading;
                journal.save()?;
                let how = replace::NewDatabase {
                    props: d.archive.database.as_ref(),
                    like: facts.as_ref(),
                    owner: d.new_owner.as_deref(),
                };
                replace::create_database(&admin, &load_name, how, &target).await?;
                let load_info = d.info.with_dbname(&load_name);
                let (file, member) = (plan.file.clone(), d.member.clone());
                let flags = replace::RestoreFlags {
                    no_owner: opts.no_owner,
                    no_privileges: opts.no_privileges,
                    jobs: opts.jobs.max(1),
                };
                let loaded = {
                    let (file, member, load_info, secrets) = (
                        file.clone(),
                        member.clone(),
                        load_info.clone(),
                        secrets.clone(),
                    );
                    let meter = Meter::new(progress, i, &d.live_db);
                    blocking(move || {
                        replace::pg_restore(
                            &program, &file, &member, &load_info, flags, &secrets, meter,
                        )
                    })
                    .await
                };
                let checked = match loaded {
                    Ok(out) => {
                        result.ignored = out.ignored;
                        let counts = {
                            let (file, member) = (file.clone(), member.clone());
                            blocking(move || archive_row_counts(&file, &member)).await?
                        };
                        result.row_counts = counts.len();
                        let client = dbsnap_pg::connect(&load_info).await?;
                        match compare_counts(&client, &target, &counts).await {
                            Ok(()) => data_only::run_checks(&client, &target, &opts.checks).await,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                // The copy gets the snapshot's database-level properties
                // (comment, settings, per-role settings, grants) before it
                // replaces the live database; they stay with it across the rename.
                let checked = match (checked, &d.archive.database) {
                    (Ok(()), Some(props)) => replace::apply_database_properties(
                        &mut admin,
                        props,
                        &load_name,
                        !opts.no_privileges,
                        &target,
                    )
                    .await
                    .map(|ignored| result.ignored.extend(ignored)),
                    (r, _) => r,
                };
                if let Err(e) = checked {
                    // The live database was never touched; remove the partial copy.
                    let _ = replace::drop_database(&admin, &load_name, &target).await;
                    journal.databases[i].phase = Phase::Failed;
                    journal.save()?;
                    return Err(e);
                }
                if d.action == Action::SwapRestore {
                    journal.databases[i].phase = Phase::Ready;
                    let old = replace::copy_name(&d.live_db, "old", &journal.id);
                    journal.databases[i].old_name = Some(old.clone());
                    journal.save()?;
                    crate::failpoint("restore-copy-ready");
                    let n = replace::terminate_sessions(&admin, &d.live_db, &target).await?;
                    if n > 0 {
                        tracing::warn!(
                            "{target}: ended {n} other session(s) on {} before the swap",
                            d.live_db
                        );
                    }
                    sessions += n;
                    replace::swap(&mut admin, &d.live_db, &load_name, &old, &target).await?;
                    crate::failpoint("restore-swapped");
                    journal.databases[i].phase = Phase::Swapped;
                    journal.save()?;
                    result.kept_as = Some(old);
                } else {
                    journal.databases[i].phase = Phase::Committed;
                    journal.save()?;
                }
            }
        }
        result.seconds = t0.elapsed().as_secs_f64();
        results.push(result);
    }
    Ok((results, safety, sessions))
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
        clients.push(dbsnap_pg::connect(&d.info).await?);
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

/// Counts the bytes of one database's restore for the progress display.
pub struct Meter {
    progress: Arc<dyn Progress>,
    index: usize,
    total: u64,
}

impl Meter {
    fn new(progress: &Arc<dyn Progress>, index: usize, name: &str) -> Meter {
        progress.transfer_started(index, name);
        Meter {
            progress: progress.clone(),
            index,
            total: 0,
        }
    }

    /// Adds `n` bytes.
    pub fn add(&mut self, n: usize) {
        self.total += n as u64;
        self.progress.transfer_bytes(self.index, self.total);
    }

    pub(crate) fn finish(&self) {
        self.progress.transfer_finished(self.index, self.total);
    }
}

/// Runs blocking work (programs, archive reads) off the async workers, so
/// signals are still handled while it runs.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoreError::Internal(format!("worker thread: {e}")))?
}

/// Rows per table in a database member: (qualified table, rows).
fn archive_row_counts(
    file: &std::path::Path,
    member: &str,
) -> Result<Vec<(String, u64)>, CoreError> {
    use dbsnap_archive::pgdump::{read_archive_data, CopyRows, DataItem};
    let f = std::fs::File::open(file).map_err(|e| CoreError::write_io(file, e))?;
    let mut counts = Vec::new();
    dbsnap_archive::snapshot::with_member(
        std::io::BufReader::with_capacity(1 << 20, f),
        member,
        |input| {
            read_archive_data(input, |item| -> std::io::Result<()> {
                if let DataItem::TableData { entry, data } = item {
                    let mut rows = CopyRows::new(data);
                    std::io::copy(&mut rows, &mut std::io::sink())?;
                    let table = data_only::qualified(entry);
                    counts.push((table, rows.rows()));
                }
                Ok(())
            })
            .map(|_| ())
            .map_err(|e| {
                dbsnap_archive::snapshot::ArchiveError::Corrupt(format!("member \"{member}\": {e}"))
            })
        },
    )?;
    Ok(counts)
}

async fn compare_counts(
    client: &tokio_postgres::Client,
    target: &str,
    counts: &[(String, u64)],
) -> Result<(), CoreError> {
    for (table, want) in counts {
        let got: i64 = client
            .query_one(&format!("SELECT count(*) FROM ONLY {table}"), &[])
            .await
            .map_err(pg_err(target, &format!("count rows of {table}")))?
            .get(0);
        if got as u64 != *want {
            return Err(CoreError::Check(format!(
                "{target}: {table} has {got} rows after the restore, the snapshot has {want}"
            )));
        }
    }
    Ok(())
}

/// SQL run just before COMMIT of an in-place replacement: row counts and
/// the user's checks, raising (and so rolling back) on any failure.
fn checks_sql(counts: &[(String, u64)], checks: &[String]) -> String {
    // pg_restore's script empties search_path; the user's checks expect the default.
    let mut sql = String::from("\nRESET search_path;\n");
    for (table, want) in counts {
        sql.push_str(&format!(
            "DO $dbsnap$ BEGIN IF (SELECT count(*) FROM ONLY {table}) <> {want} THEN \
             RAISE EXCEPTION 'dbsnap: % has % rows after the restore, the snapshot has {want}', '{t}', (SELECT count(*) FROM ONLY {table}); \
             END IF; END $dbsnap$;\n",
            t = table.replace('\'', "''")
        ));
    }
    for q in checks {
        sql.push_str(&format!(
            "DO $dbsnap$ BEGIN IF NOT coalesce(({q}), false) THEN RAISE EXCEPTION 'dbsnap: check failed: %', '{}'; END IF; END $dbsnap$;\n",
            q.replace('\'', "''")
        ));
    }
    sql
}
