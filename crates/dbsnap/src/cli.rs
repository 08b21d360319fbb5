//! Command-line arguments and one small handler per command: build the
//! library's options (flags over `dbsnap.toml` over defaults), call it, print.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dbsnap_archive::snapshot::ConsistencyMethod;
use dbsnap_core::config::{self, Config};
use dbsnap_core::consistency::{CutLimits, QuiesceHooks};
use dbsnap_core::create::{self, CreateOptions, Progress};
use dbsnap_core::error::exit;
use dbsnap_core::{demo, inspect, CoreError};

use crate::{output, progress};

const AFTER_HELP: &str = "\
Exit codes:
  0 ok                        9 local storage failed (full disk, I/O)
  1 internal error           10 snapshot failed verification
  2 bad arguments/config     11 stop/start command failed
  3 server unreachable       12 other server or pg_dump failure
  4 authentication failed    13 restore refused: live schema older than the snapshot
  5 database does not exist  14 restore refused: versions diverged, unknown or dirty
  6 privilege missing        15 confirmation needed (--yes) or declined
  7 pg_dump/pg_restore missing or too old    17 post-restore check failed (rolled back)
  8 no consistent cut (busy, or different instances)    130 interrupted

Environment: DBSNAP_HOME (default ~/.dbsnap: snapshots/, logs/, state/, config.toml),
DBSNAP_PG_BIN (extra directories with pg_dump), and libpq's PGHOST, PGPORT,
PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT, PGAPPNAME,
PGCONNECT_TIMEOUT, PGPASSFILE, PGSERVICE, PGSERVICEFILE.";

/// Consistent, verifiable snapshots of an application's PostgreSQL databases.
#[derive(Debug, Parser)]
#[command(name = "dbsnap", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Config file (default: ./dbsnap.toml, else $DBSNAP_HOME/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More detail on standard error (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress display.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Write this run's log to FILE (read-only commands log only with this or -v).
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a consistent snapshot of every database of a target.
    Create(CreateArgs),
    /// List the snapshots in the repository, newest first.
    List(ListArgs),
    /// Print the schema versions recorded in a snapshot (reads only its metadata).
    ExtractVersion(FileArgs),
    /// Check every member's checksum and that each database dump is readable.
    Verify(FileArgs),
    /// Start a throwaway PostgreSQL with a sample platform, snapshot it, list and verify.
    Demo(DemoArgs),
    /// Restore a snapshot: data-only when schema versions match, drop-and-restore when the live one is newer.
    Restore(RestoreArgs),
    /// Swap back the databases replaced by a restore (the restored copies are kept).
    Rollback(RollbackArgs),
    /// Finish an interrupted restore: start the app again, remove half-loaded copies.
    Resume(ResumeArgs),
    /// List (or drop, with --yes) the previous databases kept by restores.
    Cleanup(CleanupArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot file: a path, or a name in --dir (default: pick from a list).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Repository directory (snapshots to pick from; safety snapshots go there).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Connection string of a database to restore into (repeatable); with --create, of the server.
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Named target from the config (default: the snapshot's target).
    #[arg(short, long)]
    pub target: Option<String>,
    /// Restore only this snapshot database (repeatable).
    #[arg(long, value_name = "DB")]
    pub only: Vec<String>,
    /// Restore snapshot database OLD into live database NEW (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    pub map: Vec<String>,
    /// Drop and restore every database, whatever the schema versions.
    #[arg(long)]
    pub drop: bool,
    /// Create databases that do not exist.
    #[arg(long)]
    pub create: bool,
    /// Do not restore ownership (everything belongs to the connecting role).
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE), like pg_restore's -x.
    #[arg(short = 'x', long)]
    pub no_privileges: bool,
    /// Create every role the snapshot names that the server lacks (NOLOGIN) before restoring.
    #[arg(long)]
    pub create_roles: bool,
    /// Restore a snapshot from a newer PostgreSQL into an older server.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Never ask for a password (default: ask once per server on a terminal).
    #[arg(short = 'w', long)]
    pub no_password: bool,
    /// Parallel pg_restore jobs when a database is replaced or created (extracts the member to a temporary file).
    #[arg(short, long, default_value_t = 1)]
    pub jobs: u32,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Do not take a safety snapshot of the live databases first.
    #[arg(long)]
    pub no_safety_snapshot: bool,
    /// Command that stops the application before any change.
    #[arg(long, value_name = "CMD")]
    pub stop_cmd: Option<String>,
    /// Command that starts it again; always run after --stop-cmd.
    #[arg(long, value_name = "CMD")]
    pub start_cmd: Option<String>,
    /// SQL that must return true after the restore (repeatable).
    #[arg(long, value_name = "SQL")]
    pub check: Vec<String>,
    /// Directory with pg_restore/psql/pg_dump (searched before PATH); repeatable.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Vec<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Connection string lending credentials for a server in the journal (repeatable).
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Restore run id (default: the latest that replaced a database).
    #[arg(long)]
    pub id: Option<String>,
    /// Confirm without asking.
    #[arg(short, long)]
    pub yes: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Connection string lending credentials for a server in the journal (repeatable).
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Also look on this server (connection string; repeatable).
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Drop the kept databases (without it, only list them).
    #[arg(short, long)]
    pub yes: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Consistency {
    /// Identical transaction snapshots in every database (default; no impact on the app).
    Snapshot,
    /// Block writers for milliseconds with SHARE locks while snapshots are taken.
    Barrier,
    /// Run --stop-cmd, take the snapshots, run --start-cmd.
    Quiesce,
    /// Each database on its own, like pg_dump (no cross-database guarantee).
    None,
}

impl From<Consistency> for ConsistencyMethod {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Snapshot => ConsistencyMethod::Snapshot,
            Consistency::Barrier => ConsistencyMethod::Barrier,
            Consistency::Quiesce => ConsistencyMethod::Quiesce,
            Consistency::None => ConsistencyMethod::None,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Database connection string (URI or key=value); repeat for each database.
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Named target from the config file.
    #[arg(short, long)]
    pub target: Option<String>,
    /// Repository directory (default: $DBSNAP_HOME/snapshots).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Snapshot file name prefix (default: db-snapshot).
    #[arg(long)]
    pub prefix: Option<String>,
    /// How to make one moment across databases.
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Command that stops the application (for --consistency quiesce).
    #[arg(long, value_name = "CMD")]
    pub stop_cmd: Option<String>,
    /// Command that starts it again; always run after --stop-cmd.
    #[arg(long, value_name = "CMD")]
    pub start_cmd: Option<String>,
    /// pg_dump --compress value (e.g. 0, 1-9, gzip:1, zstd:3 with pg_dump 16+).
    #[arg(long)]
    pub compress: Option<String>,
    /// Directory with pg_dump (searched before PATH); repeatable.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Vec<PathBuf>,
    /// Most attempts at a consistent cut.
    #[arg(long, default_value_t = 200)]
    pub max_attempts: u32,
    /// Most seconds spent establishing a consistent cut.
    #[arg(long, default_value_t = 30)]
    pub max_wait: u64,
    /// Lock timeout of each write-barrier attempt, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub lock_timeout: u64,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Repository directory (default: $DBSNAP_HOME/snapshots, or the target's).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Named target whose repository to list.
    #[arg(short, long)]
    pub target: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// Snapshot file: a path, or a name in --dir.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// Repository directory used to resolve a bare file name.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the server running and the files when done.
    #[arg(long)]
    pub keep: bool,
    /// Working directory (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Sample job rows to generate.
    #[arg(long, default_value_t = 20_000)]
    pub rows: u32,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Whether output is JSON.
    pub fn json(&self) -> bool {
        match &self.command {
            Command::Create(a) => a.json,
            Command::List(a) => a.json,
            Command::ExtractVersion(a) | Command::Verify(a) => a.json,
            Command::Demo(a) => a.json,
            Command::Restore(a) => a.json,
            Command::Rollback(a) => a.json,
            Command::Resume(a) => a.json,
            Command::Cleanup(a) => a.json,
        }
    }

    /// Whether the command may change something (a database, the
    /// repository, dbsnap's state): such runs always write a log.
    pub fn writes(&self) -> bool {
        matches!(
            self.command,
            Command::Create(_)
                | Command::Restore(_)
                | Command::Rollback(_)
                | Command::Resume(_)
                | Command::Cleanup(_)
                | Command::Demo(_)
        )
    }

    /// Command name for the log file.
    pub fn command_name(&self) -> &'static str {
        match &self.command {
            Command::Create(_) => "create",
            Command::List(_) => "list",
            Command::ExtractVersion(_) => "extract-version",
            Command::Verify(_) => "verify",
            Command::Demo(_) => "demo",
            Command::Restore(_) => "restore",
            Command::Rollback(_) => "rollback",
            Command::Resume(_) => "resume",
            Command::Cleanup(_) => "cleanup",
        }
    }
}

/// Runs the command; returns the exit code on success paths.
pub async fn run(cli: Cli) -> Result<u8, CoreError> {
    let show_progress = !cli.no_progress && !cli.json();
    match cli.command {
        Command::Create(args) => {
            let config = Config::load(cli.config.as_deref())?;
            create_cmd(args, &config, show_progress).await
        }
        Command::List(args) => {
            let config = Config::load(cli.config.as_deref())?;
            let dir = match (&args.dir, &args.target) {
                (Some(d), _) => d.clone(),
                (None, Some(t)) => config
                    .target(t)?
                    .dir
                    .clone()
                    .or(config.dir.clone())
                    .unwrap_or_else(config::default_snapshot_dir),
                (None, None) => config
                    .dir
                    .clone()
                    .unwrap_or_else(config::default_snapshot_dir),
            };
            // The default repository not existing yet is just empty; a
            // directory the user named must exist (a typo is not "no snapshots").
            let named = args.dir.is_some() || dir != config::default_snapshot_dir();
            let rows = match inspect::list(&dbsnap_core::repository(&dir)) {
                Err(CoreError::Storage(dbsnap_core::error::StorageError::NoRepository(_)))
                    if !named =>
                {
                    Vec::new()
                }
                r => r?,
            };
            output::print_list(&dir, &rows, args.json);
            Ok(exit::OK)
        }
        Command::ExtractVersion(args) => {
            let path = resolve_file(&args, cli.config.as_deref())?;
            let meta = inspect::read_metadata(&path)?;
            output::print_versions(&path, &meta, args.json);
            Ok(exit::OK)
        }
        Command::Verify(args) => {
            let path = resolve_file(&args, cli.config.as_deref())?;
            let report = inspect::verify(&path)?;
            output::print_verify(&report, args.json);
            Ok(if report.ok { exit::OK } else { exit::VERIFY })
        }
        Command::Demo(args) => {
            let ui = progress::Ui::new(show_progress);
            let sink: Arc<dyn Progress> = ui.clone();
            let opts = demo::DemoOptions {
                dir: args.dir,
                keep: args.keep,
                rows: args.rows,
            };
            let result = demo::run(&opts, &sink).await;
            ui.finish();
            let result = result?;
            output::print_demo(&result, args.json);
            Ok(if result.verify.ok {
                exit::OK
            } else {
                exit::VERIFY
            })
        }
        Command::Restore(args) => {
            let config = Config::load(cli.config.as_deref())?;
            crate::restore_cmd::run(args, &config, show_progress).await
        }
        Command::Rollback(args) => crate::restore_cmd::rollback(args).await,
        Command::Resume(args) => crate::restore_cmd::resume(args).await,
        Command::Cleanup(args) => crate::restore_cmd::cleanup(args).await,
    }
}

fn resolve_file(
    args: &FileArgs,
    config_path: Option<&Path>,
) -> Result<dbsnap_core::SnapshotRef, CoreError> {
    inspect::resolve_snapshot(&args.file, || match &args.dir {
        Some(d) => Ok(d.clone()),
        None => Ok(Config::load(config_path)?
            .dir
            .unwrap_or_else(config::default_snapshot_dir)),
    })
}

async fn create_cmd(
    args: CreateArgs,
    config: &Config,
    show_progress: bool,
) -> Result<u8, CoreError> {
    let target = match &args.target {
        Some(t) => Some(config.target(t)?.clone()),
        None => None,
    };
    let t = target.clone().unwrap_or_default();
    if !args.databases.is_empty() && args.target.is_some() {
        return Err(CoreError::Config {
            message: "--database and --target both name databases".into(),
            hint: "use one of them".into(),
        });
    }
    let databases = if args.databases.is_empty() {
        t.databases.clone()
    } else {
        args.databases.clone()
    };
    let mut pg_bin = args.pg_bin.clone();
    pg_bin.extend(config.pg_bin.iter().cloned());
    let opts = CreateOptions {
        databases,
        resolved: Vec::new(),
        target: args.target.clone(),
        prefix: args
            .prefix
            .clone()
            .or(t.prefix.clone())
            .unwrap_or_else(|| "db-snapshot".into()),
        safety_for: None,
        consistency: args
            .consistency
            .map(Into::into)
            .or(t.consistency)
            .unwrap_or(ConsistencyMethod::Snapshot),
        repo: dbsnap_core::repository(
            &args
                .dir
                .clone()
                .or(t.dir.clone())
                .or(config.dir.clone())
                .unwrap_or_else(config::default_snapshot_dir),
        ),
        pg_bin,
        hooks: QuiesceHooks {
            stop_cmd: args.stop_cmd.clone().or(t.stop_cmd.clone()),
            start_cmd: args.start_cmd.clone().or(t.start_cmd.clone()),
        },
        compress: args.compress.clone().or(t.compress.clone()),
        version_spec: t.schema_version.clone(),
        version_specs: t.schema_versions.clone(),
        limits: CutLimits {
            max_attempts: args.max_attempts,
            max_wait: Duration::from_secs(args.max_wait),
            lock_timeout: Duration::from_millis(args.lock_timeout),
        },
    };
    let ui = progress::Ui::new(show_progress);
    let sink: Arc<dyn Progress> = ui.clone();
    // Ctrl-C / SIGTERM: dropping the work removes the partial file, kills
    // pg_dump, and (quiesce) runs the start command (dbsnap-core's StartGuard).
    let result = tokio::select! {
        r = create::create(&opts, &sink) => r,
        s = dbsnap_core::hooks::termination_signal() => {
            Err(CoreError::Interrupted(format!(" by {s}; no snapshot was written")))
        }
    };
    ui.finish();
    let result = result?;
    output::print_create(&result, args.json);
    if let Some(f) = &result.start_hook_failure {
        eprintln!(
            "error: the snapshot is complete, but the application was not started again: {f}"
        );
        return Ok(exit::HOOK);
    }
    Ok(exit::OK)
}
