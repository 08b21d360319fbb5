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

use dbsnap_archive::snapshot;
use dbsnap_pg::process::Tool;
use dbsnap_pg::tools::Program;
use dbsnap_pg::{ConnInfo, Resolver};
use dbsnap_storage::SnapshotRef;

use std::sync::Arc;

use crate::crypt::Crypto;
use crate::error::CoreError;

pub use dbsnap_pg::admin::{
    admin_client, apply_database_properties, create_database, create_roles, db_facts,
    drop_database, extension_statuses, role_facts, role_statuses, swap, terminate_sessions,
    DbFacts, NewDatabase,
};

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

/// A database member inside a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct MemberRef<'a> {
    /// The snapshot.
    pub file: &'a SnapshotRef,
    /// The member's name.
    pub member: &'a str,
    /// Opens it when it is encrypted.
    pub crypto: &'a Arc<Crypto>,
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
    source: MemberRef<'_>,
    info: &ConnInfo,
    route: &dyn Resolver,
    flags: RestoreFlags,
    meter: super::Meter,
) -> Result<RestoreOutput, CoreError> {
    let (file, member, crypto) = (source.file, source.member, source.crypto);
    // A seekable copy for parallel jobs, removed on drop.
    if flags.jobs > 1 {
        let tmp = file.repo.scratch("restore")?;
        check_room_for_member(file, member, tmp.path())?;
        feed_member(file, member, crypto, tmp.as_file(), meter)?;
        let jobs = format!("--jobs={}", flags.jobs);
        return pg_restore_file(program, tmp.path(), &[&jobs], info, route, flags);
    }
    let mut cmd = restore_command(program, info, route, flags)?;
    cmd.stdin(Stdio::piped());
    run_restore(cmd, info, |stdin| {
        feed_member(file, member, crypto, stdin, meter)
    })
}

/// Refuses to copy a member to `scratch` when its file system has less
/// room than the member's size (the copy would fail part way, after
/// minutes of reading).
fn check_room_for_member(
    file: &SnapshotRef,
    member: &str,
    scratch: &Path,
) -> Result<(), CoreError> {
    let spans = dbsnap_archive::snapshot::member_spans(
        std::io::BufReader::new(file.open_seekable()?),
        &[member],
    )?;
    let need = spans[0].1;
    let dir = scratch.parent().unwrap_or(Path::new("."));
    let Ok(fs) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    if free >= need {
        return Ok(());
    }
    Err(CoreError::Storage(dbsnap_storage::StorageError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(format!(
            "stock pg_restore --jobs needs a copy of \"{member}\" ({} MiB) here, and only {} MiB are free\nhint: point TMPDIR at a larger disk, or pass --jobs 1 (pg_restore then reads the member as it streams)",
            need >> 20,
            free >> 20
        )),
    }))
}

/// Runs stock `pg_restore` with `args` on the archive file `path`.
pub(crate) fn pg_restore_file(
    program: &Program,
    path: &Path,
    args: &[&str],
    info: &ConnInfo,
    route: &dyn Resolver,
    flags: RestoreFlags,
) -> Result<RestoreOutput, CoreError> {
    let mut cmd = restore_command(program, info, route, flags)?;
    cmd.args(args).arg(path).stdin(Stdio::null());
    run_restore(cmd, info, |_| Ok(()))
}

fn restore_command(
    program: &Program,
    info: &ConnInfo,
    route: &dyn Resolver,
    flags: RestoreFlags,
) -> Result<Tool, CoreError> {
    let mut cmd = Tool::new(&program.path);
    if flags.no_owner {
        cmd.arg("--no-owner");
    }
    if flags.no_privileges {
        cmd.arg("--no-privileges");
    }
    route.prepare_tool(&mut cmd, info, &format!("restore-{}", info.dbname))?;
    Ok(cmd)
}

/// Runs a prepared pg_restore, handing its stdin (when piped) to `feed`,
/// and judges what it reported.
fn run_restore(
    mut cmd: Tool,
    info: &ConnInfo,
    feed: impl FnOnce(std::process::ChildStdin) -> Result<(), CoreError>,
) -> Result<RestoreOutput, CoreError> {
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
    let fed = match child.take_stdin() {
        Some(stdin) => feed(stdin),
        None => Ok(()),
    };
    let status = child
        .wait()
        .map_err(|e| CoreError::Internal(format!("waiting for pg_restore: {e}")))?;
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
    crypto: &Crypto,
    out: impl Write,
    meter: super::Meter,
) -> Result<(), CoreError> {
    let mut out = Metered { inner: out, meter };
    let f = crate::inspect::open(file)?;
    let r = crypto.with_member(
        file,
        BufReader::with_capacity(1 << 20, f),
        member,
        |input| {
            match std::io::copy(input, &mut out) {
                Ok(_) => Ok(()),
                // The consumer stopped reading: its own exit status tells why.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(snapshot::ArchiveError::Io(e)),
            }
        },
    );
    out.meter.finish();
    drop(out);
    r
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
    route: &dyn Resolver,
    flags: RestoreFlags,
    epilogue: &str,
    prepare: Option<&str>,
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
    route.prepare_tool(&mut cmd, info, &format!("replace-{}", info.dbname))?;
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
    let crypto = source.crypto.clone();
    let feeder =
        std::thread::spawn(move || feed_member(&file, &member, &crypto, restore_in, meter));
    let relay = relay_script(restore_out, &mut psql_in, epilogue, prepare);
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
        return Err(psql_failure(&psql_lines, &info.display()));
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

/// Relays pg_restore's script to psql, dropping the role's objects right
/// after its BEGIN and running `epilogue` (row counts, checks) just before
/// its COMMIT, so that both happen inside the one transaction.
fn relay_script(
    restore_out: impl Read,
    psql_in: &mut impl Write,
    epilogue: &str,
    prepare: Option<&str>,
) -> std::io::Result<()> {
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
            if let Some(gid) = prepare {
                // Two-phase commit: the run commits it once every database is prepared.
                let gid = gid.replace('\'', "''");
                psql_in.write_all(format!("PREPARE TRANSACTION '{gid}';\n").as_bytes())?;
                continue;
            }
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
}

/// Why psql stopped: a check raised inside the transaction, or another
/// error; either way everything rolled back.
fn psql_failure(lines: &[String], target: &str) -> CoreError {
    if let Some(l) = lines.iter().find(|l| l.contains("dbsnap: ")) {
        let msg = l.split("dbsnap: ").nth(1).unwrap_or(l);
        return CoreError::Check(format!("{target}: {msg}"));
    }
    let mut err = dbsnap_pg::tools::classify_stderr("psql", &lines.join("\n"), target);
    err.message = format!(
        "{}; the transaction was rolled back, nothing was changed",
        err.message
    );
    err.into()
}

/// psql next to `pg_restore` (same installation).
pub fn psql_beside(program: &Program) -> PathBuf {
    program.path.with_file_name("psql")
}

/// The pg_restore (or psql) for an archive from pg_dump `archive_major`
/// restored into a server `server_major`.
pub(super) fn pick_program(
    name: &str,
    all: &[Program],
    archive_major: u32,
    server_major: u32,
) -> Result<Program, CoreError> {
    let need = archive_major.max(server_major);
    let found = dbsnap_pg::tools::oldest_at_least(all, need);
    if found.is_none() {
        if let Some(p) = all
            .iter()
            .filter(|p| p.major >= archive_major)
            .max_by_key(|p| p.major)
        {
            tracing::warn!(
                "no {name} {need} or newer was found: using {name} {} ({}), which reads the archive but is older than the server ({server_major}); install postgresql-client-{need} or set pg_bin if objects fail to restore",
                p.major,
                p.path.display()
            );
        }
    }
    found
        // None new enough for both: the newest that still reads the archive.
        .or_else(|| all.iter().filter(|p| p.major >= archive_major).max_by_key(|p| p.major))
        .cloned()
        .ok_or_else(|| {
            dbsnap_pg::PgError::new(
                dbsnap_pg::PgErrorKind::Tooling,
                format!("{name} {need} or newer is needed (archive from pg_dump {archive_major}, server {server_major})"),
            )
            .hint(format!("install postgresql-client-{need}, or set pg_bin / DBSNAP_PG_BIN"))
            .into()
        })
}
