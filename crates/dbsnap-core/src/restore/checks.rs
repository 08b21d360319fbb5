//! Checks that a restored database holds what the snapshot holds: row
//! counts of every table against the archive's, and the user's SQL checks
//! (`--check`, `checks` in the target). Reads only.

use super::{data_only, pg_err};
use crate::error::CoreError;

/// Rows per table in a database member: (qualified table, rows).
pub(super) fn archive_row_counts(
    file: &dbsnap_storage::SnapshotRef,
    member: &str,
) -> Result<Vec<(String, u64)>, CoreError> {
    use dbsnap_archive::pgdump::{read_archive_data, CopyRows, DataItem};
    let f = crate::inspect::open(file)?;
    let mut counts = Vec::new();
    dbsnap_archive::snapshot::with_member(
        std::io::BufReader::with_capacity(1 << 20, f),
        member,
        |input| {
            read_archive_data(input, |item| -> std::io::Result<()> {
                if let DataItem::TableData { entry, data } = item {
                    let mut rows = CopyRows::new(data);
                    std::io::copy(&mut rows, &mut std::io::sink())?;
                    let table = data_only::qualified(entry);
                    counts.push((table, rows.rows()));
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

pub(super) async fn compare_counts(
    client: &tokio_postgres::Client,
    target: &str,
    counts: &[(String, u64)],
) -> Result<(), CoreError> {
    for (table, want) in counts {
        let got: i64 = client
            .query_one(&format!("SELECT count(*) FROM ONLY {table}"), &[])
            .await
            .map_err(pg_err(target, &format!("count rows of {table}")))?
            .get(0);
        if got as u64 != *want {
            return Err(CoreError::Check(format!(
                "{target}: {table} has {got} rows after the restore, the snapshot has {want}"
            )));
        }
    }
    Ok(())
}

/// SQL run just before COMMIT of an in-place replacement: row counts and
/// the user's checks, raising (and so rolling back) on any failure.
pub(super) fn checks_sql(counts: &[(String, u64)], checks: &[String]) -> String {
    // pg_restore's script empties search_path; the user's checks expect the default.
    let mut sql = String::from("\nRESET search_path;\n");
    for (table, want) in counts {
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
