//! Two-phase commit, as a restore of several databases uses it: `PREPARE
//! TRANSACTION` in every database, then `COMMIT PREPARED` in each (or
//! `ROLLBACK PREPARED` in each). A prepared transaction survives the
//! session and a crash of dbsnap, keeping its locks until it is finished,
//! so whoever prepares one must record its id first (the restore journal).

use tokio_postgres::{Client, Transaction};

use crate::error::PgError;

/// How many transactions the server may hold prepared
/// (`max_prepared_transactions`; 0, the default, allows none) and how many
/// it holds now.
pub async fn capacity(client: &Client, target: &str) -> Result<(u32, u32), PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('max_prepared_transactions')::int4, \
                    (SELECT count(*)::int4 FROM pg_prepared_xacts)",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "read max_prepared_transactions"))?;
    Ok((row.get::<_, i32>(0) as u32, row.get::<_, i32>(1) as u32))
}

/// Prepares transaction `tx` as `gid`: its changes and locks now belong to
/// the server until [`commit`] or [`rollback`], and the session is free.
pub async fn prepare(tx: Transaction<'_>, gid: &str, target: &str) -> Result<(), PgError> {
    tx.batch_execute(&format!("PREPARE TRANSACTION {}", literal(gid)))
        .await
        .map_err(|e| PgError::from_pg(e, target, "prepare the transaction (two-phase commit)"))?;
    // The session is outside a transaction now: the client's handle must
    // not end it again (a COMMIT or its drop's ROLLBACK would only draw a
    // "no transaction in progress" warning from the server).
    std::mem::forget(tx);
    Ok(())
}

/// Ends transaction `tx`: commits it, or with `gid` prepares it.
pub async fn finish(
    tx: Transaction<'_>,
    gid: Option<&str>,
    target: &str,
    doing: &str,
) -> Result<(), PgError> {
    match gid {
        Some(gid) => prepare(tx, gid, target).await,
        None => tx
            .commit()
            .await
            .map_err(|e| PgError::from_pg(e, target, doing)),
    }
}

/// Whether `gid` is prepared on the server (in any database).
pub async fn is_prepared(client: &Client, gid: &str, target: &str) -> Result<bool, PgError> {
    let row = client
        .query_one(
            "SELECT count(*) > 0 FROM pg_prepared_xacts WHERE gid = $1",
            &[&gid],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "look for a prepared transaction"))?;
    Ok(row.get(0))
}

/// `COMMIT PREPARED gid` (the client must be connected to the database it
/// was prepared in).
pub async fn commit(client: &Client, gid: &str, target: &str) -> Result<(), PgError> {
    client
        .batch_execute(&format!("COMMIT PREPARED {}", literal(gid)))
        .await
        .map_err(|e| PgError::from_pg(e, target, "commit the prepared transaction"))
}

/// `ROLLBACK PREPARED gid` (the client must be connected to the database
/// it was prepared in).
pub async fn rollback(client: &Client, gid: &str, target: &str) -> Result<(), PgError> {
    client
        .batch_execute(&format!("ROLLBACK PREPARED {}", literal(gid)))
        .await
        .map_err(|e| PgError::from_pg(e, target, "roll back the prepared transaction"))
}

/// Prepared transactions whose id starts with `prefix`: (gid, database).
pub async fn list(
    client: &Client,
    prefix: &str,
    target: &str,
) -> Result<Vec<(String, String)>, PgError> {
    let rows = client
        .query(
            "SELECT gid, database::text FROM pg_prepared_xacts WHERE starts_with(gid, $1) ORDER BY gid",
            &[&prefix],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "list prepared transactions"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A string literal (gids are dbsnap's own, but quoted all the same).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
