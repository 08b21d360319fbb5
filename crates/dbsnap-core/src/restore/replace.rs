//! Drop-and-restore without ever destroying live data before the restored
//! copy is complete:
//!
//! - swap (the role may create databases): restore into a new database with
//!   stock pg_restore, check it, then rename both databases in one
//!   transaction; the previous database is kept under a clear name for
//!   `dbsnap rollback`;
//! - in place (no CREATEDB): drop the role's objects and recreate them from
//!   the archive inside one transaction (pg_restore's script through psql
//!   with ON_ERROR_STOP): either all of it commits or none;
//! - create: the database does not exist yet; create it and restore.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use std::collections::BTreeMap;

use dbsnap_archive::snapshot;
use dbsnap_archive::toc::DatabaseProps;
use dbsnap_pg::process::Tool;
use dbsnap_pg::tools::Program;
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind};
use dbsnap_storage::SnapshotRef;
use tokio_postgres::Client;

use super::data_only::quote_ident;
use super::decide::{RoleFacts, RoleStatus};
use super::pg_err;
use crate::error::CoreError;

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
pub async fn admin_client(info: &ConnInfo) -> Result<(Client, ConnInfo), CoreError> {
    let mut last = None;
    for db in ["postgres", "template1"] {
        let admin = info.with_dbname(db);
        match dbsnap_pg::connect(&admin).await {
            Ok(c) => return Ok((c, admin)),
            Err(e) if e.kind == PgErrorKind::NoDatabase || e.kind == PgErrorKind::Auth => {
                last = Some(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.expect("tried at least one").into())
}

/// The connected role and its privileges.
pub async fn role_facts(client: &Client, target: &str) -> Result<RoleFacts, CoreError> {
    let r = client
        .query_one(
            "SELECT rolname::text, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(pg_err(target, "read role privileges"))?;
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
) -> Result<BTreeMap<String, RoleStatus>, CoreError> {
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
        .map_err(pg_err(target, "check roles"))?;
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

/// Creates each of `roles` that does not exist yet (NOLOGIN).
pub async fn create_roles(admin: &Client, roles: &[String], target: &str) -> Result<(), CoreError> {
    for role in roles {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
            .await
            .map_err(pg_err(target, "check roles"))?
            .is_some();
        if !exists {
            tracing::info!("creating role {role} on {target}");
            admin
                .batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote_ident(role)))
                .await
                .map_err(pg_err(target, &format!("create role {role}")))?;
        }
    }
    Ok(())
}

/// Facts about database `name`, or None if it does not exist.
pub async fn db_facts(
    admin: &Client,
    name: &str,
    target: &str,
) -> Result<Option<DbFacts>, CoreError> {
    let row = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
             FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(pg_err(target, "read database facts"))?;
    Ok(row.map(|r| DbFacts {
        owner: r.get(0),
        encoding: r.get(1),
        collate: r.get(2),
        ctype: r.get(3),
    }))
}

/// A name for a kept or new copy: `<live>__dbsnap_<tag>_<id>`, within
/// PostgreSQL's 63-byte identifier limit.
pub fn copy_name(live: &str, tag: &str, id: &str) -> String {
    let suffix = format!("__dbsnap_{tag}_{id}");
    let mut base = live.to_string();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
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
) -> Result<(), CoreError> {
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
        CoreError::Pg(err)
    })?;
    if let Some(owner) = how.owner {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} OWNER TO {}",
                quote_ident(name),
                quote_ident(owner)
            ))
            .await
            .map_err(pg_err(target, &format!("give database {name} to {owner}")))?;
    }
    Ok(())
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
) -> Result<Vec<String>, CoreError> {
    let tx = admin
        .transaction()
        .await
        .map_err(pg_err(target, "begin database properties"))?;
    let mut ignored = Vec::new();
    for stmt in props.statements_for(name, privileges) {
        tx.batch_execute("SAVEPOINT dbsnap_property")
            .await
            .map_err(pg_err(target, "savepoint"))?;
        match tx.batch_execute(&stmt.sql).await {
            Ok(()) => {}
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT)
                    && dbsnap_pg::error::error_chain(&e).contains("configuration parameter") =>
            {
                tracing::warn!(
                    "{target}: ignored database setting the server does not know: {}",
                    stmt.sql
                );
                ignored.push(format!(
                    "{}: {}",
                    stmt.sql,
                    dbsnap_pg::error::error_chain(&e)
                ));
                tx.batch_execute("ROLLBACK TO SAVEPOINT dbsnap_property")
                    .await
                    .map_err(pg_err(target, "rollback to savepoint"))?;
            }
            Err(e) => {
                let mut err = PgError::from_pg(e, target, &format!("apply `{}`", stmt.sql));
                err.hint = Some(
                    "the database-level properties of the snapshot could not be applied to the restored copy; \
                     the live database was not changed"
                        .into(),
                );
                return Err(CoreError::Pg(err));
            }
        }
    }
    tx.commit()
        .await
        .map_err(pg_err(target, "commit database properties"))?;
    Ok(ignored)
}

/// Drops database `name` if it exists.
pub async fn drop_database(admin: &Client, name: &str, target: &str) -> Result<(), CoreError> {
    terminate_sessions(admin, name, target).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
        .await
        .map_err(pg_err(target, &format!("drop database {name}")))
}

/// Ends other sessions connected to `db`; returns how many.
pub async fn terminate_sessions(admin: &Client, db: &str, target: &str) -> Result<u64, CoreError> {
    let rows = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .map_err(|e| {
            let mut err = PgError::from_pg(e, target, &format!("end sessions on {db}"));
            err.hint = Some("stop the application first (--stop-cmd), or grant the role pg_signal_backend".into());
            CoreError::Pg(err)
        })?;
    Ok(rows.len() as u64)
}

/// Renames `live` to `old` and `new` to `live` in one transaction.
pub async fn swap(
    admin: &mut Client,
    live: &str,
    new: &str,
    old: &str,
    target: &str,
) -> Result<(), CoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        terminate_sessions(admin, live, target).await?;
        terminate_sessions(admin, new, target).await?;
        let tx = admin
            .transaction()
            .await
            .map_err(pg_err(target, "begin the swap"))?;
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
            Ok(()) => return tx.commit().await.map_err(pg_err(target, "commit the swap")),
            Err(e)
                if attempt < 10
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                // A session reconnected between termination and rename.
                drop(tx);
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(pg_err(target, "swap the databases")(e)),
        }
    }
}

/// A database member inside a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    /// The snapshot.
    pub file: &'a SnapshotRef,
    /// The member's name.
    pub member: &'a str,
}

/// Output of a pg_restore run.
#[derive(Debug, Default)]
pub struct RestoreOutput {
    /// Errors pg_restore reported and that were judged harmless
    /// (version-specific settings the server lacks).
    pub ignored: Vec<String>,
}

/// Whether an error reported by pg_restore is version noise: a setting the
/// target server does not know.
fn is_noise(error: &str) -> bool {
    error.contains("unrecognized configuration parameter")
}

/// How stock pg_restore is run.
#[derive(Debug, Clone, Copy)]
pub struct RestoreFlags {
    /// `--no-owner`.
    pub no_owner: bool,
    /// `--no-privileges`.
    pub no_privileges: bool,
    /// Parallel jobs: above 1 the member is extracted to a temporary file
    /// (pg_restore needs a seekable file for `-j`); 1 streams it.
    pub jobs: u32,
    /// `lock_timeout` of a restore into the live database (in place).
    pub lock_timeout: std::time::Duration,
}

/// Restores member `member` of `file` with stock `pg_restore` connected to
/// `info`: streamed through stdin, or with `jobs` > 1 from a temporary
/// extracted file. Errors other than version noise fail the run.
pub fn pg_restore(
    program: &Program,
    file: &SnapshotRef,
    member: &str,
    info: &ConnInfo,
    flags: RestoreFlags,
    meter: super::Meter,
) -> Result<RestoreOutput, CoreError> {
    let mut cmd = Tool::new(&program.path);
    if flags.no_owner {
        cmd.arg("--no-owner");
    }
    if flags.no_privileges {
        cmd.arg("--no-privileges");
    }
    cmd.connect(info, &format!("restore-{}", info.dbname))?;
    let mut meter = Some(meter);
    // A seekable copy for parallel jobs, next to a local snapshot (same file
    // system), else in the temporary directory; removed on drop.
    let extracted = if flags.jobs > 1 {
        let dir = file.repo.local_dir().unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".dbsnap-restore-")
            .tempfile_in(dir)
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("dbsnap-restore-")
                    .tempfile()
            })
            .map_err(|e| CoreError::write_io(dir, e))?;
        feed_member(file, member, tmp.as_file(), meter.take().expect("meter"))?;
        cmd.arg(format!("--jobs={}", flags.jobs)).arg(tmp.path());
        cmd.stdin(Stdio::null());
        Some(tmp)
    } else {
        cmd.stdin(Stdio::piped());
        None
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stderr = child
        .take_stderr()
        .ok_or_else(|| CoreError::Internal("pg_restore without a stderr pipe".into()))?;
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let fed = match (child.take_stdin(), meter.take()) {
        (Some(stdin), Some(meter)) => feed_member(file, member, stdin, meter),
        _ => Ok(()),
    };
    let status = child
        .wait()
        .map_err(|e| CoreError::Internal(format!("waiting for pg_restore: {e}")))?;
    drop(extracted);
    let lines = err_thread.join().unwrap_or_default();
    for l in &lines {
        tracing::info!(database = %info.display(), "pg_restore: {l}");
    }
    fed?;
    judge_restore_output("pg_restore", status.success(), &lines, &info.display())
}

fn judge_restore_output(
    program: &str,
    success: bool,
    lines: &[String],
    target: &str,
) -> Result<RestoreOutput, CoreError> {
    // Each error is followed by the statement that failed ("Command was:
    // CREATE TABLE public.v ("): its first line names the object.
    let (mut real, mut ignored) = (Vec::new(), Vec::new());
    for (n, l) in lines.iter().enumerate() {
        if !(l.contains("error:") || l.starts_with("ERROR:"))
            || l.contains("errors ignored on restore")
        {
            continue;
        }
        let command = lines[n + 1..]
            .iter()
            .take_while(|x| !x.starts_with("pg_restore:"))
            .find_map(|x| x.strip_prefix("Command was: "));
        let named = match command {
            Some(c) => format!("{} -- {}", l.trim_start_matches("pg_restore: "), shorten(c)),
            None => l.clone(),
        };
        if is_noise(l) {
            ignored.push(named);
        } else {
            real.push(named);
        }
    }
    if !real.is_empty() || (!success && ignored.is_empty()) {
        let detail = if real.is_empty() {
            lines.join("\n")
        } else {
            let more = real.len().saturating_sub(5);
            let mut d = real.iter().take(5).cloned().collect::<Vec<_>>().join("\n");
            if more > 0 {
                d.push_str(&format!("\n(and {more} more failed objects)"));
            }
            d
        };
        let mut err = dbsnap_pg::tools::classify_stderr(program, &detail, target);
        let hint = err.hint.unwrap_or_default();
        err.hint = Some(if hint.contains("log file") {
            format!("{hint}; nothing was changed")
        } else {
            format!("{hint}; nothing was changed; see the log file for {program}'s full output")
        });
        return Err(err.into());
    }
    Ok(RestoreOutput { ignored })
}

/// The first line of a statement, at most 100 characters.
fn shorten(statement: &str) -> String {
    let line = statement.trim().trim_end_matches('(').trim_end();
    match line.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Counts what passes through for the progress display.
struct Metered<W: Write> {
    inner: W,
    meter: super::Meter,
}

impl<W: Write> Write for Metered<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.meter.add(n);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn feed_member(
    file: &SnapshotRef,
    member: &str,
    out: impl Write,
    meter: super::Meter,
) -> Result<(), CoreError> {
    let mut out = Metered { inner: out, meter };
    let f = crate::inspect::open(file)?;
    let r = snapshot::with_member(BufReader::with_capacity(1 << 20, f), member, |input| {
        match std::io::copy(input, &mut out) {
            Ok(_) => Ok(()),
            // The consumer stopped reading: its own exit status tells why.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(snapshot::ArchiveError::Io(e)),
        }
    });
    out.meter.finish();
    drop(out);
    r.map_err(CoreError::from)
}

/// Replaces the database's contents inside one transaction: pg_restore's
/// script (`--single-transaction`, so one BEGIN/COMMIT around everything)
/// goes through psql with ON_ERROR_STOP, after `DROP OWNED BY CURRENT_USER`
/// injected right after its BEGIN. On any error psql stops and the
/// transaction rolls back: the database is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn replace_in_place(
    pg_restore: &Program,
    psql: &Path,
    source: MemberRef<'_>,
    info: &ConnInfo,
    flags: RestoreFlags,
    epilogue: &str,
    meter: super::Meter,
) -> Result<RestoreOutput, CoreError> {
    let mut restore = Tool::new(&pg_restore.path);
    restore.args(["--single-transaction", "-f", "-"]);
    if flags.no_owner {
        restore.arg("--no-owner");
    }
    if flags.no_privileges {
        restore.arg("--no-privileges");
    }
    restore
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut restore = restore.spawn()?;
    let mut cmd = Tool::new(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    // Never wait forever behind the application's locks.
    let options = std::env::var("PGOPTIONS").unwrap_or_default();
    cmd.env(
        "PGOPTIONS",
        format!(
            "{options} -c lock_timeout={}",
            flags.lock_timeout.as_millis()
        ),
    );
    cmd.connect(info, &format!("replace-{}", info.dbname))?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut psql_child = cmd.spawn()?;
    let no_pipe = || CoreError::Internal("a restore program without its pipes".into());
    let restore_in = restore.take_stdin().ok_or_else(no_pipe)?;
    let restore_out = restore.take_stdout().ok_or_else(no_pipe)?;
    let restore_err = restore.take_stderr().ok_or_else(no_pipe)?;
    let mut psql_in = psql_child.take_stdin().ok_or_else(no_pipe)?;
    let psql_err = psql_child.take_stderr().ok_or_else(no_pipe)?;
    let collect = |r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            BufReader::new(r)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        })
    };
    let restore_err = collect(Box::new(restore_err));
    let psql_err = collect(Box::new(psql_err));
    let (file, member) = (source.file.clone(), source.member.to_string());
    let feeder = std::thread::spawn(move || feed_member(&file, &member, restore_in, meter));
    // Relay the script, injecting the prelude after its BEGIN.
    let relay = (|| -> std::io::Result<()> {
        let mut reader = BufReader::with_capacity(1 << 20, restore_out);
        let mut line = Vec::new();
        let (mut injected, mut checked, mut in_copy) = (false, false, false);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let t = line.trim_ascii();
            if in_copy {
                in_copy = t != b"\\.";
            } else if t.starts_with(b"COPY ") && t.ends_with(b"FROM stdin;") {
                in_copy = true;
            } else if !checked && injected && t == b"COMMIT;" {
                // Checks run inside the transaction: a failure rolls everything back.
                psql_in.write_all(epilogue.as_bytes())?;
                checked = true;
            }
            psql_in.write_all(&line)?;
            if !injected && t == b"BEGIN;" {
                psql_in.write_all(b"\nDROP OWNED BY CURRENT_USER;\n")?;
                injected = true;
            }
        }
        if !injected || !checked {
            return Err(std::io::Error::other(
                "pg_restore's script lacked its BEGIN or COMMIT",
            ));
        }
        Ok(())
    })();
    drop(psql_in);
    let psql_status = psql_child
        .wait()
        .map_err(|e| CoreError::Internal(format!("waiting for psql: {e}")))?;
    restore.kill();
    let restore_status = restore
        .wait()
        .map_err(|e| CoreError::Internal(format!("waiting for pg_restore: {e}")))?;
    let fed = feeder
        .join()
        .unwrap_or_else(|_| Err(CoreError::Internal("feeder panicked".into())));
    let psql_lines = psql_err.join().unwrap_or_default();
    let restore_lines = restore_err.join().unwrap_or_default();
    for l in psql_lines.iter().chain(&restore_lines) {
        tracing::info!(database = %info.display(), "restore: {l}");
    }
    if !psql_status.success() {
        // A check raised inside the transaction: everything rolled back.
        if let Some(l) = psql_lines.iter().find(|l| l.contains("dbsnap: ")) {
            let msg = l.split("dbsnap: ").nth(1).unwrap_or(l);
            return Err(CoreError::Check(format!("{}: {msg}", info.display())));
        }
        let mut err =
            dbsnap_pg::tools::classify_stderr("psql", &psql_lines.join("\n"), &info.display());
        err.message = format!(
            "{}; the transaction was rolled back, nothing was changed",
            err.message
        );
        return Err(err.into());
    }
    if let Err(e) = relay {
        return Err(CoreError::Internal(format!(
            "relaying the restore script: {e}"
        )));
    }
    fed?;
    if !restore_status.success() {
        return Err(dbsnap_pg::tools::classify_stderr(
            "pg_restore",
            &restore_lines.join("\n"),
            &info.display(),
        )
        .into());
    }
    Ok(RestoreOutput::default())
}

/// psql next to `pg_restore` (same installation).
pub fn psql_beside(program: &Program) -> PathBuf {
    program.path.with_file_name("psql")
}
