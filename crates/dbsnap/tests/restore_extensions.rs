//! A restore onto a server that lacks an extension the snapshot creates
//! (PostgreSQL 15 from Debian has contrib's pgcrypto, the embedded 18 does
//! not): named in the pre-check beside the missing roles, exit 2, before
//! anything starts; an extension the server has but has not installed is
//! created by the restore; an untrusted one in a new database needs a
//! superuser (exit 6).

mod common;

use common::{run_json, Home};
use dbsnap_test_support::Cluster;

fn snapshot(home: &Home, cluster: &Cluster, db: &str) -> String {
    common::create(home, cluster, &[db], &[])["file"]
        .as_str()
        .unwrap()
        .to_string()
}

fn restore(
    home: &Home,
    to: &Cluster,
    file: &str,
    url: &str,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    run_json(
        home.dbsnap()
            .args(["restore", "--yes", "--file", file, "--pg-bin"])
            .arg(to.bin_dir())
            .args(["-d", url])
            .args(extra),
    )
}

fn query(cluster: &Cluster, db: &str, sql: &str) -> Vec<String> {
    cluster
        .psql(db, sql)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Whether `name` is in the server's pg_available_extensions.
fn has(cluster: &Cluster, name: &str) -> bool {
    let sql = format!("SELECT count(*) FROM pg_available_extensions WHERE name = '{name}'");
    query(cluster, "postgres", &sql) == ["1"]
}

#[test]
fn an_extension_the_server_lacks_is_named_before_anything_starts() {
    let old = Cluster::start(15);
    let new = Cluster::start(18);
    // What this test is about: 15 has pgcrypto and uuid-ossp, 18 has
    // neither; both have citext.
    for (cluster, name, want) in [
        (&old, "pgcrypto", true),
        (&old, "uuid-ossp", true),
        (&new, "pgcrypto", false),
        (&new, "uuid-ossp", false),
        (&old, "citext", true),
        (&new, "citext", true),
    ] {
        assert_eq!(
            has(cluster, name),
            want,
            "the test needs PostgreSQL {} {} {name}",
            cluster.major,
            if want { "with" } else { "without" }
        );
    }
    old.create_db("app");
    old.psql(
        "app",
        "CREATE EXTENSION pgcrypto; CREATE EXTENSION \"uuid-ossp\"; CREATE EXTENSION citext;
         CREATE ROLE appowner NOLOGIN;
         CREATE TABLE secrets (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), name citext,
                               digest bytea DEFAULT digest('x', 'sha256'));
         ALTER TABLE secrets OWNER TO appowner;
         INSERT INTO secrets (name) SELECT 'n' || g FROM generate_series(1, 100) g;",
    );
    let home = Home::new();
    let file = snapshot(&home, &old, "app");
    let databases = || {
        query(
            &new,
            "postgres",
            "SELECT datname FROM pg_database ORDER BY 1",
        )
    };
    let roles = || query(&new, "postgres", "SELECT rolname FROM pg_roles ORDER BY 1");
    let (dbs_before, roles_before) = (databases(), roles());

    // Named with the missing role, in one run, before anything starts.
    let (code, v, err) = restore(&home, &new, &file, &new.url("postgres"), &["--create"]);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["error"]["kind"], "usage", "{v}");
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {err}"))
            .to_string()
    };
    let missing = line("does not have");
    assert!(
        missing.contains(&format!("127.0.0.1:{}", new.port))
            && missing.contains(
                "the snapshot creates extensions this PostgreSQL 18 server does not have: pgcrypto, uuid-ossp"
            ),
        "{err}"
    );
    assert!(!missing.contains("citext"), "citext is available: {err}");
    assert!(line("roles the server lacks").contains("appowner"), "{err}");
    let hints: Vec<&str> = err.lines().filter(|l| l.starts_with("hint: ")).collect();
    assert!(
        hints.iter().any(|h| h.contains("--create-roles"))
            && hints
                .iter()
                .any(|h| h.contains("contrib") && h.contains("postgresql-18-NAME")),
        "{err}"
    );
    // --create-roles fixes the roles, not the extensions: still refused,
    // and no role was created.
    let (code, v, err) = restore(
        &home,
        &new,
        &file,
        &new.url("postgres"),
        &["--create", "--create-roles"],
    );
    assert_eq!(code, 2, "{v}\n{err}");
    assert!(err.contains("does not have: pgcrypto, uuid-ossp"), "{err}");
    assert!(!err.contains("roles the server lacks"), "{err}");
    assert_eq!(databases(), dbs_before, "a database was created");
    assert_eq!(roles(), roles_before, "a role was created");

    // An extension the server has but has not installed is created.
    old.create_db("plain");
    old.psql(
        "plain",
        "CREATE EXTENSION citext;
         CREATE TABLE names (name citext PRIMARY KEY);
         INSERT INTO names SELECT 'Name ' || g FROM generate_series(1, 100) g;",
    );
    assert!(
        query(
            &new,
            "template1",
            "SELECT extname FROM pg_extension WHERE extname = 'citext'"
        )
        .is_empty(),
        "citext is installed in template1 already"
    );
    let file = snapshot(&home, &old, "plain");
    let (code, v, err) = restore(&home, &new, &file, &new.url("postgres"), &["--create"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(
        query(
            &new,
            "plain",
            "SELECT extname FROM pg_extension WHERE extname = 'citext'"
        ),
        ["citext"]
    );
    assert_eq!(new.table_checksums("plain"), old.table_checksums("plain"));
}

#[test]
fn an_untrusted_extension_in_a_new_database_needs_a_superuser() {
    let cluster = Cluster::start(18);
    // dblink is there, and not trusted: only a superuser creates it.
    assert_eq!(
        query(
            &cluster,
            "postgres",
            "SELECT superuser AND NOT trusted FROM pg_available_extension_versions v \
             JOIN pg_available_extensions a USING (name) \
             WHERE name = 'dblink' AND v.version = a.default_version"
        ),
        ["t"],
        "the test needs an untrusted dblink on PostgreSQL 18"
    );
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE EXTENSION dblink; CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g;",
    );
    cluster.psql(
        "postgres",
        "CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'Restorer-pw-1'",
    );
    let home = Home::new();
    let file = snapshot(&home, &cluster, "app");
    let as_restorer = cluster.url_as("restorer", Some("Restorer-pw-1"), "postgres");
    let extra = [
        "--create",
        "--map",
        "app=copy",
        "--no-owner",
        "--no-privileges",
    ];
    let (code, v, err) = restore(&home, &cluster, &file, &as_restorer, &extra);
    assert_eq!(code, 6, "{v}\n{err}");
    assert!(
        err.contains("only a superuser may create extensions dblink (not trusted)")
            && err.contains("hint: restore as a superuser"),
        "{err}"
    );
    let copies = "SELECT count(*) FROM pg_database WHERE datname LIKE 'copy%'";
    assert_eq!(query(&cluster, "postgres", copies), ["0"]);
    // A superuser restores it, dblink included.
    let (code, v, err) = restore(&home, &cluster, &file, &cluster.url("postgres"), &extra);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(
        query(
            &cluster,
            "copy",
            "SELECT extname FROM pg_extension WHERE extname = 'dblink'"
        ),
        ["dblink"]
    );
}
