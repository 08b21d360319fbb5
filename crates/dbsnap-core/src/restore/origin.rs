//! Whether a snapshot is restored into the databases it was taken from.
//!
//! A snapshot records its origin: the config target, the Kubernetes
//! workload (`create --k8s`) and, per database, the server's system
//! identifier. A restore that would change an existing database of
//! another origin (another app's `core` on another server, another
//! target) is refused unless the user says so; databases created on
//! another server (`--create`, the migration case) are a move, which the
//! plan states as one. Pure: facts in, a verdict out.

use dbsnap_archive::snapshot::{DatabaseEntry, KubernetesOrigin, Metadata};
use serde::Serialize;

use crate::error::{exit, CoreError};

/// One way the restore's destination is not where the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OriginDifference {
    /// The snapshot was taken for another config target.
    Target {
        /// The snapshot's target.
        snapshot: String,
        /// The target the restore is for.
        restore: String,
    },
    /// The snapshot was taken for another Kubernetes workload.
    Kubernetes {
        /// The snapshot's workload.
        snapshot: KubernetesOrigin,
        /// The workload the restore goes through.
        restore: KubernetesOrigin,
    },
    /// An existing database is on another server (another cluster: a
    /// different system identifier) than the one the snapshot's came from.
    Server {
        /// The live database that would change.
        database: String,
        /// The snapshot database's server and system identifier.
        snapshot: ServerIdentity,
        /// The live database's.
        live: ServerIdentity,
    },
}

/// A server as the plan names it: its address and system identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerIdentity {
    /// `host:port` as it was reached (addresses differ by route).
    pub server: String,
    /// `pg_control_system()`'s system identifier.
    pub system_identifier: String,
}

impl std::fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (system {})", self.server, self.system_identifier)
    }
}

impl std::fmt::Display for OriginDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginDifference::Target { snapshot, restore } => write!(
                f,
                "the snapshot was taken for target \"{snapshot}\", the restore is for target \"{restore}\""
            ),
            OriginDifference::Kubernetes { snapshot, restore } => write!(
                f,
                "the snapshot was taken for {snapshot}, the restore goes to {restore}"
            ),
            OriginDifference::Server {
                database,
                snapshot,
                live,
            } => write!(
                f,
                "{database}: the snapshot's database comes from {snapshot}, the live one is on another server, {live}"
            ),
        }
    }
}

/// A database the restore creates on another server than the snapshot's:
/// the migration case, allowed, said in the plan as "from X to Y".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// Database in the snapshot.
    pub snapshot_db: String,
    /// Where it was taken.
    pub from: String,
    /// Database created.
    pub live_db: String,
    /// Where it is created.
    pub to: String,
}

/// The origin check of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OriginCheck {
    /// Why the destination is not the snapshot's origin; each one refuses
    /// the restore unless `allowed`.
    pub differences: Vec<OriginDifference>,
    /// Databases created on another server (allowed).
    pub moves: Vec<Move>,
    /// What could not be compared, and why (the restore goes ahead).
    pub unchecked: Vec<String>,
    /// Whether the user allowed a restore into another origin
    /// (`--into-other-origin`, or a confirmation on a terminal).
    pub allowed: bool,
}

impl OriginCheck {
    /// Whether the restore must not go ahead as planned.
    pub fn refuses(&self) -> bool {
        !self.differences.is_empty() && !self.allowed
    }

    /// The refusal of a restore into another origin, naming both sides.
    pub fn refusal(&self) -> CoreError {
        CoreError::Refused {
            message: format!(
                "restore refused, nothing was changed: the databases it would change are not the ones the snapshot was taken from:\n  {}",
                self.differences
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ),
            hint: "check that this is the snapshot and the place you mean; to restore into them anyway \
                   (the same app moved to a rebuilt, upgraded or external server, or a copy for testing), \
                   pass --into-other-origin"
                .into(),
            code: exit::OTHER_ORIGIN,
        }
    }
}

/// Where a restore goes, beside each database's live facts.
pub struct Destination<'a> {
    /// The config target the restore is for, when the user named one.
    pub target: Option<&'a str>,
    /// The Kubernetes workload the restore goes through (`--k8s`).
    pub kubernetes: Option<&'a KubernetesOrigin>,
}

/// One database of the plan: its snapshot entry and the live side.
pub struct LiveDatabase<'a> {
    /// The snapshot's entry.
    pub entry: &'a DatabaseEntry,
    /// Live database name.
    pub live_db: &'a str,
    /// Live server as reached (`host:port`).
    pub server: String,
    /// Whether the live database exists (a restore would change it).
    pub exists: bool,
    /// The live server's system identifier, when readable.
    pub system_identifier: Option<&'a str>,
}

/// Compares the snapshot's origin with the restore's destination.
pub fn check(meta: &Metadata, to: &Destination<'_>, dbs: &[LiveDatabase<'_>]) -> OriginCheck {
    let mut out = OriginCheck::default();
    let changes_existing = dbs.iter().any(|d| d.exists);
    if changes_existing {
        if let (Some(s), Some(r)) = (&meta.target, to.target) {
            if s != r {
                out.differences.push(OriginDifference::Target {
                    snapshot: s.clone(),
                    restore: r.to_string(),
                });
            }
        }
        if let (Some(s), Some(r)) = (&meta.kubernetes, to.kubernetes) {
            if s != r {
                out.differences.push(OriginDifference::Kubernetes {
                    snapshot: s.clone(),
                    restore: r.clone(),
                });
            }
        }
    }
    for d in dbs {
        match (&d.entry.system_identifier, d.system_identifier) {
            (Some(s), Some(l)) if s != l => {
                let snapshot = ServerIdentity {
                    server: d.entry.server.clone(),
                    system_identifier: s.clone(),
                };
                let live = ServerIdentity {
                    server: d.server.clone(),
                    system_identifier: l.to_string(),
                };
                if d.exists {
                    out.differences.push(OriginDifference::Server {
                        database: d.live_db.to_string(),
                        snapshot,
                        live,
                    });
                } else {
                    out.moves.push(Move {
                        snapshot_db: d.entry.name.clone(),
                        from: snapshot.to_string(),
                        live_db: d.live_db.to_string(),
                        to: live.to_string(),
                    });
                }
            }
            (Some(_), Some(_)) => {}
            (None, _) if d.exists => out.unchecked.push(format!(
                "{}: the snapshot does not record which server its database {} came from (taken by an older dbsnap, or by a role that may not read pg_control_system()); only names were matched",
                d.live_db, d.entry.name
            )),
            (Some(_), None) if d.exists => out.unchecked.push(format!(
                "{}: the server's identity cannot be read (the role may not run pg_control_system()), so it cannot be compared with the snapshot's; only names were matched",
                d.live_db
            )),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbsnap_archive::snapshot::{Consistency, ConsistencyMethod};

    fn entry(name: &str, sysid: Option<&str>) -> DatabaseEntry {
        DatabaseEntry {
            name: name.into(),
            member: format!("{name}.dump"),
            server: "a:5432".into(),
            server_version: "15".into(),
            server_version_num: 150000,
            pg_dump_version: "15".into(),
            schema_version: None,
            connection: None,
            system_identifier: sysid.map(String::from),
        }
    }

    fn meta(
        target: Option<&str>,
        k8s: Option<KubernetesOrigin>,
        dbs: Vec<DatabaseEntry>,
    ) -> Metadata {
        Metadata {
            format_version: "1.1".into(),
            tool_version: "t".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            target: target.map(String::from),
            prefix: "p".into(),
            safety_for: None,
            consistency: Consistency {
                method: ConsistencyMethod::Snapshot,
                consistent_cut: true,
                attempts: 1,
                snapshot: None,
            },
            databases: dbs,
            kubernetes: k8s,
            encryption: None,
        }
    }

    fn live<'a>(e: &'a DatabaseEntry, exists: bool, sysid: Option<&'a str>) -> LiveDatabase<'a> {
        LiveDatabase {
            entry: e,
            live_db: &e.name,
            server: "b:5432".into(),
            exists,
            system_identifier: sysid,
        }
    }

    const NOWHERE: Destination<'static> = Destination {
        target: None,
        kubernetes: None,
    };

    #[test]
    fn same_server_is_the_same_origin() {
        let m = meta(Some("t"), None, vec![entry("core", Some("1"))]);
        let c = check(&m, &NOWHERE, &[live(&m.databases[0], true, Some("1"))]);
        assert_eq!(c, OriginCheck::default());
        assert!(!c.refuses());
    }

    #[test]
    fn an_existing_database_on_another_server_is_refused_unless_allowed() {
        let m = meta(None, None, vec![entry("core", Some("1"))]);
        let mut c = check(&m, &NOWHERE, &[live(&m.databases[0], true, Some("2"))]);
        assert!(c.refuses());
        assert!(
            matches!(&c.differences[..], [OriginDifference::Server { database, .. }] if database == "core")
        );
        let text = c.differences[0].to_string();
        assert!(
            text.contains("a:5432 (system 1)") && text.contains("b:5432 (system 2)"),
            "{text}"
        );
        c.allowed = true;
        assert!(!c.refuses());
    }

    #[test]
    fn a_database_created_on_another_server_is_a_move() {
        let m = meta(Some("x"), None, vec![entry("core", Some("1"))]);
        let to = Destination {
            target: Some("y"),
            kubernetes: None,
        };
        let c = check(&m, &to, &[live(&m.databases[0], false, Some("2"))]);
        assert!(!c.refuses(), "{c:?}");
        assert_eq!(c.moves.len(), 1);
        assert_eq!(c.moves[0].to, "b:5432 (system 2)");
    }

    #[test]
    fn another_target_or_workload_is_refused_when_something_exists() {
        let k = |ns: &str| KubernetesOrigin {
            namespace: ns.into(),
            workload: "deploy/api".into(),
        };
        let m = meta(Some("x"), Some(k("a")), vec![entry("core", Some("1"))]);
        let (ka, kb) = (k("a"), k("b"));
        let to = Destination {
            target: Some("y"),
            kubernetes: Some(&kb),
        };
        let c = check(&m, &to, &[live(&m.databases[0], true, Some("1"))]);
        assert_eq!(c.differences.len(), 2, "{c:?}");
        let same = Destination {
            target: Some("x"),
            kubernetes: Some(&ka),
        };
        assert!(!check(&m, &same, &[live(&m.databases[0], true, Some("1"))]).refuses());
    }

    #[test]
    fn what_cannot_be_compared_is_said_not_refused() {
        let m = meta(
            None,
            None,
            vec![entry("core", None), entry("jobs", Some("1"))],
        );
        let c = check(
            &m,
            &NOWHERE,
            &[
                live(&m.databases[0], true, Some("1")),
                live(&m.databases[1], true, None),
            ],
        );
        assert!(!c.refuses());
        assert_eq!(c.unchecked.len(), 2, "{c:?}");
    }
}
