//! The restore decision table, as a pure function: facts about one database
//! (gathered by `plan`) and the user's choices in, an action or a typed
//! refusal out. No I/O here, so every row is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use dbsnap_archive::toc::{ArchiveFacts, DbStatementKind};
use dbsnap_archive::version::{Comparison, SchemaVersion};

use super::data_only::Obstacle;
use super::Action;

pub use super::refusal::Refusal;
pub use dbsnap_pg::admin::{ExtensionStatus, RoleFacts, RoleStatus};

/// Everything `decide` needs about one database.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Name in the snapshot.
    pub snapshot_db: String,
    /// Live database name.
    pub live_db: String,
    /// Whether the live database exists.
    pub exists: bool,
    /// Live schema version, if it exists and has one.
    pub live_version: Option<SchemaVersion>,
    /// The snapshot's schema version.
    pub snapshot_version: Option<SchemaVersion>,
    /// Major version of the server the snapshot was taken from.
    pub snapshot_major: u32,
    /// Major version of the live server.
    pub server_major: u32,
    /// The connected role.
    pub role: RoleFacts,
    /// Every role the archive names, as seen from the live server.
    pub roles: BTreeMap<String, RoleStatus>,
    /// Every extension the archive creates, as the live server offers it.
    pub extensions: BTreeMap<String, ExtensionStatus>,
    /// What the archive holds besides its objects.
    pub archive: ArchiveFacts,
    /// Why a data-only restore could not run (checked when the database exists).
    pub data_only_obstacles: Vec<Obstacle>,
}

/// The user's choices that change the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Choices {
    /// `--drop`: replace whatever the versions say.
    pub drop: bool,
    /// `--create`: create a missing database.
    pub create: bool,
    /// `--no-owner`.
    pub no_owner: bool,
    /// `--no-privileges`.
    pub no_privileges: bool,
    /// `--create-roles`.
    pub create_roles: bool,
    /// `--allow-downgrade`.
    pub allow_downgrade: bool,
}

/// What will be done to one database, and what the plan must say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The action.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// Things the user must know before confirming.
    pub warnings: Vec<String>,
    /// Roles to create (NOLOGIN) first.
    pub roles_to_create: Vec<String>,
    /// Owner of a new database (swap, create); None: the connected role.
    pub new_owner: Option<String>,
}

fn show(v: &Option<SchemaVersion>) -> String {
    v.as_ref()
        .map(|v| v.display())
        .unwrap_or_else(|| "none".into())
}

fn describe(v: &Option<SchemaVersion>) -> String {
    match v {
        Some(v) => format!("{} {}", v.tool, v.display()),
        None => "no migration table".into(),
    }
}

/// Decides what to do with one database; the first refusal when there
/// are several.
pub fn decide(f: &Facts, c: Choices) -> Result<Decision, Refusal> {
    decide_all(f, c).map_err(|mut all| all.remove(0))
}

/// [`decide`], with every refusal of the restore's prerequisites (roles
/// and extensions) at once, so one run names everything to fix.
pub fn decide_all(f: &Facts, c: Choices) -> Result<Decision, Vec<Refusal>> {
    let (mut d, roles) = decide_one(f, c).map_err(|r| vec![r])?;
    let mut refusals: Vec<Refusal> = roles.err().into_iter().collect();
    refusals.extend(super::extensions::refusals(f, d.action));
    if !refusals.is_empty() {
        return Err(refusals);
    }
    if d.action == Action::ReplaceInPlace {
        d.warnings.push(format!(
            "the role cannot create databases; {} will be replaced in place, inside one transaction \
             (objects owned by other roles are left alone)",
            f.live_db
        ));
    }
    Ok(d)
}

/// The decision before its prerequisites, and whether the roles are there.
fn decide_one(f: &Facts, c: Choices) -> Result<(Decision, Result<(), Refusal>), Refusal> {
    let live_db = f.live_db.clone();
    let replace = if f.role.createdb || f.role.superuser {
        Action::SwapRestore
    } else {
        Action::ReplaceInPlace
    };
    let (action, reason) = if !f.exists {
        if !c.create {
            return Err(Refusal::NoDatabase { live_db });
        }
        (
            Action::Create,
            "the database does not exist: it will be created".to_string(),
        )
    } else if c.drop {
        (replace, "--drop: the database is replaced".to_string())
    } else {
        version_action(f, replace)?
    };
    let mut d = Decision {
        action,
        reason,
        warnings: vec![],
        roles_to_create: vec![],
        new_owner: None,
    };
    if f.snapshot_major > f.server_major && f.server_major > 0 {
        if !c.allow_downgrade {
            return Err(Refusal::Downgrade {
                live_db,
                from: f.snapshot_major,
                to: f.server_major,
            });
        }
        d.warnings.push(format!(
            "downgrade from PostgreSQL {} to {}: objects using newer features will fail",
            f.snapshot_major, f.server_major
        ));
    }
    if action == Action::DataOnly {
        if let Some(o) = f.data_only_obstacles.first() {
            return Err(match o {
                Obstacle::Missing(missing) => Refusal::SchemaDrift {
                    live_db,
                    missing: missing.clone(),
                },
                Obstacle::NotOwned(objects) => Refusal::NotOwned {
                    live_db,
                    objects: objects.clone(),
                },
            });
        }
        return Ok((d, Ok(())));
    }
    let roles = roles_for_schema(f, c, &mut d);
    Ok((d, roles))
}

/// The decision table's rows for an existing database without `--drop`.
fn version_action(f: &Facts, replace: Action) -> Result<(Action, String), Refusal> {
    let live_db = f.live_db.clone();
    let (l, s) = (&f.live_version, &f.snapshot_version);
    if l.as_ref().is_some_and(|v| v.dirty) || s.as_ref().is_some_and(|v| v.dirty) {
        return Err(Refusal::Dirty {
            live_db,
            live: show(l),
            snapshot: show(s),
        });
    }
    let comparison = match (l, s) {
        (Some(l), Some(s)) => l.compare(s),
        _ => Comparison::Unknown,
    };
    match comparison {
        Comparison::Equal => Ok((
            Action::DataOnly,
            "schema versions are equal: data-only restore".into(),
        )),
        Comparison::LiveNewer => Ok((
            replace,
            format!(
                "the live schema is newer ({} > {}): the database is replaced by the snapshot's",
                show(l),
                show(s)
            ),
        )),
        Comparison::LiveOlder => Err(Refusal::LiveOlder {
            live_db,
            live: show(l),
            snapshot: show(s),
        }),
        Comparison::Diverged => {
            let (l, s) = (l.as_ref().expect("compared"), s.as_ref().expect("compared"));
            let only = |a: &SchemaVersion, b: &SchemaVersion| -> Vec<String> {
                a.applied
                    .iter()
                    .filter(|x| !b.applied.contains(x))
                    .take(5)
                    .cloned()
                    .collect()
            };
            Err(Refusal::Diverged {
                live_db,
                only_live: only(l, s),
                only_snapshot: only(s, l),
            })
        }
        Comparison::Unknown => Err(Refusal::Unknown {
            live_db,
            live: describe(l),
            snapshot: describe(s),
        }),
    }
}

/// Roles a schema restore needs: owners (unless `--no-owner`), grantees
/// (unless `--no-privileges`), roles in policies, and for a new database
/// its owner and the roles of its per-role settings.
fn roles_for_schema(f: &Facts, c: Choices, d: &mut Decision) -> Result<(), Refusal> {
    let new_db = matches!(d.action, Action::SwapRestore | Action::Create);
    let a = &f.archive;
    let mut needed: BTreeSet<String> = a.other_roles.clone();
    if !c.no_owner {
        needed.extend(a.owners.iter().cloned());
    }
    if !c.no_privileges {
        needed.extend(a.privilege_roles.iter().cloned());
    }
    let db = a.database.as_ref().filter(|_| new_db);
    let setting_roles: Vec<String> = db
        .map(|p| {
            p.statements
                .iter()
                .filter_map(|s| match &s.kind {
                    DbStatementKind::RoleSetting { role } => Some(role.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(p) = db {
        needed.extend(p.roles(!c.no_privileges));
        if !c.no_owner {
            needed.extend(p.owner.iter().cloned());
        }
    }
    let status = |r: &str| f.roles.get(r).copied().unwrap_or_default();
    let missing: Vec<String> = needed
        .iter()
        .filter(|r| !status(r).exists)
        .cloned()
        .collect();
    if !missing.is_empty() {
        if !c.create_roles {
            return Err(Refusal::MissingRoles {
                live_db: f.live_db.clone(),
                roles: missing,
            });
        }
        d.warnings.push(format!(
            "roles {} will be created (NOLOGIN)",
            missing.join(", ")
        ));
        d.roles_to_create = missing;
    }
    let created = |r: &str| d.roles_to_create.iter().any(|x| x == r);
    // ALTER ROLE ... IN DATABASE: superuser; or CREATEROLE (with ADMIN
    // OPTION on the role from PostgreSQL 16; a role we create qualifies).
    let may_set = |r: &str| {
        f.role.superuser
            || r == f.role.name
            || (f.role.createrole && (f.server_major < 16 || status(r).admin || created(r)))
    };
    let refused: Vec<String> = setting_roles
        .iter()
        .filter(|r| !may_set(r))
        .cloned()
        .collect();
    if !refused.is_empty() {
        return Err(Refusal::RoleSettings {
            live_db: f.live_db.clone(),
            roles: refused,
        });
    }
    if let Some(owner) = db.and_then(|p| p.owner.clone()).filter(|_| !c.no_owner) {
        if f.role.superuser || owner == f.role.name || status(&owner).member {
            d.new_owner = Some(owner);
        } else {
            d.warnings.push(format!(
                "the new database will belong to {} instead of {owner}: {} is not a member of {owner}",
                f.role.name, f.role.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;
    use dbsnap_archive::toc::{DatabaseProps, DbStatement};
    use dbsnap_archive::version::VersionModel;

    fn version(ids: &[&str], dirty: bool) -> Option<SchemaVersion> {
        Some(SchemaVersion {
            tool: "golang-migrate".into(),
            source: "schema_migrations".into(),
            model: VersionModel::Set,
            applied: ids.iter().map(|s| s.to_string()).collect(),
            dirty,
            failed: vec![],
        })
    }

    fn facts() -> Facts {
        Facts {
            snapshot_db: "app".into(),
            live_db: "app".into(),
            exists: true,
            live_version: version(&["1", "2"], false),
            snapshot_version: version(&["1", "2"], false),
            snapshot_major: 15,
            server_major: 15,
            role: RoleFacts {
                name: "app".into(),
                createdb: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn owner_facts() -> Facts {
        let mut f = facts();
        f.archive.owners.insert("app".into());
        f.roles.insert(
            "app".into(),
            RoleStatus {
                exists: true,
                member: true,
                admin: false,
            },
        );
        f
    }

    #[test]
    fn the_decision_table() {
        let c = Choices::default();
        // equal -> data-only
        assert_eq!(decide(&facts(), c).unwrap().action, Action::DataOnly);
        // live newer -> replace (swap with CREATEDB, in place without)
        let mut f = owner_facts();
        f.live_version = version(&["1", "2", "3"], false);
        assert_eq!(decide(&f, c).unwrap().action, Action::SwapRestore);
        f.role.createdb = false;
        let d = decide(&f, c).unwrap();
        assert_eq!(d.action, Action::ReplaceInPlace);
        assert!(d.warnings[0].contains("in place"), "{d:?}");
        // live older -> refused (13)
        let mut f = facts();
        f.live_version = version(&["1"], false);
        let r = decide(&f, c).unwrap_err();
        assert!(matches!(r, Refusal::LiveOlder { .. }));
        assert_eq!(r.code(), exit::LIVE_OLDER);
        // diverged -> refused (14), the differing ids shown
        f.live_version = version(&["1", "3"], false);
        let r = decide(&f, c).unwrap_err();
        assert_eq!(r.code(), exit::VERSION_MISMATCH);
        assert!(
            r.message()
                .contains("only live has [3], only the snapshot has [2]"),
            "{}",
            r.message()
        );
        // unknown (no table on one side) -> refused (14)
        f.live_version = None;
        assert!(matches!(
            decide(&f, c).unwrap_err(),
            Refusal::Unknown { .. }
        ));
        // dirty -> refused (14), whatever the comparison
        f.live_version = version(&["1", "2"], true);
        assert!(matches!(decide(&f, c).unwrap_err(), Refusal::Dirty { .. }));
        // missing -> refused (5), or created with --create
        let mut f = owner_facts();
        f.exists = false;
        let r = decide(&f, c).unwrap_err();
        assert_eq!(r.code(), exit::NO_DATABASE);
        let d = decide(&f, Choices { create: true, ..c }).unwrap();
        assert_eq!(d.action, Action::Create);
    }

    #[test]
    fn drop_replaces_whatever_the_versions_say() {
        let c = Choices {
            drop: true,
            ..Default::default()
        };
        for live in [version(&["1"], false), version(&["9"], true), None] {
            let mut f = owner_facts();
            f.live_version = live;
            assert_eq!(decide(&f, c).unwrap().action, Action::SwapRestore);
        }
        // --drop does not create: a missing database still needs --create.
        let mut f = owner_facts();
        f.exists = false;
        assert!(matches!(
            decide(&f, c).unwrap_err(),
            Refusal::NoDatabase { .. }
        ));
    }

    #[test]
    fn downgrade_needs_allow_downgrade() {
        let mut f = facts();
        f.snapshot_major = 18;
        let r = decide(&f, Choices::default()).unwrap_err();
        assert_eq!(
            r,
            Refusal::Downgrade {
                live_db: "app".into(),
                from: 18,
                to: 15
            }
        );
        let d = decide(
            &f,
            Choices {
                allow_downgrade: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            d.warnings[0].contains("downgrade from PostgreSQL 18 to 15"),
            "{d:?}"
        );
        // An upgrade is silent.
        f.snapshot_major = 13;
        assert!(decide(&f, Choices::default()).unwrap().warnings.is_empty());
    }

    #[test]
    fn data_only_obstacles_refuse_before_anything_starts() {
        let mut f = facts();
        f.data_only_obstacles = vec![Obstacle::NotOwned(vec![
            ("large object 5001".into(), "alice".into()),
            ("table public.t".into(), "bob".into()),
            ("large object 5002".into(), "alice".into()),
        ])];
        let r = decide(&f, Choices::default()).unwrap_err();
        assert_eq!(r.code(), exit::PRIVILEGE);
        assert_eq!(
            r.message(),
            "only their owners may replace large object 5001, large object 5002 (owner alice); \
             table public.t (owner bob)"
        );
        f.data_only_obstacles = vec![Obstacle::Missing(vec!["table public.gone".into()])];
        assert!(matches!(
            decide(&f, Choices::default()).unwrap_err(),
            Refusal::SchemaDrift { .. }
        ));
        // Obstacles to data-only do not matter when the database is replaced.
        let c = Choices {
            drop: true,
            ..Default::default()
        };
        f.archive.owners.insert("app".into());
        f.roles.insert(
            "app".into(),
            RoleStatus {
                exists: true,
                member: true,
                admin: false,
            },
        );
        assert_eq!(decide(&f, c).unwrap().action, Action::SwapRestore);
    }

    fn with_props(f: &mut Facts) {
        f.archive.privilege_roles.insert("reader".into());
        f.archive.other_roles.insert("auditor".into());
        f.archive.database = Some(DatabaseProps {
            name: "app".into(),
            owner: Some("dbowner".into()),
            create: None,
            statements: vec![DbStatement {
                kind: DbStatementKind::RoleSetting {
                    role: "tuner".into(),
                },
                sql: "ALTER ROLE tuner IN DATABASE app SET work_mem TO '8MB'".into(),
            }],
        });
    }

    #[test]
    fn every_role_the_archive_names_is_checked() {
        let mut f = owner_facts();
        f.exists = false;
        f.role.superuser = true;
        with_props(&mut f);
        let create = Choices {
            create: true,
            ..Default::default()
        };
        let r = decide(&f, create).unwrap_err();
        assert_eq!(
            r,
            Refusal::MissingRoles {
                live_db: "app".into(),
                roles: vec![
                    "auditor".into(),
                    "dbowner".into(),
                    "reader".into(),
                    "tuner".into()
                ]
            }
        );
        // --no-privileges drops the grantees, --no-owner the owners; policy
        // roles and per-role settings stay needed.
        let r = decide(
            &f,
            Choices {
                no_owner: true,
                no_privileges: true,
                ..create
            },
        )
        .unwrap_err();
        assert_eq!(
            r,
            Refusal::MissingRoles {
                live_db: "app".into(),
                roles: vec!["auditor".into(), "tuner".into()]
            }
        );
        // --create-roles creates them all; the new database gets its owner.
        let d = decide(
            &f,
            Choices {
                create_roles: true,
                ..create
            },
        )
        .unwrap();
        assert_eq!(d.roles_to_create, ["auditor", "dbowner", "reader", "tuner"]);
        assert_eq!(d.new_owner.as_deref(), Some("dbowner"));
        // In place, the database itself is not replaced: its roles do not matter.
        let mut f = owner_facts();
        f.role.createdb = false;
        f.live_version = version(&["1", "2", "3"], false);
        with_props(&mut f);
        for r in ["reader", "auditor"] {
            f.roles.insert(
                r.into(),
                RoleStatus {
                    exists: true,
                    ..Default::default()
                },
            );
        }
        assert_eq!(
            decide(&f, Choices::default()).unwrap().action,
            Action::ReplaceInPlace
        );
    }

    #[test]
    fn new_database_owner_and_role_settings_need_privileges() {
        let mut f = owner_facts();
        f.exists = false;
        with_props(&mut f);
        for r in ["reader", "auditor", "dbowner", "tuner"] {
            f.roles.insert(
                r.into(),
                RoleStatus {
                    exists: true,
                    ..Default::default()
                },
            );
        }
        let create = Choices {
            create: true,
            ..Default::default()
        };
        // Neither superuser nor CREATEROLE: per-role settings refused (6).
        let r = decide(&f, create).unwrap_err();
        assert_eq!(r.code(), exit::PRIVILEGE);
        assert!(matches!(r, Refusal::RoleSettings { .. }));
        // CREATEROLE suffices before 16; from 16 ADMIN OPTION is needed.
        f.role.createrole = true;
        let d = decide(&f, create).unwrap();
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("will belong to app instead of dbowner")),
            "{d:?}"
        );
        assert_eq!(d.new_owner, None);
        f.server_major = 16;
        f.snapshot_major = 16;
        assert!(decide(&f, create).is_err());
        f.roles.get_mut("tuner").unwrap().admin = true;
        f.roles.get_mut("dbowner").unwrap().member = true;
        let d = decide(&f, create).unwrap();
        assert_eq!(d.new_owner.as_deref(), Some("dbowner"));
        assert!(d.warnings.is_empty(), "{d:?}");
    }
}
