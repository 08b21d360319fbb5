//! `restore`: put a snapshot back, as the decision table of
//! docs/guide/restore.md says.
//!
//! [`plan`] verifies the archive, connects to every live database, compares
//! schema versions and decides an action per database, changing nothing.
//! [`execute`] carries a plan out: stop the app (always started again),
//! take a safety snapshot, restore each database (data-only in one
//! transaction; drop-and-restore by swapping in a complete copy, or by
//! replacing objects in one transaction), check, journal every step.

mod checks;
mod commit;
pub mod data_only;
pub mod decide;
mod execute;
mod extensions;
mod load;
pub mod origin;
mod plan;
pub mod recover;
mod refusal;
pub mod replace;
pub mod select;
pub mod state;

pub use execute::execute;
pub use plan::{plan, PasswordPrompt};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dbsnap_archive::snapshot::{KubernetesOrigin, Metadata};
use dbsnap_archive::toc::ArchiveFacts;
use dbsnap_archive::version::Comparison;
use dbsnap_pg::schema_version::VersionSpec;
use dbsnap_pg::{ConnInfo, PgError};
use dbsnap_storage::{Repository, SnapshotRef};
use serde::Serialize;

use crate::consistency::QuiesceHooks;
use crate::create::Progress;
use crate::error::CoreError;

/// What to restore, where, and how.
#[derive(Clone)]
pub struct RestoreOptions {
    /// The snapshot.
    pub file: SnapshotRef,
    /// Connection strings of the databases to restore into (or of a server
    /// with `--create`); empty: the snapshot target's, from the config.
    pub databases: Vec<String>,
    /// Config targets (name -> connection strings), to find the snapshot's.
    pub targets: BTreeMap<String, Vec<String>>,
    /// The config target the restore is for, when the user named one
    /// (compared with the snapshot's).
    pub restore_target: Option<String>,
    /// The Kubernetes workload the restore goes through (`--k8s`),
    /// compared with the snapshot's.
    pub kubernetes: Option<KubernetesOrigin>,
    /// Restore into databases the snapshot was not taken from (another
    /// server, target or workload): without it such a plan is refused.
    pub into_other_origin: bool,
    /// The run's encryption: the keys that open the snapshot, what the
    /// safety snapshot is encrypted to.
    pub crypto: Arc<crate::crypt::Crypto>,
    /// Restore only these snapshot databases.
    pub only: Vec<String>,
    /// Snapshot database name -> live database name.
    pub map: BTreeMap<String, String>,
    /// Force drop-and-restore for all.
    pub drop: bool,
    /// Create missing databases.
    pub create: bool,
    /// Do not restore object ownership.
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE), like pg_restore's `-x`.
    pub no_privileges: bool,
    /// Restore a snapshot from a newer PostgreSQL into an older one.
    pub allow_downgrade: bool,
    /// Asks for a password on a terminal (None: never ask).
    pub password_prompt: Option<PasswordPrompt>,
    /// Create (NOLOGIN) the roles the archive's objects belong to when missing.
    pub create_roles: bool,
    /// How a new database (swap, --create) is loaded.
    pub engine: LoadEngine,
    /// Parallel pg_restore jobs for drop-and-restore by swap and --create
    /// (above 1 the member is extracted to a temporary file first).
    pub jobs: u32,
    /// Skip the safety snapshot.
    pub no_safety_snapshot: bool,
    /// How the named databases are reached.
    pub resolver: Arc<dyn dbsnap_pg::Resolver>,
    /// How long to wait for locks on the live databases before giving up
    /// with nothing changed (data-only and in-place restores).
    pub lock_timeout: std::time::Duration,
    /// Repository for the safety snapshot.
    pub safety_repo: Arc<dyn Repository>,
    /// How many safety snapshots to keep there: after a restore, older
    /// ones beyond this are removed (never the one it took).
    pub keep_safety_snapshots: usize,
    /// Stop/start hooks.
    pub hooks: QuiesceHooks,
    /// Extra directories with pg_dump/pg_restore/psql.
    pub pg_bin: Vec<PathBuf>,
    /// SQL checks that must return true after the restore.
    pub checks: Vec<String>,
    /// Schema-version settings.
    pub version_spec: VersionSpec,
    /// Per-database overrides.
    pub version_specs: BTreeMap<String, VersionSpec>,
}

/// What will happen to one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace the rows, keep the schema: one transaction.
    DataOnly,
    /// Restore into a new database, then swap names (old one kept).
    SwapRestore,
    /// Drop the role's objects and recreate them: one transaction.
    ReplaceInPlace,
    /// The database does not exist: create it and restore.
    Create,
}

impl Action {
    /// The action in the words of the plan a user reads.
    pub fn describe(self) -> &'static str {
        match self {
            Action::DataOnly => "data-only",
            Action::SwapRestore => "replace (new copy, then swap)",
            Action::ReplaceInPlace => "replace in place",
            Action::Create => "create",
        }
    }

    /// Whether the action replaces the schema (needs typed confirmation).
    pub fn drops_schema(self) -> bool {
        matches!(self, Action::SwapRestore | Action::ReplaceInPlace)
    }
}

/// The plan for one database.
#[derive(Debug, Clone, Serialize)]
pub struct DbPlan {
    /// Name in the snapshot.
    pub snapshot_db: String,
    /// Archive member.
    pub member: String,
    /// Live database name.
    pub live_db: String,
    /// Where (`user@host:port/db`, no password).
    pub server: String,
    /// Whether the live database exists.
    pub exists: bool,
    /// Live schema version (display).
    pub live_version: Option<String>,
    /// Snapshot schema version (display).
    pub snapshot_version: Option<String>,
    /// How they compare.
    pub comparison: Option<Comparison>,
    /// What will be done.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Owner of the new database (replace, create); None: the connecting role.
    pub new_owner: Option<String>,
    /// Where the snapshot's database was taken (`host:port` as reached then).
    pub snapshot_server: String,
    /// The live server's system identifier, when the role may read it.
    pub system_identifier: Option<String>,
    #[serde(skip)]
    info: ConnInfo,
    #[serde(skip)]
    pg_dump_major: u32,
    #[serde(skip)]
    archive: ArchiveFacts,
}

/// How the databases of a restore commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Commit {
    /// One database commits (or none): nothing to coordinate.
    Single,
    /// Every database prepares its transaction (`PREPARE TRANSACTION`),
    /// then all commit: a failure before the last prepare changes none, and
    /// after it `resume` commits the rest.
    TwoPhase,
    /// The databases commit one after the other: a failure between two
    /// commits leaves the ones before restored.
    OneAfterAnother {
        /// Why two-phase commit is not used.
        reason: String,
    },
}

/// A complete plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The snapshot.
    pub file: SnapshotRef,
    /// Its metadata.
    pub metadata: Metadata,
    /// Per database, in snapshot order.
    pub databases: Vec<DbPlan>,
    /// Commands that will stop and start the app.
    pub stop_cmd: Option<String>,
    /// Start command.
    pub start_cmd: Option<String>,
    /// What the stop and start commands do, in words, when dbsnap made them.
    pub app_stop: Option<String>,
    /// Whether a safety snapshot will be taken first: unless
    /// `--no-safety-snapshot`, whenever a database that exists is changed.
    pub safety_snapshot: bool,
    /// Warnings (roles, version noise, ...).
    pub warnings: Vec<String>,
    /// Roles that will be created (`--create-roles`).
    pub roles_to_create: Vec<String>,
    /// Whether the databases are the ones the snapshot was taken from.
    pub origin: origin::OriginCheck,
    /// How the databases that change commit.
    pub commit: Commit,
    /// Where the safety snapshot goes.
    pub safety_repo: String,
    #[serde(skip)]
    role_servers: Vec<(ConnInfo, Vec<String>)>,
    /// What the safety snapshot is encrypted to (this run's encryption,
    /// else the snapshot's own).
    #[serde(skip)]
    safety_crypto: Arc<crate::crypt::Crypto>,
}

impl DbPlan {
    /// The connection settings of the live (or new) database.
    pub(crate) fn conn(&self) -> &ConnInfo {
        &self.info
    }
}

impl Plan {
    /// Whether the run changes a database that exists now: only then is
    /// there anything for a safety snapshot to keep.
    pub fn changes_existing(&self) -> bool {
        self.databases.iter().any(|d| d.exists)
    }

    /// Whether any database's schema will be replaced.
    pub fn destructive(&self) -> bool {
        self.databases.iter().any(|d| d.action.drops_schema())
    }
}

/// Maps a tokio-postgres error about `target` while `doing` something.
pub(crate) fn pg_err(
    target: &str,
    doing: &str,
) -> impl Fn(tokio_postgres::Error) -> CoreError + use<> {
    let (target, doing) = (target.to_string(), doing.to_string());
    move |e| CoreError::Pg(PgError::from_pg(e, &target, &doing))
}

/// One database's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct DbResult {
    /// Live database.
    pub database: String,
    /// What was done.
    pub action: Action,
    /// Where the previous database was kept (swap).
    pub kept_as: Option<String>,
    /// Data-only details (tables, row counts).
    pub data_only: Option<data_only::DataOnlyReport>,
    /// Harmless errors pg_restore reported (version noise).
    pub ignored: Vec<String>,
    /// Tables whose row counts were checked against the snapshot.
    pub row_counts: usize,
    /// Rows in those tables after the restore (as many as the snapshot's).
    pub rows: u64,
    /// Seconds taken.
    pub seconds: f64,
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreResult {
    /// Run id (state file name).
    pub id: String,
    /// Snapshot restored.
    pub file: SnapshotRef,
    /// The safety snapshot taken first.
    pub safety_snapshot: Option<SnapshotRef>,
    /// Per database.
    pub databases: Vec<DbResult>,
    /// Sessions ended on the live databases.
    pub sessions_terminated: u64,
    /// The start command failed after the restore (the restore stands).
    pub start_hook_failure: Option<String>,
    /// Older safety snapshots removed after the restore (said beside the
    /// result in `--json`).
    #[serde(skip)]
    pub removed_safety_snapshots: Vec<crate::retention::Removed>,
    /// Wall time.
    pub duration_secs: f64,
}

/// How a database restored by copy (swap, `--create`) is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoadEngine {
    /// pg_restore for the schema, dbsnap's parallel COPY for the tables
    /// (falls back to [`LoadEngine::PgRestore`] where it cannot read the
    /// member: not a local file, lz4/zstd, not UTF-8).
    #[default]
    Native,
    /// Stock pg_restore for everything.
    PgRestore,
}

/// Counts the bytes of one database's restore for the progress display.
pub struct Meter {
    progress: Arc<dyn Progress>,
    index: usize,
    total: u64,
    /// Bytes expected in all (0: unknown) and rows loaded so far.
    expected: u64,
    rows: u64,
}

impl Meter {
    fn new(progress: &Arc<dyn Progress>, index: usize, name: &str) -> Meter {
        progress.transfer_started(index, name);
        Meter {
            progress: progress.clone(),
            index,
            total: 0,
            expected: 0,
            rows: 0,
        }
    }

    /// Sets the bytes the load will read in all.
    pub(crate) fn expect(&mut self, bytes: u64) {
        self.expected = bytes;
        self.work();
    }

    /// Adds `n` rows loaded.
    pub(crate) fn add_rows(&mut self, n: u64) {
        self.rows += n;
        self.work();
    }

    fn work(&self) {
        self.progress.transfer_work(
            self.index,
            crate::create::Work {
                done: self.total,
                expected: self.expected,
                rows: self.rows,
            },
        );
    }

    /// Shows what this database's restore is doing (waiting for locks...).
    pub fn say(&self, message: &str) {
        self.progress.phase(message);
    }

    /// Adds `n` bytes.
    pub fn add(&mut self, n: usize) {
        self.total += n as u64;
        self.progress.transfer_bytes(self.index, self.total);
        if self.expected > 0 {
            self.work();
        }
    }

    pub(crate) fn finish(&self) {
        self.progress.transfer_finished(self.index, self.total);
    }
}

/// Runs blocking work (programs, archive reads) off the async workers, so
/// signals are still handled while it runs.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoreError::Internal(format!("worker thread: {e}")))?
}
