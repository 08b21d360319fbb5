//! Command-line arguments and one small handler per command: build the
//! library's options (flags over `dbsnap.toml` over defaults), call it, print.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use dbsnap_core::config::{self, Config, TargetConfig};
use dbsnap_core::create::Progress;
use dbsnap_core::error::{exit, StorageError};
use dbsnap_core::{demo, inspect, CoreError};

use crate::{output, progress};

const ENVIRONMENT: &str = "\
Environment: DBSNAP_HOME (default ~/.dbsnap: snapshots/, logs/, state/, config.toml),
DBSNAP_PG_BIN (extra directories with pg_dump), DBSNAP_PASSPHRASE and DBSNAP_IDENTITY
(age encryption), and libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE,
PGSSLROOTCERT, PGAPPNAME, PGCONNECT_TIMEOUT, PGPASSFILE, PGSERVICE, PGSERVICEFILE.";

/// `--help`'s epilogue: the exit codes (from their one table, two
/// columns) and the environment.
pub fn after_help() -> String {
    let codes = dbsnap_core::error::EXIT_CODES;
    let half = codes.len().div_ceil(2);
    let mut text = String::from("Exit codes:\n");
    for i in 0..half {
        let left = codes[i];
        let mut line = format!("  {:>3}  {:<36}", left.code, left.short);
        if let Some(right) = codes.get(i + half) {
            line.push_str(&format!("{:>3}  {}", right.code, right.short));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text.push('\n');
    text.push_str(ENVIRONMENT);
    text
}

/// Consistent, verifiable snapshots of an application's PostgreSQL databases.
#[derive(Debug, Parser)]
#[command(
    name = "dbsnap",
    version,
    about,
    after_help = after_help(),
    arg_required_else_help = true
)]
pub struct Cli {
    /// Flags every command takes, before or after its name.
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted on either side of the command name
/// (`dbsnap --dir D list` and `dbsnap list --dir D` are the same).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Config file (default: ./dbsnap.toml, else $DBSNAP_HOME/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository: a directory, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX or gs://BUCKET/PREFIX (default: the target's, else `dir`/`repo` in the config, else $DBSNAP_HOME/snapshots); for `demo`, its working directory. S3 settings: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or [s3] in dbsnap.toml.
    #[arg(long, global = true, value_name = "DIR", visible_alias = "repo")]
    pub dir: Option<PathBuf>,
    /// JSON output: one document on standard output, errors included.
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on standard error (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress display.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Write this run's log to FILE (read-only commands log only with this or -v).
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// age identity file (secret keys, from age-keygen) to open encrypted snapshots; repeatable (also DBSNAP_IDENTITY, or `identity` in [encryption]; a passphrase comes from DBSNAP_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE", env = "DBSNAP_IDENTITY")]
    pub identity: Vec<PathBuf>,
    /// Allow plain HTTP (and, for a registry, an unverified TLS certificate) for an S3 endpoint and the jump pod image's registry; the Kubernetes API is always verified.
    #[arg(long, global = true)]
    pub force_insecure: bool,
    /// How the locations named on the command line and in the config are
    /// reached (set by `run` from the config: `[s3]`, `[repositories]`).
    #[arg(skip)]
    pub locations: dbsnap_core::Locations,
    /// The run's encryption and keys (set by `run` from the flags and
    /// `[encryption]`).
    #[arg(skip)]
    pub crypto: Arc<dbsnap_core::crypt::Crypto>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a consistent snapshot of every database of a target.
    Create(crate::create_cmd::CreateArgs),
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
    /// Test-restore a snapshot (default: the target's newest) into scratch databases, check row counts and the target's checks, drop them, and record the verdict beside the snapshot (list shows it; prune keeps the newest that passed).
    Drill(crate::drill_cmd::DrillArgs),
    /// Swap back the databases replaced by a restore (the restored copies are kept).
    Rollback(RollbackArgs),
    /// Finish an interrupted restore: start the app again, remove half-loaded copies and the run's scratch files.
    Resume(ResumeArgs),
    /// List (or drop, with --yes) the previous databases kept by restores, safety snapshots beyond keep_safety_snapshots, and files killed runs left.
    Cleanup(CleanupArgs),
    /// Delete a snapshot from the repository (asks on a terminal; --yes otherwise).
    Delete(DeleteArgs),
    /// Remove the snapshots a retention policy does not keep (--keep-last/-hourly/-daily/-weekly/-monthly/-yearly/-within, per target; pinned ones, the newest verified one and the newest that passed a drill always stay).
    Prune(crate::prune_cmd::PruneArgs),
    /// Copy snapshots to another repository (a directory or s3://), checking each on the way and on arrival; ones already there are skipped; pinned ones are pinned there too.
    Copy(crate::copy_cmd::CopyArgs),
    /// Back up an S3 bucket (or prefix) incrementally: only objects whose ETag or size changed are copied; each run records every object, so any run can be restored.
    BucketBackup(crate::bucket_cmd::BucketBackupArgs),
    /// Put a bucket-backup run's objects back (the newest, one by --run, or the one current at --at) into a bucket or prefix.
    BucketRestore(crate::bucket_cmd::BucketRestoreArgs),
    /// Read every blob of a bucket-backup run (the newest, --run ID, or --all) and compare it with the size and SHA-256 recorded; exit 10 naming the damaged or missing objects.
    BucketVerify(crate::bucket_cmd::BucketVerifyArgs),
    /// Remove the bucket-backup runs a retention policy does not keep (prune's --keep-* rules; the newest run always stays), then the blobs no remaining run needs.
    BucketPrune(crate::bucket_cmd::BucketPruneArgs),
    /// Pin a snapshot: prune keeps it and delete refuses it.
    Pin(crate::prune_cmd::PinArgs),
    /// Unpin a snapshot.
    Unpin(crate::prune_cmd::PinArgs),
    /// Start a jump pod next to the app and leave it running; prints the kubectl exec line that opens psql in it.
    JumpCreate(crate::k8s_jump::JumpCreateArgs),
    /// Delete jump pods left by jump-create (one by name, or all in the namespace).
    JumpDelete(crate::k8s_jump::JumpDeleteArgs),
    /// Scale workloads down or up (the command --scale's hooks run).
    #[command(hide = true)]
    K8sScale(crate::k8s_cmd::K8sScaleArgs),
    /// Write the Kubernetes objects stored in a snapshot (create --k8s-objects) to a directory, for kubectl apply -f.
    K8sObjects(crate::k8s_capture::K8sObjectsArgs),
    /// CSI VolumeSnapshots of PVCs (e.g. an in-cluster PostgreSQL's volumes): create (together, optionally with the app scaled to 0) or list.
    VolumeSnapshot(crate::k8s_capture::VolumeSnapshotArgs),
    /// Print a shell completion script, e.g. `dbsnap completions bash > /etc/bash_completion.d/dbsnap`.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on standard output, e.g. `dbsnap man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Delete without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Show what would be deleted and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How a restore or a drill loads what it creates: the flags both take.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Do not restore ownership (everything belongs to the connecting role).
    #[arg(long)]
    pub no_owner: bool,
    /// Do not restore privileges (GRANT/REVOKE), like pg_restore's -x.
    #[arg(short = 'x', long)]
    pub no_privileges: bool,
    /// Restore a snapshot from a newer PostgreSQL into an older server.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Never ask for a password (default: ask once per server on a terminal).
    #[arg(short = 'w', long)]
    pub no_password: bool,
    /// Connections loading the databases that are replaced or created (all of them at once, tables in parallel), then building each one's indexes and constraints [default: the machine's cores].
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// How a replaced or created database is loaded: dbsnap's parallel COPY of the tables (pg_restore for the schema), or stock pg_restore for everything.
    #[arg(long, value_enum, default_value_t = RestoreEngineArg::Native)]
    pub engine: RestoreEngineArg,
    /// Directory with pg_restore/psql/pg_dump (searched before PATH); repeatable.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot file: a path, or a name in --dir (default: pick from a list).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
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
    /// Restore into databases the snapshot was not taken from (another server, target or Kubernetes workload): the same app on a rebuilt, upgraded or external server, or a copy for testing. Without it such a restore is refused (exit 19).
    #[arg(long)]
    pub into_other_origin: bool,
    /// Create every role the snapshot names that the server lacks (NOLOGIN) before restoring.
    #[arg(long)]
    pub create_roles: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Do not take a safety snapshot of the live databases first.
    #[arg(long)]
    pub no_safety_snapshot: bool,
    /// How long to wait for table locks on a live database before giving up
    /// with nothing changed (e.g. 30s, 500ms, 2m; a bare number is milliseconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lock_timeout: Duration,
    /// Command that stops the application before any change.
    #[arg(long, value_name = "CMD")]
    pub stop_cmd: Option<String>,
    /// Command that starts it again; always run after --stop-cmd.
    #[arg(long, value_name = "CMD")]
    pub start_cmd: Option<String>,
    /// SQL that must return true after the restore (repeatable).
    #[arg(long, value_name = "SQL")]
    pub check: Vec<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub k8s: crate::k8s_cmd::K8sArgs,
    #[command(flatten)]
    pub scale: crate::k8s_cmd::ScaleArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Connection string lending credentials for a server in the journal (repeatable).
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Restore run id (default: the latest that replaced a database).
    #[arg(long)]
    pub id: Option<String>,
    /// Show what would be swapped back and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Confirm without asking.
    #[arg(short, long)]
    pub yes: bool,
    #[command(flatten)]
    pub k8s: crate::k8s_cmd::K8sArgs,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Connection string lending credentials for a server in the journal (repeatable).
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    #[command(flatten)]
    pub k8s: crate::k8s_cmd::K8sArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Also look on this server (connection string; repeatable).
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Drop the kept databases, remove old safety snapshots and files killed runs left (without it, only list them).
    #[arg(short, long)]
    pub yes: bool,
    /// Show what --yes would drop and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub k8s: crate::k8s_cmd::K8sArgs,
}

/// restore's `--engine` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreEngineArg {
    /// pg_restore for the schema; dbsnap loads table data in parallel.
    Native,
    /// pg_restore for everything.
    PgRestore,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Named target whose repository to list.
    #[arg(short, long)]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// Snapshot file: a path, or a name in --dir.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file_flag: Option<PathBuf>,
    /// Snapshot file, as with --file.
    #[arg(
        value_name = "FILE",
        conflicts_with = "file_flag",
        required_unless_present = "file_flag"
    )]
    pub file_arg: Option<PathBuf>,
}

impl FileArgs {
    /// The file, given by `--file` or positionally.
    pub fn file(&self) -> &Path {
        self.file_flag
            .as_deref()
            .or(self.file_arg.as_deref())
            .unwrap_or(Path::new(""))
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the server running and the files when done.
    #[arg(long)]
    pub keep: bool,
    /// Sample job rows to generate.
    #[arg(long, default_value_t = 20_000)]
    pub rows: u32,
}

impl Cli {
    /// Whether output is JSON.
    pub fn json(&self) -> bool {
        self.global.json
    }

    /// For a command that takes `--dry-run`, whether it was given: every
    /// `--json` document of such a command says it (docs/SCRIPTING.md).
    pub fn dry_run(&self) -> Option<bool> {
        match &self.command {
            Command::Restore(a) => Some(a.dry_run),
            Command::Rollback(a) => Some(a.dry_run),
            Command::Cleanup(a) => Some(a.dry_run),
            Command::Delete(a) => Some(a.dry_run),
            Command::Prune(a) => Some(a.dry_run),
            Command::BucketPrune(a) => Some(a.dry_run),
            _ => None,
        }
    }

    /// Whether the command may change something (a database, a
    /// repository or bucket, a cluster, files, dbsnap's state): such runs
    /// always write a log. One that only reads (list, verify, `volume-snapshot
    /// list`, ...) logs only with -v or --log-file, however long it runs.
    pub fn writes(&self) -> bool {
        matches!(
            &self.command,
            Command::Create(_)
                | Command::Restore(_)
                | Command::Drill(_)
                | Command::Rollback(_)
                | Command::Resume(_)
                | Command::Cleanup(_)
                | Command::Delete(_)
                | Command::Prune(_)
                | Command::Copy(_)
                | Command::BucketBackup(_)
                | Command::BucketRestore(_)
                | Command::BucketPrune(_)
                | Command::Pin(_)
                | Command::Unpin(_)
                | Command::Demo(_)
                | Command::JumpCreate(_)
                | Command::JumpDelete(_)
                | Command::K8sScale(_)
                | Command::K8sObjects(_)
                | Command::VolumeSnapshot(crate::k8s_capture::VolumeSnapshotArgs {
                    action: crate::k8s_capture::VolumeSnapshotAction::Create(_),
                })
        )
    }

    /// The cluster flags of a command that has them.
    fn k8s_mut(&mut self) -> Option<&mut crate::k8s_cmd::PodArgs> {
        match &mut self.command {
            Command::Create(a) => Some(&mut a.k8s.pod),
            Command::Restore(a) => Some(&mut a.k8s.pod),
            Command::Drill(a) => Some(&mut a.k8s.pod),
            Command::Rollback(a) => Some(&mut a.k8s.pod),
            Command::Resume(a) => Some(&mut a.k8s.pod),
            Command::Cleanup(a) => Some(&mut a.k8s.pod),
            Command::JumpCreate(a) => Some(&mut a.pod),
            _ => None,
        }
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
            Command::Drill(_) => "drill",
            Command::Rollback(_) => "rollback",
            Command::Resume(_) => "resume",
            Command::Cleanup(_) => "cleanup",
            Command::Delete(_) => "delete",
            Command::Prune(_) => "prune",
            Command::Copy(_) => "copy",
            Command::BucketBackup(_) => "bucket-backup",
            Command::BucketRestore(_) => "bucket-restore",
            Command::BucketVerify(_) => "bucket-verify",
            Command::BucketPrune(_) => "bucket-prune",
            Command::Pin(_) => "pin",
            Command::Unpin(_) => "unpin",
            Command::Completions(_) => "completions",
            Command::Man => "man",
            Command::JumpCreate(_) => "jump-create",
            Command::JumpDelete(_) => "jump-delete",
            Command::K8sScale(_) => "k8s-scale",
            Command::K8sObjects(_) => "k8s-objects",
            Command::VolumeSnapshot(_) => "volume-snapshot",
        }
    }
}

/// Runs the command; returns the exit code on success paths.
pub async fn run(mut cli: Cli) -> Result<u8, CoreError> {
    let insecure = cli.global.force_insecure;
    if let Some(k8s) = cli.k8s_mut() {
        k8s.force_insecure = insecure;
    }
    let mut g = cli.global;
    let show_progress = !g.no_progress && !g.json;
    // One reading of the config for the whole run: a file that does not
    // parse, or has an unknown key, stops every command (exit 2).
    let config = Config::load(g.config.as_deref())?;
    g.locations = config.locations(g.force_insecure)?;
    let encrypt = match &cli.command {
        Command::Create(a) => Some(&a.encrypt),
        _ => None,
    };
    let writes_snapshots = matches!(cli.command, Command::Create(_) | Command::Restore(_));
    g.crypto = Arc::new(crate::encryption::configure(
        encrypt,
        writes_snapshots,
        &g.identity,
        &config,
    )?);
    match cli.command {
        Command::Create(args) => {
            crate::create_cmd::create_cmd(args, &g, &config, show_progress).await
        }
        Command::JumpCreate(args) => {
            let target = args.target.as_ref().map(|t| config.target(t)).transpose()?;
            let created =
                crate::k8s_jump::jump_create(&args, target.and_then(|t| t.k8s.as_ref())).await?;
            output::print_jump_created(&created, g.json);
            Ok(exit::OK)
        }
        Command::VolumeSnapshot(args) => {
            let snapshots = crate::k8s_capture::volume_snapshot(&args).await?;
            output::print_volume_snapshots(&snapshots, g.json);
            Ok(exit::OK)
        }
        Command::K8sObjects(args) => {
            let written = crate::k8s_capture::write_objects(&args, &g, &config)?;
            output::print_objects_written(&args.out, &written, g.json);
            Ok(exit::OK)
        }
        Command::K8sScale(args) => {
            crate::k8s_cmd::k8s_scale(&args).await?;
            Ok(exit::OK)
        }
        Command::JumpDelete(args) => {
            let target = args.target.as_ref().map(|t| config.target(t)).transpose()?;
            let deleted =
                crate::k8s_jump::jump_delete(&args, target.and_then(|t| t.k8s.as_ref())).await?;
            output::print_jump_deleted(&deleted, g.json);
            Ok(exit::OK)
        }
        Command::List(args) => {
            let target = match &args.target {
                Some(t) => Some(config.target(t)?),
                None => None,
            };
            let dir = repo_dir(&g, &config, target);
            let rows = match inspect::list(&g.locations.open(&dir)) {
                Err(e) if missing_default_repo(&e, &dir) => Vec::new(),
                r => r?,
            };
            output::print_list(&dir, &rows, g.json);
            Ok(exit::OK)
        }
        Command::ExtractVersion(args) => {
            let path = resolve_file(&args, &g, &config)?;
            let meta = inspect::read_checked_metadata(&path)?;
            output::print_versions(&path, &meta, g.json);
            Ok(exit::OK)
        }
        Command::Verify(args) => {
            let path = resolve_file(&args, &g, &config)?;
            let report = inspect::verify(&path, &g.crypto)?;
            output::print_verify(&report, g.json);
            Ok(if report.ok { exit::OK } else { exit::VERIFY })
        }
        Command::Demo(args) => {
            let ui = progress::Ui::new(show_progress);
            let sink: Arc<dyn Progress> = ui.clone();
            let opts = demo::DemoOptions {
                dir: g.dir.clone(),
                keep: args.keep,
                rows: args.rows,
            };
            let result = demo::run(&opts, &sink).await;
            ui.finish();
            let result = result?;
            output::print_demo(&result, g.json);
            Ok(if result.verify.ok {
                exit::OK
            } else {
                exit::VERIFY
            })
        }
        Command::Restore(args) => crate::restore_cmd::run(args, &g, &config, show_progress).await,
        Command::Drill(args) => crate::drill_cmd::run(args, &g, &config, show_progress).await,
        Command::Rollback(args) => crate::restore_cmd::rollback(args, &g).await,
        Command::Resume(args) => crate::restore_cmd::resume(args, &g).await,
        Command::Cleanup(args) => crate::restore_cmd::cleanup(args, &g, &config).await,
        Command::Completions(args) => {
            let mut cmd = without_hidden(&Cli::command());
            clap_complete::generate(args.shell, &mut cmd, "dbsnap", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Man => match man_page(&mut std::io::stdout()) {
            // `dbsnap man | head` is fine.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CoreError::Storage(
                StorageError::io(Path::new("standard output"), e),
            )),
            _ => Ok(exit::OK),
        },
        Command::Delete(args) => {
            let snapshot = resolve_file(&args.file, &g, &config)?;
            crate::restore_cmd::delete(args, &g, &snapshot)
        }
        Command::Prune(args) => crate::prune_cmd::prune(args, &g, &config),
        Command::Copy(args) => crate::copy_cmd::copy(args, &g, &config, show_progress).await,
        Command::BucketBackup(args) => crate::bucket_cmd::backup(args, &g, show_progress).await,
        Command::BucketRestore(args) => crate::bucket_cmd::restore(args, &g, show_progress).await,
        Command::BucketVerify(args) => crate::bucket_cmd::verify(args, &g, show_progress).await,
        Command::BucketPrune(args) => crate::bucket_cmd::prune(args, &g),
        Command::Pin(args) => crate::prune_cmd::pin(args, &g, &config, true),
        Command::Unpin(args) => crate::prune_cmd::pin(args, &g, &config, false),
    }
}

/// Writes the man page: dbsnap(1), then one page per command
/// (dbsnap-create(1), ...) with all of its flags; hidden commands (the
/// ones dbsnap runs itself, like `k8s-scale`) have none.
fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(out)?;
    pages_of(&cmd, "dbsnap", out)
}

/// The pages of `cmd`'s visible subcommands, at every level
/// (dbsnap-volume-snapshot-create(1), ...).
fn pages_of(
    cmd: &clap::Command,
    prefix: &str,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("{prefix}-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        clap_mangen::Man::new(page).render(out)?;
        pages_of(sub, &name, out)?;
    }
    Ok(())
}

/// `cmd` without its hidden subcommands, at every level, for completion
/// scripts: clap_complete offers every subcommand it is given. Only what
/// completions use is kept (name, descriptions, version, flags, groups,
/// aliases).
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned())
        .visible_aliases(cmd.get_visible_aliases().map(str::to_string))
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        out = out.long_about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_string());
    }
    out
}

/// The repository a command uses (see `dbsnap_core::settings::repository`).
pub fn repo_dir(g: &GlobalArgs, config: &Config, target: Option<&TargetConfig>) -> PathBuf {
    dbsnap_core::settings::repository(g.dir.as_ref(), config, target)
}

/// [`repo_dir`] as a location (a repository name resolved, a URL with its
/// options).
pub fn repo(
    g: &GlobalArgs,
    config: &Config,
    target: Option<&TargetConfig>,
) -> dbsnap_core::Location {
    g.locations
        .resolve(&repo_dir(g, config, target).display().to_string())
}

/// Whether `e` is only the default repository not existing yet (nothing
/// taken so far: empty). A directory the user named must exist: a typo is
/// not "no snapshots".
pub fn missing_default_repo(e: &CoreError, dir: &Path) -> bool {
    matches!(e, CoreError::Storage(StorageError::NoRepository(_)))
        && dir == config::default_snapshot_dir()
}

pub fn resolve_file(
    args: &FileArgs,
    g: &GlobalArgs,
    config: &Config,
) -> Result<dbsnap_core::SnapshotRef, CoreError> {
    inspect::resolve_snapshot(args.file(), &g.locations, || Ok(repo(g, config, None)))
}

/// A duration as PostgreSQL writes one: `500ms`, `30s`, `2min`/`2m`, `1h`;
/// a bare number is milliseconds (like `lock_timeout`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration (e.g. 30s, 500ms, 2min)"))?;
    let ms = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("unknown unit \"{other}\" (use ms, s, min or h)")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_target_beats_config_beats_default() {
        let all = |flag, target, config| {
            dbsnap_core::settings::layered(flag, target, config, || "default")
        };
        assert_eq!(all(Some("flag"), Some("target"), Some("config")), "flag");
        assert_eq!(all(None, Some("target"), Some("config")), "target");
        assert_eq!(all(None, None, Some("config")), "config");
        assert_eq!(all(None, None, None), "default");
        // The repository directory is the setting with all four sources.
        let target = TargetConfig {
            dir: Some("/target".into()),
            ..Default::default()
        };
        let config = Config {
            dir: Some("/config".into()),
            ..Default::default()
        };
        let g = |dir: Option<&str>| GlobalArgs {
            config: None,
            dir: dir.map(PathBuf::from),
            json: false,
            verbose: 0,
            no_progress: false,
            log_file: None,
            identity: Vec::new(),
            force_insecure: false,
            locations: Default::default(),
            crypto: Default::default(),
        };
        assert_eq!(
            repo_dir(&g(Some("/flag")), &config, Some(&target)),
            PathBuf::from("/flag")
        );
        assert_eq!(
            repo_dir(&g(None), &config, Some(&target)),
            PathBuf::from("/target")
        );
        assert_eq!(repo_dir(&g(None), &config, None), PathBuf::from("/config"));
        assert_eq!(
            repo_dir(&g(None), &Config::default(), None),
            config::default_snapshot_dir()
        );
    }

    #[test]
    fn durations_as_postgres_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
    }
}
