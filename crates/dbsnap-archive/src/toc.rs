//! What a pg_dump archive's table of contents says beyond its objects: the
//! roles and extensions a restore needs, the database-level properties (owner, comment,
//! settings, per-role settings, grants, security labels) that stock
//! `pg_restore` only applies with `--create`, and who owns the large
//! objects.
//!
//! Pure: reads [`TocEntry`] values, never a connection.

use std::collections::BTreeSet;

use crate::pgdump::TocEntry;
use crate::sql::{self, Token};

/// Roles and database-level facts of one pg_dump archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFacts {
    /// Roles owning the archive's objects (database-level entries excluded).
    pub owners: BTreeSet<String>,
    /// Roles named by GRANT/REVOKE and default privileges (skipped with
    /// `--no-privileges`).
    pub privilege_roles: BTreeSet<String>,
    /// Roles named elsewhere in object definitions (policies, user
    /// mappings): needed whenever the schema is restored.
    pub other_roles: BTreeSet<String>,
    /// Database-level properties, if the archive has them (pg_dump 11+).
    pub database: Option<DatabaseProps>,
    /// Owners of the archive's large objects.
    pub large_object_owners: BTreeSet<String>,
    /// Extensions the archive creates (`CREATE EXTENSION`; pg_dump leaves
    /// out the built-in ones, such as plpgsql).
    pub extensions: BTreeSet<String>,
    /// Tables with data, in archive order.
    pub data_tables: Vec<QualifiedName>,
    /// Sequences whose values the archive sets.
    pub sequences: Vec<QualifiedName>,
}

/// A schema-qualified object name as the archive records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QualifiedName {
    /// Schema, if any.
    pub schema: Option<String>,
    /// Object name.
    pub name: String,
}

impl QualifiedName {
    /// The name of entry `e`.
    pub fn of(e: &TocEntry) -> QualifiedName {
        QualifiedName {
            schema: e.namespace.clone().filter(|s| !s.is_empty()),
            name: e.tag.clone(),
        }
    }

    /// Quoted for SQL: `"schema"."name"`.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", sql::quote_ident(s), sql::quote_ident(&self.name)),
            None => sql::quote_ident(&self.name),
        }
    }
}

impl ArchiveFacts {
    /// Reads the facts from an archive's entries.
    pub fn from_entries(entries: &[TocEntry]) -> ArchiveFacts {
        let mut f = ArchiveFacts::default();
        let mut db = DatabaseProps::default();
        let mut has_db = false;
        for e in entries {
            let defn = e.defn.as_deref().unwrap_or("");
            if is_database_level(e) {
                has_db = true;
                match e.desc.as_str() {
                    "DATABASE" => {
                        db.name = e.tag.clone();
                        db.owner = e.owner.clone().filter(|o| !o.is_empty());
                        db.create = (!defn.trim().is_empty()).then(|| defn.trim().to_string());
                    }
                    "DATABASE PROPERTIES" => {
                        for stmt in split_statements(defn) {
                            let kind = match role_setting_role(&stmt) {
                                Some(role) => DbStatementKind::RoleSetting { role },
                                None => DbStatementKind::Setting,
                            };
                            db.statements.push(DbStatement { kind, sql: stmt });
                        }
                    }
                    desc => {
                        let kind = match desc {
                            "COMMENT" => DbStatementKind::Comment,
                            "ACL" => DbStatementKind::Privileges,
                            _ => DbStatementKind::SecurityLabel,
                        };
                        for stmt in split_statements(defn) {
                            db.statements.push(DbStatement {
                                kind: kind.clone(),
                                sql: stmt,
                            });
                        }
                    }
                }
                continue;
            }
            match e.desc.as_str() {
                "TABLE DATA" => f.data_tables.push(QualifiedName::of(e)),
                "SEQUENCE SET" => f.sequences.push(QualifiedName::of(e)),
                "EXTENSION" => {
                    f.extensions.insert(e.tag.clone());
                }
                _ => {}
            }
            if let Some(o) = e.owner.as_deref().filter(|o| !o.is_empty()) {
                f.owners.insert(o.to_string());
                if e.desc == "BLOB" || e.desc == "BLOB METADATA" {
                    f.large_object_owners.insert(o.to_string());
                }
            }
            let roles = sql::referenced_roles(defn);
            if e.desc == "ACL" || e.desc == "DEFAULT ACL" {
                f.privilege_roles.extend(roles);
            } else {
                f.other_roles.extend(roles);
            }
        }
        if has_db {
            f.database = Some(db);
        }
        f
    }
}

/// The statements that recreate the archive's large objects (empty) with
/// their owners, as pg_restore issues them: pg_dump before 17 writes one
/// `BLOB` entry per object (its `lo_create`, owner in the entry); 17 and
/// later write `BLOB METADATA` entries listing many oids, one per line.
pub fn large_object_creation(entries: &[TocEntry]) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        let oids: Vec<&str> = match e.desc.as_str() {
            "BLOB" => vec![e.tag.as_str()],
            "BLOB METADATA" => blob_oids(e),
            _ => continue,
        };
        for oid in oids {
            out.push(format!("SELECT pg_catalog.lo_create('{oid}')"));
            if let Some(owner) = e.owner.as_deref().filter(|o| !o.is_empty()) {
                out.push(format!(
                    "ALTER LARGE OBJECT {oid} OWNER TO {}",
                    sql::quote_ident(owner)
                ));
            }
        }
    }
    out
}

fn blob_oids(e: &TocEntry) -> Vec<&str> {
    e.defn
        .as_deref()
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// Comments, grants and security labels of the archive's large objects.
/// A grant entry of a group (`LARGE OBJECTS a..b`, pg_dump 17+) is written
/// for its first object and applies to every object of the group.
pub fn large_object_properties(entries: &[TocEntry]) -> Vec<String> {
    let mut out = Vec::new();
    for e in entries {
        if !matches!(e.desc.as_str(), "COMMENT" | "ACL" | "SECURITY LABEL") {
            continue;
        }
        let defn = e.defn.as_deref().unwrap_or("");
        if e.tag.starts_with("LARGE OBJECTS ") {
            let group = e.dependencies.first().and_then(|d| {
                entries
                    .iter()
                    .find(|x| x.dump_id == *d && x.desc == "BLOB METADATA")
            });
            for oid in group.map(blob_oids).unwrap_or_default() {
                for stmt in split_statements(defn) {
                    out.push(with_large_object(&stmt, oid));
                }
            }
        } else if e.tag.starts_with("LARGE OBJECT ") {
            out.extend(split_statements(defn));
        }
    }
    out
}

/// `stmt` with the oid after its `LARGE OBJECT` replaced by `oid`.
fn with_large_object(stmt: &str, oid: &str) -> String {
    let toks = sql::tokens(stmt);
    let mut out = String::new();
    let (mut prev, mut last) = (String::new(), String::new());
    for t in &toks {
        let text = t.text();
        if matches!(t, Token::Word(w) if w.bytes().all(|b| b.is_ascii_digit()))
            && prev.eq_ignore_ascii_case("LARGE")
            && last.eq_ignore_ascii_case("OBJECT")
        {
            out.push_str(oid);
        } else {
            out.push_str(text);
        }
        if !matches!(t, Token::Space(_)) {
            prev = std::mem::replace(&mut last, text.to_string());
        }
    }
    out
}

/// Whether an entry belongs to the database itself rather than to an
/// object inside it (pg_restore applies these only with `--create`).
pub fn is_database_level(e: &TocEntry) -> bool {
    match e.desc.as_str() {
        "DATABASE" | "DATABASE PROPERTIES" => true,
        "COMMENT" | "ACL" | "SECURITY LABEL" => e.tag.starts_with("DATABASE "),
        _ => false,
    }
}

/// A database's own properties, as the archive recorded them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseProps {
    /// The database's name when it was dumped.
    pub name: String,
    /// Its owner.
    pub owner: Option<String>,
    /// pg_dump's `CREATE DATABASE` statement (encoding, locale).
    pub create: Option<String>,
    /// Comment, settings, per-role settings, grants, security labels, one
    /// statement each, naming the database as it was dumped.
    pub statements: Vec<DbStatement>,
}

impl DatabaseProps {
    /// Roles the statements need (per-role settings, grantees).
    pub fn roles(&self, privileges: bool) -> BTreeSet<String> {
        self.statements
            .iter()
            .filter(|s| privileges || s.kind != DbStatementKind::Privileges)
            .flat_map(|s| sql::referenced_roles(&s.sql))
            .collect()
    }

    /// The statements pointed at database `name` instead, optionally without
    /// grants (`--no-privileges`).
    pub fn statements_for(&self, name: &str, privileges: bool) -> Vec<DbStatement> {
        self.statements
            .iter()
            .filter(|s| privileges || s.kind != DbStatementKind::Privileges)
            .map(|s| DbStatement {
                kind: s.kind.clone(),
                sql: sql::rename_database(&s.sql, &self.name, name),
            })
            .collect()
    }

    /// pg_dump's `CREATE DATABASE` pointed at `name`.
    pub fn create_for(&self, name: &str) -> Option<String> {
        self.create
            .as_ref()
            .map(|c| sql::rename_database(c, &self.name, name))
    }
}

/// One database-level statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbStatement {
    /// What it sets.
    pub kind: DbStatementKind,
    /// The SQL, without its final semicolon.
    pub sql: String,
}

/// Kinds of database-level statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbStatementKind {
    /// `COMMENT ON DATABASE`.
    Comment,
    /// `ALTER DATABASE ... SET` / `CONNECTION LIMIT` / `IS_TEMPLATE`.
    Setting,
    /// `ALTER ROLE role IN DATABASE ... SET`.
    RoleSetting {
        /// The role.
        role: String,
    },
    /// `GRANT`/`REVOKE ... ON DATABASE` (and the session switches around them).
    Privileges,
    /// `SECURITY LABEL ... ON DATABASE`.
    SecurityLabel,
}

/// Splits SQL into statements at top-level semicolons (never inside a
/// literal), trimmed, without the semicolon; empty ones dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for t in sql::tokens(sql) {
        if matches!(t, Token::Symbol(";")) {
            push_statement(&mut out, &cur);
            cur.clear();
        } else {
            cur.push_str(t.text());
        }
    }
    push_statement(&mut out, &cur);
    out
}

fn push_statement(out: &mut Vec<String>, s: &str) {
    let s = s.trim();
    // Lines of only comments are not statements.
    let has_code = sql::tokens(s).iter().any(|t| !matches!(t, Token::Space(_)));
    if has_code {
        out.push(s.to_string());
    }
}

fn role_setting_role(stmt: &str) -> Option<String> {
    let t: Vec<Token<'_>> = sql::tokens(stmt)
        .into_iter()
        .filter(|t| !matches!(t, Token::Space(_)))
        .collect();
    (t.len() > 4 && t[0].is_keyword("ALTER") && t[1].is_keyword("ROLE") && t[3].is_keyword("IN"))
        .then(|| t[2].identifier())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(desc: &str, tag: &str, owner: &str, defn: &str) -> TocEntry {
        TocEntry {
            dump_id: 1,
            has_data: false,
            desc: desc.into(),
            tag: tag.into(),
            namespace: None,
            owner: Some(owner.into()),
            defn: Some(defn.into()),
            copy_stmt: None,
            dependencies: vec![],
        }
    }

    #[test]
    fn large_objects_of_both_layouts() {
        let mut old = entry(
            "BLOB",
            "5001",
            "alice",
            "SELECT pg_catalog.lo_create('5001');\n",
        );
        old.dump_id = 7;
        let mut group = entry("BLOB METADATA", "6001..6002", "bob", "6001\n6002\n");
        group.dump_id = 8;
        let mut acl = entry(
            "ACL",
            "LARGE OBJECTS 6001..6002",
            "bob",
            "GRANT SELECT ON LARGE OBJECT 6001 TO \"LARGE OBJECT 1\";\nGRANT UPDATE ON LARGE OBJECT 6001 TO w;\n",
        );
        acl.dependencies = vec![8];
        let comment = entry(
            "COMMENT",
            "LARGE OBJECT 5001",
            "alice",
            "COMMENT ON LARGE OBJECT 5001 IS 'c';\n",
        );
        let entries = [old, group, acl, comment];
        assert_eq!(
            large_object_creation(&entries),
            [
                "SELECT pg_catalog.lo_create('5001')",
                "ALTER LARGE OBJECT 5001 OWNER TO \"alice\"",
                "SELECT pg_catalog.lo_create('6001')",
                "ALTER LARGE OBJECT 6001 OWNER TO \"bob\"",
                "SELECT pg_catalog.lo_create('6002')",
                "ALTER LARGE OBJECT 6002 OWNER TO \"bob\"",
            ]
        );
        assert_eq!(
            large_object_properties(&entries),
            [
                "GRANT SELECT ON LARGE OBJECT 6001 TO \"LARGE OBJECT 1\"",
                "GRANT UPDATE ON LARGE OBJECT 6001 TO w",
                "GRANT SELECT ON LARGE OBJECT 6002 TO \"LARGE OBJECT 1\"",
                "GRANT UPDATE ON LARGE OBJECT 6002 TO w",
                "COMMENT ON LARGE OBJECT 5001 IS 'c'",
            ]
        );
        let f = ArchiveFacts::from_entries(&entries);
        assert_eq!(
            f.large_object_owners.iter().collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(
            f.privilege_roles.iter().collect::<Vec<_>>(),
            ["LARGE OBJECT 1", "w"]
        );
    }

    #[test]
    fn database_properties_and_roles() {
        let entries = vec![
            entry(
                "DATABASE",
                "app db",
                "appowner",
                "CREATE DATABASE \"app db\" WITH TEMPLATE = template0 ENCODING = 'UTF8';\n",
            ),
            entry(
                "COMMENT",
                "DATABASE \"app db\"",
                "appowner",
                "COMMENT ON DATABASE \"app db\" IS 'x; DATABASE \"app db\"';\n",
            ),
            entry(
                "DATABASE PROPERTIES",
                "app db",
                "appowner",
                "ALTER DATABASE \"app db\" CONNECTION LIMIT = 50;\n\
                 ALTER DATABASE \"app db\" SET search_path TO 'app', 'public';\n\
                 ALTER ROLE reader IN DATABASE \"app db\" SET work_mem TO '16MB';\n",
            ),
            entry(
                "ACL",
                "DATABASE \"app db\"",
                "appowner",
                "REVOKE CONNECT,TEMPORARY ON DATABASE \"app db\" FROM PUBLIC;\n\
                 GRANT CONNECT,TEMPORARY ON DATABASE \"app db\" TO reader;\n",
            ),
            entry("TABLE", "t", "tabowner", "CREATE TABLE public.t (a int);"),
            entry(
                "EXTENSION",
                "pgcrypto",
                "",
                "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;",
            ),
            entry(
                "ACL",
                "TABLE t",
                "tabowner",
                "GRANT SELECT ON TABLE public.t TO writer;",
            ),
            entry(
                "POLICY",
                "t p",
                "tabowner",
                "CREATE POLICY p ON public.t TO auditor USING (true);",
            ),
            entry(
                "BLOB METADATA",
                "5001",
                "loowner",
                "SELECT pg_catalog.lo_create('5001');",
            ),
        ];
        let f = ArchiveFacts::from_entries(&entries);
        assert_eq!(f.owners.iter().collect::<Vec<_>>(), ["loowner", "tabowner"]);
        assert_eq!(f.privilege_roles.iter().collect::<Vec<_>>(), ["writer"]);
        assert_eq!(f.other_roles.iter().collect::<Vec<_>>(), ["auditor"]);
        assert_eq!(f.extensions.iter().collect::<Vec<_>>(), ["pgcrypto"]);
        assert_eq!(
            f.large_object_owners.iter().collect::<Vec<_>>(),
            ["loowner"]
        );
        let db = f.database.unwrap();
        assert_eq!(db.owner.as_deref(), Some("appowner"));
        assert_eq!(db.roles(true).iter().collect::<Vec<_>>(), ["reader"]);
        assert_eq!(
            db.create_for("n").unwrap(),
            "CREATE DATABASE \"n\" WITH TEMPLATE = template0 ENCODING = 'UTF8';"
        );
        let sql: Vec<String> = db
            .statements_for("app__new", false)
            .into_iter()
            .map(|s| s.sql)
            .collect();
        assert_eq!(
            sql,
            [
                "COMMENT ON DATABASE \"app__new\" IS 'x; DATABASE \"app db\"'",
                "ALTER DATABASE \"app__new\" CONNECTION LIMIT = 50",
                "ALTER DATABASE \"app__new\" SET search_path TO 'app', 'public'",
                "ALTER ROLE reader IN DATABASE \"app__new\" SET work_mem TO '16MB'",
            ]
        );
        assert!(db.statements.iter().any(|s| s.kind
            == DbStatementKind::RoleSetting {
                role: "reader".into()
            }));
    }
}
