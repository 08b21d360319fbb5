//! Finding and running PostgreSQL's client programs (pg_dump, pg_restore).
//!
//! A program is chosen by version: for dumping, never older than the
//! server; among those that fit, the oldest (its archives are readable by
//! the most pg_restore versions). They are run through [`crate::process`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{PgError, PgErrorKind, Remedy};

/// One installed client program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Program {
    /// Absolute path.
    pub path: PathBuf,
    /// Major version.
    pub major: u32,
    /// Full version as printed (`pg_dump (PostgreSQL) 15.18`).
    pub version: String,
}

/// Directories searched for client programs, in order: `extra` (config
/// `pg_bin`), `DBSNAP_PG_BIN` (colon separated), `PATH`, then
/// `/usr/lib/postgresql/*/bin`.
pub fn search_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    for var in ["DBSNAP_PG_BIN", "PATH"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.extend(std::env::split_paths(&v));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions);
    }
    dirs
}

/// The major version in a program's version line
/// (`pg_dump (PostgreSQL) 15.18 (Debian …)` → 15; `… 9.6.24` → 9, as
/// `server_version_num / 10000` counts it).
pub fn major_version(text: &str) -> Option<u32> {
    text.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs `path --version`: its major version and the line it printed.
pub fn version_of(path: &Path) -> Option<(u32, String)> {
    let out = Command::new(path)
        .arg("--version")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some((major_version(&text)?, text))
}

/// Every distinct `name` found in the search directories, with versions.
pub fn find_all(name: &str, extra: &[PathBuf]) -> Vec<Program> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for dir in search_dirs(extra) {
        let p = dir.join(name);
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let canonical = std::fs::canonicalize(&p).unwrap_or(p.clone());
        if !seen.insert(canonical) {
            continue;
        }
        if let Some((major, version)) = version_of(&p) {
            out.push(Program {
                path: p,
                major,
                version,
            });
        }
    }
    out
}

/// The oldest program whose major is at least `need`: new enough, and
/// writing archives the most pg_restore versions read.
pub fn oldest_at_least(all: &[Program], need: u32) -> Option<&Program> {
    all.iter()
        .filter(|p| p.major >= need)
        .min_by_key(|p| p.major)
}

/// The pg_dump for a server of `server_major` among those found
/// ([`find_all`]): never older than the server.
pub fn choose_pg_dump(all: &[Program], server_major: u32) -> Result<Program, PgError> {
    if let Some(p) = oldest_at_least(all, server_major) {
        return Ok(p.clone());
    }
    let found = if all.is_empty() {
        "no pg_dump was found".to_string()
    } else {
        format!(
            "found only {}",
            all.iter()
                .map(|p| format!("{} ({})", p.path.display(), p.major))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(PgError::new(
        PgErrorKind::Tooling,
        format!("pg_dump {server_major} or newer is needed for a PostgreSQL {server_major} server; {found}"),
    )
    .hint(format!(
        "install the PostgreSQL {server_major} client (e.g. apt-get install postgresql-client-{server_major}), \
         or point pg_bin in dbsnap.toml / DBSNAP_PG_BIN at its bin directory"
    )))
}

/// Classifies a failed program's stderr into an error kind with a hint.
pub fn classify_stderr(program: &str, stderr: &str, target: &str) -> PgError {
    let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = last[last.len().saturating_sub(8)..].join("\n");
    let lower = stderr.to_lowercase();
    let (kind, hint) = if lower.contains("password authentication failed")
        || lower.contains("no password supplied")
    {
        (PgErrorKind::Auth, "check the user name and password")
    } else if lower.contains("database") && lower.contains("does not exist") {
        (PgErrorKind::NoDatabase, "check the database name")
    } else if lower.contains("permission denied") {
        (PgErrorKind::Privilege, "grant the role read access to every object (e.g. pg_read_all_data) or dump as the owner")
    } else if lower.contains("could not obtain lock")
        || lower.contains("lock timeout")
        // pg_dump's --lock-wait-timeout is a statement timeout on LOCK TABLE.
        || (lower.contains("statement timeout") && lower.contains("lock table"))
    {
        return PgError::new(
            PgErrorKind::LockTimeout,
            format!("{program} failed: {tail}"),
        )
        .on(target)
        .remedy(Remedy::WaitForLocks);
    } else if lower.contains("does not support compression") {
        return PgError::new(PgErrorKind::Tooling, format!("{program} failed: {tail}"))
            .on(target)
            .remedy(Remedy::OtherCompression);
    } else if lower.contains("server version mismatch") {
        (
            PgErrorKind::Tooling,
            "install a pg_dump at least as new as the server",
        )
    } else if lower.contains("could not connect") || lower.contains("connection to server") {
        (
            PgErrorKind::Unreachable,
            "check that the server is reachable",
        )
    } else {
        (
            PgErrorKind::Program,
            "see the log file for the program's full output",
        )
    };
    PgError::new(kind, format!("{program} failed: {tail}"))
        .on(target)
        .hint(hint)
}

#[cfg(test)]
mod tests {
    use super::{classify_stderr, major_version};
    use crate::PgErrorKind;

    #[test]
    fn pg_dumps_lock_wait_timeout_is_a_lock_timeout() {
        let stderr =
            "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\n\
                      pg_dump: detail: Query was: LOCK TABLE public.jobs IN ACCESS SHARE MODE";
        let e = classify_stderr("pg_dump", stderr, "db");
        assert_eq!(e.kind, PgErrorKind::LockTimeout);
        let other =
            "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout";
        assert_eq!(
            classify_stderr("pg_dump", other, "db").kind,
            PgErrorKind::Program
        );
    }

    #[test]
    fn majors_from_version_lines() {
        assert_eq!(
            major_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(major_version("postgres (PostgreSQL) 18.1"), Some(18));
        assert_eq!(major_version("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(major_version("pg_restore (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(major_version("no version here"), None);
    }
}
