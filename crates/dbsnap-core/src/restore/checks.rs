//! Checks that a restored database holds what the snapshot holds: row
//! counts of every table against the archive's, and the user's SQL checks
//! (`--check`, `checks` in the target). Reads only.

use super::data_only::{self, TableCount};
use super::pg_err;
use crate::error::CoreError;

/// Rows per table in a database member (restored rows not counted yet).
pub(super) fn archive_row_counts(
    file: &dbsnap_storage::SnapshotRef,
    member: &str,
    crypto: &crate::crypt::Crypto,
) -> Result<Vec<TableCount>, CoreError> {
    use dbsnap_archive::pgdump::{read_archive_data, CopyRows, DataItem};
    let f = crate::inspect::open(file)?;
    let mut counts = Vec::new();
    crypto.with_member(
        file,
        std::io::BufReader::with_capacity(1 << 20, f),
        member,
        |input| {
            read_archive_data(input, |item| -> std::io::Result<()> {
                if let DataItem::TableData { entry, data } = item {
                    let mut rows = CopyRows::new(data);
                    std::io::copy(&mut rows, &mut std::io::sink())?;
                    counts.push(TableCount {
                        table: data_only::qualified(entry),
                        snapshot_rows: rows.rows(),
                        restored_rows: 0,
                    });
                }
                Ok(())
            })
            .map(|_| ())
            .map_err(|e| {
                dbsnap_archive::snapshot::ArchiveError::Corrupt(format!("member \"{member}\": {e}"))
            })
        },
    )?;
    Ok(counts)
}

/// Counts the rows of every table (`ONLY`: partitions are counted on
/// their own) into `restored_rows`; the first table whose count differs
/// from the snapshot's fails the restore.
pub(crate) async fn compare_row_counts(
    client: &impl tokio_postgres::GenericClient,
    target: &str,
    tables: &mut [TableCount],
) -> Result<(), CoreError> {
    for t in tables {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM ONLY {}", t.table), &[])
            .await
            .map_err(pg_err(target, &format!("count rows of {}", t.table)))?
            .get(0);
        t.restored_rows = n as u64;
        if t.restored_rows != t.snapshot_rows {
            return Err(CoreError::Check(format!(
                "{target}: {} has {} rows after the restore, the snapshot has {}",
                t.table, t.restored_rows, t.snapshot_rows
            )));
        }
    }
    Ok(())
}

/// SQL run just before COMMIT of an in-place replacement: row counts and
/// the user's checks, raising (and so rolling back) on any failure.
pub(super) fn checks_sql(counts: &[TableCount], checks: &[String]) -> String {
    // pg_restore's script empties search_path; the user's checks expect the default.
    let mut sql = String::from("\nRESET search_path;\n");
    for TableCount {
        table,
        snapshot_rows: want,
        ..
    } in counts
    {
        sql.push_str(&format!(
            "DO $dbsnap$ BEGIN IF (SELECT count(*) FROM ONLY {table}) <> {want} THEN \
             RAISE EXCEPTION 'dbsnap: % has % rows after the restore, the snapshot has {want}', '{t}', (SELECT count(*) FROM ONLY {table}); \
             END IF; END $dbsnap$;\n",
            t = table.replace('\'', "''")
        ));
    }
    for q in checks {
        sql.push_str(&format!(
            "DO $dbsnap$ BEGIN IF NOT coalesce(({q}), false) THEN RAISE EXCEPTION 'dbsnap: check failed: %', '{}'; END IF; END $dbsnap$;\n",
            q.replace('\'', "''")
        ));
    }
    sql
}

/// Runs the user's SQL checks; each must return true.
pub(crate) async fn run_checks(
    client: &impl tokio_postgres::GenericClient,
    target: &str,
    checks: &[String],
) -> Result<(), CoreError> {
    for q in checks {
        let row = client.query_opt(q.as_str(), &[]).await.map_err(|e| {
            CoreError::Check(format!(
                "{target}: check `{q}` failed: {}",
                dbsnap_pg::error::error_chain(&e)
            ))
        })?;
        let ok = row
            .and_then(|r| r.try_get::<_, bool>(0).ok())
            .unwrap_or(false);
        if !ok {
            return Err(CoreError::Check(format!(
                "{target}: check `{q}` did not return true"
            )));
        }
    }
    Ok(())
}
