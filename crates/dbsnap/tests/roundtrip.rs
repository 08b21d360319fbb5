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
