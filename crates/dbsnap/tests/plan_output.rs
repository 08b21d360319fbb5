//! A restore plan in words a user reads, in aligned columns, saying
//! exactly what will happen.

mod common;

use common::{create, run, run_json, Home};
use dbsnap_test_support::Cluster;

const LONG: &str = "a_database_with_a_rather_long_name_for_columns";

/// A database with a golang-migrate version table (so data-only applies).
fn versioned_db(cluster: &Cluster, db: &str) {
    cluster.create_db(db);
    cluster.psql(
        db,
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (3, false); \
         CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
}

/// `dbsnap restore --file F --pg-bin … -d <server's postgres db>` plus `extra`.
fn restore(home: &Home, cluster: &Cluster, file: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--file", file, "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("postgres"))
        .args(extra);
    cmd
}

#[test]
fn plan_words_and_columns_line_up_whatever_the_names() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    versioned_db(&cluster, "app");
    versioned_db(&cluster, LONG);
    let snap = create(&home, &cluster, &["app", LONG], &[]);
    let file = snap["file"].as_str().unwrap();
    // A dry run's plan is its output.
    let (code, plan, err) = run(&mut restore(&home, &cluster, file, &["--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("restore plan"), "{err}");
    let err = plan;
    assert!(!err.contains("DataOnly"), "{err}");
    let rows: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("data-only") && l.contains("127.0.0.1"))
        .collect();
    assert_eq!(rows.len(), 2, "{err}");
    let header = err.lines().find(|l| l.contains("action")).expect(&err);
    for column in ["action", "live version", "restored into"] {
        let at = header.find(column).unwrap();
        for row in &rows {
            assert!(
                row[at..].starts_with(|c: char| c != ' ') && row[..at].ends_with("  "),
                "column {column:?} is not aligned:\n{err}"
            );
        }
    }
    assert!(
        err.contains("a safety snapshot of the live databases that change is taken first"),
        "{err}"
    );
    // The result names the action the same way; JSON keeps its values.
    let (code, out, err) = run(&mut restore(&home, &cluster, file, &["--yes"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored app: data-only,"), "{out}");
    let (code, v, err) = run_json(&mut restore(&home, &cluster, file, &["--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"][0]["action"], "data_only");
}

#[test]
fn a_plan_that_changes_no_existing_database_promises_no_safety_snapshot() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    versioned_db(&cluster, "app");
    let snap = create(&home, &cluster, &["app"], &[]);
    let file = snap["file"].as_str().unwrap();
    cluster.psql("postgres", "DROP DATABASE app");
    let (code, err, _) = run(&mut restore(
        &home,
        &cluster,
        file,
        &["--create", "--dry-run"],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("taken first"), "{err}");
    assert!(!err.contains("Create"), "{err}");
    assert!(
        err.contains("no safety snapshot: no database that exists now is changed"),
        "{err}"
    );
    let (_, v, _) = run_json(&mut restore(
        &home,
        &cluster,
        file,
        &["--create", "--dry-run"],
    ));
    assert_eq!(v["safety_snapshot"], false, "{v}");
    assert_eq!(v["databases"][0]["action"], "create");
    let (code, v, err) = run_json(&mut restore(&home, &cluster, file, &["--create", "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert!(v["safety_snapshot"].is_null(), "{v}");
    let safety: Vec<String> = home
        .snapshot_dir_entries()
        .into_iter()
        .filter(|n| n.starts_with("safety"))
        .collect();
    assert!(safety.is_empty(), "{safety:?}");
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM t").trim(), "1");
}
