//! After a restore: `resume` finishes an interrupted run (brings the app
//! back, removes half-loaded copies and the run's scratch files, reports
//! what had been done), `rollback` swaps a replaced database back,
//! `cleanup` drops kept copies and removes what killed runs left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::state::{Phase, Recovery, RestoreState};
use super::{commit, replace};
use crate::error::CoreError;
use crate::hooks;
use dbsnap_pg::{ConnInfo, PgError, Resolver};
use dbsnap_storage::Repository;

/// What `resume` did for one interrupted run.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// Run id.
    pub id: String,
    /// Snapshot that was being restored.
    pub file: String,
    /// Per database: name and the phase it was found in.
    pub databases: Vec<(String, Phase)>,
    /// Actions taken.
    pub actions: Vec<String>,
    /// Whether the app was started again.
    pub started_app: bool,
}

/// How recovery reaches the servers a journal names.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    /// The route, which must be the one the restore used.
    pub resolver: &'a dyn Resolver,
    /// Credentials for the journal's password-less connections: a `-d`
    /// string for the same host and port lends its password.
    pub creds: &'a [String],
    /// How the repositories the journals name are reached.
    pub locations: &'a dbsnap_storage::Locations,
}

/// Refuses to recover a run through another route than it was made by.
fn same_route(st: &RestoreState, access: Access<'_>) -> Result<(), CoreError> {
    if st.route == access.resolver.route() {
        return Ok(());
    }
    Err(CoreError::Config {
        message: format!(
            "restore {} reached its databases by route \"{}\", this run by \"{}\"",
            st.id,
            st.route,
            access.resolver.route()
        ),
        hint: "run it the way the restore was run (the same --k8s or connection options)".into(),
    })
}

/// The settings for `conn` (a journal's password-less connection, or a
/// `-d` string), with the password a `-d` string for its server lends.
fn credentials(conn: &str, access: Access<'_>) -> Result<ConnInfo, CoreError> {
    let mut info = access.resolver.resolve(conn)?;
    let lenders = access
        .creds
        .iter()
        .map(|c| access.resolver.resolve(c))
        .collect::<Result<Vec<_>, _>>()?;
    lend_password(&mut info, &lenders);
    Ok(info)
}

/// Gives `info` (a journal's password-less connection) the password, and
/// with it the role, of a lender for the same host and port.
pub(crate) fn lend_password(info: &mut ConnInfo, lenders: &[ConnInfo]) {
    for c in lenders {
        if c.hosts == info.hosts && c.ports == info.ports && info.password.is_none() {
            info.password = c.password.clone();
            if c.user != info.user && c.password.is_some() {
                info.user = c.user.clone();
            }
        }
    }
}

async fn admin(
    conn: &str,
    access: Access<'_>,
) -> Result<(tokio_postgres::Client, String), CoreError> {
    connect_admin(&credentials(conn, access)?, access).await
}

async fn connect_admin(
    info: &ConnInfo,
    access: Access<'_>,
) -> Result<(tokio_postgres::Client, String), CoreError> {
    let (client, admin) = replace::admin_client(access.resolver, info).await?;
    Ok((client, admin.display()))
}

/// What runs killed with `-9` left in `repo` (a restore's scratch files, a
/// partial snapshot), removed when `remove`; their paths. A repository
/// that cannot be looked at is only a warning: the command did not need it.
pub fn leftovers(repo: &dyn Repository, remove: bool) -> Vec<String> {
    let found = if remove {
        repo.remove_stale()
    } else {
        repo.stale()
    };
    match found {
        Ok(paths) => {
            if remove {
                for p in &paths {
                    tracing::info!("removed {p}, left behind by a killed run");
                }
            }
            paths
        }
        Err(e) => {
            tracing::warn!(
                "could not look for what killed runs left in {}: {e}",
                repo.location()
            );
            Vec::new()
        }
    }
}

async fn exists(
    client: &tokio_postgres::Client,
    name: &str,
    target: &str,
) -> Result<bool, CoreError> {
    Ok(replace::db_facts(client, name, target).await?.is_some())
}

/// Finishes every interrupted restore.
pub async fn resume(access: Access<'_>) -> Result<Vec<Resumed>, CoreError> {
    let mut out = Vec::new();
    for mut st in RestoreState::all()?.into_iter().filter(|s| !s.finished) {
        same_route(&st, access)?;
        let mut actions: Vec<String> = leftovers(&*st.repository(access.locations), true)
            .into_iter()
            .map(|p| format!("removed {p}, left behind by a killed run"))
            .collect();
        let decided = st.commit_decided;
        for db in st.databases.iter_mut().filter(|d| d.interrupted()) {
            let (client, target) = admin(&db.admin_conn, access).await?;
            if db.phase == Phase::Prepared {
                // Finished where it was prepared, by the run's decision.
                let database = db
                    .prepared
                    .as_ref()
                    .map(|p| p.database.clone())
                    .unwrap_or_default();
                let info = credentials(&db.admin_conn, access)?.with_dbname(&database);
                let there = access.resolver.connect(&info).await?;
                match commit::settle(&there, db, decided, &target).await? {
                    commit::Settled::Committed(then) => {
                        db.phase = then;
                        actions.push(format!(
                            "{}: committed its prepared transaction (the run had prepared every database)",
                            db.live
                        ));
                        continue;
                    }
                    commit::Settled::RolledBack { copy } => {
                        actions.push(format!(
                            "{}: rolled back its prepared transaction (the run stopped before it decided to commit); the live database was not changed",
                            db.live
                        ));
                        db.phase = if copy.is_some() {
                            Phase::Ready
                        } else {
                            Phase::Failed
                        };
                        if copy.is_none() {
                            continue;
                        }
                    }
                }
            }
            let kept_exists = match (&db.old_name, db.phase) {
                (Some(old), Phase::Ready) => exists(&client, old, &target).await?,
                _ => false,
            };
            match db.recovery(kept_exists, decided, false) {
                Recovery::Nothing => {}
                Recovery::SwapHadCompleted { kept } => {
                    db.phase = Phase::Swapped;
                    actions.push(format!(
                        "{}: the swap had completed; the previous database is kept as {kept}",
                        db.live
                    ));
                }
                Recovery::DropCopy { copy } => {
                    if let Some(copy) = copy {
                        replace::drop_database(&client, &copy, &target).await?;
                        actions.push(format!(
                            "{}: removed the incomplete copy {copy}; the live database was not touched",
                            db.live
                        ));
                    }
                    db.phase = Phase::Failed;
                }
                Recovery::CommitPrepared { .. } | Recovery::RollBackPrepared { .. } => {}
            }
        }
        let mut started_app = false;
        if st.app_stopped {
            if let Some(start) = st.start_cmd.clone() {
                hooks::run("start", &start).await?;
                actions.push(format!("ran the start command `{start}`"));
                started_app = true;
            }
            st.app_stopped = false;
        }
        st.finished = true;
        st.save()?;
        out.push(Resumed {
            id: st.id.clone(),
            file: st.file.clone(),
            databases: st
                .databases
                .iter()
                .map(|d| (d.live.clone(), d.phase))
                .collect(),
            actions,
            started_app,
        });
    }
    Ok(out)
}

/// Refuses to act on databases while a journal holds prepared transactions
/// (their locks would make it wait, and only the run's decision may
/// finish them): `resume` does.
fn refuse_while_prepared(journals: &[RestoreState]) -> Result<(), CoreError> {
    let Some(st) = journals
        .iter()
        .find(|s| s.databases.iter().any(|d| d.phase == Phase::Prepared))
    else {
        return Ok(());
    };
    Err(CoreError::Config {
        message: format!(
            "restore {} left prepared transactions (two-phase commit) in {}, holding their locks",
            st.id,
            st.databases
                .iter()
                .filter(|d| d.phase == Phase::Prepared)
                .map(|d| d.live.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        hint: "run `dbsnap resume` first: it commits or rolls them back as the run had decided"
            .into(),
    })
}

/// How long `rollback` waits for the locks of its rename.
const ROLLBACK_LOCK_TIMEOUT: &str = "30s";

/// What a recovery command is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// `resume`: finish interrupted runs.
    Resume,
    /// `cleanup`: drop kept copies.
    Cleanup,
}

/// Whether a recovery command may need a server through a cluster route
/// (which is opened only then): `resume`, any run left unfinished (one made
/// another way is refused by its route, as before); `cleanup`, a run made
/// through a route other than the direct one that may have kept a copy.
pub fn routed_work(work: Work) -> Result<bool, CoreError> {
    let all = RestoreState::all()?;
    Ok(match work {
        Work::Resume => all.iter().any(|s| !s.finished),
        Work::Cleanup => all
            .iter()
            .any(|s| s.route != "direct" && s.databases.iter().any(|d| d.may_have_kept_copy())),
    })
}

/// The run `rollback` would undo: `id`, else the latest that swapped a
/// database in; an error saying there is none, or that a run's prepared
/// transactions must be finished first.
pub fn rollback_run(id: Option<&str>) -> Result<RestoreState, CoreError> {
    let journals = RestoreState::all()?;
    refuse_while_prepared(&journals)?;
    journals
        .into_iter()
        .find(|s| id.is_none_or(|i| s.id == i) && s.databases.iter().any(|d| d.phase == Phase::Swapped))
        .ok_or_else(|| CoreError::Config {
            message: match id {
                Some(i) => format!("restore {i} replaced no database that can be swapped back"),
                None => "no restore replaced a database that can be swapped back".into(),
            },
            hint: "only drop-and-restore by swap keeps the previous database; see `dbsnap cleanup --dry-run`".into(),
        })
}

/// What `rollback` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    /// Run id undone.
    pub id: String,
    /// (database, name the restored copy is now kept under).
    pub databases: Vec<(String, String)>,
}

/// Swaps back the databases replaced by restore run `id` (default: the
/// latest run that swapped any). The restored copy is kept, renamed.
/// With `dry_run`, checks the same things and changes nothing.
pub async fn rollback(
    id: Option<&str>,
    access: Access<'_>,
    dry_run: bool,
) -> Result<RolledBack, CoreError> {
    let mut st = rollback_run(id)?;
    same_route(&st, access)?;
    let mut done = Vec::new();
    for db in st
        .databases
        .iter_mut()
        .filter(|d| d.phase == Phase::Swapped)
    {
        let old = db
            .old_name
            .clone()
            .expect("swapped database has a kept name");
        let (mut client, target) = admin(&db.admin_conn, access).await?;
        if !exists(&client, &old, &target).await? {
            return Err(CoreError::Config {
                message: format!(
                    "{target}: the kept database {old} no longer exists (dropped by cleanup?)"
                ),
                hint: "restore the safety snapshot instead".into(),
            });
        }
        let restored_as = replace::copy_name(&db.live, "rolledback", &st.id);
        if !dry_run {
            // Never wait forever behind another session's locks.
            client
                .batch_execute(&format!("SET lock_timeout = '{ROLLBACK_LOCK_TIMEOUT}'"))
                .await
                .map_err(|e| CoreError::Pg(PgError::from_pg(e, &target, "set lock_timeout")))?;
            replace::swap(&mut client, &db.live, &old, &restored_as, &target, None).await?;
            db.phase = Phase::RolledBack;
        }
        done.push((db.live.clone(), restored_as));
    }
    if !dry_run {
        st.save()?;
    }
    Ok(RolledBack {
        id: st.id.clone(),
        databases: done,
    })
}

/// A kept copy found by `cleanup`.
#[derive(Debug, Clone, Serialize)]
pub struct KeptCopy {
    /// Server (no password).
    pub server: String,
    /// Database name.
    pub name: String,
    /// Size in bytes.
    pub bytes: i64,
}

/// A server `cleanup` needed and could not clean up: nothing on it was
/// listed, or (with `--yes`) only what is in [`Cleanup::kept`] was dropped.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFailure {
    /// Server (`host:port`).
    pub server: String,
    /// Why, with the hint.
    pub error: String,
    /// The error's kind, as in every command's JSON errors.
    pub kind: &'static str,
    /// The error's exit code.
    pub exit_code: u8,
    /// The restore journals that send `cleanup` there (empty: only `-d`).
    pub journals: Vec<PathBuf>,
    /// What to do about it.
    pub hint: String,
}

impl ServerFailure {
    fn new(server: Server, e: &CoreError) -> ServerFailure {
        let hint = if server.journals.is_empty() {
            "check the server and its -d connection string, then run `dbsnap cleanup` again"
                .to_string()
        } else {
            let files: Vec<String> = server
                .journals
                .iter()
                .map(|j| j.display().to_string())
                .collect();
            format!(
                "start the server and run `dbsnap cleanup` again (with -d CONNSTR for it if it needs another user or a password); if it is gone for good, remove the restore journal{} naming it: {}",
                if files.len() == 1 { "" } else { "s" },
                files.join(" ")
            )
        };
        ServerFailure {
            server: server.label,
            error: e.to_string(),
            kind: e.kind_name(),
            exit_code: e.exit_code(),
            journals: server.journals,
            hint,
        }
    }
}

/// What `cleanup` found, and with `drop` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cleanup {
    /// Kept copies on the servers it reached (dropped, with `drop`).
    pub kept: Vec<KeptCopy>,
    /// Servers it needed and could not clean up.
    pub failed: Vec<ServerFailure>,
    /// What killed runs left in the repositories (see [`leftovers`]).
    pub leftovers: Vec<String>,
}

/// A server `cleanup` looks at: the ways to connect to it, and the
/// journals that name it.
struct Server {
    label: String,
    conns: Vec<ConnInfo>,
    journals: Vec<PathBuf>,
}

/// Lists (and with `drop`, drops) databases dbsnap kept (`__dbsnap_`
/// names) on the servers of recorded restores that may have left one (see
/// [`DbRecord::may_have_kept_copy`](super::state::DbRecord::may_have_kept_copy))
/// and of `-d` connections; and what killed runs left in `repo` and in the
/// repositories restores read from. A server that fails is reported in
/// [`Cleanup::failed`], and the others are still cleaned up.
///
/// `servers: false` looks at the repositories only (the route that would
/// reach the servers was not opened: see [`routed_work`]).
pub async fn cleanup(
    access: Access<'_>,
    repo: &Arc<dyn Repository>,
    drop: bool,
    servers: bool,
) -> Result<Cleanup, CoreError> {
    let journals = RestoreState::all()?;
    // A copy a prepared swap is about to put in place must not be dropped,
    // and prepared transactions are finished by the run's decision only.
    refuse_while_prepared(&journals)?;
    let mut out = Cleanup::default();
    let mut repos: BTreeMap<String, Arc<dyn Repository>> = BTreeMap::new();
    for r in
        std::iter::once(repo.clone()).chain(journals.iter().map(|s| s.repository(access.locations)))
    {
        repos.entry(r.location()).or_insert(r);
    }
    for r in repos.values() {
        out.leftovers.extend(leftovers(&**r, drop));
    }
    // One server reached as two users (or by two names) is listed once.
    let mut instances = BTreeSet::new();
    let to_clean = if servers {
        servers_to_clean(&journals, access)?
    } else {
        Vec::new()
    };
    for server in to_clean {
        if let Err(e) = clean_server(&server, access, drop, &mut instances, &mut out.kept).await {
            out.failed.push(ServerFailure::new(server, &e));
        }
    }
    if drop {
        record_dropped(journals, &out.kept, access)?;
    }
    Ok(out)
}

/// Records in the journals that the kept copies `dropped` are gone, so
/// that no later `cleanup` looks for them (nor asks for their server).
fn record_dropped(
    journals: Vec<RestoreState>,
    dropped: &[KeptCopy],
    access: Access<'_>,
) -> Result<(), CoreError> {
    for mut st in journals {
        let mut changed = false;
        for db in st.databases.iter_mut().filter(|d| d.may_have_kept_copy()) {
            let server = credentials(&db.admin_conn, access)?.server();
            let names = [
                db.old_name.clone(),
                db.new_name.clone(),
                Some(replace::copy_name(&db.live, "rolledback", &st.id)),
            ];
            if dropped
                .iter()
                .any(|k| k.server == server && names.iter().flatten().any(|n| *n == k.name))
            {
                db.kept_dropped = true;
                changed = true;
            }
        }
        if changed {
            st.save()?;
        }
    }
    Ok(())
}

/// The servers `cleanup` must look at, by `host:port`: those of the
/// journals' databases that may have left a kept copy (restores made by
/// this route), and those named by `-d`.
fn servers_to_clean(
    journals: &[RestoreState],
    access: Access<'_>,
) -> Result<Vec<Server>, CoreError> {
    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    let mut add = |conn: &str, journal: Option<PathBuf>| -> Result<(), CoreError> {
        let info = credentials(conn, access)?;
        let label = info.server();
        let server = servers.entry(label.clone()).or_insert_with(|| Server {
            label,
            conns: Vec::new(),
            journals: Vec::new(),
        });
        if !server.conns.contains(&info) {
            server.conns.push(info);
        }
        if let Some(j) = journal.filter(|j| !server.journals.contains(j)) {
            server.journals.push(j);
        }
        Ok(())
    };
    for st in journals
        .iter()
        .filter(|s| s.route == access.resolver.route())
    {
        for db in st.databases.iter().filter(|d| d.may_have_kept_copy()) {
            add(&db.admin_conn, Some(st.path()))?;
        }
    }
    for conn in access.creds {
        add(conn, None)?;
    }
    Ok(servers.into_values().collect())
}

/// Lists (and with `drop`, drops) the kept copies on `server` into `kept`,
/// unless its instance was cleaned up already under another name.
async fn clean_server(
    server: &Server,
    access: Access<'_>,
    drop: bool,
    instances: &mut BTreeSet<String>,
    kept: &mut Vec<KeptCopy>,
) -> Result<(), CoreError> {
    let (client, target) = connect_any(&server.conns, access).await?;
    let instance = dbsnap_pg::server_info(&client, &target).await?.instance_id;
    if !instances.insert(instance) {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datname LIKE '%\\_\\_dbsnap\\_%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| CoreError::Pg(PgError::from_pg(e, &target, "list kept databases")))?;
    // Prepared by a restore whose journal is gone: only a person can tell
    // whether the run's other databases committed.
    for (gid, database) in dbsnap_pg::twophase::list(&client, "dbsnap-", &target).await? {
        tracing::warn!(
            "{target}: prepared transaction {gid} in database {database} was left by a restore whose journal is gone; it holds its locks until finished: COMMIT PREPARED '{gid}' if the restore's other databases were restored, else ROLLBACK PREPARED '{gid}' (connected to {database})"
        );
    }
    for r in rows {
        let name: String = r.get(0);
        if drop {
            replace::drop_database(&client, &name, &target).await?;
            tracing::info!("dropped kept database {name} on {}", server.label);
        }
        kept.push(KeptCopy {
            server: server.label.clone(),
            name,
            bytes: r.get(1),
        });
    }
    Ok(())
}

/// The first of `conns` (one server, as several users) that connects; the
/// last error when none does.
async fn connect_any(
    conns: &[ConnInfo],
    access: Access<'_>,
) -> Result<(tokio_postgres::Client, String), CoreError> {
    let mut last = None;
    for info in conns {
        match connect_admin(info, access).await {
            Ok(connected) => return Ok(connected),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| CoreError::Internal("a server without connections".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::state::DbRecord;

    fn journal(id: &str, route: &str, port: u16, phase: Phase, new_name: &str) -> RestoreState {
        RestoreState {
            id: id.into(),
            file: "/snapshots/app.tar".into(),
            route: route.into(),
            started_at: String::new(),
            stop_cmd: None,
            start_cmd: None,
            app_stopped: false,
            safety_snapshot: None,
            databases: vec![DbRecord {
                live: "app".into(),
                admin_conn: format!("host=127.0.0.1 port={port} user=admin dbname=postgres"),
                new_name: Some(new_name.into()),
                old_name: None,
                phase,
                prepared: None,
                kept_dropped: false,
            }],
            finished: true,
            commit_decided: false,
        }
    }

    #[test]
    fn cleanup_looks_only_where_a_kept_copy_may_be_and_at_the_servers_named() {
        let journals = [
            journal("1", "direct", 5001, Phase::Swapped, "app__dbsnap_new_1"),
            journal("2", "direct", 5001, Phase::RolledBack, "app__dbsnap_new_2"),
            // Created, restored in place, failed: nothing kept.
            journal("3", "direct", 5002, Phase::Committed, "app"),
            journal("4", "direct", 5002, Phase::Committed, "app__dbsnap_new_4"),
            journal("5", "direct", 5003, Phase::Failed, "app__dbsnap_new_5"),
            // Made through another route: recovered that way only.
            journal("6", "alias", 5004, Phase::Swapped, "app__dbsnap_new_6"),
        ];
        let creds = ["postgres://admin:pw@127.0.0.1:5001/postgres".to_string()];
        let locations = dbsnap_storage::Locations::default();
        let access = Access {
            resolver: &crate::DIRECT,
            creds: &creds,
            locations: &locations,
        };
        let servers = servers_to_clean(&journals, access).unwrap();
        let labels: Vec<&str> = servers.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["127.0.0.1:5001"]);
        // Both journals named, one connection (the -d string lends its password).
        assert_eq!(
            servers[0].journals,
            [journals[0].path(), journals[1].path()]
        );
        assert_eq!(servers[0].conns.len(), 1);
        assert_eq!(servers[0].conns[0].password.as_deref(), Some("pw"));
    }
}
