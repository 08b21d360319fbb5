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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dbsnap_archive::snapshot::{ConsistencyMethod, DatabaseEntry, Metadata, FORMAT_VERSION};
use dbsnap_archive::version::{sanitize_token, SchemaVersion};
use dbsnap_pg::schema_version::{self, VersionSpec};
use dbsnap_pg::tools::{self, Program};
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind, Resolver, ServerInfo};
use dbsnap_storage::{Repository, SnapshotRef};
use serde::Serialize;
use tokio_postgres::Client;

use crate::consistency::{self, CutLimits, Leader, QuiesceHooks};
use crate::error::CoreError;

mod archive;
mod dump;
mod native;

use archive::write_archive;
pub use dump::{DumpControl, DumpEngine, DumpJob, PgDumpEngine, RunningDump};
pub use native::{compression_level, gzip_level, NativeEngine, DEFAULT_LEVEL};

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
    /// The Kubernetes workload the databases belong to (`--k8s`),
    /// recorded in the metadata.
    pub kubernetes: Option<dbsnap_archive::snapshot::KubernetesOrigin>,
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
    /// `--compress` value (pg_dump's syntax); None: the engine's default.
    pub compress: Option<String>,
    /// Connections copying table data per database (None: the machine's cores).
    pub jobs: Option<usize>,
    /// Which engine writes the members.
    pub engine: Engine,
    /// Schema-version settings for all databases.
    pub version_spec: VersionSpec,
    /// Per-database overrides by name.
    pub version_specs: BTreeMap<String, VersionSpec>,
    /// Limits of the consistency methods.
    pub limits: CutLimits,
    /// What the snapshot is encrypted to (and nothing when it is not).
    pub crypto: Arc<crate::crypt::Crypto>,
    /// Further members stored after the databases (e.g. a namespace's
    /// Kubernetes objects under `k8s/`): name and bytes.
    pub extra_members: Vec<(String, Vec<u8>)>,
}

/// Which engine writes the database members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// pg_dump for the schema, dbsnap's parallel COPY for table data.
    #[default]
    Native,
    /// pg_dump for everything (one connection per database).
    PgDump,
}

/// Receives progress; implemented by the terminal UI.
pub trait Progress: Send + Sync {
    /// A phase started (`connecting`, `consistent cut`, ...).
    fn phase(&self, _message: &str) {}
    /// Dumping (or restoring) database `index` started.
    fn transfer_started(&self, _index: usize, _name: &str) {}
    /// `bytes` moved so far for database `index`.
    fn transfer_bytes(&self, _index: usize, _bytes: u64) {}
    /// How far database `index`'s table data is (when the engine knows).
    fn transfer_work(&self, _index: usize, _work: Work) {}
    /// Database `index` is done.
    fn transfer_finished(&self, _index: usize, _bytes: u64) {}
}

/// How far one database's table data is: `done` of `expected` (bytes: the
/// tables' sizes in the catalog for a dump, the data blocks' sizes in the
/// member for a restore; 0 when unknown) and the rows moved so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Bytes of table data done.
    pub done: u64,
    /// Bytes of table data in all (0: unknown).
    pub expected: u64,
    /// Rows moved so far.
    pub rows: u64,
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
    /// How it is encrypted, when it is.
    pub encryption: Option<dbsnap_archive::snapshot::Encryption>,
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
    // A bad --compress is refused before anything connects.
    gzip_level(opts.compress.as_deref())?;
    match opts.engine {
        Engine::Native => create_with(opts, progress, &NativeEngine).await,
        Engine::PgDump => create_with(opts, progress, &PgDumpEngine).await,
    }
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
    let needs = native::compress_needs(opts.compress.as_deref());
    let programs = choose_programs(&opened, &opts.pg_bin, needs, opts.compress.as_deref())?;
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
    let sealer = opts.crypto.sealer()?.map(Arc::new);
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
                system_identifier: o.server.system_identifier.clone(),
            })
            .collect(),
        kubernetes: opts.kubernetes.clone(),
        encryption: sealer.as_ref().map(|s| s.info()),
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
            jobs: opts.jobs.unwrap_or_else(default_jobs),
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
        &opts.extra_members,
        sealer,
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
        encryption: metadata.encryption.clone(),
    })
}

/// What is read inside the snapshot transactions, per database.
struct SeenInCut {
    versions: Vec<Option<SchemaVersion>>,
    sizes: Vec<i64>,
    warnings: Vec<String>,
}

/// Parallelism when none is asked for: the machine's cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
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

/// The pg_dump for each database: at least as new as its server, and as
/// `needs` (the compression asked for: lz4 and zstd need 16).
fn choose_programs(
    opened: &[Opened],
    pg_bin: &[PathBuf],
    needs: Option<u32>,
    compress: Option<&str>,
) -> Result<Vec<Program>, CoreError> {
    let installed = tools::find_all("pg_dump", pg_bin);
    let mut programs = Vec::new();
    for o in opened {
        let major = o.server.major();
        let p = match needs.filter(|n| *n > major) {
            Some(need) => tools::oldest_at_least(&installed, need)
                .cloned()
                .ok_or_else(|| {
                    PgError::new(
                        PgErrorKind::Tooling,
                        format!(
                            "--compress {}: pg_dump {need} or newer writes it; none was found",
                            compress.unwrap_or_default()
                        ),
                    )
                    .hint(format!(
                        "install postgresql-client-{need} (or newer) and point --pg-bin / pg_bin at it, \
                         or use --compress 0-9 (gzip, which every pg_restore reads)"
                    ))
                })?,
            None => tools::choose_pg_dump(&installed, major).map_err(|e| e.on(&o.display))?,
        };
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
