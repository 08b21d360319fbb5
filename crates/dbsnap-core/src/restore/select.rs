//! Which snapshot databases a restore touches, under which live names, and
//! through which connection. Pure: names and connection settings in, a
//! pairing or a refusal out.
//!
//! Never guesses a database the user did not name: a `-d` restores into
//! exactly the database it names; a snapshot database that no `-d` (or the
//! config target) names is refused before anything starts.

use std::collections::BTreeMap;

use dbsnap_archive::snapshot::{DatabaseEntry, Metadata};
use dbsnap_pg::ConnInfo;

use crate::error::CoreError;

/// Maintenance databases: a `-d` naming one designates a server.
const MAINTENANCE: &[&str] = &["postgres", "template1"];

/// Where the connections came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `-d` flags: each must name a database of the snapshot (or a
    /// maintenance database, for the server).
    Flags,
    /// A config target: it may name more databases than the snapshot holds.
    Target,
    /// The connections recorded in the snapshot (without passwords).
    Recorded,
}

/// One snapshot database to restore.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Index in the snapshot's metadata.
    pub index: usize,
    /// Live database name.
    pub live_db: String,
    /// Connection to it.
    pub info: ConnInfo,
}

fn stem(e: &DatabaseEntry) -> &str {
    e.member.strip_suffix(".dump").unwrap_or(&e.member)
}

fn holds(m: &Metadata) -> String {
    m.databases
        .iter()
        .map(|d| {
            if stem(d) == d.name {
                d.name.clone()
            } else {
                format!("{} (as {})", d.name, stem(d))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The snapshot database a selector names: its real name when that is
/// unique in the snapshot, else its member name (`app-core-2`).
pub fn resolve(m: &Metadata, selector: &str, flag: &str) -> Result<usize, CoreError> {
    let by_name: Vec<usize> = (0..m.databases.len())
        .filter(|&i| m.databases[i].name == selector)
        .collect();
    match by_name.as_slice() {
        [one] => return Ok(*one),
        [] => {}
        many => {
            return Err(CoreError::Config {
                message: format!(
                    "{flag} {selector}: the snapshot holds {} databases named \"{selector}\" ({})",
                    many.len(),
                    many.iter()
                        .map(|&i| format!(
                            "{} from {}",
                            m.databases[i].member, m.databases[i].server
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hint: "name one by its member name instead".into(),
            })
        }
    }
    if let Some(i) = (0..m.databases.len())
        .find(|&i| m.databases[i].member == selector || stem(&m.databases[i]) == selector)
    {
        return Ok(i);
    }
    Err(CoreError::Config {
        message: format!("{flag} {selector}: the snapshot has no database \"{selector}\""),
        hint: format!("the snapshot holds: {}", holds(m)),
    })
}

/// The snapshot databases to restore (`--only`, else all) with their live
/// names (`--map`, else their own).
pub fn select(
    m: &Metadata,
    only: &[String],
    map: &BTreeMap<String, String>,
) -> Result<Vec<(usize, String)>, CoreError> {
    let mut live: BTreeMap<usize, String> = BTreeMap::new();
    for (from, to) in map {
        let i = resolve(m, from, "--map")?;
        if live.insert(i, to.clone()).is_some() {
            return Err(CoreError::Config {
                message: format!(
                    "--map names snapshot database \"{}\" twice",
                    m.databases[i].name
                ),
                hint: "give one --map per database".into(),
            });
        }
    }
    let chosen: Vec<usize> = if only.is_empty() {
        (0..m.databases.len()).collect()
    } else {
        let mut v = Vec::new();
        for s in only {
            let i = resolve(m, s, "--only")?;
            if !v.contains(&i) {
                v.push(i);
            }
        }
        v.sort();
        v
    };
    Ok(chosen
        .into_iter()
        .map(|i| {
            (
                i,
                live.get(&i)
                    .cloned()
                    .unwrap_or_else(|| m.databases[i].name.clone()),
            )
        })
        .collect())
}

/// Pairs every selected database with a connection from `given`.
pub fn assign(
    m: &Metadata,
    chosen: &[(usize, String)],
    given: &[ConnInfo],
    source: Source,
) -> Result<Vec<Selected>, CoreError> {
    let servers: Vec<&ConnInfo> = given
        .iter()
        .filter(|c| MAINTENANCE.contains(&c.dbname.as_str()))
        .collect();
    if source == Source::Flags {
        if let Some(stray) = given.iter().find(|c| {
            !MAINTENANCE.contains(&c.dbname.as_str()) && !chosen.iter().any(|(_, l)| *l == c.dbname)
        }) {
            return Err(CoreError::Config {
                message: format!(
                    "-d {}: the restore has no database \"{}\" (the snapshot holds: {})",
                    stray.display(),
                    stray.dbname,
                    holds(m)
                ),
                hint: "name each database to restore with its own -d (use --map snapshot=live to restore under \
                       another name), or pass -d …/postgres to name the server"
                    .into(),
            });
        }
    }
    let mut out = Vec::new();
    let mut unnamed = Vec::new();
    for (i, live) in chosen {
        let entry = &m.databases[*i];
        let named: Vec<&ConnInfo> = given.iter().filter(|c| &c.dbname == live).collect();
        // Mapped to another name: the server of the connection naming the
        // snapshot's database (a target's), under the new name.
        let original = given
            .iter()
            .filter(|c| c.dbname == entry.name)
            .collect::<Vec<_>>();
        let info = match named.as_slice() {
            [one] => (*one).clone(),
            [] if servers.len() == 1 => servers[0].with_dbname(live),
            [] if original.len() == 1 && *live != entry.name => original[0].with_dbname(live),
            [] => {
                unnamed.push(if *live == entry.name {
                    live.clone()
                } else {
                    format!("{} (as {live})", entry.name)
                });
                continue;
            }
            many => match many.iter().find(|c| c.server() == entry.server) {
                Some(c) => (*c).clone(),
                None => {
                    return Err(CoreError::Config {
                        message: format!(
                        "several -d name database \"{live}\" and none is the snapshot's server {}",
                        entry.server
                    ),
                        hint: "restore them one at a time with --only".into(),
                    })
                }
            },
        };
        out.push(Selected {
            index: *i,
            live_db: live.clone(),
            info,
        });
    }
    if !unnamed.is_empty() {
        return Err(CoreError::Config {
            message: format!(
                "no connection names the snapshot's database{} {}",
                if unnamed.len() > 1 { "s" } else { "" },
                unnamed.join(", ")
            ),
            hint: "restore a subset with --only NAME, or name each database with its own -d \
                   (or one -d …/postgres for the server)"
                .into(),
        });
    }
    distinct(m, out)
}

/// Pairs every selected database with the connection recorded for it in
/// the snapshot (`resolve` fills the password from the environment).
pub fn recorded(
    m: &Metadata,
    chosen: &[(usize, String)],
    resolve: impl Fn(&str) -> Result<ConnInfo, CoreError>,
) -> Result<Vec<Selected>, CoreError> {
    let mut out = Vec::new();
    for (i, live) in chosen {
        let Some(conn) = &m.databases[*i].connection else {
            return Err(CoreError::Config {
                message: format!(
                    "no connection for the snapshot's database {} (the snapshot records none)",
                    m.databases[*i].name
                ),
                hint: "pass -d <connection string> for each database".into(),
            });
        };
        out.push(Selected {
            index: *i,
            live_db: live.clone(),
            info: resolve(conn)?.with_dbname(live),
        });
    }
    distinct(m, out)
}

/// Two snapshot databases must never land in one live database.
fn distinct(m: &Metadata, out: Vec<Selected>) -> Result<Vec<Selected>, CoreError> {
    for (a, x) in out.iter().enumerate() {
        if let Some(y) = out[a + 1..]
            .iter()
            .find(|y| y.live_db == x.live_db && y.info.server() == x.info.server())
        {
            return Err(CoreError::Config {
                message: format!(
                    "snapshot databases {} and {} would both be restored into {}",
                    stem(&m.databases[x.index]),
                    stem(&m.databases[y.index]),
                    x.info.display()
                ),
                hint: "use --only to restore one of them, or --map to give each its own name"
                    .into(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbsnap_archive::snapshot::{Consistency, ConsistencyMethod};

    fn entry(name: &str, member: &str, server: &str) -> DatabaseEntry {
        DatabaseEntry {
            name: name.into(),
            member: member.into(),
            server: server.into(),
            server_version: "15.1".into(),
            server_version_num: 150001,
            pg_dump_version: "15.1".into(),
            schema_version: None,
            connection: None,
            system_identifier: None,
        }
    }

    fn meta(dbs: Vec<DatabaseEntry>) -> Metadata {
        Metadata {
            format_version: "1.0".into(),
            tool_version: "dbsnap".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            target: None,
            prefix: "x".into(),
            safety_for: None,
            consistency: Consistency {
                method: ConsistencyMethod::None,
                consistent_cut: false,
                attempts: 1,
                snapshot: None,
            },
            databases: dbs,
            kubernetes: None,
            encryption: None,
        }
    }

    fn conn(s: &str) -> ConnInfo {
        ConnInfo::resolve_with(s, &BTreeMap::<String, String>::new()).unwrap()
    }

    fn err(r: Result<impl std::fmt::Debug, CoreError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_mapped_database_goes_to_the_server_of_the_targets_connection() {
        let m = meta(vec![
            entry("app-core", "app-core.dump", "h:5432"),
            entry("app-backend", "app-backend.dump", "h:5432"),
        ]);
        let map = BTreeMap::from([("app-core".to_string(), "app-core-copy".to_string())]);
        let chosen = select(&m, &["app-core".to_string()], &map).unwrap();
        let target = [
            conn("host=h port=5432 dbname=app-core user=u"),
            conn("host=h port=5432 dbname=app-backend user=u"),
        ];
        let got = assign(&m, &chosen, &target, Source::Target).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].live_db, "app-core-copy");
        assert_eq!(got[0].info.dbname, "app-core-copy");
        assert_eq!(got[0].info.user, "u");
    }

    #[test]
    fn one_d_restores_exactly_what_it_names() {
        let m = meta(vec![
            entry("plat", "plat.dump", "h:5432"),
            entry("plat2", "plat2.dump", "h:5432"),
        ]);
        let chosen = select(&m, &[], &BTreeMap::new()).unwrap();
        let e = err(assign(
            &m,
            &chosen,
            &[conn("host=h dbname=plat2 user=u")],
            Source::Flags,
        ));
        assert!(
            e.contains("no connection names the snapshot's database plat"),
            "{e}"
        );
        assert!(e.contains("--only"), "{e}");
        // --only plat2 restores exactly plat2.
        let chosen = select(&m, &["plat2".into()], &BTreeMap::new()).unwrap();
        let s = assign(
            &m,
            &chosen,
            &[conn("host=h dbname=plat2 user=u")],
            Source::Flags,
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].live_db, "plat2");
        // Naming each, or the server, restores all.
        let chosen = select(&m, &[], &BTreeMap::new()).unwrap();
        let both = [
            conn("host=h dbname=plat2 user=u"),
            conn("host=h dbname=plat user=u"),
        ];
        let s = assign(&m, &chosen, &both, Source::Flags).unwrap();
        assert_eq!(
            s.iter().map(|s| s.info.dbname.as_str()).collect::<Vec<_>>(),
            ["plat", "plat2"]
        );
        let s = assign(
            &m,
            &chosen,
            &[conn("host=h dbname=postgres user=u")],
            Source::Flags,
        )
        .unwrap();
        assert_eq!(
            s.iter().map(|s| s.info.dbname.as_str()).collect::<Vec<_>>(),
            ["plat", "plat2"]
        );
        // A -d naming a database the restore lacks is a typo, not a server.
        let e = err(assign(
            &m,
            &chosen,
            &[conn("host=h dbname=plat3 user=u")],
            Source::Flags,
        ));
        assert!(e.contains("has no database \"plat3\""), "{e}");
        // A config target may name more than the snapshot holds.
        let target = [
            conn("host=h dbname=plat"),
            conn("host=h dbname=plat2"),
            conn("host=h dbname=other"),
        ];
        assert_eq!(
            assign(&m, &chosen, &target, Source::Target).unwrap().len(),
            2
        );
    }

    #[test]
    fn selectors_take_real_and_member_names() {
        let m = meta(vec![
            entry("Tørture-DB", "Tørture-DB.dump", "a:1"),
            entry("app-core", "app-core.dump", "a:1"),
            entry("app-core", "app-core-2.dump", "b:2"),
        ]);
        assert_eq!(resolve(&m, "Tørture-DB", "--only").unwrap(), 0);
        assert_eq!(resolve(&m, "app-core-2", "--only").unwrap(), 2);
        let e = err(resolve(&m, "app-core", "--only"));
        assert!(
            e.contains(
                "2 databases named \"app-core\" (app-core.dump from a:1, app-core-2.dump from b:2)"
            ),
            "{e}"
        );
        let e = err(resolve(&m, "nope", "--only"));
        assert!(e.contains("app-core (as app-core-2)"), "{e}");
        // Same-named databases pair with the -d on their own server.
        let chosen = select(
            &m,
            &["app-core.dump".into(), "app-core-2".into()],
            &BTreeMap::new(),
        )
        .unwrap();
        let given = [
            conn("host=b port=2 dbname=app-core"),
            conn("host=a port=1 dbname=app-core"),
        ];
        let s = assign(&m, &chosen, &given, Source::Flags).unwrap();
        assert_eq!(
            s.iter()
                .map(|s| s.info.hosts[0].as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn two_snapshot_databases_never_land_in_one() {
        let m = meta(vec![
            entry("app-core", "app-core.dump", "a:1"),
            entry("app-core", "app-core-2.dump", "b:2"),
        ]);
        let mut map = BTreeMap::new();
        map.insert("app-core-2".to_string(), "xx".to_string());
        map.insert("app-core.dump".to_string(), "xx".to_string());
        let chosen = select(&m, &[], &map).unwrap();
        let e = err(assign(
            &m,
            &chosen,
            &[conn("host=n dbname=postgres")],
            Source::Flags,
        ));
        assert!(
            e.contains("app-core and app-core-2 would both be restored into"),
            "{e}"
        );
    }
}
