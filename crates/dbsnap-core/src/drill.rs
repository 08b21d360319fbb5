//! `drill`: a test restore. A snapshot is restored into scratch databases
//! no application uses (`__dbsnap_drill_<run>_<n>`, on the target's server
//! or another one), by the restore's own machinery (`--create` under new
//! names: the native loader, row counts against the snapshot's, the
//! target's checks), then the scratch databases are dropped, whatever the
//! outcome: on success, on failure, on a signal, and after `kill -9` by the
//! next drill, which finds the run's journal unlocked.
//!
//! A drill never touches a live database: every database of its plan must
//! be one it creates, under a scratch name, or nothing starts. The verdict
//! (when, how long, rows, pass or fail and why) is recorded beside the
//! snapshot in its repository, where `list` shows it and `prune` keeps the
//! newest snapshot that passed.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use dbsnap_pg::ConnInfo;
use dbsnap_storage::SnapshotRef;
use serde::{Deserialize, Serialize};

use crate::create::Progress;
use crate::error::{exit, CoreError};
use crate::restore::state::{state_dir, RestoreState};
use crate::restore::{self, Action, Plan, RestoreOptions};
use crate::{hooks, inspect};

/// The names of scratch databases start with this; nothing else is ever
/// dropped by a drill.
pub const SCRATCH_PREFIX: &str = "__dbsnap_drill_";

/// What to drill.
pub struct DrillOptions {
    /// The restore the drill runs: the snapshot, how the databases are
    /// reached, the checks, the loader. Its names, `--create`, hooks and
    /// safety snapshot are the drill's own.
    pub restore: RestoreOptions,
    /// The server to make the scratch databases on (`--server`, naming its
    /// maintenance database); None: each database's own server.
    pub server: Option<String>,
}

/// One database of a drill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrilledDatabase {
    /// Its name in the snapshot.
    pub database: String,
    /// The server it was restored on (`host:port`).
    pub server: String,
    /// The scratch database it was restored into (dropped since).
    #[serde(default)]
    pub scratch: String,
    /// Tables whose row counts matched the snapshot's.
    pub tables: usize,
    /// Rows restored.
    pub rows: u64,
    /// Seconds its load and checks took.
    pub seconds: f64,
}

/// A drill's verdict, as recorded beside the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    /// When the drill started (RFC 3339, UTC).
    pub drilled_at: String,
    /// How long it took, seconds.
    pub seconds: f64,
    /// Whether the snapshot restored and passed every check.
    pub passed: bool,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// The error kind of the failure (`verify`, `check_failed`, `server`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Per database, when it restored.
    #[serde(default)]
    pub databases: Vec<DrilledDatabase>,
    /// Rows restored in all.
    #[serde(default)]
    pub rows: u64,
    /// SQL checks that returned true in every database.
    #[serde(default)]
    pub checks: usize,
    /// The dbsnap version that ran it.
    #[serde(default)]
    pub dbsnap_version: String,
    /// When a drill of this snapshot last passed (this one, or an earlier
    /// one that a failure not of the snapshot's making, such as a role or
    /// a check, did not undo; a damaged snapshot loses it).
    #[serde(default)]
    pub passed_at: Option<String>,
}

impl DrillRecord {
    /// Whether a drill of the snapshot has passed and nothing since found
    /// it damaged: what `prune` keeps.
    pub fn proven(&self) -> bool {
        self.passed || self.passed_at.is_some()
    }
}

impl DrillRecord {
    /// The record stored beside a snapshot, if it reads as one.
    pub fn parse(bytes: &[u8]) -> Option<DrillRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What a drill did.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The run's id (its scratch databases carry it).
    pub id: String,
    /// The snapshot drilled.
    pub file: SnapshotRef,
    /// The verdict.
    #[serde(flatten)]
    pub record: DrillRecord,
    /// The scratch databases, all dropped.
    pub scratch: Vec<String>,
    /// Whether the verdict was written beside the snapshot (a read-only
    /// repository cannot take it).
    pub recorded: bool,
    /// Scratch databases of earlier drills killed before their end,
    /// dropped by this one.
    pub dropped_leftovers: Vec<String>,
}

/// A failed drill: the error, and whether its verdict was recorded.
fn failed_verdict(e: &CoreError) -> bool {
    matches!(
        e.exit_code(),
        exit::VERIFY | exit::CHECK_FAILED | exit::SERVER
    )
}

/// A failure in a drill's words: a restore's own notes (rolled back,
/// nothing changed, `resume`) do not fit scratch databases that are gone,
/// and a scratch database is named with the database it stands for.
fn in_drill_words(e: CoreError, file: &SnapshotRef, plan: &Plan, dropped: bool) -> CoreError {
    let e = match e {
        CoreError::Left { error, .. } if dropped => *error,
        e => e,
    };
    // Longest first: `…_1` is the start of `…_10`.
    let mut scratch: Vec<_> = plan.databases.iter().collect();
    scratch.sort_by_key(|d| std::cmp::Reverse(d.live_db.len()));
    let named = |text: &str| {
        scratch.iter().fold(text.to_string(), |t, d| {
            t.replace(
                &d.live_db,
                &format!("{} (the scratch copy of {})", d.live_db, d.snapshot_db),
            )
        })
    };
    let message = |text: &str| named(text.split_once("\nhint: ").map_or(text, |(m, _)| m));
    match e {
        // The same exit code and kind; a restore's hint does not fit.
        CoreError::Check(text) => CoreError::Refused {
            message: format!("the drill of {} failed: {}", file.display(), message(&text)),
            hint: "the scratch databases were dropped and no live database was touched; the \
                   failure is recorded beside the snapshot (`dbsnap list`)"
                .into(),
            code: exit::CHECK_FAILED,
        },
        // pg_restore refused the snapshot's owners or grants: the drill's
        // role cannot take them on this server.
        CoreError::Pg(mut pg)
            if pg.kind == dbsnap_pg::PgErrorKind::Program
                && ["must be member of role", "OWNER TO", "role \""]
                    .iter()
                    .any(|w| pg.message.contains(w)) =>
        {
            pg.message = named(&pg.message);
            pg.hint = Some(
                "the drill's role cannot give objects the snapshot's owners or grants on this server: \
                 drill as a superuser, or with --no-owner --no-privileges (everything then belongs \
                 to the drill's role)"
                    .into(),
            );
            CoreError::Pg(pg)
        }
        // A restore falls back to replacing in place without CREATEDB; a drill cannot.
        CoreError::Pg(mut pg)
            if pg.kind == dbsnap_pg::PgErrorKind::Privilege
                && pg.message.contains("create database") =>
        {
            pg.hint = Some(
                "a drill creates its scratch databases: the role needs CREATEDB (ALTER ROLE … CREATEDB), \
                 or name a server where it has it with --server"
                    .into(),
            );
            pg.remedy = None;
            CoreError::Pg(pg)
        }
        CoreError::Pg(mut pg) => {
            pg.message = named(&pg.message);
            CoreError::Pg(pg)
        }
        CoreError::Interrupted(how) if dropped => {
            let by = how.split(';').next().unwrap_or_default();
            CoreError::Interrupted(format!("{by}; the drill's scratch databases were dropped"))
        }
        e => e,
    }
}

/// Runs a drill: plan (nothing changes), drop earlier drills' leftovers,
/// load and check, drop the scratch databases, record the verdict. A
/// failure of the snapshot (damaged, does not load, a count or check
/// fails) is recorded and returned as the error; a signal is returned as
/// [`CoreError::Interrupted`] once the scratch databases are gone.
pub async fn drill(
    opts: &DrillOptions,
    progress: &Arc<dyn Progress>,
) -> Result<DrillReport, CoreError> {
    let started = std::time::Instant::now();
    let at = time::OffsetDateTime::now_utc();
    let id = run_id(at);
    let file = opts.restore.file.clone();
    let verdict = |outcome: Result<&[restore::DbResult], &CoreError>, plan: Option<&Plan>| {
        verdict_record(outcome, plan, &opts.restore, at, started)
    };
    // One listener for SIGINT and SIGTERM from here to the end: a signal
    // between two steps is not lost.
    let stop = hooks::termination_signal();
    tokio::pin!(stop);
    if let std::task::Poll::Ready(s) = futures::poll!(&mut stop) {
        return Err(CoreError::Interrupted(format!(" by {s}")));
    }
    // What killed drills left goes first, whatever becomes of this one.
    let mut lenders = lenders(&opts.restore);
    lenders.extend(
        opts.server
            .as_deref()
            .and_then(|s| opts.restore.resolver.resolve(s).ok()),
    );
    let dropped_leftovers = sweep(opts.restore.resolver.as_ref(), &lenders).await;
    let planned = match scratch_options(opts, &id) {
        Ok(ro) => tokio::select! {
            p = restore::plan(&ro, &**progress) => p.map(|p| (ro, p)),
            s = &mut stop => Err(CoreError::Interrupted(format!(" by {s}"))),
        },
        Err(e) => Err(e),
    };
    let (ro, plan) = match planned {
        Ok(p) => p,
        Err(e) => {
            // A damaged snapshot fails its drill; a file that is no snapshot has none.
            if failed_verdict(&e) && e.kind_name() != "not_snapshot" {
                record(&file, &verdict(Err(&e), None));
            }
            return Err(e);
        }
    };
    only_scratch(&plan)?;
    let servers: Vec<ConnInfo> = plan.databases.iter().map(|d| d.conn().clone()).collect();
    let mut dropped_leftovers = dropped_leftovers;
    dropped_leftovers.extend(sweep_servers(ro.resolver.as_ref(), &servers, at).await);
    let journal = Journal::begin(&id, &plan, ro.resolver.route())?;
    let outcome = tokio::select! {
        r = restore::execute(&plan, &ro, progress) => r.map(|r| r.databases),
        s = &mut stop => {
            hooks::stop_everything().await;
            Err(CoreError::Interrupted(format!(" by {s}")))
        }
    };
    progress.phase("dropping the scratch databases");
    let left = drop_scratch(ro.resolver.as_ref(), &journal.scratch, &servers).await;
    let scratch = journal.scratch.iter().map(|s| s.name.clone()).collect();
    if left.is_empty() {
        journal.finish();
    }
    let record_of_run = verdict(outcome.as_deref(), Some(&plan));
    let recorded = match &outcome {
        Err(e) if !failed_verdict(e) => false,
        _ => record(&file, &record_of_run),
    };
    outcome.map_err(|e| in_drill_words(e, &file, &plan, left.is_empty()))?;
    if let Some((name, e)) = left.into_iter().next() {
        return Err(CoreError::Internal(format!(
            "the drill passed, but its scratch database {name} could not be dropped: {e}; \
             the next drill drops it (or DROP DATABASE \"{name}\" by hand)"
        )));
    }
    Ok(DrillReport {
        id,
        file,
        record: record_of_run,
        scratch,
        recorded,
        dropped_leftovers,
    })
}

/// `drill-YYYYMMDDtHHMMSS-PID`'s lower-case, underscore form: a valid
/// unquoted identifier inside the scratch names.
fn run_id(at: time::OffsetDateTime) -> String {
    // The process id is 1 in every container: the time's nanoseconds tell
    // two drills started in the same second apart.
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}_{}_{:08x}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        std::process::id(),
        at.nanosecond()
    )
}

/// When a scratch database's run started, from its name.
fn started_of(name: &str) -> Option<time::OffsetDateTime> {
    let stamp = name.strip_prefix(SCRATCH_PREFIX)?.get(..15)?;
    let format = time::macros::format_description!("[year][month][day]t[hour][minute][second]");
    time::PrimitiveDateTime::parse(stamp, &format)
        .ok()
        .map(|t| t.assume_utc())
}

/// The connections a run names (flags, targets): they lend their
/// passwords to the password-less ones of earlier drills' journals.
fn lenders(ro: &RestoreOptions) -> Vec<ConnInfo> {
    ro.databases
        .iter()
        .chain(ro.targets.values().flatten())
        .filter_map(|c| ro.resolver.resolve(c).ok())
        .collect()
}

/// The restore a drill runs: every snapshot database under a scratch name,
/// created; no hooks, no safety snapshot, nothing else touched.
fn scratch_options(opts: &DrillOptions, id: &str) -> Result<RestoreOptions, CoreError> {
    let mut ro = opts.restore.clone();
    let metadata = inspect::read_metadata(&ro.file)?;
    ro.map = metadata
        .databases
        .iter()
        .enumerate()
        .map(|(i, d)| (d.member.clone(), format!("{SCRATCH_PREFIX}{id}_{i}")))
        .collect();
    ro.only = Vec::new();
    ro.create = true;
    ro.drop = false;
    // The scratch databases are nobody's: the snapshot's origin guards nothing here.
    ro.into_other_origin = true;
    ro.no_safety_snapshot = true;
    ro.hooks = Default::default();
    if let Some(server) = &opts.server {
        let info = ro.resolver.resolve(server)?;
        if !["postgres", "template1"].contains(&info.dbname.as_str()) {
            return Err(CoreError::Config {
                message: format!(
                    "--server {}: names database \"{}\", not a server",
                    info.display(),
                    info.dbname
                ),
                hint: "name the server's maintenance database (…/postgres, or dbname=postgres): \
                       the drill creates its scratch databases there"
                    .into(),
            });
        }
        ro.databases = vec![server.clone()];
    } else if !ro.databases.is_empty() {
        // The databases a route found (`--k8s`) name the snapshot's own
        // databases, as a target does: each scratch database goes on the
        // server of the one it stands for.
        let target = ro
            .restore_target
            .clone()
            .or_else(|| metadata.target.clone())
            .unwrap_or_else(|| "drill".into());
        ro.targets
            .insert(target.clone(), std::mem::take(&mut ro.databases));
        ro.restore_target = Some(target);
    }
    Ok(ro)
}

/// Refuses a plan that would change anything but new scratch databases.
fn only_scratch(plan: &Plan) -> Result<(), CoreError> {
    for d in &plan.databases {
        if d.action != Action::Create || d.exists || !d.live_db.starts_with(SCRATCH_PREFIX) {
            return Err(CoreError::Internal(format!(
                "the drill's plan would {} {} on {}: a drill only creates scratch databases; nothing was changed",
                d.action.describe(),
                d.live_db,
                d.server
            )));
        }
    }
    Ok(())
}

/// The verdict of a run that got as far as `plan` (None: not that far).
fn verdict_record(
    outcome: Result<&[restore::DbResult], &CoreError>,
    plan: Option<&Plan>,
    ro: &RestoreOptions,
    at: time::OffsetDateTime,
    started: std::time::Instant,
) -> DrillRecord {
    let mut r = DrillRecord {
        drilled_at: at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
        passed: outcome.is_ok(),
        reason: None,
        kind: None,
        databases: Vec::new(),
        rows: 0,
        checks: 0,
        dbsnap_version: env!("CARGO_PKG_VERSION").to_string(),
        passed_at: None,
    };
    match outcome {
        Ok(results) => {
            let plan = plan.expect("a run that restored had a plan");
            r.databases = results
                .iter()
                .zip(&plan.databases)
                .map(|(res, d)| DrilledDatabase {
                    database: d.snapshot_db.clone(),
                    server: d.conn().server(),
                    scratch: d.live_db.clone(),
                    tables: res.row_counts,
                    rows: res.rows,
                    seconds: res.seconds,
                })
                .collect();
            r.rows = r.databases.iter().map(|d| d.rows).sum();
            r.checks = ro.checks.len();
        }
        Err(e) => {
            let text = e.to_string();
            let reason = text
                .split_once("\nhint: ")
                .map_or(text.as_str(), |(m, _)| m);
            r.reason = Some(reason.to_string());
            r.kind = Some(e.kind_name().to_string());
        }
    }
    r
}

/// Writes the verdict beside the snapshot; a repository that refuses it
/// (read-only, gone) is only a warning: the drill's outcome stands.
fn record(file: &SnapshotRef, r: &DrillRecord) -> bool {
    let mut r = r.clone();
    if r.passed {
        r.passed_at = Some(r.drilled_at.clone());
    } else if r.kind.as_deref() != Some("verify") {
        let earlier = match file.repo.drills() {
            Ok(all) => all.get(&file.name).and_then(|b| DrillRecord::parse(b)),
            // The earlier pass cannot be read: keep it rather than erase it.
            Err(e) => {
                tracing::warn!(
                    "the drill's verdict was not recorded beside {}: the earlier one cannot be read: {e}",
                    file.display()
                );
                return false;
            }
        };
        r.passed_at = earlier.and_then(|e| {
            e.passed_at
                .or_else(|| e.passed.then(|| e.drilled_at.clone()))
        });
    }
    let bytes = match serde_json::to_vec_pretty(&r) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("could not write the drill's record: {e}");
            return false;
        }
    };
    match file.repo.set_drill(&file.name, &bytes) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                "the drill's verdict was not recorded beside {}: {e}",
                file.display()
            );
            false
        }
    }
}

/// Drops the scratch databases (each only if its name is a scratch
/// name); returns the ones that could not be dropped, with why.
async fn drop_scratch(
    route: &dyn dbsnap_pg::Resolver,
    scratch: &[Scratch],
    servers: &[ConnInfo],
) -> Vec<(String, CoreError)> {
    let mut left = Vec::new();
    for s in scratch {
        if let Err(e) = s.drop(route, servers).await {
            tracing::warn!("could not drop scratch database {}: {e}", s.name);
            left.push((s.name.clone(), e));
        }
    }
    left
}

/// A scratch database, as the journal records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scratch {
    /// Its name (starts with [`SCRATCH_PREFIX`]).
    name: String,
    /// Its server's maintenance database, without a password.
    admin_conn: String,
    /// `user@host:port`, for messages.
    server: String,
}

impl Scratch {
    /// Drops it; `servers` lend a password for the same host and port.
    async fn drop(
        &self,
        route: &dyn dbsnap_pg::Resolver,
        servers: &[ConnInfo],
    ) -> Result<(), CoreError> {
        if !self.name.starts_with(SCRATCH_PREFIX) {
            return Err(CoreError::Internal(format!(
                "{} is not a scratch database's name; not dropped",
                self.name
            )));
        }
        let mut info = route.resolve(&self.admin_conn)?;
        crate::restore::recover::lend_password(&mut info, servers);
        let (admin, _) = restore::replace::admin_client(route, &info).await?;
        restore::replace::drop_database(&admin, &self.name, &self.server).await?;
        Ok(())
    }
}

/// The journal of a drill run: `$DBSNAP_HOME/state/drill-<id>.json`, the
/// scratch databases it will create, written before any is. It stays
/// locked (flock) while the run lives: the next drill that can lock it
/// knows its run died, drops what it names and removes it.
#[derive(Debug, Serialize, Deserialize)]
struct JournalFile {
    id: String,
    route: String,
    scratch: Vec<Scratch>,
}

struct Journal {
    path: PathBuf,
    /// Held open (and locked) for the run.
    _lock: File,
    scratch: Vec<Scratch>,
}

impl Journal {
    fn begin(id: &str, plan: &Plan, route: &str) -> Result<Journal, CoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let scratch: Vec<Scratch> = plan
            .databases
            .iter()
            .map(|d| Scratch {
                name: d.live_db.clone(),
                admin_conn: d
                    .conn()
                    .with_dbname("postgres")
                    .to_libpq_string_without_password(),
                server: d.server.clone(),
            })
            .collect();
        let doc = JournalFile {
            id: id.to_string(),
            route: route.to_string(),
            scratch: scratch.clone(),
        };
        let json =
            serde_json::to_vec_pretty(&doc).map_err(|e| CoreError::Internal(e.to_string()))?;
        let dir = state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| CoreError::write_io(&dir, e))?;
        let path = dir.join(format!("drill-{id}.json"));
        let tmp = dir.join(format!(".drill-{id}.json.tmp"));
        // Locked before it has its name: no other drill ever sees it unlocked while this run lives.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.lock()?;
                f.write_all(&json)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                File::open(&dir)?.sync_all()?;
                Ok(f)
            });
        let lock = written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CoreError::write_io(&path, e)
        })?;
        Ok(Journal {
            path,
            _lock: lock,
            scratch,
        })
    }

    /// Every scratch database is gone: the journal goes, and with it the
    /// restore journals that name only them (nothing to resume or roll back).
    fn finish(self) {
        let names: BTreeSet<&str> = self.scratch.iter().map(|s| s.name.as_str()).collect();
        forget_restores(&names);
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// Removes the restore journals whose databases are all among `names`.
fn forget_restores(names: &BTreeSet<&str>) {
    let Ok(all) = RestoreState::all() else {
        return;
    };
    for st in all {
        if !st.databases.is_empty() && st.databases.iter().all(|d| names.contains(d.live.as_str()))
        {
            let _ = std::fs::remove_file(st.path());
        }
    }
}

/// How old a scratch database must be before a drill that has no journal
/// of it drops it: a run killed with its journal (a pod's emptyDir gone
/// with the pod) leaves one only the server knows of.
const ORPHAN_AGE: time::Duration = time::Duration::hours(24);

/// Drops scratch databases on `servers` that no journal names, started
/// more than [`ORPHAN_AGE`] before `now` and with no session: what drills
/// that lost their journal left. Returns the names dropped.
async fn sweep_servers(
    route: &dyn dbsnap_pg::Resolver,
    servers: &[ConnInfo],
    now: time::OffsetDateTime,
) -> Vec<String> {
    let mut dropped = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for info in servers {
        let server = info.server();
        if seen.contains(&server) {
            continue;
        }
        seen.push(server.clone());
        let Ok((admin, _)) = restore::replace::admin_client(route, info).await else {
            continue;
        };
        let Ok(rows) = admin
            .query(
                "SELECT datname::text FROM pg_database d WHERE datname LIKE '\\_\\_dbsnap\\_drill\\_%' \
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                &[],
            )
            .await
        else {
            continue;
        };
        for row in rows {
            let name: String = row.get(0);
            if started_of(&name).is_none_or(|t| now - t <= ORPHAN_AGE) {
                continue;
            }
            match restore::replace::drop_database(&admin, &name, &server).await {
                Ok(()) => {
                    tracing::info!("dropped scratch database {name} on {server}, left by a drill that lost its journal");
                    dropped.push(name);
                }
                Err(e) => {
                    tracing::warn!("could not drop old scratch database {name} on {server}: {e}")
                }
            }
        }
    }
    dropped
}

/// Drops what earlier drills killed before their end left (their journals
/// unlocked), through this run's route; returns the names dropped. One
/// made through another route, or whose server cannot be reached now, is
/// left for a later drill, with a warning.
async fn sweep(route: &dyn dbsnap_pg::Resolver, servers: &[ConnInfo]) -> Vec<String> {
    let mut dropped = Vec::new();
    let Ok(rd) = std::fs::read_dir(state_dir()) else {
        return dropped;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("drill-") && name.ends_with(".json")) {
            continue;
        }
        let path = entry.path();
        let Ok(lock) = File::open(&path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // a drill in progress
        }
        let doc: JournalFile = match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(d) => d,
            None => {
                tracing::warn!("{} is not a drill journal; left alone", path.display());
                continue;
            }
        };
        if doc.route != route.route() {
            tracing::warn!(
                "drill {} left scratch databases reached by route \"{}\"; a drill through it drops them",
                doc.id,
                doc.route
            );
            continue;
        }
        let left = drop_scratch(route, &doc.scratch, servers).await;
        for s in &doc.scratch {
            if !left.iter().any(|(n, _)| n == &s.name) {
                tracing::info!(
                    "dropped scratch database {} on {}, left by drill {} (killed before its end)",
                    s.name,
                    s.server,
                    doc.id
                );
                dropped.push(s.name.clone());
            }
        }
        if left.is_empty() {
            let names: BTreeSet<&str> = doc.scratch.iter().map(|s| s.name.as_str()).collect();
            forget_restores(&names);
            let _ = std::fs::remove_file(&path);
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_make_unquoted_identifiers_within_postgres_limit() {
        let at = time::macros::datetime!(2026-12-07 23:58:12 UTC);
        let id = run_id(at);
        let name = format!("{SCRATCH_PREFIX}{id}_12");
        assert!(name.len() <= 63, "{name}");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        assert!(name.starts_with("__dbsnap_drill_20261207t235812_"));
        assert_eq!(
            started_of(&name),
            Some(time::macros::datetime!(2026-12-07 23:58:12 UTC))
        );
        assert_eq!(started_of("__dbsnap_drill_nonsense"), None);
    }

    #[test]
    fn a_record_reads_back_and_older_fields_default() {
        let r = DrillRecord {
            drilled_at: "2026-12-07T23:58:12Z".into(),
            seconds: 1.5,
            passed: false,
            reason: Some("check failed".into()),
            kind: Some("check_failed".into()),
            databases: vec![],
            rows: 0,
            checks: 0,
            dbsnap_version: "0.1.0".into(),
            passed_at: Some("2026-12-01T04:00:00Z".into()),
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(DrillRecord::parse(&bytes), Some(r));
        let minimal = br#"{"drilled_at":"2026-12-07T23:58:12Z","seconds":2,"passed":true}"#;
        assert!(DrillRecord::parse(minimal).unwrap().passed);
        assert_eq!(DrillRecord::parse(b"not json"), None);
    }
}
