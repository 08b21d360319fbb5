//! Typed errors for everything that talks to PostgreSQL or its programs.
//!
//! Each error names the database it concerns (never with a password), keeps
//! the server's DETAIL and HINT, and says what to do. The binary maps
//! [`PgErrorKind`] to exit codes.

use std::fmt;

pub use tokio_postgres::error::SqlState;

use crate::conninfo::ConnInfoError;

/// What went wrong, coarse enough to map to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgErrorKind {
    /// Bad connection string or settings.
    Config,
    /// The server could not be reached (refused, DNS, timeout, TLS).
    Unreachable,
    /// Authentication failed.
    Auth,
    /// The database does not exist.
    NoDatabase,
    /// The role lacks a privilege.
    Privilege,
    /// pg_dump/pg_restore missing or too old.
    Tooling,
    /// pg_dump or another program failed.
    Program,
    /// Gave up waiting for a lock another session holds (nothing changed).
    LockTimeout,
    /// Anything else the server reported.
    Server,
    /// Local I/O.
    Io,
}

/// A way out that the application offers through one of its settings:
/// this crate says which, the application says how (the flag or key that
/// takes it), so that no library text names a command-line flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Another session holds a lock: stop the application first, or wait
    /// longer for the lock.
    WaitForLocks,
    /// The program was built without the compression asked for: another
    /// build, or another compression.
    OtherCompression,
    /// The write barrier lacks privileges: a consistency method that takes
    /// no locks, or the owner's role.
    BarrierPrivilege,
    /// A long transaction holds locks the write barrier needs: retry, or
    /// a consistency method that stops the application.
    BarrierLocked,
    /// Sessions could not be ended: stop the application first, or grant
    /// the role pg_signal_backend.
    StopApplication,
}

/// An error from the PostgreSQL layer.
#[derive(Debug)]
pub struct PgError {
    /// Category.
    pub kind: PgErrorKind,
    /// Which database (`user@host:port/db`), if known.
    pub target: Option<String>,
    /// Main message.
    pub message: String,
    /// Server DETAIL.
    pub detail: Option<String>,
    /// What to do, in this crate's words.
    pub hint: Option<String>,
    /// What to do through one of the application's settings (the
    /// application words it; when set, `hint` is not).
    pub remedy: Option<Remedy>,
    /// The server's SQLSTATE, when the server reported the error.
    pub code: Option<SqlCode>,
}

/// A SQLSTATE as five bytes (small, so errors stay small); compare it
/// with tokio-postgres' named [`SqlState`] constants through [`PgError::is`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlCode([u8; 5]);

impl SqlCode {
    /// The code of a server error.
    pub fn of(state: &SqlState) -> Option<SqlCode> {
        state.code().as_bytes().try_into().ok().map(SqlCode)
    }

    /// The five characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.target {
            write!(f, "{t}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(d) = &self.detail {
            write!(f, "\ndetail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {}

impl PgError {
    /// A new error of `kind`.
    pub fn new(kind: PgErrorKind, message: impl Into<String>) -> Self {
        PgError {
            kind,
            target: None,
            message: message.into(),
            detail: None,
            hint: None,
            code: None,
            remedy: None,
        }
    }

    /// Sets the database it concerns.
    pub fn on(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Whether the server reported SQLSTATE `code`.
    pub fn is(&self, code: &SqlState) -> bool {
        self.code.is_some_and(|c| c.as_str() == code.code())
    }

    /// Sets the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the way out through the application's settings (instead of a
    /// hint).
    pub fn remedy(mut self, remedy: Remedy) -> Self {
        self.hint = None;
        self.remedy = Some(remedy);
        self
    }

    /// Classifies a tokio-postgres error, keeping the server's DETAIL/HINT.
    pub fn from_pg(e: tokio_postgres::Error, target: &str, doing: &str) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let (kind, hint) = match code {
                "28P01" | "28000" => (
                    PgErrorKind::Auth,
                    Some("check the user name and password (URL, PGPASSWORD, ~/.pgpass or PGPASSFILE)".to_string()),
                ),
                "3D000" => (PgErrorKind::NoDatabase, Some("check the database name; list databases with `psql -l`".to_string())),
                "42501" => (
                    PgErrorKind::Privilege,
                    Some("grant the role read access (e.g. GRANT pg_read_all_data TO <role>) or connect as the database owner".to_string()),
                ),
                "55P03" => (
                    PgErrorKind::LockTimeout,
                    Some("another session holds a lock: stop the application first, or wait longer".to_string()),
                ),
                _ => (PgErrorKind::Server, None),
            };
            return PgError {
                kind,
                target: Some(target.to_string()),
                message: format!("{doing}: {} (SQLSTATE {code})", db.message()),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string).or(hint),
                code: SqlCode::of(db.code()),
                remedy: None,
            };
        }
        // Not a server error: the connection itself failed or broke.
        let text = error_chain(&e);
        let lower = text.to_lowercase();
        if lower.contains("password missing") {
            return PgError {
                kind: PgErrorKind::Auth,
                target: Some(target.to_string()),
                message: format!("{doing}: the server asks for a password and none was given"),
                detail: None,
                hint: Some(
                    "give it in the connection string, PGPASSWORD, ~/.pgpass or PGPASSFILE (a password file must be mode 0600)"
                        .into(),
                ),
                code: None,
                remedy: None,
            };
        }
        let kind = if e.is_closed()
            || ["connection", "connecting", "timed out", "tls"]
                .iter()
                .any(|w| lower.contains(w))
        {
            PgErrorKind::Unreachable
        } else {
            PgErrorKind::Server
        };
        PgError {
            kind,
            target: Some(target.to_string()),
            message: format!("{doing}: {text}"),
            detail: None,
            hint: (kind == PgErrorKind::Unreachable).then(|| {
                "check that the server is running and that host, port and sslmode are right"
                    .to_string()
            }),
            code: None,
            remedy: None,
        }
    }
}

/// The error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

impl From<ConnInfoError> for PgError {
    fn from(e: ConnInfoError) -> Self {
        let text = e.to_string();
        let (message, hint) = match text.split_once("\nhint: ") {
            Some((m, h)) => (m.to_string(), Some(h.to_string())),
            None => (text, None),
        };
        PgError {
            kind: PgErrorKind::Config,
            target: None,
            message,
            detail: None,
            hint,
            code: None,
            remedy: None,
        }
    }
}
