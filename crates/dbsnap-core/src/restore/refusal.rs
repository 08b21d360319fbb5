//! Why a restore refuses a database: each [`Refusal`] of
//! [`decide`](super::decide) with its exit code, its message and what to
//! do about it.

use std::collections::BTreeMap;

use crate::error::exit;

/// Why a database will not be restored. Every variant says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The live database does not exist and `--create` was not given.
    NoDatabase { live_db: String },
    /// The live schema is older than the snapshot's.
    LiveOlder {
        live_db: String,
        live: String,
        snapshot: String,
    },
    /// Migrations applied on one side only.
    Diverged {
        live_db: String,
        only_live: Vec<String>,
        only_snapshot: Vec<String>,
    },
    /// Versions that cannot be compared.
    Unknown {
        live_db: String,
        live: String,
        snapshot: String,
    },
    /// A migration failed or is running.
    Dirty {
        live_db: String,
        live: String,
        snapshot: String,
    },
    /// The snapshot comes from a newer PostgreSQL.
    Downgrade { live_db: String, from: u32, to: u32 },
    /// Equal versions, but the live schema lacks what the snapshot has.
    SchemaDrift {
        live_db: String,
        missing: Vec<String>,
    },
    /// Objects only their owner may replace.
    NotOwned {
        live_db: String,
        objects: Vec<(String, String)>,
    },
    /// Roles the archive needs that the server lacks.
    MissingRoles { live_db: String, roles: Vec<String> },
    /// Per-role settings the connected role may not set.
    RoleSettings { live_db: String, roles: Vec<String> },
    /// Extensions the archive creates that the server does not have.
    MissingExtensions {
        live_db: String,
        server_major: u32,
        extensions: Vec<String>,
    },
    /// Extensions only a superuser may create, for a role that is not one.
    ExtensionPrivilege {
        live_db: String,
        extensions: Vec<String>,
    },
}

impl Refusal {
    /// The exit code (docs/SCRIPTING.md's table).
    pub fn code(&self) -> u8 {
        match self {
            Refusal::NoDatabase { .. } => exit::NO_DATABASE,
            Refusal::LiveOlder { .. } => exit::LIVE_OLDER,
            Refusal::Diverged { .. }
            | Refusal::Unknown { .. }
            | Refusal::Dirty { .. }
            | Refusal::Downgrade { .. }
            | Refusal::SchemaDrift { .. } => exit::VERSION_MISMATCH,
            Refusal::NotOwned { .. }
            | Refusal::RoleSettings { .. }
            | Refusal::ExtensionPrivilege { .. } => exit::PRIVILEGE,
            Refusal::MissingRoles { .. } | Refusal::MissingExtensions { .. } => exit::USAGE,
        }
    }

    /// The problem in one line (the caller names the database).
    pub fn message(&self) -> String {
        match self {
            Refusal::NoDatabase { live_db } => {
                format!("database \"{live_db}\" does not exist (use --create to create it)")
            }
            Refusal::LiveOlder { live, snapshot, .. } => format!(
                "the live schema ({live}) is older than the snapshot's ({snapshot}): \
                 upgrade the app first, or use --drop"
            ),
            Refusal::Diverged {
                only_live,
                only_snapshot,
                ..
            } => format!(
                "schema versions diverged: only live has [{}], only the snapshot has [{}]",
                only_live.join(", "),
                only_snapshot.join(", ")
            ),
            Refusal::Unknown { live, snapshot, .. } => {
                format!("the schema versions cannot be compared (live {live}, snapshot {snapshot})")
            }
            Refusal::Dirty { live, snapshot, .. } => format!(
                "a schema version is dirty (live {live}, snapshot {snapshot}): \
                 a migration failed or is running"
            ),
            Refusal::Downgrade { from, to, .. } => format!(
                "downgrade from PostgreSQL {from} to {to}: objects using newer features \
                 will fail (pass --allow-downgrade to try anyway)"
            ),
            Refusal::SchemaDrift { missing, .. } => format!(
                "the schema versions are equal but the live database lacks {}",
                missing.join(", ")
            ),
            Refusal::NotOwned { objects, .. } => {
                format!("only their owners may replace {}", group_by_owner(objects))
            }
            Refusal::MissingRoles { roles, .. } => {
                format!(
                    "the snapshot names roles the server lacks: {}",
                    roles.join(", ")
                )
            }
            Refusal::RoleSettings { roles, .. } => format!(
                "the snapshot has per-role settings for {} that the connecting role may not set",
                roles.join(", ")
            ),
            Refusal::MissingExtensions {
                server_major,
                extensions,
                ..
            } => format!(
                "the snapshot creates extensions this PostgreSQL {server_major} server does not have: {} \
                 (not in its pg_available_extensions)",
                extensions.join(", ")
            ),
            Refusal::ExtensionPrivilege { extensions, .. } => format!(
                "only a superuser may create extensions {} (not trusted), and the connecting role is not one",
                extensions.join(", ")
            ),
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        let hint = match self {
            Refusal::NoDatabase { .. } => "pass --create, or --map to another name",
            Refusal::LiveOlder { .. } => {
                "upgrade the application to the snapshot's version first, or use --drop to replace the database"
            }
            Refusal::Diverged { .. } | Refusal::Unknown { .. } | Refusal::Dirty { .. } => {
                "use --drop to replace the database with the snapshot's (a safety snapshot is taken first)"
            }
            Refusal::Downgrade { .. } => {
                "restore into a server at least as new as the snapshot's, or pass --allow-downgrade"
            }
            Refusal::SchemaDrift { .. } => {
                "the schema was changed outside migrations; restore with --drop to replace it"
            }
            Refusal::NotOwned { .. } => {
                "connect as the owner or a superuser, or make the connecting role a member of the owner \
                 (GRANT owner TO role)"
            }
            Refusal::MissingRoles { .. } => {
                "create those roles first, or pass --create-roles to create them (NOLOGIN); --no-owner \
                 and --no-privileges leave out ownership and grants"
            }
            Refusal::RoleSettings { .. } => {
                "connect as a superuser, or a role with CREATEROLE (and ADMIN OPTION on those roles on \
                 PostgreSQL 16+)"
            }
            Refusal::MissingExtensions { server_major, .. } => {
                return format!(
                    "install the package providing each on the server (contrib modules such as pgcrypto \
                     come with PostgreSQL's contrib package, others with their own: \
                     postgresql-{server_major}-NAME), or restore into a server that has them"
                )
            }
            Refusal::ExtensionPrivilege { .. } => {
                "restore as a superuser: the restore creates a new database's extensions, and only a superuser may create these"
            }
        };
        hint.into()
    }
}

fn group_by_owner(objects: &[(String, String)]) -> String {
    let mut by_owner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (what, owner) in objects {
        by_owner.entry(owner).or_default().push(what);
    }
    by_owner
        .iter()
        .map(|(owner, what)| {
            let shown: Vec<&str> = what.iter().take(8).copied().collect();
            let more = what.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{}{more} (owner {owner})", shown.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
