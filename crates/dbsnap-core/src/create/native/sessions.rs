//! The native engine's sessions and what it reads from the catalog: copy
//! sessions on the exported snapshot with pg_dump's settings, the tables
//! whose rows it copies, and their sizes.

use std::collections::BTreeMap;
use std::sync::Arc;

use dbsnap_pg::PgError;
use tokio_postgres::Client;

use super::super::DumpJob;
use crate::error::CoreError;

/// A table whose rows this engine copies.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) oid: u32,
    /// `schema.name` as pg_dump writes it.
    pub(super) qualified: String,
    /// `"schema"."name"` as a pg_dump pattern.
    pub(super) pattern: String,
    /// Column list, quoted, comma separated (empty for a table without columns).
    pub(super) columns: String,
    pub(super) pages: i64,
    pub(super) bytes: i64,
}

/// `jobs` connections, each in a read-only transaction on the job's snapshot.
pub(super) async fn open_workers(
    job: &DumpJob,
    jobs: usize,
) -> Result<Vec<Arc<Client>>, CoreError> {
    let opening = (0..jobs).map(|_| async {
        let client = job.route.connect(&job.info).await?;
        let lock_wait = job.lock_wait.as_millis();
        client
            .batch_execute(&format!(
                // pg_dump's session settings: row_security off makes a COPY
                // that row level security would filter fail instead of
                // silently dumping fewer rows; no timeout may end a
                // session that waits for its turn.
                "SET lock_timeout = {lock_wait}; SET statement_timeout = 0; \
                 SET idle_in_transaction_session_timeout = 0; \
                 SELECT set_config('transaction_timeout', '0', false) \
                  WHERE current_setting('server_version_num')::int >= 170000; \
                 SET row_security = off; \
                 SET extra_float_digits = 3; SET DateStyle = ISO; SET IntervalStyle = postgres"
            ))
            .await
            .map_err(|e| PgError::from_pg(e, &job.display, "setting up a copy session"))?;
        // Apart: a query before BEGIN in the same batch would belong to
        // its transaction, and the snapshot must be set first.
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                job.snapshot.replace('\'', "''")
            ))
            .await
            .map_err(|e| PgError::from_pg(e, &job.display, "starting a copy transaction"))?;
        Ok::<_, CoreError>(Arc::new(client))
    });
    futures::future::join_all(opening)
        .await
        .into_iter()
        .collect()
}

/// The server's version number and database encoding.
pub(super) async fn server_facts(
    client: &Client,
    display: &str,
) -> Result<(i32, String), CoreError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, \
                    pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(e, display, "reading server facts"))?;
    Ok((row.get(0), row.get(1)))
}

/// The ordinary tables whose rows pg_dump would copy: not temporary, not
/// in system schemas, not members of an extension (pg_dump dumps their
/// configuration data itself).
pub(super) async fn list_tables(client: &Client, display: &str) -> Result<Vec<Table>, CoreError> {
    let rows = client
        .query(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    n.nspname, c.relname, \
                    coalesce((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) \
                       FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                        AND NOT a.attisdropped AND a.attgenerated = ''), '') \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
                AND NOT EXISTS (SELECT 1 FROM pg_depend d \
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
                                   AND d.deptype = 'e')",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(e, display, "listing tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (schema, name): (String, String) = (r.get(2), r.get(3));
            Table {
                oid: r.get(0),
                qualified: r.get(1),
                pattern: format!("{}.{}", pattern_quote(&schema), pattern_quote(&name)),
                columns: r.get(4),
                pages: 0,
                bytes: 0,
            }
        })
        .collect())
}

/// Fills in each table's size in pages and bytes (heap and TOAST). Run
/// once pg_dump holds its locks: reading a size takes a lock, and a table
/// locked by the application must make pg_dump wait (with its timeout),
/// not this query.
pub(super) async fn measure(
    client: &Client,
    display: &str,
    tables: &mut [Table],
) -> Result<(), CoreError> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = client
        .query(
            "SELECT o, pg_relation_size(o::regclass) / current_setting('block_size')::bigint, \
                    pg_table_size(o::regclass) FROM unnest($1::oid[]) o",
            &[&oids],
        )
        .await
        .map_err(|e| PgError::from_pg(e, display, "reading table sizes"))?;
    let sizes: BTreeMap<u32, (i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for t in tables.iter_mut() {
        if let Some((pages, bytes)) = sizes.get(&t.oid) {
            (t.pages, t.bytes) = (*pages, *bytes);
        }
    }
    Ok(())
}

/// A name as a literal pg_dump pattern: double-quoted, quotes doubled.
fn pattern_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
