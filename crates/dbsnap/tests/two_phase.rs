//! A restore of several databases commits all of them or none: on a server
//! that allows prepared transactions every database (data-only loads, the
//! swap of a replaced one) is prepared first, the journal records the
//! decision, then all commit. Killed (like kill -9) between the prepares
//! and the decision, `resume` rolls every one back; killed after it,
//! `resume` commits every one; `cleanup` never drops what a prepared swap
//! holds. Without prepared transactions the plan says the databases
//! commit one after the other.

mod common;

use common::{fingerprint, run, run_json, Home};
use dbsnap_test_support::Cluster;

const APP: &str =
    "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
     INSERT INTO schema_migrations VALUES (1, false); \
     CREATE TABLE t (id int PRIMARY KEY, v text); \
     INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g";

const DBS: [&str; 3] = ["a", "b", "c"];

/// Three databases; a snapshot; then `a` and `b` change rows (data-only
/// restores) and `c` gets a newer schema version (replaced by a swap).
/// Returns the snapshot, and each database's state at the snapshot and after.
fn three_databases(cluster: &Cluster, home: &Home) -> (String, Vec<String>, Vec<String>) {
    for db in DBS {
        cluster.create_db(db);
        cluster.psql(db, APP);
    }
    let snapped: Vec<String> = DBS.iter().map(|db| fingerprint(cluster, db)).collect();
    let file = common::create(home, cluster, &DBS, &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql("a", "DELETE FROM t WHERE id % 2 = 0");
    cluster.psql("b", "UPDATE t SET v = 'changed'");
    cluster.psql(
        "c",
        "INSERT INTO schema_migrations VALUES (2, false); CREATE TABLE later (id int)",
    );
    let changed = DBS.iter().map(|db| fingerprint(cluster, db)).collect();
    (file, snapped, changed)
}

fn prepared(cluster: &Cluster) -> Vec<String> {
    cluster
        .psql(
            "postgres",
            "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'dbsnap-%' ORDER BY gid",
        )
        .lines()
        .map(String::from)
        .collect()
}

fn crash_at(home: &Home, cluster: &Cluster, file: &str, failpoint: &str) {
    let mut cmd = common::quick_restore(home, cluster, file, &DBS);
    let out = cmd.env("DBSNAP_FAILPOINT", failpoint).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("failpoint {failpoint}")),
        "{failpoint}: not interrupted: {err}"
    );
}

fn two_phase_cluster() -> Cluster {
    Cluster::start_with(15, &["max_prepared_transactions = 10"])
}

#[test]
fn the_plan_says_how_the_databases_commit() {
    let home = Home::new();
    let with = two_phase_cluster();
    let (file, _, _) = three_databases(&with, &home);
    let (code, v, err) =
        run_json(common::quick_restore(&home, &with, &file, &DBS).arg("--dry-run"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["commit"]["mode"], "two_phase", "{v}");
    let (_, out, _) = run(common::quick_restore(&home, &with, &file, &DBS).arg("--dry-run"));
    assert!(
        out.contains("each is prepared first (two-phase commit)"),
        "{out}"
    );

    // PostgreSQL's default: no prepared transactions; one line says so.
    let home = Home::new();
    let without = Cluster::start(15);
    let (file, _, _) = three_databases(&without, &home);
    let (code, out, err) =
        run(common::quick_restore(&home, &without, &file, &DBS).arg("--dry-run"));
    assert_eq!(code, 0, "{err}");
    let line = format!(
        "the databases commit one after the other (127.0.0.1:{} does not allow prepared transactions (max_prepared_transactions = 0, PostgreSQL's default)): a failure between two commits leaves the ones before restored",
        without.port
    );
    assert!(out.contains(&line), "{out}");
    // And it still restores everything.
    let (code, _, err) = run(&mut common::quick_restore(&home, &without, &file, &DBS));
    assert_eq!(code, 0, "{err}");
    // One database alone needs no coordination.
    let (_, v, _) = run_json(common::quick_restore(&home, &without, &file, &["a"]).args([
        "--only",
        "a",
        "--dry-run",
    ]));
    assert_eq!(v["commit"]["mode"], "single", "{v}");
}

#[test]
fn killed_between_the_prepares_and_the_commits_resume_rolls_every_one_back() {
    let cluster = two_phase_cluster();
    let home = Home::new();
    let (file, _, changed) = three_databases(&cluster, &home);
    crash_at(&home, &cluster, &file, "restore-prepared");
    // All three are prepared (c's swap in the maintenance database), none committed.
    assert_eq!(prepared(&cluster).len(), 3, "{:?}", prepared(&cluster));
    // cleanup must not drop the copy a prepared swap holds.
    let (code, _, err) = run(home
        .dbsnap()
        .args(["cleanup", "--yes", "-d"])
        .arg(cluster.url("postgres")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("left prepared transactions") && err.contains("dbsnap resume"),
        "{err}"
    );
    let v = common::resume(&home, &cluster);
    let actions = v["result"][0]["actions"].to_string();
    assert!(
        actions.contains("rolled back its prepared transaction")
            && actions.contains("removed the incomplete copy"),
        "{v}"
    );
    assert_eq!(prepared(&cluster), Vec::<String>::new());
    let now: Vec<String> = DBS.iter().map(|db| fingerprint(&cluster, db)).collect();
    assert_eq!(now, changed, "no database changed");
    assert_eq!(common::kept_copies(&cluster), "0");
    for (_, phase) in v["result"][0]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].clone(), p[1].clone()))
    {
        assert_eq!(phase, "failed", "{v}");
    }
}

#[test]
fn killed_after_the_decision_resume_commits_every_one() {
    let cluster = two_phase_cluster();
    let home = Home::new();
    let (file, snapped, _) = three_databases(&cluster, &home);
    crash_at(&home, &cluster, &file, "restore-decided");
    assert_eq!(prepared(&cluster).len(), 3);
    // rollback would wait behind the prepared renames: refused, say resume.
    let (code, _, err) = run(home
        .dbsnap()
        .args(["rollback", "--yes", "-d"])
        .arg(cluster.url("postgres")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run `dbsnap resume` first"), "{err}");
    let v = common::resume(&home, &cluster);
    assert!(
        v["result"][0]["actions"]
            .to_string()
            .contains("committed its prepared transaction"),
        "{v}"
    );
    assert_eq!(prepared(&cluster), Vec::<String>::new());
    let now: Vec<String> = DBS.iter().map(|db| fingerprint(&cluster, db)).collect();
    assert_eq!(now, snapped, "every database restored");
    // c was swapped: its previous database is kept, and rollback works.
    assert_eq!(common::kept_copies(&cluster), "1");
    let (code, _, err) = run(home
        .dbsnap()
        .args(["rollback", "--yes", "-d"])
        .arg(cluster.url("postgres")));
    assert_eq!(code, 0, "{err}");
    assert!(
        cluster
            .psql(
                "c",
                "SELECT count(*) FROM pg_tables WHERE tablename = 'later'"
            )
            .trim()
            == "1"
    );
}

#[test]
fn an_uninterrupted_two_phase_restore_leaves_nothing_prepared() {
    let cluster = two_phase_cluster();
    let home = Home::new();
    let (file, snapped, _) = three_databases(&cluster, &home);
    let (code, v, err) = run_json(&mut common::quick_restore(&home, &cluster, &file, &DBS));
    assert_eq!(code, 0, "{err}");
    let actions: Vec<&str> = v["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["data_only", "data_only", "swap_restore"], "{v}");
    assert_eq!(prepared(&cluster), Vec::<String>::new());
    let now: Vec<String> = DBS.iter().map(|db| fingerprint(&cluster, db)).collect();
    assert_eq!(now, snapped);
    let journal = std::fs::read_dir(home.path().join("state"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .next()
        .unwrap();
    assert!(
        journal.contains("\"commit_decided\": true") && journal.contains("\"finished\": true"),
        "{journal}"
    );
}

/// Databases `p` (to be restored data-only) and `q` (newer schema, to be
/// replaced in place) owned by a role without CREATEDB, a snapshot of both,
/// then the changes; returns the snapshot, their owner's URLs and their
/// state at the snapshot.
fn owned_pair(cluster: &Cluster, home: &Home) -> (String, Vec<String>, Vec<String>) {
    cluster.psql(
        "postgres",
        "CREATE ROLE owner LOGIN PASSWORD 'ownerpw' NOSUPERUSER NOCREATEDB",
    );
    for db in ["p", "q"] {
        cluster.psql("postgres", &format!("CREATE DATABASE {db} OWNER owner"));
        cluster.psql(db, &format!("SET ROLE owner; {APP}"));
    }
    let urls: Vec<String> = ["p", "q"]
        .iter()
        .map(|db| cluster.url_as("owner", Some("ownerpw"), db))
        .collect();
    let snapped: Vec<String> = ["p", "q"]
        .iter()
        .map(|db| fingerprint(cluster, db))
        .collect();
    let mut cmd = home.dbsnap();
    cmd.args(["create", "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", &urls[0], "-d", &urls[1]]);
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");
    cluster.psql("p", "SET ROLE owner; DELETE FROM t WHERE id > 5");
    cluster.psql(
        "q",
        "SET ROLE owner; INSERT INTO schema_migrations VALUES (2, false); DELETE FROM t",
    );
    (v["file"].as_str().unwrap().to_string(), urls, snapped)
}

fn pair(cluster: &Cluster) -> Vec<String> {
    ["p", "q"]
        .iter()
        .map(|db| fingerprint(cluster, db))
        .collect()
}

#[test]
fn an_in_place_replacement_that_fails_rolls_back_the_prepared_data_only_one() {
    let cluster = two_phase_cluster();
    let home = Home::new();
    let (file, urls, snapped) = owned_pair(&cluster, &home);
    let restore = || {
        run_json(&mut common::quick_restore_urls(
            &home, &cluster, &file, &urls,
        ))
    };
    // An object of another role in q blocks its replacement, after p was prepared.
    cluster.psql("q", "CREATE VIEW blocker AS SELECT * FROM t");
    let before = pair(&cluster);
    let (code, v, err) = restore();
    assert_ne!(code, 0, "{v}");
    assert_eq!(prepared(&cluster), Vec::<String>::new(), "{err}");
    assert_eq!(
        pair(&cluster),
        before,
        "p's prepared load was rolled back: {err}"
    );
    cluster.psql("q", "DROP VIEW blocker");
    let (code, v, err) = restore();
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"][1]["action"], "replace_in_place", "{v}");
    assert_eq!(pair(&cluster), snapped);
    assert_eq!(prepared(&cluster), Vec::<String>::new());
}

#[test]
fn without_prepared_transactions_a_failure_names_what_was_committed_and_the_safety_snapshot() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    let (file, urls, _) = owned_pair(&cluster, &home);
    cluster.psql("q", "CREATE VIEW blocker AS SELECT * FROM t");
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--yes", "--file", &file, "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", &urls[0], "-d", &urls[1]]);
    let (code, _, err) = run(&mut cmd);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(
            "p had been committed before the failure and stay restored; the safety snapshot "
        ) && err
            .contains("restore the safety snapshot (with --only for those databases) to undo them"),
        "{err}"
    );
}
