//! The extensions a schema restore creates, against what the live server
//! offers (`pg_available_extensions`): the part of [`decide`](super::decide)
//! that names an extension the server lacks before anything starts,
//! instead of pg_restore failing on its `CREATE EXTENSION`. Pure.

use super::decide::{Facts, Refusal};
use super::Action;

/// What stops `action` in the archive's extensions: nothing for a
/// data-only restore (the schema stays); the extensions the server does
/// not have; and, for a new database (swap, create) that a role which is
/// not a superuser fills, those only a superuser may create. One that is
/// available but not installed is fine: pg_restore creates it.
pub(super) fn refusals(f: &Facts, action: Action) -> Vec<Refusal> {
    if action == Action::DataOnly {
        return Vec::new();
    }
    let status = |e: &String| f.extensions.get(e).copied().unwrap_or_default();
    let named = |keep: &dyn Fn(&String) -> bool| -> Vec<String> {
        f.archive
            .extensions
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect()
    };
    let missing = named(&|e| !status(e).available);
    let new_db = matches!(action, Action::SwapRestore | Action::Create);
    let superuser_only = if new_db && !f.role.superuser {
        named(&|e| status(e).available && status(e).superuser_only)
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    if !missing.is_empty() {
        out.push(Refusal::MissingExtensions {
            live_db: f.live_db.clone(),
            server_major: f.server_major,
            extensions: missing,
        });
    }
    if !superuser_only.is_empty() {
        out.push(Refusal::ExtensionPrivilege {
            live_db: f.live_db.clone(),
            extensions: superuser_only,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::decide::{decide_all, Choices, ExtensionStatus, RoleFacts};
    use super::*;
    use crate::error::exit;

    /// A database to create with `--create` on PostgreSQL 18 by a role
    /// with CREATEDB, whose archive creates `extensions`.
    fn facts(extensions: &[(&str, Option<ExtensionStatus>)]) -> Facts {
        let mut f = Facts {
            live_db: "app".into(),
            server_major: 18,
            snapshot_major: 15,
            role: RoleFacts {
                name: "app".into(),
                createdb: true,
                ..Default::default()
            },
            ..Default::default()
        };
        for (name, status) in extensions {
            f.archive.extensions.insert(name.to_string());
            if let Some(s) = status {
                f.extensions.insert(name.to_string(), *s);
            }
        }
        f
    }

    const AVAILABLE: Option<ExtensionStatus> = Some(ExtensionStatus {
        available: true,
        superuser_only: false,
    });
    const SUPERUSER_ONLY: Option<ExtensionStatus> = Some(ExtensionStatus {
        available: true,
        superuser_only: true,
    });
    const MISSING: Option<ExtensionStatus> = Some(ExtensionStatus {
        available: false,
        superuser_only: false,
    });
    const CREATE: Choices = Choices {
        create: true,
        drop: false,
        no_owner: false,
        no_privileges: false,
        create_roles: false,
        allow_downgrade: false,
    };

    #[test]
    fn an_extension_the_server_lacks_is_refused_beside_missing_roles() {
        // Available (installed or not): pg_restore creates it.
        assert!(decide_all(&facts(&[("citext", AVAILABLE)]), CREATE).is_ok());
        // Not in pg_available_extensions (or not reported at all).
        let f = facts(&[
            ("citext", AVAILABLE),
            ("pgcrypto", MISSING),
            ("uuid-ossp", None),
        ]);
        let r = decide_all(&f, CREATE).unwrap_err();
        assert_eq!(
            r,
            [Refusal::MissingExtensions {
                live_db: "app".into(),
                server_major: 18,
                extensions: vec!["pgcrypto".into(), "uuid-ossp".into()],
            }]
        );
        assert_eq!(r[0].code(), exit::USAGE);
        assert!(
            r[0].message()
                .contains("PostgreSQL 18 server does not have: pgcrypto, uuid-ossp"),
            "{}",
            r[0].message()
        );
        assert!(
            r[0].hint().contains("postgresql-18-NAME"),
            "{}",
            r[0].hint()
        );
        // With a missing role: both, in one refusal list.
        let mut f = f;
        f.archive.owners.insert("appowner".into());
        let r = decide_all(&f, CREATE).unwrap_err();
        assert!(matches!(r[0], Refusal::MissingRoles { .. }), "{r:?}");
        assert!(matches!(r[1], Refusal::MissingExtensions { .. }), "{r:?}");
        // A data-only restore creates no extension.
        assert!(refusals(&f, Action::DataOnly).is_empty());
        assert_eq!(refusals(&f, Action::ReplaceInPlace).len(), 1);
    }

    #[test]
    fn an_untrusted_extension_in_a_new_database_needs_a_superuser() {
        let mut f = facts(&[("dblink", SUPERUSER_ONLY), ("citext", AVAILABLE)]);
        let r = decide_all(&f, CREATE).unwrap_err();
        assert_eq!(
            r,
            [Refusal::ExtensionPrivilege {
                live_db: "app".into(),
                extensions: vec!["dblink".into()],
            }]
        );
        assert_eq!(r[0].code(), exit::PRIVILEGE);
        // In place, the live database keeps the extensions it has.
        assert!(refusals(&f, Action::ReplaceInPlace).is_empty());
        f.role.superuser = true;
        assert!(decide_all(&f, CREATE).is_ok());
    }
}
