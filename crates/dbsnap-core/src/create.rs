//! `create`: one consistent snapshot of all of a target's databases.
//!
//! Plan: resolve and connect every database, read server facts, choose a
//! pg_dump per server, refuse what cannot work (duplicates, a consistent
//! cut across instances). Execute: establish the cut, read schema versions
//! inside it, dump every database concurrently with `pg_dump --snapshot`
//! (the largest streams straight into the archive, the others into spool
//! files appended after), write the manifest, fsync, rename into place.
//!
//! The dump step sits behind [`DumpEngine`] so a native engine can replace
//! pg_dump's data path while writing the same archive format.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use dbsnap_archive::snapshot::{
    ConsistencyMethod, DatabaseEntry, Metadata, SnapshotWriter, FORMAT_VERSION,
};
use dbsnap_archive::version::{sanitize_token, SchemaVersion};
use dbsnap_pg::process::{Tool, ToolChild};
use dbsnap_pg::schema_version::{self, VersionSpec};
use dbsnap_pg::tools::{self, Program};
use dbsnap_pg::{ConnInfo, PgError, Resolver, ServerInfo};
use dbsnap_storage::{PendingWrite, Repository, SnapshotRef};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::chunks::{for_each_chunk, ChunkError};
use crate::consistency::{self, CutLimits, Leader, QuiesceHooks};
use crate::error::CoreError;

/// What to snapshot and how.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Connection strings, one per database, as the user named them.
    pub databases: Vec<String>,
    /// How named databases are reached (`dbsnap_pg::endpoint::direct()`).
    pub resolver: Arc<dyn Resolver>,
    /// Already resolved connection settings (used instead of `databases`
    /// when not empty, e.g. by restore's safety snapshot).
    pub resolved: Vec<ConnInfo>,
    /// Target name, recorded in the metadata.
    pub target: Option<String>,
    /// File name prefix.
    pub prefix: String,
    /// The restore run this safety snapshot is taken for, if it is one.
    pub safety_for: Option<String>,
    /// Consistency method.
    pub consistency: ConsistencyMethod,
    /// Where the snapshot goes.
    pub repo: Arc<dyn Repository>,
    /// Extra directories to find pg_dump in.
    pub pg_bin: Vec<PathBuf>,
    /// Quiesce hooks.
    pub hooks: QuiesceHooks,
    /// pg_dump `--compress` value.
    pub compress: Option<String>,
    /// Schema-version settings for all databases.
    pub version_spec: VersionSpec,
    /// Per-database overrides by name.
    pub version_specs: BTreeMap<String, VersionSpec>,
    /// Limits of the consistency methods.
    pub limits: CutLimits,
}

/// Receives progress; implemented by the terminal UI.
pub trait Progress: Send + Sync {
    /// A phase started (`connecting`, `consistent cut`, ...).
    fn phase(&self, _message: &str) {}
    /// Dumping (or restoring) database `index` started.
    fn transfer_started(&self, _index: usize, _name: &str) {}
    /// `bytes` moved so far for database `index`.
    fn transfer_bytes(&self, _index: usize, _bytes: u64) {}
    /// Database `index` is done.
    fn transfer_finished(&self, _index: usize, _bytes: u64) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One database in the result.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedDatabase {
    /// Database name.
    pub name: String,
    /// Archive member.
    pub member: String,
    /// Member size in bytes.
    pub bytes: u64,
    /// Server version.
    pub server_version: String,
    /// Schema version display string.
    pub schema_version: Option<String>,
    /// Migration tool detected.
    pub schema_tool: Option<String>,
    /// Whether the tool records a failed/half-applied migration.
    pub dirty: bool,
    /// pg_dump used.
    pub pg_dump: String,
}

/// What `create` produced.
#[derive(Debug, Clone, Serialize)]
pub struct CreateResult {
    /// The snapshot.
    pub file: SnapshotRef,
    /// Its size.
    pub size: u64,
    /// When the cut was taken.
    pub created_at: String,
    /// Per database.
    pub databases: Vec<CreatedDatabase>,
    /// Consistency record.
    pub consistency: dbsnap_archive::snapshot::Consistency,
    /// Wall time, seconds.
    pub duration_secs: f64,
    /// Warnings worth showing (dirty schema versions, ...).
    pub warnings: Vec<String>,
    /// The start hook failed after the cut (the snapshot is complete).
    pub start_hook_failure: Option<String>,
}

/// Produces one database's pg_dump custom archive as a byte stream.
pub trait DumpEngine: Send + Sync {
    /// Starts dumping `info` at exported snapshot `snapshot`; returns a
    /// running job whose output is read until end of stream.
    fn start(&self, job: &DumpJob) -> Result<RunningDump, CoreError>;
}

/// Inputs of one database dump.
#[derive(Debug, Clone)]
pub struct DumpJob {
    /// Connection settings.
    pub info: ConnInfo,
    /// Printable name.
    pub display: String,
    /// Exported snapshot id.
    pub snapshot: String,
    /// pg_dump to run.
    pub program: Program,
    /// How the database is reached.
    pub route: Arc<dyn Resolver>,
    /// How long pg_dump waits for a table lock before giving up
    /// (`--lock-wait-timeout`): a dump never hangs behind another session.
    pub lock_wait: Duration,
    /// `--compress` value.
    pub compress: Option<String>,
}

/// A dump in progress: a byte stream plus a way to wait for and stop it.
pub struct RunningDump {
    /// The archive bytes.
    pub output: Box<dyn Read + Send>,
    child: Arc<Mutex<ToolChild>>,
    stderr: std::thread::JoinHandle<String>,
}

/// The pg_dump engine: runs `pg_dump -Fc --snapshot`.
pub struct PgDumpEngine;

impl DumpEngine for PgDumpEngine {
    fn start(&self, job: &DumpJob) -> Result<RunningDump, CoreError> {
        let mut tool = Tool::new(&job.program.path);
        tool.arg("--format=custom")
            .arg(format!("--snapshot={}", job.snapshot))
            .arg(format!(
                "--lock-wait-timeout={}ms",
                job.lock_wait.as_millis()
            ));
        if let Some(c) = &job.compress {
            tool.arg(format!("--compress={c}"));
        }
        job.route
            .prepare_tool(&mut tool, &job.info, &job.info.dbname)?;
        tool.stdout(Stdio::piped()).stderr(Stdio::piped());
        tracing::info!(database = %job.display, pg_dump = %job.program.path.display(), "starting pg_dump");
        let mut child = tool.spawn()?;
        let (Some(stdout), Some(mut stderr)) = (child.take_stdout(), child.take_stderr()) else {
            return Err(CoreError::Internal("pg_dump without pipes".into()));
        };
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Ok(RunningDump {
            output: Box::new(stdout),
            child: Arc::new(Mutex::new(child)),
            stderr,
        })
    }
}

impl RunningDump {
    fn kill(&self) {
        if let Ok(mut c) = self.child.lock() {
            c.kill();
        }
    }

    fn wait(self, display_name: &str) -> Result<(), CoreError> {
        let status = self
            .child
            .lock()
            .map_err(|_| CoreError::Internal("poisoned".into()))?
            .wait();
        let stderr = self.stderr.join().unwrap_or_default();
        for line in stderr.lines() {
            tracing::info!(database = %display_name, "pg_dump: {line}");
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(_) => Err(tools::classify_stderr("pg_dump", &stderr, display_name).into()),
            Err(e) => Err(CoreError::Internal(format!("waiting for pg_dump: {e}"))),
        }
    }
}

struct Opened {
    info: ConnInfo,
    display: String,
    client: Client,
    server: ServerInfo,
}

/// Takes a snapshot per `opts`.
pub async fn create(
    opts: &CreateOptions,
    progress: &Arc<dyn Progress>,
) -> Result<CreateResult, CoreError> {
    create_with(opts, progress, &PgDumpEngine).await
}

/// [`create`] with a given dump engine.
pub async fn create_with(
    opts: &CreateOptions,
    progress: &Arc<dyn Progress>,
    engine: &dyn DumpEngine,
) -> Result<CreateResult, CoreError> {
    let started = Instant::now();
    if opts.databases.is_empty() && opts.resolved.is_empty() {
        return Err(CoreError::Config {
            message: "no database to snapshot".into(),
            hint: "pass -d <connection string> (repeatable) or --target <name> from dbsnap.toml"
                .into(),
        });
    }
    let infos = if opts.resolved.is_empty() {
        resolve_all(opts.resolver.as_ref(), &opts.databases)?
    } else {
        opts.resolved.clone()
    };
    progress.phase("connecting");
    let opened = connect_all(opts.resolver.as_ref(), &infos).await?;
    check_duplicates_after_connect(&opened)?;
    check_instances(opts.consistency, &opened)?;
    let programs = choose_programs(&opened, &opts.pg_bin)?;
    let repo = &opts.repo;
    for stale in repo.remove_stale()? {
        tracing::info!("removed leftover of an interrupted run: {stale}");
    }

    progress.phase(&format!("consistent cut ({})", opts.consistency.as_str()));
    let leaders: Vec<Leader<'_>> = opened
        .iter()
        .map(|o| Leader {
            display: o.display.clone(),
            info: &o.info,
            client: &o.client,
            version_num: o.server.version_num,
            route: opts.resolver.as_ref(),
        })
        .collect();
    let cut = consistency::establish(opts.consistency, &leaders, &opts.limits, &opts.hooks).await?;
    let now = time::OffsetDateTime::now_utc();
    let created = now.replace_millisecond(now.millisecond()).unwrap_or(now);

    let seen = inside_the_cut(&opened, opts).await?;
    let members = member_names(&opened);
    let metadata = Metadata {
        format_version: FORMAT_VERSION.into(),
        tool_version: format!("dbsnap {}", env!("CARGO_PKG_VERSION")),
        created_at: created
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        target: opts.target.clone(),
        prefix: opts.prefix.clone(),
        safety_for: opts.safety_for.clone(),
        consistency: cut.consistency.clone(),
        databases: opened
            .iter()
            .zip(&members)
            .zip(&seen.versions)
            .zip(&programs)
            .map(|(((o, m), v), p)| DatabaseEntry {
                name: o.info.dbname.clone(),
                member: m.clone(),
                server: o.info.server(),
                server_version: o.server.version.clone(),
                server_version_num: o.server.version_num,
                pg_dump_version: p.version.clone(),
                schema_version: v.clone(),
                connection: Some(recorded_connection(&o.info)),
            })
            .collect(),
    };
    let file_name = snapshot_file_name(&opts.prefix, &metadata, created);

    progress.phase("dumping");
    let jobs: Vec<DumpJob> = opened
        .iter()
        .zip(&cut.snapshots)
        .zip(&programs)
        .map(|((o, s), p)| DumpJob {
            route: opts.resolver.clone(),
            info: o.info.clone(),
            display: o.display.clone(),
            snapshot: s.exported.clone(),
            program: p.clone(),
            lock_wait: opts.limits.max_wait,
            compress: opts.compress.clone(),
        })
        .collect();
    // The largest database streams straight into the archive; the others spool.
    let direct = seen
        .sizes
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| **s)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let written = write_archive(
        repo.as_ref(),
        &file_name,
        &metadata,
        &jobs,
        &members,
        direct,
        engine,
        progress,
    )
    .await;
    // Leader transactions end only after every dump has finished.
    for o in &opened {
        dbsnap_pg::snapshot::rollback(&o.client).await;
    }
    let (info, member_sizes) = written?;
    let file = SnapshotRef::new(repo.clone(), &info.name);
    tracing::info!(file = %file, size = info.size, "snapshot written");
    Ok(CreateResult {
        file,
        size: info.size,
        created_at: metadata.created_at.clone(),
        databases: created_databases(&metadata, &member_sizes, &programs),
        consistency: cut.consistency,
        duration_secs: started.elapsed().as_secs_f64(),
        warnings: seen.warnings,
        start_hook_failure: cut.start_failure,
    })
}

/// What is read inside the snapshot transactions, per database.
struct SeenInCut {
    versions: Vec<Option<SchemaVersion>>,
    sizes: Vec<i64>,
    warnings: Vec<String>,
}

/// Inside the snapshot transactions: schema versions (a dirty one is a
/// warning) and database sizes.
async fn inside_the_cut(opened: &[Opened], opts: &CreateOptions) -> Result<SeenInCut, CoreError> {
    let mut seen = SeenInCut {
        versions: Vec::new(),
        sizes: Vec::new(),
        warnings: Vec::new(),
    };
    for o in opened {
        let spec = opts
            .version_specs
            .get(&o.info.dbname)
            .unwrap_or(&opts.version_spec);
        let v = schema_version::detect(&o.client, spec, &o.display).await?;
        if let Some(v) = v.as_ref().filter(|v| v.dirty) {
            let w = dirty_warning(&o.display, &v.failed);
            tracing::warn!(target: crate::REPORTED, "{w}");
            seen.warnings.push(w);
        }
        seen.versions.push(v);
        let size: i64 = o
            .client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        seen.sizes.push(size);
    }
    Ok(seen)
}

/// The pg_dump for each database: at least as new as its server.
fn choose_programs(opened: &[Opened], pg_bin: &[PathBuf]) -> Result<Vec<Program>, CoreError> {
    let installed = tools::find_all("pg_dump", pg_bin);
    let mut programs = Vec::new();
    for o in opened {
        let p =
            tools::choose_pg_dump(&installed, o.server.major()).map_err(|e| e.on(&o.display))?;
        tracing::info!(database = %o.display, server = %o.server.version, pg_dump = %p.version, "chose pg_dump");
        programs.push(p);
    }
    Ok(programs)
}

/// `<prefix>-<version>-<UTC time>.tar`.
fn snapshot_file_name(prefix: &str, metadata: &Metadata, created: time::OffsetDateTime) -> String {
    format!(
        "{}-{}-{}.tar",
        sanitize_token(prefix),
        metadata.version_token(),
        created
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default()
    )
}

/// The per-database part of the result.
fn created_databases(
    metadata: &Metadata,
    member_sizes: &[u64],
    programs: &[Program],
) -> Vec<CreatedDatabase> {
    metadata
        .databases
        .iter()
        .zip(member_sizes)
        .zip(programs)
        .map(|((d, b), p)| CreatedDatabase {
            name: d.name.clone(),
            member: d.member.clone(),
            bytes: *b,
            server_version: d.server_version.clone(),
            schema_version: d.schema_version.as_ref().map(|v| v.display()),
            schema_tool: d.schema_version.as_ref().map(|v| v.tool.clone()),
            dirty: d.schema_version.as_ref().is_some_and(|v| v.dirty),
            pg_dump: p.path.display().to_string(),
        })
        .collect()
}

fn resolve_all(resolver: &dyn Resolver, strings: &[String]) -> Result<Vec<ConnInfo>, CoreError> {
    let mut infos: Vec<ConnInfo> = Vec::new();
    for s in strings {
        let info = resolver.resolve(s)?;
        if let Some(prev) = infos
            .iter()
            .find(|p| p.hosts == info.hosts && p.ports == info.ports && p.dbname == info.dbname)
        {
            return Err(duplicate(&prev.display()));
        }
        infos.push(info);
    }
    Ok(infos)
}

fn duplicate(display: &str) -> CoreError {
    CoreError::Config {
        message: format!("database {display} is given twice"),
        hint: "name each database once".into(),
    }
}

async fn connect_all(route: &dyn Resolver, infos: &[ConnInfo]) -> Result<Vec<Opened>, CoreError> {
    let futures = infos.iter().map(|info| async move {
        let display = info.display();
        let client = route.connect(info).await?;
        let server = dbsnap_pg::server_info(&client, &display).await?;
        Ok::<_, PgError>(Opened {
            info: info.clone(),
            display,
            client,
            server,
        })
    });
    let mut out = Vec::new();
    for r in futures::future::join_all(futures).await {
        out.push(r?);
    }
    Ok(out)
}

fn check_duplicates_after_connect(opened: &[Opened]) -> Result<(), CoreError> {
    for (i, a) in opened.iter().enumerate() {
        if let Some(b) = opened[..i].iter().find(|b| {
            b.server.instance_id == a.server.instance_id && b.info.dbname == a.info.dbname
        }) {
            return Err(CoreError::Config {
                message: format!("{} and {} are the same database", b.display, a.display),
                hint: "name each database once".into(),
            });
        }
    }
    Ok(())
}

fn check_instances(method: ConsistencyMethod, opened: &[Opened]) -> Result<(), CoreError> {
    if !matches!(
        method,
        ConsistencyMethod::Snapshot | ConsistencyMethod::Barrier
    ) {
        return Ok(());
    }
    let first = &opened[0];
    if let Some(other) = opened
        .iter()
        .find(|o| o.server.instance_id != first.server.instance_id)
    {
        return Err(CoreError::Consistency {
            message: format!(
                "{} and {} are on different PostgreSQL instances; --consistency {} needs one instance \
                 (transaction ids are only comparable within an instance)",
                first.display,
                other.display,
                method.as_str()
            ),
            hint: "use --consistency quiesce with --stop-cmd/--start-cmd (stop the app), or --consistency none".into(),
        });
    }
    Ok(())
}

/// What restore needs to reach a database again, without the password.
fn recorded_connection(info: &ConnInfo) -> String {
    let keep = ConnInfo {
        password: None,
        sslrootcert: None,
        sslcert: None,
        sslkey: None,
        application_name: None,
        options: None,
        target_session_attrs: None,
        channel_binding: None,
        connect_timeout: None,
        ..info.clone()
    };
    keep.to_libpq_string_without_password()
}

/// `<db>.dump`, made unique and safe as a file name.
fn member_names(opened: &[Opened]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for o in opened {
        let base = sanitize_member(&o.info.dbname);
        let mut name = format!("{base}.dump");
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}-{n}.dump");
            n += 1;
        }
        names.push(name);
    }
    names
}

/// A readable member name: letters and digits of any script stay, so do
/// `.`, `_` and `-`; anything else (`/`, spaces, controls) becomes `_`.
/// Short enough for a plain tar header; never hidden.
fn sanitize_member(s: &str) -> String {
    let mut t = String::new();
    for c in s.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '_'
        };
        if t.len() + c.len_utf8() > 80 {
            break;
        }
        t.push(c);
    }
    if t.is_empty() || t.starts_with('.') {
        format!("db{t}")
    } else {
        t
    }
}

/// A member spooled to a file, with its size and checksum.
struct Spooled {
    file: File,
    size: u64,
    sha256: String,
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies a dump's output into `out`, reporting progress. Write errors are
/// storage errors (full disk); read errors belong to the dump.
fn pump(
    input: &mut dyn Read,
    out: &mut dyn Write,
    index: usize,
    progress: &dyn Progress,
    path: &std::path::Path,
) -> Result<u64, CoreError> {
    let mut total = 0u64;
    for_each_chunk(input, |chunk| {
        out.write_all(&chunk)?;
        total += chunk.len() as u64;
        progress.transfer_bytes(index, total);
        Ok(())
    })
    .map_err(|e| match e {
        ChunkError::Read(e) => CoreError::Internal(format!("reading pg_dump output: {e}")),
        ChunkError::Sink(e) => CoreError::write_io(path, e),
    })
}

/// The archive being written.
type Writer = SnapshotWriter<Box<dyn PendingWrite>>;

/// Where one dump's bytes go: straight into the archive, or a spool file.
enum Sink {
    Direct(Box<Writer>),
    Spool(File, PathBuf),
}

/// What one dump thread hands back: the archive writer (if it streamed
/// into it), its spool (otherwise), and the bytes written.
type DumpOutcome = (Option<Box<Writer>>, Option<Spooled>, u64);

#[allow(clippy::too_many_arguments)]
async fn write_archive(
    repo: &dyn Repository,
    file_name: &str,
    metadata: &Metadata,
    jobs: &[DumpJob],
    members: &[String],
    direct: usize,
    engine: &dyn DumpEngine,
    progress: &Arc<dyn Progress>,
) -> Result<(dbsnap_storage::SnapshotInfo, Vec<u64>), CoreError> {
    let mut pending = begin_unique(repo, file_name)?;
    // Errors name the snapshot being written.
    let tmp_path = PathBuf::from(format!("{}/{}", repo.location(), pending.name()));
    let mut spools = Vec::new();
    for (i, m) in members.iter().enumerate() {
        spools.push(if i == direct {
            None
        } else {
            Some(pending.spool(m)?)
        });
    }
    let mtime = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let writer =
        SnapshotWriter::new(pending, metadata, mtime).map_err(|e| archive_io(&tmp_path, e))?;
    let mut writer = Some(Box::new(writer));
    let sinks: Vec<Sink> = spools
        .into_iter()
        .map(|spool| match spool {
            Some((file, path)) => Sink::Spool(file, path),
            None => Sink::Direct(writer.take().expect("one direct member")),
        })
        .collect();
    let running = start_dumps(engine, jobs)?;
    let aborter = Aborter::new(&running);
    let _kill_on_cancel = KillOnDrop(aborter.children.clone());
    let (jobs_owned, members_owned, progress_owned, tmp_owned) = (
        jobs.to_vec(),
        members.to_vec(),
        progress.clone(),
        tmp_path.clone(),
    );
    let abort = aborter.clone();
    // Blocking copies run off the async workers, so signals are still handled.
    let result = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = running
                .into_iter()
                .zip(sinks)
                .enumerate()
                .map(|(i, (run, sink))| {
                    let (job, member) = (&jobs_owned[i], &members_owned[i]);
                    let (abort, tmp_path, progress) = (&abort, &tmp_owned, &*progress_owned);
                    scope.spawn(move || {
                        copy_dump(i, run, sink, job, member, abort, progress, tmp_path)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CoreError::Internal("dump thread panicked".into())))
                })
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| CoreError::Internal(format!("dump task failed: {e}")))?;
    let (writer, spooled, sizes) = gather(result, aborter.root())?;
    let info = finish_archive(writer, spooled, members.to_vec(), tmp_path).await?;
    Ok((info, sizes))
}

/// Begins the snapshot; two snapshots in the same second get distinct names.
fn begin_unique(
    repo: &dyn Repository,
    file_name: &str,
) -> Result<Box<dyn PendingWrite>, CoreError> {
    let mut attempt = 1;
    loop {
        let name = if attempt == 1 {
            file_name.to_string()
        } else {
            format!("{}-{attempt}.tar", file_name.trim_end_matches(".tar"))
        };
        match repo.begin(&name) {
            Err(dbsnap_storage::StorageError::Exists(_)) if attempt < 100 => attempt += 1,
            other => return Ok(other?),
        }
    }
}

/// Starts every dump; if one cannot start, the started ones are stopped.
fn start_dumps(engine: &dyn DumpEngine, jobs: &[DumpJob]) -> Result<Vec<RunningDump>, CoreError> {
    let mut running = Vec::new();
    for job in jobs {
        match engine.start(job) {
            Ok(r) => running.push(r),
            Err(e) => {
                running.iter().for_each(RunningDump::kill);
                return Err(e);
            }
        }
    }
    Ok(running)
}

/// Stops every dump once one fails, and remembers which failed first (the
/// root cause, not the dumps stopped because of it).
#[derive(Clone)]
struct Aborter {
    children: Vec<Arc<Mutex<ToolChild>>>,
    aborting: Arc<AtomicBool>,
    first_failure: Arc<Mutex<Option<usize>>>,
}

impl Aborter {
    fn new(running: &[RunningDump]) -> Aborter {
        Aborter {
            children: running.iter().map(|r| r.child.clone()).collect(),
            aborting: Arc::new(AtomicBool::new(false)),
            first_failure: Arc::new(Mutex::new(None)),
        }
    }

    fn abort(&self, index: usize) {
        if !self.aborting.swap(true, Ordering::SeqCst) {
            if let Ok(mut f) = self.first_failure.lock() {
                *f = Some(index);
            }
        }
        for c in &self.children {
            if let Ok(mut c) = c.lock() {
                c.kill();
            }
        }
    }

    fn root(&self) -> Option<usize> {
        self.first_failure.lock().ok().and_then(|f| *f)
    }
}

/// Copies dump `i` into its sink and waits for it; a failure stops the others.
#[allow(clippy::too_many_arguments)]
fn copy_dump(
    i: usize,
    mut run: RunningDump,
    sink: Sink,
    job: &DumpJob,
    member: &str,
    abort: &Aborter,
    progress: &dyn Progress,
    tmp_path: &std::path::Path,
) -> Result<DumpOutcome, CoreError> {
    progress.transfer_started(i, &job.info.dbname);
    let copied = (|| -> Result<DumpOutcome, CoreError> {
        match sink {
            Sink::Direct(mut w) => {
                let mut stream = w
                    .stream_member(member)
                    .map_err(|e| archive_io(tmp_path, e))?;
                let n = pump(&mut run.output, &mut stream, i, progress, tmp_path)?;
                stream.finish().map_err(|e| archive_io(tmp_path, e))?;
                Ok((Some(w), None, n))
            }
            Sink::Spool(file, path) => {
                let mut hw = HashingWriter {
                    inner: file,
                    hasher: Sha256::new(),
                    size: 0,
                };
                let n = pump(&mut run.output, &mut hw, i, progress, &path)?;
                let sha256 = hex::encode(hw.hasher.finalize());
                let spooled = Spooled {
                    file: hw.inner,
                    size: hw.size,
                    sha256,
                };
                Ok((None, Some(spooled), n))
            }
        }
    })();
    if copied.is_err() {
        abort.abort(i);
    }
    let waited = run.wait(&job.display);
    if waited.is_err() {
        abort.abort(i);
    }
    let outcome = copied?;
    waited?;
    progress.transfer_finished(i, outcome.2);
    Ok(outcome)
}

/// The archive writer, the spools in member order and the bytes per dump;
/// on failure, the root cause's error.
#[allow(clippy::type_complexity)]
fn gather(
    result: Vec<Result<DumpOutcome, CoreError>>,
    root: Option<usize>,
) -> Result<(Box<Writer>, Vec<Option<Spooled>>, Vec<u64>), CoreError> {
    if result.iter().any(Result::is_err) {
        let mut failed: Vec<(usize, CoreError)> = result
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| (i, e)))
            .collect();
        let pos = failed
            .iter()
            .position(|(i, _)| Some(*i) == root)
            .unwrap_or(0);
        return Err(failed.swap_remove(pos).1);
    }
    let (mut writer, mut spooled, mut sizes) = (None, Vec::new(), Vec::new());
    for (w, s, n) in result.into_iter().flatten() {
        writer = writer.or(w);
        spooled.push(s);
        sizes.push(n);
    }
    let writer = writer.ok_or_else(|| CoreError::Internal("no direct member".into()))?;
    Ok((writer, spooled, sizes))
}

/// Appends the spooled members, writes the manifest, and publishes.
async fn finish_archive(
    mut writer: Box<Writer>,
    spooled: Vec<Option<Spooled>>,
    members: Vec<String>,
    tmp_path: PathBuf,
) -> Result<dbsnap_storage::SnapshotInfo, CoreError> {
    tokio::task::spawn_blocking(move || -> Result<dbsnap_storage::SnapshotInfo, CoreError> {
        for (i, s) in spooled.into_iter().enumerate() {
            if let Some(mut s) = s {
                s.file
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| CoreError::write_io(&tmp_path, e))?;
                writer
                    .add_precomputed(&members[i], &mut s.file, s.size, &s.sha256)
                    .map_err(|e| archive_io(&tmp_path, e))?;
            }
        }
        let (pending, _) = writer.finish().map_err(|e| archive_io(&tmp_path, e))?;
        Ok(pending.commit()?)
    })
    .await
    .map_err(|e| CoreError::Internal(format!("finishing the archive failed: {e}")))?
}

/// Kills the dumps if the run is abandoned (a signal drops the future).
struct KillOnDrop(Vec<Arc<Mutex<ToolChild>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for c in &self.0 {
            if let Ok(mut c) = c.lock() {
                c.kill();
            }
        }
    }
}

fn archive_io(path: &std::path::Path, e: dbsnap_archive::snapshot::ArchiveError) -> CoreError {
    match e {
        dbsnap_archive::snapshot::ArchiveError::Io(io) => CoreError::write_io(path, io),
        other => other.into(),
    }
}
/// The warning for a database whose schema a migration left dirty.
fn dirty_warning(database: &str, failed: &[String]) -> String {
    let which = match failed {
        [] => "a migration".to_string(),
        [one] => format!("migration {one}"),
        many => format!("migrations {}", many.join(", ")),
    };
    format!(
        "{database}: the schema is marked dirty: {which} failed or is still running \
         (the snapshot is taken as it is, and records that)"
    )
}
