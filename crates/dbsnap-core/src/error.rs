//! Errors of dbsnap's operations, each with what to do about it, and the
//! documented exit code it maps to.

use dbsnap_archive::snapshot::ArchiveError;
use dbsnap_k8s::hint::Hint;
pub use dbsnap_pg::Remedy;
use dbsnap_pg::{PgError, PgErrorKind};
pub use dbsnap_storage::StorageError;
use thiserror::Error;

/// Documented exit codes (see docs/SCRIPTING.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Unexpected internal error.
    pub const INTERNAL: u8 = 1;
    /// Bad arguments or configuration.
    pub const USAGE: u8 = 2;
    /// A server could not be reached.
    pub const UNREACHABLE: u8 = 3;
    /// Authentication failed.
    pub const AUTH: u8 = 4;
    /// A database does not exist.
    pub const NO_DATABASE: u8 = 5;
    /// A privilege is missing.
    pub const PRIVILEGE: u8 = 6;
    /// pg_dump/pg_restore missing or too old.
    pub const TOOLING: u8 = 7;
    /// A consistent cut could not be established.
    pub const CONSISTENCY: u8 = 8;
    /// Local storage failed (full disk, I/O).
    pub const STORAGE: u8 = 9;
    /// A snapshot failed verification (corrupt, truncated, not a snapshot).
    pub const VERIFY: u8 = 10;
    /// A stop/start hook command failed.
    pub const HOOK: u8 = 11;
    /// A server-side or pg_dump failure not covered above.
    pub const SERVER: u8 = 12;
    /// Restore refused: the live schema is older than the snapshot's.
    pub const LIVE_OLDER: u8 = 13;
    /// Restore refused: versions diverged, unknown, or dirty.
    pub const VERSION_MISMATCH: u8 = 14;
    /// A destructive action needs confirmation (`--yes` without a terminal), or was declined.
    pub const NOT_CONFIRMED: u8 = 15;
    /// Gave up waiting for a lock another session holds (nothing changed).
    pub const LOCK_TIMEOUT: u8 = 16;
    /// A post-restore check failed (the restore was rolled back).
    pub const CHECK_FAILED: u8 = 17;
    /// Kubernetes: no cluster access, RBAC denied, workload not found, the
    /// jump pod could not start (or its image could not be taken from the
    /// registry named with `--registry`).
    pub const KUBERNETES: u8 = 18;
    /// Restore refused: the databases it would change are not the ones the
    /// snapshot was taken from (another server, target or workload).
    pub const OTHER_ORIGIN: u8 = 19;
    /// Interrupted (Ctrl-C / SIGTERM).
    pub const INTERRUPTED: u8 = 130;
    /// Standard output was closed before everything was printed (as a
    /// program stopped by SIGPIPE).
    pub const CLOSED_OUTPUT: u8 = 141;
}

/// One documented exit code: the source `--help`, the man page and the
/// docs/SCRIPTING.md's table are made from (a test checks they agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode {
    /// The code.
    pub code: u8,
    /// The error kind `--json` names (`error.kind`).
    pub kind: &'static str,
    /// A few words, for `--help`.
    pub short: &'static str,
}

/// Every exit code dbsnap documents, in order.
pub const EXIT_CODES: &[ExitCode] = &[
    ExitCode {
        code: exit::OK,
        kind: "ok",
        short: "ok",
    },
    ExitCode {
        code: exit::INTERNAL,
        kind: "internal",
        short: "internal error",
    },
    ExitCode {
        code: exit::USAGE,
        kind: "usage",
        short: "bad arguments or configuration",
    },
    ExitCode {
        code: exit::UNREACHABLE,
        kind: "unreachable",
        short: "server unreachable",
    },
    ExitCode {
        code: exit::AUTH,
        kind: "auth",
        short: "authentication failed",
    },
    ExitCode {
        code: exit::NO_DATABASE,
        kind: "no_database",
        short: "database does not exist",
    },
    ExitCode {
        code: exit::PRIVILEGE,
        kind: "privilege",
        short: "privilege missing",
    },
    ExitCode {
        code: exit::TOOLING,
        kind: "tooling",
        short: "pg_dump/pg_restore missing or old",
    },
    ExitCode {
        code: exit::CONSISTENCY,
        kind: "consistency",
        short: "no consistent cut",
    },
    ExitCode {
        code: exit::STORAGE,
        kind: "storage",
        short: "storage failed (disk, S3)",
    },
    ExitCode {
        code: exit::VERIFY,
        kind: "verify",
        short: "snapshot damaged or not a snapshot",
    },
    ExitCode {
        code: exit::HOOK,
        kind: "hook",
        short: "stop/start command failed",
    },
    ExitCode {
        code: exit::SERVER,
        kind: "server",
        short: "other server or pg_dump failure",
    },
    ExitCode {
        code: exit::LIVE_OLDER,
        kind: "live_older",
        short: "refused: live schema older than the snapshot",
    },
    ExitCode {
        code: exit::VERSION_MISMATCH,
        kind: "version_mismatch",
        short: "refused: versions diverged, unknown or dirty",
    },
    ExitCode {
        code: exit::NOT_CONFIRMED,
        kind: "not_confirmed",
        short: "confirmation needed (--yes) or declined",
    },
    ExitCode {
        code: exit::LOCK_TIMEOUT,
        kind: "lock_timeout",
        short: "gave up waiting for a lock (nothing changed)",
    },
    ExitCode {
        code: exit::CHECK_FAILED,
        kind: "check_failed",
        short: "post-restore check failed (rolled back)",
    },
    ExitCode {
        code: exit::KUBERNETES,
        kind: "kubernetes",
        short: "Kubernetes: no access, RBAC, workload, jump pod",
    },
    ExitCode {
        code: exit::OTHER_ORIGIN,
        kind: "other_origin",
        short: "refused: not the snapshot's origin",
    },
    ExitCode {
        code: exit::INTERRUPTED,
        kind: "interrupted",
        short: "interrupted",
    },
    ExitCode {
        code: exit::CLOSED_OUTPUT,
        kind: "closed_output",
        short: "standard output closed early (| head)",
    },
];

/// An operation's failure.
#[derive(Debug, Error)]
pub enum CoreError {
    /// Talking to PostgreSQL or running pg_dump failed.
    #[error("{0}")]
    Pg(#[from] PgError),
    /// Reading or writing the archive failed.
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    /// The repository failed.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// Bad configuration or arguments.
    #[error("{message}\nhint: {hint}")]
    Config {
        /// What is wrong.
        message: String,
        /// What to do.
        hint: String,
    },
    /// No consistent cut could be made.
    #[error("{message}\nhint: {hint}")]
    Consistency {
        /// What happened.
        message: String,
        /// What to do.
        hint: String,
    },
    /// A hook command failed.
    #[error("{0}")]
    Hook(String),
    /// A member failed verification.
    #[error("{file}: {message}")]
    Verify {
        /// Snapshot file.
        file: String,
        /// First failure.
        message: String,
    },
    /// The file is not a dbsnap snapshot at all (a directory, text, a bare
    /// pg_dump archive, a tar without `dbsnap.json`).
    #[error("{file}: not a dbsnap snapshot: {what}")]
    NotSnapshot {
        /// The file.
        file: String,
        /// What it is instead, and what to do.
        what: String,
    },
    /// The restore decision table refuses this restore.
    #[error("{message}\nhint: {hint}")]
    Refused {
        /// What differs.
        message: String,
        /// What to do.
        hint: String,
        /// Exit code (LIVE_OLDER or VERSION_MISMATCH).
        code: u8,
    },
    /// Confirmation missing or declined.
    #[error("{0}")]
    NotConfirmed(String),
    /// The cluster could not be used, or a Kubernetes setting is
    /// malformed. Its text is the message: the application words the
    /// hint, naming the settings in it its own way.
    #[error("{message}")]
    Kubernetes {
        /// What went wrong.
        message: String,
        /// What to do.
        hint: Hint,
        /// [`exit::KUBERNETES`], or [`exit::USAGE`] for a malformed setting.
        code: u8,
    },
    /// A post-restore check failed.
    #[error("{0}\nhint: the restore was rolled back: no database changed (a warning above names any restored before the failure)")]
    Check(String),
    /// Something another process holds (a bucket-backup location in use)
    /// stands in the way; nothing was changed.
    #[error("{message}\nhint: {hint}")]
    Busy {
        /// Who holds it.
        message: String,
        /// What to do.
        hint: String,
    },
    /// Interrupted by a signal.
    #[error("interrupted{0}")]
    Interrupted(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
    /// An error, and what it left behind (databases a restore had
    /// committed before it, the safety snapshot that undoes them).
    #[error("{error}\n{note}")]
    Left {
        /// The error.
        error: Box<CoreError>,
        /// What was left, and what to do.
        note: String,
    },
}

impl CoreError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CoreError::Pg(e) => match e.kind {
                PgErrorKind::Config => exit::USAGE,
                PgErrorKind::Unreachable => exit::UNREACHABLE,
                PgErrorKind::Auth => exit::AUTH,
                PgErrorKind::NoDatabase => exit::NO_DATABASE,
                PgErrorKind::Privilege => exit::PRIVILEGE,
                PgErrorKind::Tooling => exit::TOOLING,
                PgErrorKind::Io => exit::STORAGE,
                PgErrorKind::LockTimeout => exit::LOCK_TIMEOUT,
                PgErrorKind::Program | PgErrorKind::Server => exit::SERVER,
            },
            CoreError::Archive(ArchiveError::Io(_)) => exit::STORAGE,
            CoreError::Archive(_) | CoreError::Verify { .. } | CoreError::NotSnapshot { .. } => {
                exit::VERIFY
            }
            CoreError::Storage(
                StorageError::NoRepository(_)
                | StorageError::NotARepository(_)
                | StorageError::NoBucket(_)
                | StorageError::Config(_),
            ) => exit::USAGE,
            CoreError::Storage(_) => exit::STORAGE,
            CoreError::Config { .. } => exit::USAGE,
            CoreError::Consistency { .. } => exit::CONSISTENCY,
            CoreError::Hook(_) => exit::HOOK,
            CoreError::Interrupted(_) => exit::INTERRUPTED,
            CoreError::Busy { .. } => exit::LOCK_TIMEOUT,
            CoreError::Refused { code, .. } => *code,
            CoreError::NotConfirmed(_) => exit::NOT_CONFIRMED,
            CoreError::Check(_) => exit::CHECK_FAILED,
            CoreError::Kubernetes { code, .. } => *code,
            CoreError::Internal(_) => exit::INTERNAL,
            CoreError::Left { error, .. } => error.exit_code(),
        }
    }

    /// A short machine-readable name for `--json` output.
    pub fn kind_name(&self) -> &'static str {
        if let CoreError::Left { error, .. } = self {
            return error.kind_name();
        }
        if matches!(
            self,
            CoreError::NotSnapshot { .. } | CoreError::Archive(ArchiveError::NotSnapshot(_))
        ) {
            return "not_snapshot";
        }
        let code = self.exit_code();
        EXIT_CODES
            .iter()
            .find(|c| c.code == code && c.code != exit::OK)
            .map_or("internal", |c| c.kind)
    }

    /// Wraps an I/O error on the archive being written, recognising a full disk.
    pub fn write_io(path: &std::path::Path, e: std::io::Error) -> CoreError {
        CoreError::Storage(StorageError::io(path, e))
    }
}
