//! Detecting a database's migration tool and reading its schema version.
//!
//! Each tool is described by its table name, the columns that tell it apart
//! and one query returning `(id text, failed bool)` rows in the order the
//! migrations were applied. Detection runs inside the snapshot transaction,
//! so the version recorded is the version of the data dumped.

use dbsnap_archive::sql::quote_ident;
use dbsnap_archive::version::{SchemaVersion, VersionModel};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{PgError, PgErrorKind};

/// How to find a database's schema version (from `dbsnap.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// Force a tool by name instead of auto-detection.
    pub tool: Option<String>,
    /// The tool's table (`schema.table`), when not the default.
    pub table: Option<String>,
    /// A custom query returning `id` (text) and optionally `failed` (bool)
    /// per applied migration, in applied order.
    pub query: Option<String>,
    /// Set to false to skip version detection.
    pub detect: Option<bool>,
}

struct Tool {
    name: &'static str,
    table: &'static str,
    columns: &'static [&'static str],
    model: VersionModel,
    /// `{t}` is replaced by the quoted, qualified table.
    query: &'static str,
    /// Optional lock table (same schema) whose locked flag marks the database dirty.
    lock: Option<(&'static str, &'static str)>,
}

/// Known tools, most specific first: the first whose table and columns
/// exist wins.
const TOOLS: &[Tool] = &[
    Tool {
        name: "golang-migrate",
        table: "schema_migrations",
        columns: &["version", "dirty"],
        model: VersionModel::Linear,
        query: "SELECT version::text, dirty FROM {t}",
        lock: None,
    },
    Tool {
        name: "flyway",
        table: "flyway_schema_history",
        columns: &["installed_rank", "version", "script", "success", "type"],
        model: VersionModel::Set,
        query: "SELECT coalesce(version, 'R:' || script), NOT success FROM {t} \
                WHERE type NOT IN ('SCHEMA', 'DELETE') ORDER BY installed_rank",
        lock: None,
    },
    Tool {
        name: "liquibase",
        table: "databasechangelog",
        columns: &["id", "author", "filename", "orderexecuted"],
        model: VersionModel::Set,
        query: "SELECT id || '::' || author || '::' || filename, false FROM {t} ORDER BY orderexecuted",
        lock: Some(("databasechangeloglock", "locked")),
    },
    Tool {
        name: "alembic",
        table: "alembic_version",
        columns: &["version_num"],
        model: VersionModel::Heads,
        query: "SELECT version_num::text, false FROM {t} ORDER BY 1",
        lock: None,
    },
    Tool {
        name: "django",
        table: "django_migrations",
        columns: &["app", "name", "applied"],
        model: VersionModel::Set,
        query: "SELECT app || '.' || name, false FROM {t} ORDER BY applied, id",
        lock: None,
    },
    Tool {
        name: "prisma",
        table: "_prisma_migrations",
        columns: &["migration_name", "finished_at", "rolled_back_at", "started_at"],
        model: VersionModel::Set,
        query: "SELECT migration_name, finished_at IS NULL FROM {t} WHERE rolled_back_at IS NULL \
                ORDER BY started_at, migration_name",
        lock: None,
    },
    Tool {
        name: "ef-core",
        table: "__EFMigrationsHistory",
        columns: &["MigrationId", "ProductVersion"],
        model: VersionModel::Set,
        query: "SELECT \"MigrationId\"::text, false FROM {t} ORDER BY \"MigrationId\"",
        lock: None,
    },
    Tool {
        name: "goose",
        table: "goose_db_version",
        columns: &["version_id", "is_applied", "id"],
        model: VersionModel::Set,
        // The latest row of each version says whether it is applied; 0 is goose's own marker.
        query: "SELECT version_id::text, false FROM (SELECT DISTINCT ON (version_id) version_id, is_applied, id \
                FROM {t} ORDER BY version_id, id DESC) s WHERE is_applied AND version_id <> 0 ORDER BY id",
        lock: None,
    },
    Tool {
        name: "sqlx",
        table: "_sqlx_migrations",
        columns: &["version", "success"],
        model: VersionModel::Set,
        query: "SELECT version::text, NOT success FROM {t} ORDER BY version",
        lock: None,
    },
    Tool {
        name: "diesel",
        table: "__diesel_schema_migrations",
        columns: &["version", "run_on"],
        model: VersionModel::Set,
        query: "SELECT version::text, false FROM {t} ORDER BY version",
        lock: None,
    },
    Tool {
        name: "refinery",
        table: "refinery_schema_history",
        columns: &["version", "name"],
        model: VersionModel::Set,
        query: "SELECT version::text, false FROM {t} ORDER BY version",
        lock: None,
    },
    Tool {
        name: "knex",
        table: "knex_migrations",
        columns: &["name", "batch"],
        model: VersionModel::Set,
        query: "SELECT name::text, false FROM {t} ORDER BY id",
        lock: Some(("knex_migrations_lock", "is_locked")),
    },
    Tool {
        name: "sequelize",
        table: "SequelizeMeta",
        columns: &["name"],
        model: VersionModel::Set,
        query: "SELECT name::text, false FROM {t} ORDER BY name",
        lock: None,
    },
    Tool {
        name: "atlas",
        table: "atlas_schema_revisions",
        columns: &["version", "applied", "total", "error"],
        model: VersionModel::Set,
        query: "SELECT version::text, (applied < total OR coalesce(error, '') <> '') FROM {t} ORDER BY version",
        lock: None,
    },
    Tool {
        name: "typeorm",
        table: "migrations",
        columns: &["id", "timestamp", "name"],
        model: VersionModel::Set,
        query: "SELECT name::text, false FROM {t} ORDER BY timestamp, id",
        lock: None,
    },
    Tool {
        name: "rails",
        table: "schema_migrations",
        columns: &["version"],
        model: VersionModel::Set,
        query: "SELECT version::text, false FROM {t} ORDER BY version",
        lock: None,
    },
];

/// Names of every auto-detected tool.
pub fn known_tools() -> Vec<&'static str> {
    let mut v: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
    v.push("dbmate");
    v
}

struct Candidate {
    schema: String,
    table: String,
    columns: Vec<String>,
}

/// Reads the schema version of the database behind `client`, per `spec`.
/// `Ok(None)`: no migration table found (or detection disabled).
pub async fn detect(
    client: &Client,
    spec: &VersionSpec,
    target: &str,
) -> Result<Option<SchemaVersion>, PgError> {
    if spec.detect == Some(false) {
        return Ok(None);
    }
    if let Some(q) = &spec.query {
        return read_custom(client, q, target).await.map(Some);
    }
    let names: Vec<String> = match &spec.table {
        Some(t) => vec![t
            .rsplit('.')
            .next()
            .unwrap_or(t)
            .trim_matches('"')
            .to_string()],
        None => TOOLS
            .iter()
            .map(|t| t.table.to_string())
            .chain(["ar_internal_metadata".to_string()])
            .collect(),
    };
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, array_agg(a.attname::text ORDER BY a.attnum), \
                    coalesce(array_position(current_schemas(false), n.nspname), 1000) AS pos \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE c.relkind IN ('r', 'p', 'v') AND c.relname = ANY($1) \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_temp%' \
             GROUP BY n.nspname, c.relname ORDER BY pos, n.nspname = 'public' DESC, n.nspname",
            &[&names],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "could not look for migration tables"))?;
    let candidates: Vec<Candidate> = rows
        .iter()
        .map(|r| Candidate {
            schema: r.get(0),
            table: r.get(1),
            columns: r.get(2),
        })
        .collect();
    let wanted_schema = spec.table.as_ref().and_then(|t| {
        t.rsplit_once('.')
            .map(|x| x.0.trim_matches('"').to_string())
    });
    for tool in TOOLS {
        if spec
            .tool
            .as_deref()
            .is_some_and(|t| t != tool.name && !(t == "dbmate" && tool.name == "rails"))
        {
            continue;
        }
        let found = candidates.iter().find(|c| {
            (spec.table.is_some() || c.table == tool.table)
                && wanted_schema.as_ref().is_none_or(|s| s == &c.schema)
                && tool
                    .columns
                    .iter()
                    .all(|col| c.columns.iter().any(|x| x == col))
        });
        if let Some(c) = found {
            return read_tool(client, tool, c, &candidates, target)
                .await
                .map(Some);
        }
    }
    if let Some(t) = &spec.tool {
        if !known_tools().contains(&t.as_str()) {
            return Err(PgError::new(
                PgErrorKind::Config,
                format!("unknown migration tool \"{t}\""),
            )
            .on(target)
            .hint(format!(
                "use one of {} or a custom query",
                known_tools().join(", ")
            )));
        }
        return Err(PgError::new(PgErrorKind::Config, format!("no {t} migration table found"))
            .on(target)
            .hint("check schema_version.table in dbsnap.toml, or set schema_version.detect = false"));
    }
    Ok(None)
}

async fn read_tool(
    client: &Client,
    tool: &Tool,
    c: &Candidate,
    all: &[Candidate],
    target: &str,
) -> Result<SchemaVersion, PgError> {
    let qualified = format!("{}.{}", quote_ident(&c.schema), quote_ident(&c.table));
    let sql = tool.query.replace("{t}", &qualified);
    let rows = client.query(&sql, &[]).await.map_err(|e| {
        PgError::from_pg(
            e,
            target,
            &format!("could not read {} history from {}", tool.name, qualified),
        )
    })?;
    let mut v = SchemaVersion {
        tool: tool.name.to_string(),
        source: format!("{}.{}", c.schema, c.table),
        model: tool.model,
        applied: Vec::new(),
        dirty: false,
        failed: Vec::new(),
    };
    for r in rows {
        let id: Option<String> = r.get(0);
        let failed: Option<bool> = r.get(1);
        let Some(id) = id else { continue };
        if failed == Some(true) {
            v.dirty = true;
            v.failed.push(id.clone());
            // golang-migrate's dirty version is still its current version.
            if tool.model != VersionModel::Linear {
                continue;
            }
        }
        v.applied.push(id);
    }
    if tool.name == "rails"
        && !all
            .iter()
            .any(|x| x.schema == c.schema && x.table == "ar_internal_metadata")
    {
        // Same table layout; without Rails' metadata table it is most likely dbmate.
        v.tool = "dbmate".into();
    }
    if let Some((lock_table, column)) = tool.lock {
        let sql = format!(
            "SELECT coalesce(bool_or({}::int <> 0), false) FROM {}.{}",
            quote_ident(column),
            quote_ident(&c.schema),
            quote_ident(lock_table)
        );
        // The lock table may be missing; only a held lock matters.
        if let Ok(row) = client.query_one(&sql, &[]).await {
            if row.get::<_, bool>(0) {
                v.dirty = true;
                v.failed.push(format!(
                    "{lock_table} is locked (a migration may be running)"
                ));
            }
        }
    }
    Ok(v)
}

async fn read_custom(client: &Client, query: &str, target: &str) -> Result<SchemaVersion, PgError> {
    let rows = client.query(query, &[]).await.map_err(|e| {
        PgError::from_pg(e, target, "custom schema_version query failed")
            .hint("fix schema_version.query in dbsnap.toml")
    })?;
    let mut v = SchemaVersion {
        tool: "custom".into(),
        source: "query".into(),
        model: VersionModel::Set,
        applied: Vec::new(),
        dirty: false,
        failed: Vec::new(),
    };
    for r in rows {
        let id = match r.try_get::<_, Option<String>>(0) {
            Ok(id) => id,
            Err(_) => r
                .try_get::<_, Option<i64>>(0)
                .ok()
                .flatten()
                .map(|n| n.to_string()),
        };
        let Some(id) = id else { continue };
        let failed =
            r.columns().len() > 1 && r.try_get::<_, Option<bool>>(1).ok().flatten() == Some(true);
        if failed {
            v.dirty = true;
            v.failed.push(id);
        } else {
            v.applied.push(id);
        }
    }
    Ok(v)
}
