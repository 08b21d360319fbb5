//! Snapshot transactions: the primitives from which the core builds a
//! consistent cut (open, take and export a snapshot, lock tables for a write
//! barrier). Deciding whether a set of snapshots is consistent is the core's
//! job; this module only talks to the server.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::PgError;

/// A transaction snapshot as taken in one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenSnapshot {
    /// `pg_current_snapshot()` text: `xmin:xmax:xip,...`.
    pub snapshot: String,
    /// Id from `pg_export_snapshot()`, for pg_dump `--snapshot`.
    pub exported: String,
}

/// Starts the leader transaction: REPEATABLE READ, READ ONLY. Its snapshot
/// is fixed by the first query ([`take_snapshot`]).
pub async fn begin(client: &Client, target: &str) -> Result<(), PgError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| PgError::from_pg(e, target, "could not start the snapshot transaction"))
}

/// Rolls back the current transaction, if any.
pub async fn rollback(client: &Client) {
    let _ = client.batch_execute("ROLLBACK").await;
}

/// Takes (and exports) the transaction snapshot. Must be the first query in
/// a transaction started by [`begin`].
pub async fn take_snapshot(
    client: &Client,
    server_version_num: u32,
    target: &str,
) -> Result<TakenSnapshot, PgError> {
    let sql = if server_version_num >= 130000 {
        "SELECT pg_current_snapshot()::text, pg_export_snapshot()"
    } else {
        "SELECT txid_current_snapshot()::text, pg_export_snapshot()"
    };
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(|e| PgError::from_pg(e, target, "could not take the snapshot"))?;
    Ok(TakenSnapshot {
        snapshot: row.get(0),
        exported: row.get(1),
    })
}

/// Qualified names of the tables a write barrier must lock: every ordinary
/// and partitioned table outside the system schemas.
pub async fn barrier_tables(client: &Client, target: &str) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "could not list tables for the write barrier"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Opens a transaction holding SHARE locks on `tables`: writers wait,
/// readers do not. Fails after `timeout` rather than queueing behind long
/// transactions. Release with [`rollback`].
pub async fn lock_tables(
    client: &Client,
    tables: &[String],
    timeout: Duration,
    target: &str,
) -> Result<(), PgError> {
    let mut sql = format!(
        "BEGIN; SET LOCAL lock_timeout = '{}ms';",
        timeout.as_millis().max(1)
    );
    if !tables.is_empty() {
        sql.push_str(&format!(" LOCK TABLE {} IN SHARE MODE;", tables.join(", ")));
    }
    client.batch_execute(&sql).await.map_err(|e| {
        let mut err = PgError::from_pg(e, target, "could not take the write barrier");
        if err.kind == crate::error::PgErrorKind::Privilege {
            err = err.remedy(crate::error::Remedy::BarrierPrivilege);
        } else if err.message.contains("55P03") {
            err = err.remedy(crate::error::Remedy::BarrierLocked);
        }
        err
    })
}
