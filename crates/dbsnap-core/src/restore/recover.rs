//! After a restore: `resume` finishes an interrupted run (brings the app
//! back, removes half-loaded copies and the run's scratch files, reports
//! what had been done), `rollback` swaps a replaced database back,
//! `cleanup` drops kept copies.

use serde::Serialize;

use super::replace;
use super::state::{Phase, Recovery, RestoreState};
use crate::error::CoreError;
use crate::hooks;
use dbsnap_pg::{PgError, Resolver};
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

async fn admin(
    conn: &str,
    access: Access<'_>,
) -> Result<(tokio_postgres::Client, String), CoreError> {
    let mut info = access.resolver.resolve(conn)?;
    for c in access.creds {
        let c = access.resolver.resolve(c)?;
        if c.hosts == info.hosts && c.ports == info.ports && info.password.is_none() {
            info.password = c.password.clone();
            if c.user != info.user && c.password.is_some() {
                info.user = c.user.clone();
            }
        }
    }
    let (client, admin) = replace::admin_client(access.resolver, &info).await?;
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
        let mut actions: Vec<String> = leftovers(&*st.repository(), true)
            .into_iter()
            .map(|p| format!("removed {p}, left behind by a killed run"))
            .collect();
        for db in st.databases.iter_mut().filter(|d| d.interrupted()) {
            let (client, target) = admin(&db.admin_conn, access).await?;
            let kept_exists = match (&db.old_name, db.phase) {
                (Some(old), Phase::Ready) => exists(&client, old, &target).await?,
                _ => false,
            };
            match db.recovery(kept_exists) {
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
    let runs = RestoreState::all()?;
    let mut st = runs
        .into_iter()
        .find(|s| id.is_none_or(|i| s.id == i) && s.databases.iter().any(|d| d.phase == Phase::Swapped))
        .ok_or_else(|| CoreError::Config {
            message: match id {
                Some(i) => format!("restore {i} replaced no database that can be swapped back"),
                None => "no restore replaced a database that can be swapped back".into(),
            },
            hint: "only drop-and-restore by swap keeps the previous database; see `dbsnap cleanup --dry-run`".into(),
        })?;
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
            replace::swap(&mut client, &db.live, &old, &restored_as, &target).await?;
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

/// Lists (and with `drop`, drops) databases dbsnap kept (`__dbsnap_`
/// names) on the servers of recorded restores and of `extra` connections.
pub async fn cleanup(access: Access<'_>, drop: bool) -> Result<Vec<KeptCopy>, CoreError> {
    let mut servers: Vec<String> = RestoreState::all()?
        .iter()
        .filter(|s| s.route == access.resolver.route())
        .flat_map(|s| s.databases.iter().map(|d| d.admin_conn.clone()))
        .collect();
    servers.extend(access.creds.iter().cloned());
    servers.sort();
    servers.dedup();
    let mut out = Vec::new();
    // One server reached as two users (or by two names) is listed once.
    let mut instances = std::collections::BTreeSet::new();
    for conn in servers {
        let (client, target) = admin(&conn, access).await?;
        let instance = dbsnap_pg::server_info(&client, &target).await?.instance_id;
        if !instances.insert(instance) {
            continue;
        }
        let server = target.rsplit_once('/').map(|x| x.0).unwrap_or(&target);
        let server = server.split_once('@').map_or(server, |x| x.1).to_string();
        let rows = client
            .query(
                "SELECT datname::text, pg_database_size(oid) FROM pg_database WHERE datname LIKE '%\\_\\_dbsnap\\_%' ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| CoreError::Pg(PgError::from_pg(e, &target, "list kept databases")))?;
        for r in rows {
            let name: String = r.get(0);
            if drop {
                replace::drop_database(&client, &name, &target).await?;
                tracing::info!("dropped kept database {name} on {server}");
            }
            out.push(KeptCopy {
                server: server.clone(),
                name,
                bytes: r.get(1),
            });
        }
    }
    Ok(out)
}
