//! Data-only restore: replace every table's rows with the snapshot's, in
//! one transaction, as the owner (no superuser needed).
//!
//! Inside the transaction: lock the tables; set aside what would block or
//! slow the load ([`Aside`]: sequences get a new storage file, foreign keys
//! and NOT VALID constraints dropped, forced row level security lifted,
//! user triggers disabled, tables truncated, plain indexes dropped); COPY
//! every table from the archive stream; recreate large objects; set
//! sequences; put everything back as it was; refresh materialized views;
//! compare row counts with the archive's; run the user's checks. The caller
//! commits. Any failure rolls everything back, sequences included: the
//! database is either unchanged or fully restored.
//!
//! It never commits and never touches an object outside the snapshot's
//! tables, their partition ancestors, the tables whose foreign keys point
//! at them, their sequences and the large objects.

use bytes::Bytes;
use dbsnap_archive::pgdump::{self, CopyRows, DataItem, TocEntry};
use dbsnap_archive::snapshot;
use dbsnap_pg::catalog::{self, ConstraintDef, ConstraintKind, IndexDef};
use dbsnap_pg::PgError;
use futures::SinkExt;
use serde::Serialize;
use std::time::Duration;
use tokio::sync::mpsc;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use super::pg_err;
use crate::chunks::{for_each_chunk, ChunkError};
use crate::error::CoreError;

/// What the archive reader thread sends to the loader.
pub(crate) enum Msg {
    Toc(Vec<TocEntry>),
    TableStart(TocEntry),
    Data(Bytes),
    TableEnd(u64),
    LoStart(u32),
    LoEnd,
}

/// What the reader thread reports when the loader hung up first.
const LOADER_STOPPED: &str = "loader stopped";

/// Streams one database member of `file` through the pg_dump reader on a
/// blocking thread; the channel is bounded, so memory is too.
/// A database member of a snapshot, and what opens it.
pub(crate) struct Member {
    /// The snapshot.
    pub(crate) file: dbsnap_storage::SnapshotRef,
    /// The member's name.
    pub(crate) name: String,
    /// Opens it when it is encrypted.
    pub(crate) crypto: std::sync::Arc<crate::crypt::Crypto>,
}

pub(crate) fn stream_member(
    file: dbsnap_storage::SnapshotRef,
    member: String,
    crypto: std::sync::Arc<crate::crypt::Crypto>,
) -> (
    mpsc::Receiver<Msg>,
    tokio::task::JoinHandle<Result<(), CoreError>>,
) {
    let (tx, rx) = mpsc::channel::<Msg>(16);
    let handle = tokio::task::spawn_blocking(move || -> Result<(), CoreError> {
        let f = crate::inspect::open(&file)?;
        let reader = std::io::BufReader::with_capacity(1 << 20, f);
        let send = |m: Msg| {
            tx.blocking_send(m)
                .map_err(|_| std::io::Error::other(LOADER_STOPPED))
        };
        crypto.with_member(&file, reader, &member, |input| {
            pgdump::read_archive_data(input, |item| -> std::io::Result<()> {
                match item {
                    DataItem::Toc(entries) => send(Msg::Toc(entries.to_vec())),
                    DataItem::TableData { entry, data } => {
                        send(Msg::TableStart(entry.clone()))?;
                        let mut rows = CopyRows::new(data);
                        pump(&mut rows, &send, Msg::Data)?;
                        send(Msg::TableEnd(rows.rows()))
                    }
                    DataItem::LargeObject { oid, data, .. } => {
                        send(Msg::LoStart(oid))?;
                        pump(data, &send, Msg::Data)?;
                        send(Msg::LoEnd)
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| snapshot::ArchiveError::Corrupt(format!("member \"{member}\": {e}")))
        })?;
        Ok(())
    });
    (rx, handle)
}

/// Sends `input` to the loader in chunks.
fn pump(
    input: &mut dyn std::io::Read,
    send: &dyn Fn(Msg) -> std::io::Result<()>,
    wrap: fn(Bytes) -> Msg,
) -> std::io::Result<()> {
    for_each_chunk(input, |chunk| send(wrap(Bytes::from(chunk))))
        .map(|_| ())
        .map_err(|e| match e {
            ChunkError::Read(e) | ChunkError::Sink(e) => e,
        })
}

/// One table's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    /// Qualified name.
    pub table: String,
    /// Rows in the snapshot.
    pub snapshot_rows: u64,
    /// Rows in the database after the restore.
    pub restored_rows: u64,
}

/// What a data-only restore did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DataOnlyReport {
    /// Tables loaded, with row counts.
    pub tables: Vec<TableCount>,
    /// Sequences set.
    pub sequences: usize,
    /// Large objects loaded.
    pub large_objects: usize,
    /// Foreign keys dropped and re-added.
    pub foreign_keys: usize,
    /// NOT VALID constraints set aside and re-added NOT VALID.
    pub not_valid_constraints: usize,
    /// User triggers disabled during the load.
    pub triggers: usize,
    /// Indexes rebuilt after the load.
    pub indexes: usize,
}

/// An index set aside during the load and rebuilt after it.
type DeferredIndex = IndexDef;

/// "30 s", "500 ms".
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

pub(crate) use dbsnap_archive::sql::quote_ident;

pub(crate) fn qualified(e: &TocEntry) -> String {
    match &e.namespace {
        Some(ns) if !ns.is_empty() => format!("{}.{}", quote_ident(ns), quote_ident(&e.tag)),
        _ => quote_ident(&e.tag),
    }
}

/// Runs the data-only restore of `member` into the database behind `client`.
/// Loads everything and runs every check, but does not commit: the caller
/// commits once every database of the restore is ready, so a failure in
/// any of them rolls all of them back.
pub(crate) async fn prepare<'c>(
    client: &'c mut Client,
    target: &str,
    member: Member,
    checks: &[String],
    lock_timeout: Duration,
    meter: &mut super::Meter,
) -> Result<(Transaction<'c>, DataOnlyReport), CoreError> {
    let (mut rx, reader) = stream_member(member.file, member.name, member.crypto);
    let result = load(client, target, &mut rx, checks, lock_timeout, meter).await;
    drop(rx);
    let read = reader
        .await
        .map_err(|e| CoreError::Internal(format!("archive reader: {e}")))?;
    match (result, read) {
        (Ok(r), Ok(())) => Ok(r),
        // The reader stopped because the loader failed: the loader's error is the cause.
        (Err(e), Err(r)) if r.to_string().contains(LOADER_STOPPED) => Err(e),
        // Otherwise the archive is the cause (the loader only saw its stream end).
        (Err(_), Err(e)) | (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
    }
}

async fn load<'c>(
    client: &'c mut Client,
    target: &str,
    rx: &mut mpsc::Receiver<Msg>,
    checks: &[String],
    lock_timeout: Duration,
    meter: &mut super::Meter,
) -> Result<(Transaction<'c>, DataOnlyReport), CoreError> {
    let toc = match rx.recv().await {
        Some(Msg::Toc(t)) => t,
        _ => {
            return Err(CoreError::Internal(
                "archive stream ended before its table of contents".into(),
            ))
        }
    };
    let tables: Vec<String> = toc
        .iter()
        .filter(|e| e.desc == "TABLE DATA")
        .map(qualified)
        .collect();
    let tx = client
        .transaction()
        .await
        .map_err(pg_err(target, "begin"))?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = 0",
        lock_timeout.as_millis()
    ))
    .await
    .map_err(pg_err(target, "set timeouts"))?;
    meter.say(&format!(
        "{target}: waiting for locks on {} tables (gives up after {})",
        tables.len(),
        seconds(lock_timeout)
    ));
    let family = lock_tables(&tx, target, &tables, lock_timeout).await?;
    meter.say(&format!("{target}: loading (data-only)"));
    let aside = Aside::take(&tx, target, &toc, &tables, &family).await?;
    let freeze = plain_tables(&tx, target, &tables).await?;
    let large_objects = replace_large_objects(&tx, target, &toc).await?;
    let mut report = copy_data(&tx, target, rx, &large_objects, &freeze, meter).await?;
    for e in toc.iter().filter(|e| e.desc == "SEQUENCE SET") {
        if let Some(sql) = &e.defn {
            tx.batch_execute(sql)
                .await
                .map_err(pg_err(target, &format!("set sequence {}", e.tag)))?;
            report.sequences += 1;
        }
    }
    aside.put_back(&tx, target, &mut report).await?;
    large_object_properties(&tx, target, &toc).await?;
    aside.enable_triggers(&tx, target).await?;
    for e in toc.iter().filter(|e| e.desc == "MATERIALIZED VIEW DATA") {
        if let Some(sql) = &e.defn {
            tx.batch_execute(sql).await.map_err(pg_err(
                target,
                &format!("refresh materialized view {}", e.tag),
            ))?;
        }
    }
    // Forced row level security is still lifted: the owner sees every row.
    super::checks::compare_row_counts(&tx, target, &mut report.tables).await?;
    aside.force_rls_again(&tx, target).await?;
    super::checks::run_checks(&tx, target, checks).await?;
    Ok((tx, report))
}

/// Checks that every table of the snapshot exists, then locks them and
/// their partition ancestors (foreign keys and triggers live there too);
/// returns that family.
async fn lock_tables(
    tx: &Transaction<'_>,
    target: &str,
    tables: &[String],
    lock_timeout: Duration,
) -> Result<Vec<String>, CoreError> {
    // Equal versions should mean equal schemas; the plan's preflight checked.
    let missing = catalog::missing_tables(tx, tables, target).await?;
    if !missing.is_empty() {
        return Err(CoreError::Config {
            message: format!(
                "{target}: the live schema lacks tables the snapshot has ({}), although the schema versions are equal",
                missing.join(", ")
            ),
            hint: "the schema was changed outside migrations; restore with --drop to replace it".into(),
        });
    }
    let family = catalog::table_family(tx, tables, target).await?;
    if !family.is_empty() {
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            family.join(", ")
        ))
        .await
        .map_err(|e| {
            let mut err = PgError::from_pg(e, target, "lock the tables");
            if err.is(&SqlState::LOCK_NOT_AVAILABLE) {
                err.message = format!(
                    "could not lock the tables within {}: other sessions hold locks on them; nothing was changed",
                    seconds(lock_timeout)
                );
            }
            err.hint = Some(
                "stop the application first (--stop-cmd), or wait longer with --lock-timeout".into(),
            );
            CoreError::Pg(err)
        })?;
    }
    Ok(family)
}

/// What is set aside for the load and put back after it, in one place so
/// that nothing set aside can be forgotten.
struct Aside {
    foreign_keys: Vec<SetAside>,
    unvalidated: Vec<SetAside>,
    forced_rls: Vec<String>,
    /// (table, trigger, tgenabled) of the user triggers disabled.
    triggers: Vec<(String, String, i8)>,
    indexes: Vec<DeferredIndex>,
}

impl Aside {
    /// Prepares the tables for the load: sequences get a new storage file,
    /// foreign keys and NOT VALID constraints are dropped, forced row level
    /// security lifted, user triggers disabled, the tables truncated and
    /// their plain indexes dropped (rebuilt once after the load, as
    /// pg_restore does).
    async fn take(
        tx: &Transaction<'_>,
        target: &str,
        toc: &[TocEntry],
        tables: &[String],
        family: &[String],
    ) -> Result<Aside, CoreError> {
        restart_sequences(tx, target, toc).await?;
        let foreign_keys = set_aside(
            tx,
            target,
            ConstraintKind::ForeignKeys,
            family,
            "foreign key",
        )
        .await?;
        // NOT VALID constraints may hold rows that violate them (that is
        // what NOT VALID allows); they go back NOT VALID, as they were.
        let unvalidated = set_aside(
            tx,
            target,
            ConstraintKind::NotValid,
            family,
            "NOT VALID constraint",
        )
        .await?;
        // COPY refuses tables whose row-level security binds their owner.
        let forced_rls = lift_forced_rls(tx, target, family).await?;
        let triggers = disable_triggers(tx, target, family).await?;
        if !tables.is_empty() {
            tx.batch_execute(&format!("TRUNCATE TABLE {}", tables.join(", ")))
                .await
                .map_err(pg_err(target, "truncate the tables"))?;
        }
        let indexes = drop_indexes(tx, target, tables).await?;
        Ok(Aside {
            foreign_keys,
            unvalidated,
            forced_rls,
            triggers,
            indexes,
        })
    }

    /// Rebuilds the indexes, re-adds the constraints.
    async fn put_back(
        &self,
        tx: &Transaction<'_>,
        target: &str,
        report: &mut DataOnlyReport,
    ) -> Result<(), CoreError> {
        rebuild_indexes(tx, target, &self.indexes).await?;
        put_back(tx, target, &self.foreign_keys, "foreign key").await?;
        put_back(tx, target, &self.unvalidated, "NOT VALID constraint").await?;
        report.indexes = self.indexes.len();
        report.foreign_keys = self.foreign_keys.len();
        report.not_valid_constraints = self.unvalidated.len();
        report.triggers = self.triggers.len();
        Ok(())
    }

    async fn enable_triggers(&self, tx: &Transaction<'_>, target: &str) -> Result<(), CoreError> {
        for (table, name, state) in &self.triggers {
            let how = match *state as u8 {
                b'R' => "ENABLE REPLICA",
                b'A' => "ENABLE ALWAYS",
                _ => "ENABLE",
            };
            tx.batch_execute(&format!("ALTER TABLE {table} {how} TRIGGER {name}"))
                .await
                .map_err(pg_err(
                    target,
                    &format!("re-enable trigger {name} on {table}"),
                ))?;
        }
        Ok(())
    }

    async fn force_rls_again(&self, tx: &Transaction<'_>, target: &str) -> Result<(), CoreError> {
        for table in &self.forced_rls {
            tx.batch_execute(&format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"))
                .await
                .map_err(pg_err(
                    target,
                    &format!("force row level security on {table} again"),
                ))?;
        }
        Ok(())
    }
}

async fn disable_triggers(
    tx: &Transaction<'_>,
    target: &str,
    family: &[String],
) -> Result<Vec<(String, String, i8)>, CoreError> {
    let triggers = catalog::enabled_user_triggers(tx, family, target).await?;
    for (table, name, _) in &triggers {
        tx.batch_execute(&format!("ALTER TABLE {table} DISABLE TRIGGER {name}"))
            .await
            .map_err(pg_err(
                target,
                &format!("disable trigger {name} on {table} for the load"),
            ))?;
    }
    Ok(triggers)
}

/// Drops the indexes that can be rebuilt exactly after the load: plain
/// indexes and PRIMARY KEY / UNIQUE / EXCLUDE constraints of plain tables
/// whose definition functions render them completely; anything with
/// comments, statistics targets, tablespaces or partition links stays.
async fn drop_indexes(
    tx: &Transaction<'_>,
    target: &str,
    tables: &[String],
) -> Result<Vec<DeferredIndex>, CoreError> {
    let indexes = catalog::rebuildable_indexes(tx, tables, target).await?;
    for ix in &indexes {
        let sql = match &ix.constraint {
            Some((con, _)) => format!("ALTER TABLE {} DROP CONSTRAINT {con}", ix.table),
            None => format!("DROP INDEX {}", ix.qualified),
        };
        tx.batch_execute(&sql).await.map_err(pg_err(
            target,
            &format!("set index {} aside for the load", ix.name),
        ))?;
    }
    Ok(indexes)
}

async fn rebuild_indexes(
    tx: &Transaction<'_>,
    target: &str,
    indexes: &[DeferredIndex],
) -> Result<(), CoreError> {
    tx.batch_execute("SET LOCAL maintenance_work_mem = '256MB'")
        .await
        .map_err(pg_err(target, "set maintenance_work_mem"))?;
    for ix in indexes {
        let sql = match &ix.constraint {
            Some((con, def)) => format!("ALTER TABLE {} ADD CONSTRAINT {con} {def}", ix.table),
            None => ix.index_def.clone(),
        };
        tx.batch_execute(&sql)
            .await
            .map_err(pg_err(target, &format!("rebuild index {}", ix.name)))?;
        if ix.replica_identity {
            tx.batch_execute(&format!(
                "ALTER TABLE {} REPLICA IDENTITY USING INDEX {}",
                ix.table, ix.name
            ))
            .await
            .map_err(pg_err(target, &format!("replica identity of {}", ix.table)))?;
        }
        if ix.clustered {
            tx.batch_execute(&format!("ALTER TABLE {} CLUSTER ON {}", ix.table, ix.name))
                .await
                .map_err(pg_err(target, &format!("cluster mark of {}", ix.qualified)))?;
        }
    }
    Ok(())
}

/// Copies the archive's table data and large objects, in archive order.
/// The tables among `tables` (all truncated by this transaction) that are
/// plain tables: COPY loads them `FREEZE`, rows written already frozen (no
/// later rewrite of every page to set hint bits or freeze them). Partitioned
/// and foreign tables cannot take it.
pub(super) async fn plain_tables(
    tx: &impl tokio_postgres::GenericClient,
    target: &str,
    tables: &[String],
) -> Result<std::collections::BTreeSet<String>, CoreError> {
    let rows = tx
        .query(
            "SELECT t FROM unnest($1::text[]) t JOIN pg_class c ON c.oid = t::regclass \
              WHERE c.relkind = 'r'",
            &[&tables],
        )
        .await
        .map_err(pg_err(target, "read table kinds"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn copy_data(
    tx: &Transaction<'_>,
    target: &str,
    rx: &mut mpsc::Receiver<Msg>,
    large_objects: &std::collections::BTreeSet<u32>,
    freeze: &std::collections::BTreeSet<String>,
    meter: &mut super::Meter,
) -> Result<DataOnlyReport, CoreError> {
    let mut report = DataOnlyReport::default();
    let mut current: Option<(
        TocEntry,
        std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    )> = None;
    let mut lo: Option<(u32, i64)> = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Toc(_) => return Err(CoreError::Internal("second table of contents".into())),
            Msg::TableStart(entry) => {
                let stmt = entry.copy_stmt.clone().unwrap_or_default();
                let mut stmt = stmt.trim().trim_end_matches(';').to_string();
                if !stmt.starts_with("COPY ") {
                    return Err(CoreError::Internal(format!(
                        "no COPY statement for table {}",
                        entry.tag
                    )));
                }
                if freeze.contains(&qualified(&entry)) {
                    stmt.push_str(" WITH (FREEZE)");
                }
                let sink = tx
                    .copy_in::<_, Bytes>(&stmt)
                    .await
                    .map_err(pg_err(target, &format!("start loading {}", entry.tag)))?;
                current = Some((entry, Box::pin(sink)));
            }
            Msg::Data(bytes) => {
                meter.add(bytes.len());
                if let Some((entry, sink)) = current.as_mut() {
                    sink.send(bytes)
                        .await
                        .map_err(pg_err(target, &format!("load {}", entry.tag)))?;
                } else if let Some((oid, offset)) = lo.as_mut() {
                    let len = bytes.len() as i64;
                    tx.execute(
                        "SELECT lo_put($1, $2, $3)",
                        &[&*oid, &*offset, &bytes.as_ref()],
                    )
                    .await
                    .map_err(pg_err(target, &format!("write large object {oid}")))?;
                    *offset += len;
                }
            }
            Msg::TableEnd(rows) => {
                let (entry, mut sink) = current
                    .take()
                    .ok_or_else(|| CoreError::Internal("table end without start".into()))?;
                let loaded = sink
                    .as_mut()
                    .finish()
                    .await
                    .map_err(pg_err(target, &format!("load {}", entry.tag)))?;
                if loaded != rows {
                    return Err(CoreError::Internal(format!(
                        "{target}: {} received {loaded} rows, the snapshot has {rows}",
                        qualified(&entry)
                    )));
                }
                meter.add_rows(loaded);
                report.tables.push(TableCount {
                    table: qualified(&entry),
                    snapshot_rows: rows,
                    restored_rows: 0,
                });
            }
            Msg::LoStart(oid) => {
                if !large_objects.contains(&oid) {
                    tx.execute("SELECT lo_create($1)", &[&oid])
                        .await
                        .map_err(pg_err(target, &format!("create large object {oid}")))?;
                }
                lo = Some((oid, 0));
            }
            Msg::LoEnd => {
                lo = None;
                report.large_objects += 1;
            }
        }
    }
    if current.is_some() || lo.is_some() {
        return Err(CoreError::Internal(
            "the archive stream ended inside a table".into(),
        ));
    }
    Ok(report)
}

/// Gives every sequence the archive sets a new storage file inside the
/// transaction (`ALTER SEQUENCE ... RESTART`): the `setval` that follows
/// then lands in that file, which a rollback discards, so a failed or
/// interrupted restore leaves every sequence exactly as it was.
async fn restart_sequences(
    tx: &Transaction<'_>,
    target: &str,
    toc: &[TocEntry],
) -> Result<(), CoreError> {
    for e in toc.iter().filter(|e| e.desc == "SEQUENCE SET") {
        let seq = qualified(e);
        tx.batch_execute(&format!("ALTER SEQUENCE {seq} RESTART"))
            .await
            .map_err(pg_err(target, &format!("prepare sequence {seq}")))?;
    }
    Ok(())
}

/// A constraint dropped for the load and added back after it.
type SetAside = ConstraintDef;

/// Drops the constraints of `kind` touching `tables` and returns how to
/// add them back.
async fn set_aside(
    tx: &Transaction<'_>,
    target: &str,
    kind: ConstraintKind,
    tables: &[String],
    what: &str,
) -> Result<Vec<SetAside>, CoreError> {
    let set = catalog::constraints(tx, kind, tables, target).await?;
    for c in &set {
        tx.batch_execute(&format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            c.table, c.name
        ))
        .await
        .map_err(pg_err(
            target,
            &format!("drop {what} {} on {} for the load", c.name, c.table),
        ))?;
    }
    Ok(set)
}

/// Adds constraints set aside by [`set_aside`] back, comments included.
async fn put_back(
    tx: &Transaction<'_>,
    target: &str,
    set: &[SetAside],
    what: &str,
) -> Result<(), CoreError> {
    for c in set {
        let mut sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            c.table, c.name, c.definition
        );
        if let Some(comment) = &c.comment {
            sql.push_str(&format!(
                "; COMMENT ON CONSTRAINT {} ON {} IS {comment}",
                c.name, c.table
            ));
        }
        tx.batch_execute(&sql).await.map_err(pg_err(
            target,
            &format!("re-add {what} {} on {}", c.name, c.table),
        ))?;
    }
    Ok(())
}

/// Lifts `FORCE ROW LEVEL SECURITY` for the load (COPY FROM refuses it);
/// returns the tables to force again before COMMIT.
async fn lift_forced_rls(
    tx: &Transaction<'_>,
    target: &str,
    tables: &[String],
) -> Result<Vec<String>, CoreError> {
    let forced = catalog::forced_rls_tables(tx, tables, target).await?;
    for table in &forced {
        tx.batch_execute(&format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"))
            .await
            .map_err(pg_err(
                target,
                &format!("lift forced row level security on {table} for the load"),
            ))?;
    }
    Ok(forced)
}

/// Removes the live large objects and creates the archive's with their
/// owners (pg_dump's own `lo_create` / `ALTER LARGE OBJECT ... OWNER`
/// statements); returns the oids that now exist.
async fn replace_large_objects(
    tx: &Transaction<'_>,
    target: &str,
    toc: &[TocEntry],
) -> Result<std::collections::BTreeSet<u32>, CoreError> {
    tx.batch_execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        .await
        .map_err(pg_err(target, "remove the existing large objects"))?;
    for sql in dbsnap_archive::toc::large_object_creation(toc) {
        tx.batch_execute(&sql)
            .await
            .map_err(pg_err(target, &format!("recreate large object: {sql}")))?;
    }
    Ok(catalog::large_object_oids(tx, target).await?)
}

/// Comments, grants and security labels of the archive's large objects.
async fn large_object_properties(
    tx: &Transaction<'_>,
    target: &str,
    toc: &[TocEntry],
) -> Result<(), CoreError> {
    for sql in dbsnap_archive::toc::large_object_properties(toc) {
        tx.batch_execute(&sql)
            .await
            .map_err(pg_err(target, &format!("large object property: {sql}")))?;
    }
    Ok(())
}

/// Why a data-only restore cannot run, found before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obstacle {
    /// Objects the snapshot has data for that the live database lacks.
    Missing(Vec<String>),
    /// Objects only their owner may replace: (what, owner).
    NotOwned(Vec<(String, String)>),
}

/// Checks, without changing anything, that the connected role may replace
/// everything a data-only restore of `facts` touches: every table (and the
/// tables whose foreign keys point at them), every sequence and every
/// large object, live and in the archive, must belong to a role whose
/// privileges it has.
pub(crate) async fn preflight(
    client: &Client,
    target: &str,
    facts: &dbsnap_archive::toc::ArchiveFacts,
) -> Result<Vec<Obstacle>, CoreError> {
    let tables: Vec<String> = facts.data_tables.iter().map(|t| t.sql()).collect();
    let sequences: Vec<String> = facts.sequences.iter().map(|t| t.sql()).collect();
    let missing = catalog::missing_relations(client, &tables, &sequences, target).await?;
    if !missing.is_empty() {
        return Ok(vec![Obstacle::Missing(missing)]);
    }
    let lo_owners: Vec<String> = facts.large_object_owners.iter().cloned().collect();
    let not_owned = catalog::not_owned(client, &tables, &sequences, &lo_owners, target).await?;
    Ok(if not_owned.is_empty() {
        vec![]
    } else {
        vec![Obstacle::NotOwned(not_owned)]
    })
}
