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
use std::process::{Command, Stdio};

use dbsnap_archive::snapshot;
use dbsnap_pg::tools::{Program, Secrets};
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind};
use tokio_postgres::Client;

use super::data_only::quote_ident;
use super::pg_err;
use crate::error::CoreError;

/// Facts about a database, used to create its replacement alike.
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

/// Facts about the connected role.
#[derive(Debug, Clone, Copy)]
pub struct RoleFacts {
    /// Superuser.
    pub superuser: bool,
    /// May create databases.
    pub createdb: bool,
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

/// The role's privileges.
pub async fn role_facts(client: &Client, target: &str) -> Result<RoleFacts, CoreError> {
    let r = client
        .query_one(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(pg_err(target, "read role privileges"))?;
    Ok(RoleFacts {
        superuser: r.get(0),
        createdb: r.get(1),
    })
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

/// Roles the archive's objects belong to that the server lacks.
pub async fn missing_roles(
    admin: &Client,
    owners: &[String],
    target: &str,
) -> Result<Vec<String>, CoreError> {
    let rows = admin
        .query(
            "SELECT o FROM unnest($1::text[]) o WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = o) ORDER BY 1",
            &[&owners],
        )
        .await
        .map_err(pg_err(target, "check roles"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
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

/// Creates database `name`, like `like` where given (owner when the role
/// may grant it, encoding and locale).
pub async fn create_database(
    admin: &Client,
    name: &str,
    like: Option<&DbFacts>,
    target: &str,
) -> Result<(), CoreError> {
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    if let Some(f) = like {
        let can_own: bool = admin
            .query_one(
                "SELECT pg_has_role(current_user, $1, 'MEMBER')",
                &[&f.owner],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        if can_own {
            sql.push_str(&format!(" OWNER {}", quote_ident(&f.owner)));
        }
        sql.push_str(&format!(
            " ENCODING '{}' LC_COLLATE '{}' LC_CTYPE '{}'",
            f.encoding.replace('\'', "''"),
            f.collate.replace('\'', "''"),
            f.ctype.replace('\'', "''")
        ));
    }
    admin.batch_execute(&sql).await.map_err(|e| {
        let mut err = PgError::from_pg(e, target, &format!("create database {name}"));
        if err.kind == PgErrorKind::Privilege {
            err.hint = Some("the role needs CREATEDB, or restore in place (dbsnap does so when it lacks CREATEDB)".into());
        }
        CoreError::Pg(err)
    })
}

/// Copies database-level settings and grants from `from` to `to`.
pub async fn copy_database_settings(
    admin: &Client,
    from: &str,
    to: &str,
    target: &str,
) -> Result<(), CoreError> {
    let settings: Vec<String> = admin
        .query(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = $1 AND s.setrole = 0",
            &[&from],
        )
        .await
        .map_err(pg_err(target, "read database settings"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for s in settings {
        if let Some((k, v)) = s.split_once('=') {
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} SET {} = '{}'",
                    quote_ident(to),
                    quote_ident(k),
                    v.replace('\'', "''")
                ))
                .await
                .map_err(pg_err(target, &format!("copy setting {k} to {to}")))?;
        }
    }
    let grants: Vec<(String, String)> = admin
        .query(
            "SELECT a.privilege_type, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END \
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = $1 AND a.grantee <> d.datdba",
            &[&from],
        )
        .await
        .map_err(pg_err(target, "read database grants"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if !grants.is_empty() {
        admin
            .batch_execute(&format!(
                "REVOKE ALL ON DATABASE {} FROM PUBLIC",
                quote_ident(to)
            ))
            .await
            .map_err(pg_err(target, "reset database grants"))?;
    }
    for (privilege, grantee) in grants {
        admin
            .batch_execute(&format!(
                "GRANT {privilege} ON DATABASE {} TO {grantee}",
                quote_ident(to)
            ))
            .await
            .map_err(pg_err(target, &format!("grant {privilege} on {to}")))?;
    }
    Ok(())
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
            Err(e) if attempt < 10 && e.code().is_some_and(|c| c.code() == "55006") => {
                // A session reconnected between termination and rename.
                drop(tx);
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(pg_err(target, "swap the databases")(e)),
        }
    }
}

/// A database member inside a snapshot file.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    /// The snapshot file.
    pub file: &'a Path,
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
    /// Parallel jobs: above 1 the member is extracted to a temporary file
    /// (pg_restore needs a seekable file for `-j`); 1 streams it.
    pub jobs: u32,
}

/// Restores member `member` of `file` with stock `pg_restore` connected to
/// `info`: streamed through stdin, or with `jobs` > 1 from a temporary
/// extracted file. Errors other than version noise fail the run.
pub fn pg_restore(
    program: &Program,
    file: &Path,
    member: &str,
    info: &ConnInfo,
    flags: RestoreFlags,
    secrets: &Secrets,
    meter: super::Meter,
) -> Result<RestoreOutput, CoreError> {
    let mut cmd = Command::new(&program.path);
    cmd.args(["--no-password"]);
    if flags.no_owner {
        cmd.arg("--no-owner");
    }
    secrets.configure(&mut cmd, info, &format!("restore-{}", info.dbname))?;
    let mut meter = Some(meter);
    // A seekable copy for parallel jobs, next to the snapshot (same file system), removed on drop.
    let extracted = if flags.jobs > 1 {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
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
    let mut child = cmd.spawn().map_err(|e| {
        PgError::new(
            PgErrorKind::Tooling,
            format!("could not run {}: {e}", program.path.display()),
        )
    })?;
    let stderr = child.stderr.take().expect("piped stderr");
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let fed = match (child.stdin.take(), meter.take()) {
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
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("error:") || l.starts_with("ERROR:"))
        .collect();
    let real: Vec<&&String> = errors
        .iter()
        .filter(|l| !is_noise(l) && !l.contains("errors ignored on restore"))
        .collect();
    if !real.is_empty() || (!success && errors.is_empty()) {
        let detail = if real.is_empty() {
            lines.join("\n")
        } else {
            real.iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut err = dbsnap_pg::tools::classify_stderr(program, &detail, target);
        err.hint = Some(format!(
            "{}; see the log file for {program}'s full output",
            err.hint
                .unwrap_or_else(|| "the restore was not applied".into())
        ));
        return Err(err.into());
    }
    Ok(RestoreOutput {
        ignored: errors.iter().map(|s| s.to_string()).collect(),
    })
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
    file: &Path,
    member: &str,
    out: impl Write,
    meter: super::Meter,
) -> Result<(), CoreError> {
    let mut out = Metered { inner: out, meter };
    let f = std::fs::File::open(file).map_err(|e| CoreError::write_io(file, e))?;
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
    no_owner: bool,
    secrets: &Secrets,
    epilogue: &str,
    meter: super::Meter,
) -> Result<RestoreOutput, CoreError> {
    let mut restore = Command::new(&pg_restore.path);
    restore.args(["--single-transaction", "-f", "-"]);
    if no_owner {
        restore.arg("--no-owner");
    }
    restore
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut restore = restore.spawn().map_err(|e| {
        PgError::new(
            PgErrorKind::Tooling,
            format!("could not run {}: {e}", pg_restore.path.display()),
        )
    })?;
    let mut cmd = Command::new(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    secrets.configure(&mut cmd, info, &format!("replace-{}", info.dbname))?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut psql_child = cmd.spawn().map_err(|e| {
        PgError::new(
            PgErrorKind::Tooling,
            format!("could not run {}: {e}", psql.display()),
        )
    })?;
    let restore_in = restore.stdin.take().expect("piped");
    let restore_out = restore.stdout.take().expect("piped");
    let restore_err = restore.stderr.take().expect("piped");
    let mut psql_in = psql_child.stdin.take().expect("piped");
    let psql_err = psql_child.stderr.take().expect("piped");
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
    let (file, member) = (source.file.to_path_buf(), source.member.to_string());
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
    let _ = restore.kill();
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
