//! Catalog reads a data-only restore needs, as named queries with typed
//! results: which tables exist, their partition family, the constraints,
//! triggers, indexes and row-level-security settings set aside around a
//! load, the large objects, and who owns what. Tables are passed as
//! qualified, quoted names (`"public"."t"`); results name them the way
//! `regclass` prints them.

use tokio_postgres::GenericClient;

use crate::error::PgError;

fn failed<'a>(target: &'a str, doing: &'a str) -> impl Fn(tokio_postgres::Error) -> PgError + 'a {
    move |e| PgError::from_pg(e, target, doing)
}

/// One text column of every row of `sql`.
async fn texts(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    target: &str,
    doing: &str,
) -> Result<Vec<String>, PgError> {
    Ok(client
        .query(sql, params)
        .await
        .map_err(failed(target, doing))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The snapshot's tables and sequences the live database lacks
/// (`table x`, `sequence y`).
pub async fn missing_relations(
    client: &impl GenericClient,
    tables: &[String],
    sequences: &[String],
    target: &str,
) -> Result<Vec<String>, PgError> {
    texts(
        client,
        "SELECT 'table ' || t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL \
         UNION ALL SELECT 'sequence ' || s FROM unnest($2::text[]) s WHERE to_regclass(s) IS NULL",
        &[&tables, &sequences],
        target,
        "look up the snapshot's tables",
    )
    .await
}

/// What the connected role may not replace, with owners: tables (with
/// their partition ancestors and the tables whose foreign keys point at
/// them), sequences, live large objects, and the roles owning the
/// snapshot's large objects.
pub async fn not_owned(
    client: &impl GenericClient,
    tables: &[String],
    sequences: &[String],
    large_object_owners: &[String],
    target: &str,
) -> Result<Vec<(String, String)>, PgError> {
    let rows = client
        .query(
            "WITH t AS (SELECT x::regclass AS r FROM unnest($1::text[]) x), \
                  fam AS (SELECT r FROM t \
                          UNION SELECT a.relid FROM t, LATERAL pg_partition_ancestors(t.r) a \
                          UNION SELECT c.conrelid FROM pg_constraint c JOIN t ON c.confrelid = t.r WHERE c.contype = 'f') \
             SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' ELSE 'table ' END || c.oid::regclass::text, \
                    pg_get_userbyid(c.relowner)::text \
             FROM pg_class c \
             WHERE (c.oid IN (SELECT r FROM fam) OR c.oid = ANY($2::text[]::regclass[])) \
               AND NOT pg_has_role(c.relowner, 'USAGE') \
             UNION ALL \
             SELECT 'large object ' || m.oid, pg_get_userbyid(m.lomowner)::text \
             FROM pg_largeobject_metadata m \
             WHERE NOT pg_has_role(m.lomowner, 'USAGE') AND NOT current_setting('lo_compat_privileges')::bool \
             UNION ALL \
             SELECT 'the snapshot''s large objects', o FROM unnest($3::text[]) o \
             WHERE NOT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = o) \
                            THEN pg_has_role(o, 'MEMBER') ELSE false END \
             ORDER BY 2, 1",
            &[&tables, &sequences, &large_object_owners],
        )
        .await
        .map_err(failed(target, "check ownership of the snapshot's objects"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The tables of `tables` the live database lacks.
pub async fn missing_tables(
    client: &impl GenericClient,
    tables: &[String],
    target: &str,
) -> Result<Vec<String>, PgError> {
    texts(
        client,
        "SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NULL",
        &[&tables],
        target,
        "look up tables",
    )
    .await
}

/// `tables` with their partition ancestors (foreign keys and triggers
/// live there too).
pub async fn table_family(
    client: &impl GenericClient,
    tables: &[String],
    target: &str,
) -> Result<Vec<String>, PgError> {
    texts(
        client,
        // pg_partition_ancestors returns nothing for a plain table: add the tables themselves.
        "SELECT DISTINCT r::text FROM (SELECT t::regclass AS r FROM unnest($1::text[]) t \
         UNION SELECT a.relid FROM unnest($1::text[]) t, LATERAL pg_partition_ancestors(t::regclass) a) s",
        &[&tables],
        target,
        "find partition parents",
    )
    .await
}

/// A constraint as it can be added back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintDef {
    /// Table (regclass text).
    pub table: String,
    /// Name, quoted.
    pub name: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
    /// `COMMENT ON CONSTRAINT` literal, if it has a comment.
    pub comment: Option<String>,
}

/// Which constraints [`constraints`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    /// Foreign keys on or pointing at the tables (not partition clones).
    ForeignKeys,
    /// Local NOT VALID check and not-null constraints of the tables.
    NotValid,
}

/// The constraints of `kind` touching `tables`.
pub async fn constraints(
    client: &impl GenericClient,
    kind: ConstraintKind,
    tables: &[String],
    target: &str,
) -> Result<Vec<ConstraintDef>, PgError> {
    let (filter, what) = match kind {
        ConstraintKind::ForeignKeys => (
            "c.contype = 'f' AND c.conparentid = 0 \
             AND (c.conrelid = ANY($1::text[]::regclass[]) OR c.confrelid = ANY($1::text[]::regclass[]))",
            "list foreign keys",
        ),
        ConstraintKind::NotValid => (
            "c.contype IN ('c', 'n') AND NOT c.convalidated AND c.conislocal AND c.coninhcount = 0 \
             AND c.conrelid = ANY($1::text[]::regclass[])",
            "list NOT VALID constraints",
        ),
    };
    let rows = client
        .query(
            &format!(
                "SELECT c.conrelid::regclass::text, quote_ident(c.conname), pg_get_constraintdef(c.oid), \
                        quote_literal(obj_description(c.oid, 'pg_constraint')) \
                 FROM pg_constraint c WHERE {filter} ORDER BY 1, 2"
            ),
            &[&tables],
        )
        .await
        .map_err(failed(target, what))?;
    Ok(rows
        .iter()
        .map(|r| ConstraintDef {
            table: r.get(0),
            name: r.get(1),
            definition: r.get(2),
            comment: r.get(3),
        })
        .collect())
}

/// The tables of `tables` with `FORCE ROW LEVEL SECURITY`.
pub async fn forced_rls_tables(
    client: &impl GenericClient,
    tables: &[String],
    target: &str,
) -> Result<Vec<String>, PgError> {
    texts(
        client,
        "SELECT oid::regclass::text FROM pg_class \
         WHERE relforcerowsecurity AND oid = ANY($1::text[]::regclass[]) ORDER BY 1",
        &[&tables],
        target,
        "list tables with forced row level security",
    )
    .await
}

/// An enabled user trigger: (table, quoted name, `tgenabled`).
pub type Trigger = (String, String, i8);

/// The enabled user triggers of `tables` (not internal, not partition clones).
pub async fn enabled_user_triggers(
    client: &impl GenericClient,
    tables: &[String],
    target: &str,
) -> Result<Vec<Trigger>, PgError> {
    Ok(client
        .query(
            "SELECT tgrelid::regclass::text, quote_ident(tgname), tgenabled FROM pg_trigger \
             WHERE NOT tgisinternal AND tgparentid = 0 AND tgenabled <> 'D' AND tgrelid = ANY($1::text[]::regclass[]) \
             ORDER BY 1, 2",
            &[&tables],
        )
        .await
        .map_err(failed(target, "list triggers"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// An index that can be dropped and rebuilt exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Table (regclass text).
    pub table: String,
    /// Index name, quoted.
    pub name: String,
    /// CREATE INDEX statement.
    pub index_def: String,
    /// (constraint name, definition) when the index backs a constraint.
    pub constraint: Option<(String, String)>,
    /// The table is clustered on it.
    pub clustered: bool,
    /// It is the table's replica identity.
    pub replica_identity: bool,
    /// Schema-qualified index name.
    pub qualified: String,
}

/// The indexes of `tables` that can be rebuilt exactly after a load:
/// plain indexes and PRIMARY KEY / UNIQUE / EXCLUDE constraints of plain
/// tables whose definition functions render them completely; anything
/// with comments, statistics targets, tablespaces, options, partition or
/// extension links, or foreign keys depending on it is left alone.
pub async fn rebuildable_indexes(
    client: &impl GenericClient,
    tables: &[String],
    target: &str,
) -> Result<Vec<IndexDef>, PgError> {
    Ok(client
        .query(
            "SELECT i.indrelid::regclass::text, quote_ident(ic.relname), pg_get_indexdef(i.indexrelid), \
                    quote_ident(c.conname), CASE WHEN c.oid IS NULL THEN NULL ELSE pg_get_constraintdef(c.oid) END, \
                    i.indisclustered, i.indisreplident, \
                    quote_ident(n.nspname) || '.' || quote_ident(ic.relname) \
             FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = ic.relnamespace \
             JOIN pg_class t ON t.oid = i.indrelid \
             LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x') \
             WHERE i.indrelid = ANY($1::text[]::regclass[]) AND t.relkind = 'r' AND NOT t.relispartition \
               AND ic.reltablespace = 0 AND ic.reloptions IS NULL \
               AND obj_description(i.indexrelid, 'pg_class') IS NULL \
               AND (c.oid IS NULL OR obj_description(c.oid, 'pg_constraint') IS NULL) \
               AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = i.indexrelid AND d.deptype = 'e') \
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND coalesce(a.attstattarget::int, -1) >= 0) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint o WHERE o.conindid = i.indexrelid AND o.contype = 'f') \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.deptype = 'n' AND \
                     ((d.refclassid = 'pg_constraint'::regclass AND d.refobjid = c.oid) OR \
                      (d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indexrelid))) \
             ORDER BY 1, 2",
            &[&tables],
        )
        .await
        .map_err(failed(target, "list indexes"))?
        .iter()
        .map(|r| IndexDef {
            table: r.get(0),
            name: r.get(1),
            index_def: r.get(2),
            constraint: r.get::<_, Option<String>>(3).zip(r.get::<_, Option<String>>(4)),
            clustered: r.get(5),
            replica_identity: r.get(6),
            qualified: r.get(7),
        })
        .collect())
}

/// The oids of the large objects that exist.
pub async fn large_object_oids(
    client: &impl GenericClient,
    target: &str,
) -> Result<std::collections::BTreeSet<u32>, PgError> {
    Ok(client
        .query("SELECT oid FROM pg_largeobject_metadata", &[])
        .await
        .map_err(failed(target, "list large objects"))?
        .iter()
        .map(|r| r.get::<_, tokio_postgres::types::Oid>(0))
        .collect())
}
