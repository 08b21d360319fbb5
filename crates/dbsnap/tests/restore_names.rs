//! Which databases a restore touches: exactly those the command line (or
//! the config, or the snapshot's own record) names, under names a user
//! typed: real database names (any script), or member names where two
//! snapshot databases share a name.

mod common;

use common::{run_json, Home};
use dbsnap_test_support::{Cluster, SUPERUSER_PASSWORD};

const MIGRATIONS: &str =
    "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
     INSERT INTO schema_migrations VALUES (1, false); \
     CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)";

/// A key=value connection string for `db` (any characters) as the superuser.
fn conn(cluster: &Cluster, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres password={SUPERUSER_PASSWORD} dbname='{}'",
        cluster.port,
        db.replace('\'', "\\'")
    )
}

fn restore(
    home: &Home,
    cluster: &Cluster,
    file: &str,
    conns: &[String],
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let mut cmd = common::quick_restore_urls(home, cluster, file, conns);
    run_json(cmd.args(extra))
}

fn planned(v: &serde_json::Value) -> Vec<String> {
    v["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("no databases in {v}"))
        .iter()
        .map(|d| {
            format!(
                "{}@{}",
                d["live_db"].as_str().unwrap(),
                d["server"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn real_names_member_names_and_exactly_what_is_named() {
    let cluster = Cluster::start(15);
    let names = ["Tørture-DB", "app db", "app_db"];
    for db in names {
        cluster.create_db(db);
        cluster.psql(db, MIGRATIONS);
    }
    let home = Home::new();
    let mut cmd = home.dbsnap();
    cmd.args(["create", "--pg-bin"]).arg(cluster.bin_dir());
    for db in names {
        cmd.arg("-d").arg(conn(&cluster, db));
    }
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}\n{v}");
    let file = v["file"].as_str().unwrap().to_string();
    // Members keep readable names; the mapping is in dbsnap.json.
    let meta = common::metadata(&file);
    let members: Vec<(String, String)> = meta["databases"]
        .as_array()
        .unwrap_or_else(|| panic!("{meta}"))
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().into(),
                d["member"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("Tørture-DB".to_string(), "Tørture-DB.dump".to_string()),
            ("app db".into(), "app_db.dump".into()),
            ("app_db".into(), "app_db-2.dump".into()),
        ]
    );
    let tar = std::process::Command::new("tar")
        .arg("tf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tar.stdout).contains("Tørture-DB.dump"));

    // One -d restores exactly that database: the others are refused, named.
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[conn(&cluster, "app_db")],
        &["--dry-run"],
    );
    assert_eq!(code, 2, "{err}\n{v}");
    let msg = &common::error_text(&v);
    assert!(
        msg.contains("no connection names the snapshot's databases Tørture-DB, app db"),
        "{msg}"
    );
    assert!(msg.contains("--only"), "{msg}");
    // --only takes the real name.
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[conn(&cluster, "app db")],
        &["--only", "app db", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        planned(&v),
        [format!("app db@postgres@127.0.0.1:{}/app db", cluster.port)]
    );
    // A -d naming a database the snapshot lacks is an error, not a server.
    let (code, v, _) = restore(
        &home,
        &cluster,
        &file,
        &[conn(&cluster, "app-db")],
        &["--dry-run"],
    );
    assert_eq!(code, 2, "{v}");
    assert!(
        common::error_text(&v).contains("has no database \"app-db\""),
        "{v}"
    );

    // --map and --create by real name, into a new database.
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[conn(&cluster, "postgres")],
        &[
            "--only",
            "Tørture-DB",
            "--map",
            "Tørture-DB=tortured",
            "--create",
        ],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        cluster.table_checksums("tortured"),
        cluster.table_checksums("Tørture-DB")
    );

    // Without -d or a config, the connections recorded in the snapshot are
    // used (the password from the environment, never from the snapshot).
    let recorded = || {
        let mut cmd = home.dbsnap();
        cmd.args([
            "restore",
            "--yes",
            "--no-safety-snapshot",
            "--dry-run",
            "--file",
            &file,
        ]);
        cmd
    };
    let (code, v, err) = run_json(&mut recorded());
    assert_eq!(
        code, 4,
        "no password anywhere must fail authentication: {err}\n{v}"
    );
    let (code, v, err) = run_json(recorded().env("PGPASSWORD", SUPERUSER_PASSWORD));
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(planned(&v).len(), 3, "{v}");
    assert!(!std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains(SUPERUSER_PASSWORD));
}

#[test]
fn same_named_databases_from_two_servers() {
    let (a, b) = (Cluster::start(15), Cluster::start(15));
    for c in [&a, &b] {
        c.create_db("app-core");
        c.psql("app-core", MIGRATIONS);
    }
    let home = Home::new();
    let mut cmd = home.dbsnap();
    cmd.args(["create", "--consistency", "none", "--pg-bin"])
        .arg(a.bin_dir())
        .arg("-d")
        .arg(a.url("app-core"))
        .arg("-d")
        .arg(b.url("app-core"));
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}\n{v}");
    let file = v["file"].as_str().unwrap().to_string();

    // The shared name is ambiguous; member names are not.
    let (code, v, _) = restore(
        &home,
        &a,
        &file,
        &[a.url("app-core")],
        &["--only", "app-core", "--dry-run"],
    );
    assert_eq!(code, 2, "{v}");
    let msg = &common::error_text(&v);
    assert!(
        msg.contains(&format!(
            "2 databases named \"app-core\" (app-core.dump from 127.0.0.1:{}, app-core-2.dump from 127.0.0.1:{})",
            a.port, b.port
        )),
        "{msg}"
    );
    let (code, v, err) = restore(
        &home,
        &b,
        &file,
        &[b.url("app-core")],
        &["--only", "app-core-2", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        planned(&v),
        [format!("app-core@postgres@127.0.0.1:{}/app-core", b.port)]
    );
    // Both -d name app-core: each snapshot database goes back to its own server.
    let (code, v, err) = restore(
        &home,
        &a,
        &file,
        &[b.url("app-core"), a.url("app-core")],
        &["--dry-run"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        planned(&v),
        [
            format!("app-core@postgres@127.0.0.1:{}/app-core", a.port),
            format!("app-core@postgres@127.0.0.1:{}/app-core", b.port)
        ]
    );
    // Two snapshot databases into one live database: refused before anything starts.
    let (code, v, _) = restore(
        &home,
        &a,
        &file,
        &[a.url("postgres")],
        &[
            "--map",
            "app-core.dump=xx",
            "--map",
            "app-core-2=xx",
            "--create",
        ],
    );
    assert_eq!(code, 2, "{v}");
    assert!(
        common::error_text(&v).contains("app-core and app-core-2 would both be restored into"),
        "{v}"
    );
    assert_eq!(
        a.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'xx'"
        )
        .trim(),
        "0"
    );
}
