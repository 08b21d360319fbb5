//! Acceptance: a restore killed at any point (crash hooks abort the process
//! like kill -9) leaves each database exactly as before or fully restored;
//! `resume` then brings the app back (stop/start balanced) and removes
//! half-loaded copies; `rollback` undoes a completed swap. Also: replacing
//! in place (no CREATEDB) is all-or-nothing.

mod common;

use common::{fingerprint, run_json, Home};
use dbsnap_test_support::{rich_schema_sql, Cluster};

fn platform(cluster: &Cluster) {
    cluster.create_db("app");
    let sql = cluster.scratch().join("app.sql");
    std::fs::write(&sql, rich_schema_sql(5_000)).unwrap();
    cluster.psql_file("app", &sql);
    cluster.psql("app", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false)");
}

fn crash_restore(
    home: &Home,
    cluster: &Cluster,
    file: &str,
    failpoint: &str,
    log: &std::path::Path,
) {
    let mut cmd = common::quick_restore(home, cluster, file, &["app"]);
    cmd.env("DBSNAP_FAILPOINT", failpoint)
        .args(common::hook_args(log, ""));
    let out = cmd.output().unwrap();
    assert!(
        !out.status.success(),
        "{failpoint}: the restore was not interrupted"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {failpoint}")));
    // Killed while the app was stopped: not started again yet.
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        "stop\n",
        "{failpoint}"
    );
}

#[test]
fn killed_during_the_data_load_leaves_the_database_as_before() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql(
        "app",
        "DELETE FROM orders WHERE id < 100; UPDATE accounts SET name = 'x'",
    );
    let changed = fingerprint(&cluster, "app");
    let log = home.path().join("hooks.log");
    crash_restore(&home, &cluster, &file, "restore-data-loaded", &log);
    assert_eq!(
        fingerprint(&cluster, "app"),
        changed,
        "the uncommitted load must leave no trace"
    );
    let v = common::resume(&home, &cluster);
    assert_eq!(v["result"][0]["started_app"], true, "{v}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    // Nothing left to resume.
    let v = common::resume(&home, &cluster);
    assert_eq!(v["result"].as_array().unwrap().len(), 0);
}

#[test]
fn killed_before_and_after_the_swap() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let home = Home::new();
    let snapshot_state = fingerprint(&cluster, "app");
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql(
        "app",
        "INSERT INTO schema_migrations VALUES (2, false); CREATE TABLE added_later (id int)",
    );
    let newer = fingerprint(&cluster, "app");

    // Killed with the new copy complete, before the swap: live untouched, copy removed by resume.
    let log = home.path().join("hooks1.log");
    crash_restore(&home, &cluster, &file, "restore-copy-ready", &log);
    assert_eq!(fingerprint(&cluster, "app"), newer);
    let copies = || common::kept_copies(&cluster);
    assert_eq!(copies(), "1");
    let v = common::resume(&home, &cluster);
    assert!(
        v["result"][0]["actions"]
            .to_string()
            .contains("removed the incomplete copy"),
        "{v}"
    );
    assert_eq!(copies(), "0");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");

    // Killed right after the swap committed, before the journal knew: resume sees it happened.
    let log = home.path().join("hooks2.log");
    crash_restore(&home, &cluster, &file, "restore-swapped", &log);
    assert_eq!(fingerprint(&cluster, "app"), snapshot_state);
    let v = common::resume(&home, &cluster);
    assert!(
        v["result"][0]["actions"]
            .to_string()
            .contains("the swap had completed"),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    // ... and the swap can be rolled back.
    let (code, _, err) = run_json(
        home.dbsnap()
            .args(["rollback", "--yes", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(fingerprint(&cluster, "app"), newer);
}

#[test]
fn replace_in_place_without_createdb_is_all_or_nothing() {
    let cluster = Cluster::start(15);
    cluster.psql(
        "postgres",
        "CREATE ROLE owner LOGIN PASSWORD 'ownerpw' NOSUPERUSER NOCREATEDB",
    );
    cluster.psql("postgres", "CREATE DATABASE app OWNER owner");
    let sql = cluster.scratch().join("app.sql");
    std::fs::write(&sql, format!("SET ROLE owner;\n{}", rich_schema_sql(5_000))).unwrap();
    cluster.psql_file("app", &sql);
    cluster.psql("app", "SET ROLE owner; CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false)");
    let owner_url = cluster.url_as("owner", Some("ownerpw"), "app");
    let home = Home::new();
    let snapshot_state = fingerprint(&cluster, "app");
    let file = common::create_from_url(&home, &cluster, &owner_url);
    cluster.psql("app", "SET ROLE owner; INSERT INTO schema_migrations VALUES (2, false); ALTER TABLE accounts ADD COLUMN plan text; CREATE TABLE added_later (id int); DELETE FROM orders");
    let newer = fingerprint(&cluster, "app");
    let restore = |extra: &[&str]| {
        let mut cmd = home.dbsnap();
        cmd.args(["restore", "--yes", "--file", &file, "--pg-bin"])
            .arg(cluster.bin_dir())
            .arg("-d")
            .arg(&owner_url)
            .args(extra);
        run_json(&mut cmd)
    };
    // An object owned by another role blocks the replacement: all of it rolls back.
    cluster.psql(
        "app",
        "CREATE TABLE blocker (id int); CREATE VIEW accounts_view AS SELECT * FROM accounts",
    );
    let blocked = fingerprint(&cluster, "app");
    let (code, v, err) = restore(&[]);
    assert_ne!(code, 0, "{v}");
    assert_eq!(
        fingerprint(&cluster, "app"),
        blocked,
        "a failed in-place replacement changed the database: {err}"
    );
    cluster.psql("app", "DROP VIEW accounts_view; DROP TABLE blocker");
    assert_eq!(fingerprint(&cluster, "app"), newer);
    // Then it works, and gives the snapshot back.
    let (code, v, err) = restore(&[]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "replace_in_place");
    assert_eq!(fingerprint(&cluster, "app"), snapshot_state);
}

#[test]
fn a_failing_check_rolls_back_every_kind_of_restore() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql("app", "DELETE FROM orders WHERE id < 10");
    let changed = fingerprint(&cluster, "app");
    let restore = |extra: &[&str]| {
        let mut cmd = common::quick_restore(&home, &cluster, &file, &["app"]);
        cmd.args([
            "--check",
            "select count(*) > 0 from accounts",
            "--check",
            "select count(*) = 0 from orders",
        ])
        .args(extra);
        run_json(&mut cmd)
    };
    // Data-only: the check runs before COMMIT.
    let (code, _, err) = restore(&[]);
    assert_eq!(code, 17, "{err}");
    assert!(err.contains("select count(*) = 0 from orders"), "{err}");
    assert_eq!(fingerprint(&cluster, "app"), changed);
    // Swap: the check runs on the copy, which is dropped; live untouched.
    let (code, _, err) = restore(&["--drop"]);
    assert_eq!(code, 17, "{err}");
    assert_eq!(fingerprint(&cluster, "app"), changed);
    assert_eq!(common::kept_copies(&cluster), "0");
}

#[test]
fn a_failing_check_rolls_back_an_in_place_replacement() {
    let cluster = Cluster::start(15);
    cluster.psql(
        "postgres",
        "CREATE ROLE owner LOGIN PASSWORD 'ownerpw' NOSUPERUSER NOCREATEDB",
    );
    cluster.psql("postgres", "CREATE DATABASE app OWNER owner");
    cluster.psql("app", "SET ROLE owner; CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)");
    let owner_url = cluster.url_as("owner", Some("ownerpw"), "app");
    let home = Home::new();
    let file = common::create_from_url(&home, &cluster, &owner_url);
    cluster.psql(
        "app",
        "SET ROLE owner; DELETE FROM t WHERE id > 50; CREATE TABLE later (id int)",
    );
    let changed = fingerprint(&cluster, "app");
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--yes", "--drop", "--file", &file, "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(&owner_url)
        .args(["--check", "select count(*) = 7 from t"]);
    let (code, _, err) = run_json(&mut cmd);
    assert_eq!(code, 17, "{err}");
    assert!(err.contains("check failed"), "{err}");
    assert_eq!(fingerprint(&cluster, "app"), changed);
}

#[test]
fn data_only_databases_commit_together_or_not_at_all() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    cluster.create_db("backend");
    cluster.psql("backend", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false); CREATE TABLE jobs AS SELECT g AS id FROM generate_series(1, 100) g");
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app", "backend"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql("app", "DELETE FROM orders");
    cluster.psql("backend", "DELETE FROM jobs WHERE id > 10");
    let (app, backend) = (
        fingerprint(&cluster, "app"),
        fingerprint(&cluster, "backend"),
    );
    let restore = |check: &str| {
        let mut cmd = common::quick_restore(&home, &cluster, &file, &["app", "backend"]);
        cmd.args(["--check", check]);
        run_json(&mut cmd)
    };
    // The check holds in app but not in backend: neither database changes.
    let (code, _, err) = restore("select count(*) = 3000 from orders");
    assert_eq!(code, 17, "{err}");
    assert_eq!(fingerprint(&cluster, "app"), app);
    assert_eq!(fingerprint(&cluster, "backend"), backend);
    // A check both satisfy: both restored.
    let (code, v, err) = restore("select true");
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"][0]["action"], "data_only");
    assert_eq!(
        cluster.psql("backend", "SELECT count(*) FROM jobs").trim(),
        "100"
    );
    assert_eq!(
        cluster.psql("app", "SELECT count(*) FROM orders").trim(),
        "3000"
    );
}

#[test]
fn ctrl_c_during_a_restore_starts_the_app_and_resume_cleans_up() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql("app", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false); \
                         CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1500000) g; ALTER TABLE t ADD PRIMARY KEY (id)");
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql("app", "INSERT INTO schema_migrations VALUES (2, false)");
    let before = fingerprint(&cluster, "app");
    let log = home.path().join("hooks.log");
    let mut cmd = common::quick_restore(&home, &cluster, &file, &["app"]);
    cmd.args(common::hook_args(&log, ""));
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt while the copy is being loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '%\\_\\_dbsnap\\_new%'",
        )
        .trim()
        == "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the load never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    assert_eq!(fingerprint(&cluster, "app"), before);
    // The half-loaded copy is removed by resume.
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["resume", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        v["result"][0]["actions"]
            .to_string()
            .contains("removed the incomplete copy"),
        "{v}"
    );
    assert_eq!(common::kept_copies(&cluster), "0");
    // The app was already started: resume does not start it twice.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
}

/// The repository's scratch files (`.dbsnap-<tag>-<random>`).
fn scratch_files(home: &Home) -> Vec<String> {
    home.snapshot_dir_entries()
        .into_iter()
        .filter(|n| n.starts_with(".dbsnap-"))
        .collect()
}

/// A scratch file some running dbsnap uses: it holds the file's lock
/// (here this test process does) until dropped.
fn scratch_in_use(home: &Home, name: &str) -> std::fs::File {
    let f = std::fs::File::create(home.snapshots().join(name)).unwrap();
    f.lock().unwrap();
    f
}

/// What a killed run leaves: a scratch file that nobody holds.
fn scratch_left_behind(home: &Home, name: &str) {
    std::fs::write(home.snapshots().join(name), b"PGDMP...").unwrap();
}

#[test]
fn scratch_files_of_a_killed_restore_are_removed_and_those_in_use_are_kept() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    // Killed during the load of the new copy: its schema file and
    // pg_restore list (the application's data) stay in the repository.
    let mut cmd = common::quick_restore(&home, &cluster, &file, &["app"]);
    cmd.arg("--drop")
        .env("DBSNAP_FAILPOINT", "restore-tables-loaded");
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore was not interrupted");
    assert!(err.contains("failpoint restore-tables-loaded"), "{err}");
    let left = scratch_files(&home);
    assert!(
        left.iter().any(|n| n.starts_with(".dbsnap-schema-"))
            && left.iter().any(|n| n.starts_with(".dbsnap-list-")),
        "{left:?}"
    );
    let _in_use = scratch_in_use(&home, ".dbsnap-schema-InUse1");

    // resume removes them, and says so; not the one in use.
    let v = common::resume(&home, &cluster);
    let actions = v["result"][0]["actions"].to_string();
    for name in &left {
        assert!(actions.contains(name.as_str()), "{name} not reported: {v}");
    }
    assert_eq!(scratch_files(&home), [".dbsnap-schema-InUse1"]);
    assert_eq!(common::kept_copies(&cluster), "0");

    // The next restore removes what a killed run left (and its own
    // scratch files when it is done).
    scratch_left_behind(&home, ".dbsnap-restore-K1lled");
    let mut restore = common::quick_restore(&home, &cluster, &file, &["app"]);
    let (code, v, err) = run_json(restore.arg("--drop"));
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "swap_restore", "{v}");
    assert_eq!(scratch_files(&home), [".dbsnap-schema-InUse1"]);

    // cleanup lists such a file, --dry-run too; --yes removes it.
    scratch_left_behind(&home, ".dbsnap-list-K1lled");
    let dead = home.snapshots().join(".dbsnap-list-K1lled");
    let cleanup = |args: &[&str]| {
        let mut cmd = home.dbsnap();
        cmd.arg("cleanup")
            .args(args)
            .arg("-d")
            .arg(cluster.url("postgres"));
        cmd
    };
    for args in [&[][..], &["--yes", "--dry-run"]] {
        let (code, v, err) = run_json(&mut cleanup(args));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(v["leftovers"], serde_json::json!([dead]), "{args:?}: {v}");
        assert!(dead.exists(), "cleanup {args:?} removed a file");
    }
    let (code, out, err) = common::run(&mut cleanup(&["--yes"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("removed: {}", dead.display())),
        "{out}"
    );
    assert_eq!(scratch_files(&home), [".dbsnap-schema-InUse1"]);
}
