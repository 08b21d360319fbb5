//! Planning a restore: verify the archive, choose the databases and their
//! connections, gather facts about each live database, and let
//! [`decide`](super::decide) choose. Reads only; never changes a database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dbsnap_archive::snapshot::{DatabaseEntry, Metadata};
use dbsnap_archive::toc::ArchiveFacts;
use dbsnap_pg::schema_version;
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind};

use super::{data_only, decide, origin, replace, select, Commit, DbPlan, Plan, RestoreOptions};
use crate::create::Progress;
use crate::error::{exit, CoreError};
use crate::inspect;

/// Builds the plan: verifies the archive, reads the live side, decides.
/// Changes nothing. Every database is checked before any refusal is
/// reported; a refusal is an error with its exit code.
pub async fn plan(opts: &RestoreOptions, progress: &dyn Progress) -> Result<Plan, CoreError> {
    // An encrypted snapshot's key first: a missing or wrong one is the
    // error, before anything is read in full or changed.
    opts.crypto.check_keys(&opts.file)?;
    let safety_crypto = Arc::new(opts.crypto.seal_like(&opts.file)?);
    progress.phase("verifying the snapshot");
    let report = inspect::verify(&opts.file, &opts.crypto)?;
    if !report.ok {
        let file = opts.file.display();
        let error = report.error.unwrap_or_else(|| "verification failed".into());
        // The report names the file already; the error names it once.
        let error = error.strip_prefix(&format!("{file}: ")).unwrap_or(&error);
        return Err(CoreError::Verify {
            message: format!("{error}; nothing was changed"),
            file,
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
    let mut passwords = Passwords::new(opts.resolver.clone(), opts.password_prompt.clone());
    let (mut plans, mut warnings, mut refusals) = (Vec::new(), Vec::new(), Vec::new());
    let mut role_servers: Vec<(ConnInfo, Vec<String>)> = Vec::new();
    let mut capacities = BTreeMap::new();
    for mut s in selected {
        let entry = &metadata.databases[s.index];
        let archive = report
            .members
            .iter()
            .find(|m| m.name == entry.member)
            .map(|m| m.facts.clone())
            .unwrap_or_default();
        let (facts, system_identifier, capacity) =
            gather(opts, &mut s, entry, archive, &mut passwords).await?;
        capacities.insert(s.info.server(), capacity);
        let target = s.info.display();
        let decision = match decide::decide_all(&facts, choices) {
            Ok(d) => d,
            Err(all) => {
                refusals.extend(all.into_iter().map(|r| (target.clone(), r)));
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
            snapshot_server: entry.server.clone(),
            system_identifier,
            info: s.info,
            pg_dump_major: dbsnap_pg::tools::major_version(&entry.pg_dump_version).unwrap_or(0),
            archive: facts.archive,
        });
    }
    if !refusals.is_empty() {
        return Err(refused(refusals));
    }
    let roles_to_create = role_servers.iter().flat_map(|(_, r)| r.clone()).collect();
    let origin = origin_check(opts, &metadata, &plans);
    let commit = commit_mode(&plans, &capacities);
    let mut plan = Plan {
        file: opts.file.clone(),
        metadata,
        databases: plans,
        stop_cmd: opts.hooks.stop_cmd.clone(),
        app_stop: opts.hooks.described.clone(),
        start_cmd: opts.hooks.start_cmd.clone(),
        safety_snapshot: false,
        warnings,
        roles_to_create,
        origin,
        commit,
        safety_repo: opts.safety_repo.location(),
        role_servers,
        safety_crypto,
    };
    plan.safety_snapshot = !opts.no_safety_snapshot && plan.changes_existing();
    Ok(plan)
}

/// How the databases commit: one alone needs nothing; several use
/// two-phase commit when every server has room for their prepared
/// transactions (`capacities`: per server, `max_prepared_transactions` and
/// those in use), else commit one after the other.
fn commit_mode(plans: &[DbPlan], capacities: &BTreeMap<String, (u32, u32)>) -> Commit {
    // A created database is complete once loaded: it commits nothing later.
    let committing: Vec<&DbPlan> = plans
        .iter()
        .filter(|p| p.action != super::Action::Create)
        .collect();
    if committing.len() < 2 {
        return Commit::Single;
    }
    let mut needed: BTreeMap<String, u32> = BTreeMap::new();
    for p in &committing {
        *needed.entry(p.info.server()).or_default() += 1;
    }
    for (server, need) in needed {
        let (max, used) = capacities.get(&server).copied().unwrap_or_default();
        if max == 0 {
            return Commit::OneAfterAnother {
                reason: format!("{server} does not allow prepared transactions (max_prepared_transactions = 0, PostgreSQL's default)"),
            };
        }
        if max.saturating_sub(used) < need {
            return Commit::OneAfterAnother {
                reason: format!("{server} has room for {} more prepared transactions (max_prepared_transactions = {max}, {used} in use), the restore needs {need}", max.saturating_sub(used)),
            };
        }
    }
    Commit::TwoPhase
}

/// The snapshot's origin against the plan's destination.
fn origin_check(
    opts: &RestoreOptions,
    metadata: &Metadata,
    plans: &[DbPlan],
) -> origin::OriginCheck {
    let to = origin::Destination {
        target: opts.restore_target.as_deref(),
        kubernetes: opts.kubernetes.as_ref(),
    };
    let dbs: Vec<origin::LiveDatabase<'_>> = plans
        .iter()
        .filter_map(|p| {
            let entry = metadata.databases.iter().find(|e| e.member == p.member)?;
            Some(origin::LiveDatabase {
                entry,
                live_db: &p.live_db,
                server: p.info.server(),
                exists: p.exists,
                system_identifier: p.system_identifier.as_deref(),
            })
        })
        .collect();
    let mut check = origin::check(metadata, &to, &dbs);
    check.allowed = opts.into_other_origin;
    check
}

/// One error for every refusal: the code of the most specific one (live
/// older first: its advice, upgrade first, comes before anything else),
/// its hint first, then the others' that differ.
fn refused(refusals: Vec<(String, decide::Refusal)>) -> CoreError {
    let first = refusals
        .iter()
        .find(|(_, r)| r.code() == exit::LIVE_OLDER)
        .unwrap_or(&refusals[0]);
    let code = first.1.code();
    let mut hints = vec![first.1.hint()];
    for (_, r) in &refusals {
        if !hints.contains(&r.hint()) {
            hints.push(r.hint());
        }
    }
    let hint = hints.join("\nhint: ");
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
        None if code == exit::USAGE => CoreError::Config { message, hint },
        None => CoreError::Refused {
            message,
            hint,
            code,
        },
    }
}

/// Asks for a password once per server and user, on a terminal.
pub type PasswordPrompt = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct Passwords {
    route: Arc<dyn dbsnap_pg::Resolver>,
    prompt: Option<PasswordPrompt>,
    known: BTreeMap<String, String>,
}

impl Passwords {
    fn new(route: Arc<dyn dbsnap_pg::Resolver>, prompt: Option<PasswordPrompt>) -> Passwords {
        Passwords {
            route,
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
        match replace::admin_client(self.route.as_ref(), info).await {
            Err(e) if e.kind == PgErrorKind::Auth && info.password.is_none() => {
                let Some(ask) = &self.prompt else {
                    return Err(CoreError::Pg(e));
                };
                let Some(pw) = ask(&Self::key(info)) else {
                    return Err(CoreError::Pg(e));
                };
                self.known.insert(Self::key(info), pw.clone());
                info.password = Some(pw);
                Ok(replace::admin_client(self.route.as_ref(), info).await?.0)
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
) -> Result<(decide::Facts, Option<String>, (u32, u32)), CoreError> {
    let admin = passwords.admin(&mut s.info).await?;
    let target = s.info.display();
    let role = replace::role_facts(&admin, &target).await?;
    let server = dbsnap_pg::server_info(&admin, &target).await?;
    let server_major = server.major();
    let capacity = dbsnap_pg::twophase::capacity(&admin, &target).await?;
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
    let wanted: Vec<String> = archive.extensions.iter().cloned().collect();
    let extensions = if wanted.is_empty() {
        BTreeMap::new()
    } else {
        replace::extension_statuses(&admin, &wanted, server_major, &target).await?
    };
    let (mut live_version, mut data_only_obstacles) = (None, Vec::new());
    if exists {
        let client = opts.resolver.connect(&s.info).await?;
        let spec = opts
            .version_specs
            .get(&s.live_db)
            .or(opts.version_specs.get(&entry.name))
            .unwrap_or(&opts.version_spec);
        live_version = schema_version::detect(&client, spec, &target).await?;
        data_only_obstacles = data_only::preflight(&client, &target, &archive).await?;
    }
    let facts = decide::Facts {
        snapshot_db: entry.name.clone(),
        live_db: s.live_db.clone(),
        exists,
        live_version,
        snapshot_version: entry.schema_version.clone(),
        snapshot_major: entry.server_version_num / 10000,
        server_major,
        role,
        roles,
        extensions,
        archive,
        data_only_obstacles,
    };
    Ok((facts, server.system_identifier, capacity))
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
            .map(|s| opts.resolver.resolve(s).map_err(CoreError::from))
            .collect()
    };
    if !opts.databases.is_empty() {
        let given = resolve(&opts.databases)?;
        return select::assign(metadata, chosen, &given, select::Source::Flags);
    }
    // The target the restore is for, else the snapshot's.
    let target = opts.restore_target.as_ref().or(metadata.target.as_ref());
    if let Some(t) = target.and_then(|t| opts.targets.get(t)) {
        return select::assign(metadata, chosen, &resolve(t)?, select::Source::Target);
    }
    select::recorded(metadata, chosen, |s| {
        opts.resolver.resolve(s).map_err(CoreError::from)
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
