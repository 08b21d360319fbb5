//! Server administration dbsnap's restore needs, as named operations:
//! the connected role and the roles an archive names, database facts,
//! creating (from an archive's own `CREATE DATABASE`), configuring,
//! renaming (the swap) and dropping databases, ending sessions.

use std::collections::BTreeMap;

use dbsnap_archive::sql::quote_ident;
use dbsnap_archive::toc::DatabaseProps;
use tokio_postgres::Client;

use crate::conninfo::ConnInfo;
use crate::error::{PgError, PgErrorKind};

/// What the connected role may do on the live server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleFacts {
    /// Its name.
    pub name: String,
    /// Superuser.
    pub superuser: bool,
    /// May create databases.
    pub createdb: bool,
    /// May create roles.
    pub createrole: bool,
}

/// The connected role's relation to a role the archive names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleStatus {
    /// The role exists on the live server.
    pub exists: bool,
    /// The connected role may act as it (member; SET on PostgreSQL 16+).
    pub member: bool,
    /// The connected role holds it WITH ADMIN OPTION (or is superuser).
    pub admin: bool,
}

/// What a server offers of an extension an archive creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionStatus {
    /// In `pg_available_extensions`: its files are installed on the server.
    pub available: bool,
    /// Only a superuser may create its default version: it needs one and
    /// is not trusted (trust came with PostgreSQL 13).
    pub superuser_only: bool,
}

/// Facts about a live database, used to create its replacement alike when
/// the archive does not say how it was created.
#[derive(Debug, Clone)]
pub struct DbFacts {
    /// Owner role.
    pub owner: String,
    /// Encoding name.
    pub encoding: String,
    /// LC_COLLATE.
    pub collate: String,
    /// LC_CTYPE.
    pub ctype: String,
}

/// Connects to a maintenance database on `info`'s server (`postgres`, else
/// `template1`); returns the client and the settings used.
pub async fn admin_client(
    route: &dyn crate::Resolver,
    info: &ConnInfo,
) -> Result<(Client, ConnInfo), PgError> {
    let mut failed: Option<PgError> = None;
    for db in ["postgres", "template1"] {
        let admin = info.with_dbname(db);
        match route.connect(&admin).await {
            Ok(c) => return Ok((c, admin)),
            Err(e) if e.kind == PgErrorKind::NoDatabase || e.kind == PgErrorKind::Auth => {
                // The first refused login is the one to report (template1
                // is only the fallback when postgres does not exist).
                if failed.as_ref().is_none_or(|f| f.kind != PgErrorKind::Auth) {
                    failed = Some(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut e = failed.expect("tried at least one");
    let why = "dbsnap logs in to the server's maintenance database (postgres, else template1) \
               to create, rename and drop databases";
    e.hint = Some(match e.hint.take() {
        Some(h) => format!("{h}; {why}"),
        None => why.to_string(),
    });
    Err(e)
}

/// The connected role and its privileges.
pub async fn role_facts(client: &Client, target: &str) -> Result<RoleFacts, PgError> {
    let r = client
        .query_one(
            "SELECT rolname::text, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "read role privileges"))?;
    Ok(RoleFacts {
        name: r.get(0),
        superuser: r.get(1),
        createdb: r.get(2),
        createrole: r.get(3),
    })
}

/// How the connected role relates to each of `roles` on the live server.
pub async fn role_statuses(
    admin: &Client,
    roles: &[String],
    server_major: u32,
    target: &str,
) -> Result<BTreeMap<String, RoleStatus>, PgError> {
    // Owning a database needs SET on its owner from PostgreSQL 16, membership before.
    let act_as = if server_major >= 16 { "SET" } else { "MEMBER" };
    let rows = admin
        .query(
            &format!(
                "SELECT r, o IS NOT NULL, \
                        CASE WHEN o IS NULL THEN false ELSE pg_has_role(o, '{act_as}') END, \
                        CASE WHEN o IS NULL THEN false ELSE pg_has_role(o, 'MEMBER WITH ADMIN OPTION') END \
                 FROM unnest($1::text[]) r LEFT JOIN LATERAL (SELECT oid FROM pg_roles WHERE rolname = r) x(o) ON true"
            ),
            &[&roles],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "check roles"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                RoleStatus {
                    exists: r.get(1),
                    member: r.get(2),
                    admin: r.get(3),
                },
            )
        })
        .collect())
}

/// What the server offers of each of `extensions`.
pub async fn extension_statuses(
    admin: &Client,
    extensions: &[String],
    server_major: u32,
    target: &str,
) -> Result<BTreeMap<String, ExtensionStatus>, PgError> {
    // `trusted` (PostgreSQL 13) lets a non-superuser with CREATE create it.
    let superuser_only = if server_major >= 13 {
        "coalesce(v.superuser AND NOT v.trusted, false)"
    } else {
        "coalesce(v.superuser, false)"
    };
    let rows = admin
        .query(
            &format!(
                "SELECT x, a.name IS NOT NULL, {superuser_only} \
                 FROM unnest($1::text[]) x \
                 LEFT JOIN pg_available_extensions a ON a.name = x \
                 LEFT JOIN pg_available_extension_versions v ON v.name = x AND v.version = a.default_version"
            ),
            &[&extensions],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "check available extensions"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                ExtensionStatus {
                    available: r.get(1),
                    superuser_only: r.get(2),
                },
            )
        })
        .collect())
}

/// Creates each of `roles` that does not exist yet (NOLOGIN).
pub async fn create_roles(admin: &Client, roles: &[String], target: &str) -> Result<(), PgError> {
    for role in roles {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(|e| PgError::from_pg(e, target, "check roles"))?
            .is_some();
        if !exists {
            tracing::info!("creating role {role} on {target}");
            admin
                .batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote_ident(role)))
                .await
                .map_err(|e| PgError::from_pg(e, target, &format!("create role {role}")))?;
        }
    }
    Ok(())
}

/// Facts about database `name`, or None if it does not exist.
pub async fn db_facts(
    admin: &Client,
    name: &str,
    target: &str,
) -> Result<Option<DbFacts>, PgError> {
    let row = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
             FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "read database facts"))?;
    Ok(row.map(|r| DbFacts {
        owner: r.get(0),
        encoding: r.get(1),
        collate: r.get(2),
        ctype: r.get(3),
    }))
}

/// How a new database is made.
#[derive(Debug, Clone, Copy)]
pub struct NewDatabase<'a> {
    /// The archive's database-level properties (its `CREATE DATABASE`).
    pub props: Option<&'a DatabaseProps>,
    /// The live database it replaces (encoding and locale when the archive
    /// has no `CREATE DATABASE`).
    pub like: Option<&'a DbFacts>,
    /// Owner to give it; None: the connected role.
    pub owner: Option<&'a str>,
}

/// Creates database `name` with the archive's encoding and locale (pg_dump's
/// own `CREATE DATABASE`, renamed), else like the live one, and its owner.
pub async fn create_database(
    admin: &Client,
    name: &str,
    how: NewDatabase<'_>,
    target: &str,
) -> Result<(), PgError> {
    let sql = match (how.props.and_then(|p| p.create_for(name)), how.like) {
        (Some(create), _) => create.trim_end_matches(';').to_string(),
        (None, Some(f)) => format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING '{}' LC_COLLATE '{}' LC_CTYPE '{}'",
            quote_ident(name),
            f.encoding.replace('\'', "''"),
            f.collate.replace('\'', "''"),
            f.ctype.replace('\'', "''")
        ),
        (None, None) => format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name)),
    };
    let sql = for_server(admin, sql).await;
    admin.batch_execute(&sql).await.map_err(|e| {
        let mut err = PgError::from_pg(e, target, &format!("create database {name}"));
        err.hint = Some(match err.kind {
            PgErrorKind::Privilege => {
                "the role needs CREATEDB, or restore in place (dbsnap does so when it lacks CREATEDB)".into()
            }
            _ => format!(
                "the snapshot's database was created with: {sql}; create {name} yourself with settings \
                 this server supports, then restore into it"
            ),
        });
        err
    })?;
    if let Some(owner) = how.owner {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} OWNER TO {}",
                quote_ident(name),
                quote_ident(owner)
            ))
            .await
            .map_err(|e| {
                PgError::from_pg(e, target, &format!("give database {name} to {owner}"))
            })?;
    }
    Ok(())
}

/// pg_dump 18 writes `LOCALE_PROVIDER = libc` for every server, and
/// servers before 15 do not know the option (libc is their only provider):
/// it is left out for them.
async fn for_server(admin: &Client, sql: String) -> String {
    const LIBC: &str = " LOCALE_PROVIDER = libc";
    if !sql.contains(LIBC) {
        return sql;
    }
    let version = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .ok()
        .map(|r| r.get::<_, i32>(0));
    match version {
        Some(v) if v < 150000 => sql.replacen(LIBC, "", 1),
        _ => sql,
    }
}

/// Applies the archive's database-level properties (comment, settings,
/// per-role settings, grants, security labels) to database `name`, in one
/// transaction. A setting this server does not know is reported back as
/// ignored (version noise); anything else fails the whole step.
pub async fn apply_database_properties(
    admin: &mut Client,
    props: &DatabaseProps,
    name: &str,
    privileges: bool,
    target: &str,
) -> Result<Vec<String>, PgError> {
    let tx = admin
        .transaction()
        .await
        .map_err(|e| PgError::from_pg(e, target, "begin database properties"))?;
    let mut ignored = Vec::new();
    for stmt in props.statements_for(name, privileges) {
        tx.batch_execute("SAVEPOINT dbsnap_property")
            .await
            .map_err(|e| PgError::from_pg(e, target, "savepoint"))?;
        match tx.batch_execute(&stmt.sql).await {
            Ok(()) => {}
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT)
                    && crate::error::error_chain(&e).contains("configuration parameter") =>
            {
                tracing::warn!(
                    "{target}: ignored database setting the server does not know: {}",
                    stmt.sql
                );
                ignored.push(format!("{}: {}", stmt.sql, crate::error::error_chain(&e)));
                tx.batch_execute("ROLLBACK TO SAVEPOINT dbsnap_property")
                    .await
                    .map_err(|e| PgError::from_pg(e, target, "rollback to savepoint"))?;
            }
            Err(e) => {
                let mut err = PgError::from_pg(e, target, &format!("apply `{}`", stmt.sql));
                err.hint = Some(
                    "the database-level properties of the snapshot could not be applied to the restored copy; \
                     the live database was not changed"
                        .into(),
                );
                return Err(err);
            }
        }
    }
    tx.commit()
        .await
        .map_err(|e| PgError::from_pg(e, target, "commit database properties"))?;
    Ok(ignored)
}

/// Drops database `name` if it exists.
pub async fn drop_database(admin: &Client, name: &str, target: &str) -> Result<(), PgError> {
    terminate_sessions(admin, name, target).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
        .await
        .map_err(|e| PgError::from_pg(e, target, &format!("drop database {name}")))
}

/// Ends other sessions connected to `db`; returns how many.
pub async fn terminate_sessions(admin: &Client, db: &str, target: &str) -> Result<u64, PgError> {
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .map_err(|e| {
            PgError::from_pg(e, target, &format!("end sessions on {db}"))
                .remedy(crate::error::Remedy::StopApplication)
        })?;
    Ok(rows.len() as u64)
}

/// Renames `live` to `old` and `new` to `live` in one transaction, committed,
/// or with `prepare` prepared under that id (two-phase commit).
pub async fn swap(
    admin: &mut Client,
    live: &str,
    new: &str,
    old: &str,
    target: &str,
    prepare: Option<&str>,
) -> Result<(), PgError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        terminate_sessions(admin, live, target).await?;
        terminate_sessions(admin, new, target).await?;
        let tx = admin
            .transaction()
            .await
            .map_err(|e| PgError::from_pg(e, target, "begin the swap"))?;
        let r = tx
            .batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}",
                quote_ident(live),
                quote_ident(old),
                quote_ident(new),
                quote_ident(live)
            ))
            .await;
        match r {
            Ok(()) => {
                return crate::twophase::finish(tx, prepare, target, "commit the swap").await;
            }
            Err(e)
                if attempt < 10
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                // A session reconnected between termination and rename.
                drop(tx);
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(PgError::from_pg(e, target, "swap the databases")),
        }
    }
}
