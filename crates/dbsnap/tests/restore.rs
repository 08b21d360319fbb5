//! Acceptance for `restore`: every row of the decision table with its exit
//! code; data-only and drop-and-restore give the snapshot's exact data and
//! schema; nothing changes on refusal, dry run, or a corrupt archive; hooks
//! are balanced; rollback and cleanup work.

mod common;

use common::{run, run_json, Home};
use dbsnap_test_support::{rich_schema_sql, Cluster};

const MIGRATIONS: &str =
    "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
                          INSERT INTO schema_migrations VALUES (1, false);";

/// A platform database with the rich schema at migration version 1.
fn platform(cluster: &Cluster, db: &str) {
    cluster.create_db(db);
    let sql = cluster.scratch().join(format!("{db}.sql"));
    std::fs::write(&sql, rich_schema_sql(20_000)).unwrap();
    cluster.psql_file(db, &sql);
    cluster.psql(db, MIGRATIONS);
}

struct State {
    data: String,
    schema: String,
}

fn state(cluster: &Cluster, db: &str) -> State {
    State {
        data: cluster.table_checksums(db),
        schema: cluster.schema_dump(db),
    }
}

fn assert_same(a: &State, b: &State, what: &str) {
    assert_eq!(a.data, b.data, "{what}: data differs");
    assert_eq!(a.schema, b.schema, "{what}: schema differs");
}

fn snapshot(home: &Home, cluster: &Cluster, dbs: &[&str]) -> String {
    let v = common::create(home, cluster, dbs, &[]);
    v["file"].as_str().unwrap().to_string()
}

fn restore(
    home: &Home,
    cluster: &Cluster,
    file: &str,
    urls: &[String],
    extra: &[impl AsRef<std::ffi::OsStr>],
) -> (i32, serde_json::Value, String) {
    let mut cmd = home.dbsnap();
    cmd.arg("restore")
        .arg("--file")
        .arg(file)
        .arg("--pg-bin")
        .arg(cluster.bin_dir());
    for u in urls {
        cmd.arg("-d").arg(u);
    }
    cmd.args(extra);
    run_json(&mut cmd)
}

fn change_data(cluster: &Cluster, db: &str) {
    cluster.psql(db, "DELETE FROM orders WHERE id % 3 = 0; UPDATE accounts SET name = 'changed' WHERE id < 50; \
                      INSERT INTO big VALUES (99999999, 1, 'new'); SELECT setval('custom_seq', 9999); \
                      SELECT lo_unlink(424242); DELETE FROM blobs WHERE id = 2");
}

fn data_only(major: u32) {
    let cluster = Cluster::start(major);
    platform(&cluster, "app");
    let home = Home::new();
    let before = state(&cluster, "app");
    let file = snapshot(&home, &cluster, &["app"]);
    change_data(&cluster, "app");
    assert_ne!(state(&cluster, "app").data, before.data);
    let hooks = home.path().join("hooks.log");
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("app")],
        &[
            ["--yes".to_string()].as_slice(),
            &common::hook_args(&hooks, ""),
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "data_only");
    let rep = &v["databases"][0]["data_only"];
    assert_eq!(rep["tables"].as_array().unwrap().len(), 7, "{rep}");
    assert_eq!(rep["large_objects"], 2);
    // The keys of big, blobs, orders, schema_migrations and accounts' unique
    // email are rebuilt after the load; accounts' primary key stays (a view
    // depends on it), as do partition indexes.
    assert_eq!(rep["indexes"], 5, "{rep}");
    assert!(v["safety_snapshot"].is_string(), "no safety snapshot: {v}");
    assert_same(&state(&cluster, "app"), &before, "data-only restore");
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), "stop\nstart\n");
    // The safety snapshot holds the changed data and is itself restorable.
    let (code, v, _) = run_json(
        home.dbsnap()
            .arg("verify")
            .arg("--file")
            .arg(v["safety_snapshot"].as_str().unwrap()),
    );
    assert_eq!(code, 0, "{v}");
}

#[test]
fn data_only_restore_gives_the_snapshot_back_pg15() {
    data_only(15);
}

#[test]
fn data_only_restore_gives_the_snapshot_back_pg18() {
    data_only(18);
}

#[test]
fn data_only_as_a_non_superuser_owner_with_a_foreign_key_cycle() {
    let cluster = Cluster::start(15);
    cluster.psql(
        "postgres",
        "CREATE ROLE owner LOGIN PASSWORD 'ownerpw' NOSUPERUSER NOCREATEDB",
    );
    cluster.psql("postgres", "CREATE DATABASE app OWNER owner");
    let owner_url = cluster.url_as("owner", Some("ownerpw"), "app");
    let home = Home::new();
    let schema = "SET ROLE owner;
        CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
        INSERT INTO schema_migrations VALUES (5, false);
        CREATE TABLE a (id int PRIMARY KEY, b_id int);
        CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);
        ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b;
        INSERT INTO a SELECT g, NULL FROM generate_series(1, 1000) g;
        INSERT INTO b SELECT g, g FROM generate_series(1, 1000) g;
        UPDATE a SET b_id = id;
        CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.b_id := NEW.b_id + 1000000; RETURN NEW; END $$;
        CREATE TRIGGER a_stamp BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION stamp();
        CREATE TABLE counter (id int GENERATED ALWAYS AS IDENTITY, v text);
        INSERT INTO counter (v) SELECT 'x' FROM generate_series(1, 10);";
    cluster.psql("app", schema);
    let before = state(&cluster, "app");
    let file = common::create_from_url(&home, &cluster, &owner_url);
    cluster.psql(
        "app",
        "SET ROLE owner; UPDATE a SET b_id = NULL WHERE b_id > 500; DELETE FROM b WHERE id > 500 OR a_id > 700; \
         DELETE FROM a WHERE id > 700; INSERT INTO counter (v) VALUES ('y')",
    );
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        std::slice::from_ref(&owner_url),
        &["--yes"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "data_only");
    assert_eq!(v["databases"][0]["data_only"]["foreign_keys"], 2);
    assert_eq!(v["databases"][0]["data_only"]["triggers"], 1);
    assert_same(&state(&cluster, "app"), &before, "owner data-only restore");
    // The trigger is enabled again and the foreign keys are back.
    assert_eq!(
        cluster
            .psql(
                "app",
                "SELECT tgenabled FROM pg_trigger WHERE tgname = 'a_stamp'"
            )
            .trim(),
        "O"
    );
    assert_eq!(
        cluster
            .psql(
                "app",
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
            )
            .trim(),
        "2"
    );
    // The identity sequence continues after the snapshot's last value.
    assert_eq!(
        cluster
            .psql("app", "INSERT INTO counter (v) VALUES ('z') RETURNING id")
            .trim(),
        "11"
    );
}

#[test]
fn live_newer_is_replaced_by_swap_and_can_be_rolled_back() {
    let cluster = Cluster::start(15);
    platform(&cluster, "app");
    let home = Home::new();
    let before = state(&cluster, "app");
    let file = snapshot(&home, &cluster, &["app"]);
    // A newer app version migrated the schema.
    cluster.psql("app", "INSERT INTO schema_migrations VALUES (2, false); ALTER TABLE accounts ADD COLUMN plan text DEFAULT 'free'; CREATE TABLE audit (id int)");
    let newer = state(&cluster, "app");
    // Without a terminal and without --yes: refused, nothing changed.
    let (code, _, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("app")],
        &[] as &[&str],
    );
    assert_eq!(code, 15, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_same(&state(&cluster, "app"), &newer, "unconfirmed restore");
    // Dry run: the plan, and nothing changed.
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("app")],
        &["--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"][0]["action"], "swap_restore");
    assert_eq!(v["databases"][0]["comparison"], "live_newer");
    assert_same(&state(&cluster, "app"), &newer, "dry run");
    let (code, v, err) = restore(&home, &cluster, &file, &[cluster.url("app")], &["--yes"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "swap_restore");
    let kept = v["databases"][0]["kept_as"].as_str().unwrap().to_string();
    assert_same(&state(&cluster, "app"), &before, "swap restore");
    assert_same(&state(&cluster, &kept), &newer, "kept copy");
    // rollback --dry-run: says what it would swap back, changes nothing,
    // and needs no confirmation.
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["rollback", "--dry-run", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["databases"][0][0], "app", "{v}");
    assert_same(&state(&cluster, "app"), &before, "rollback --dry-run");
    let (code, out, err) = run(home
        .dbsnap()
        .args(["rollback", "--dry-run", "-d"])
        .arg(cluster.url("postgres")));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would roll back app") && out.contains("nothing was changed"),
        "{out}"
    );
    assert_same(&state(&cluster, "app"), &before, "rollback --dry-run");
    // rollback: the newer database is live again, the restored one kept.
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["rollback", "--yes", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    let restored_copy = v["databases"][0][1].as_str().unwrap().to_string();
    assert_same(&state(&cluster, "app"), &newer, "after rollback");
    assert_same(
        &state(&cluster, &restored_copy),
        &before,
        "restored copy after rollback",
    );
    // cleanup lists, then drops, the kept copies.
    let (code, v, _) = run_json(
        home.dbsnap()
            .args(["cleanup", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0);
    assert_eq!(v["kept_copies"].as_array().unwrap().len(), 1, "{v}");
    // --dry-run wins over --yes: what would be dropped, nothing dropped.
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["cleanup", "--yes", "--dry-run", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["kept_copies"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(common::kept_copies(&cluster), "1");
    let (code, _, err) = run_json(
        home.dbsnap()
            .args(["cleanup", "--yes", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(common::kept_copies(&cluster), "0");
}

#[test]
fn refusals_follow_the_decision_table_and_change_nothing() {
    let cluster = Cluster::start(15);
    platform(&cluster, "app");
    let home = Home::new();
    cluster.psql("app", "INSERT INTO schema_migrations VALUES (2, false)");
    let file_v2 = snapshot(&home, &cluster, &["app"]);
    let check = |code_want: i32, needle: &str, what: &str| {
        let st = state(&cluster, "app");
        let (code, v, err) = restore(&home, &cluster, &file_v2, &[cluster.url("app")], &["--yes"]);
        assert_eq!(code, code_want, "{what}: {err}\n{v}");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(err.contains("nothing was changed"), "{what}: {err}");
        assert_same(&state(&cluster, "app"), &st, what);
    };
    // live older: golang-migrate at 1 < 2.
    cluster.psql("app", "DELETE FROM schema_migrations WHERE version = 2");
    check(13, "upgrade the app first", "live older");
    // dirty.
    cluster.psql(
        "app",
        "UPDATE schema_migrations SET version = 2, dirty = true",
    );
    check(14, "dirty", "dirty");
    // unknown: no migration table on the live side.
    cluster.psql("app", "DROP TABLE schema_migrations");
    check(14, "cannot be compared", "unknown");
    // diverged: set-based history with different members (Rails-style).
    cluster.create_db("rails");
    cluster.psql("rails", "CREATE TABLE schema_migrations (version varchar PRIMARY KEY); INSERT INTO schema_migrations VALUES ('1'), ('2')");
    let rails_file = snapshot(&home, &cluster, &["rails"]);
    cluster.psql("rails", "DELETE FROM schema_migrations WHERE version = '2'; INSERT INTO schema_migrations VALUES ('3')");
    let (code, _, err) = restore(
        &home,
        &cluster,
        &rails_file,
        &[cluster.url("rails")],
        &["--yes"],
    );
    assert_eq!(code, 14, "{err}");
    assert!(
        err.contains("only live has [3]") && err.contains("only the snapshot has [2]"),
        "{err}"
    );
    // --drop overrides: the diverged database is replaced.
    let (code, v, err) = restore(
        &home,
        &cluster,
        &rails_file,
        &[cluster.url("rails")],
        &["--yes", "--drop"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        cluster
            .psql(
                "rails",
                "SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations"
            )
            .trim(),
        "1,2"
    );
    // A missing database needs --create.
    let (code, _, err) = restore(
        &home,
        &cluster,
        &rails_file,
        &[cluster.url("rails_copy")],
        &["--yes", "--map", "rails=rails_copy"],
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("--create"), "{err}");
}

#[test]
fn a_corrupt_archive_changes_nothing() {
    let cluster = Cluster::start(15);
    platform(&cluster, "app");
    let home = Home::new();
    let file = snapshot(&home, &cluster, &["app"]);
    change_data(&cluster, "app");
    let st = state(&cluster, "app");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let (code, _, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("app")],
        &["--yes", "--drop"],
    );
    assert_eq!(code, 10, "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_same(&state(&cluster, "app"), &st, "corrupt archive");
    assert_eq!(
        cluster
            .psql("postgres", "SELECT count(*) FROM pg_database")
            .trim(),
        "4"
    );
}

#[test]
fn a_failing_start_command_is_reported_and_the_restore_stands() {
    let cluster = Cluster::start(15);
    platform(&cluster, "app");
    let home = Home::new();
    let before = state(&cluster, "app");
    let file = snapshot(&home, &cluster, &["app"]);
    change_data(&cluster, "app");
    let log = home.path().join("hooks.log");
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("app")],
        &[
            ["--yes".to_string(), "--no-safety-snapshot".to_string()].as_slice(),
            &common::hook_args(&log, "; exit 4"),
        ]
        .concat(),
    );
    assert_eq!(code, 11, "{err}\n{v}");
    assert!(
        err.contains("the application was not started again"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    assert_same(
        &state(&cluster, "app"),
        &before,
        "restore with failing start",
    );
    assert!(v["safety_snapshot"].is_null());
}

#[test]
fn restore_a_pg15_snapshot_onto_a_fresh_pg18_server_with_create() {
    let old = Cluster::start(15);
    platform(&old, "app");
    old.psql("postgres", "CREATE ROLE appowner NOLOGIN");
    old.psql(
        "app",
        "CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO appowner",
    );
    let home = Home::new();
    let file = snapshot(&home, &old, &["app"]);
    let new = Cluster::start(18);
    // The archive's owner role is missing on the new server: reported before anything starts.
    let (code, _, err) = restore(
        &home,
        &new,
        &file,
        &[new.url("postgres")],
        &["--yes", "--create"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("appowner") && err.contains("--create-roles") && err.contains("--no-owner"),
        "{err}"
    );
    assert_eq!(
        new.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'app'"
        )
        .trim(),
        "0"
    );
    let (code, v, err) = restore(
        &home,
        &new,
        &file,
        &[new.url("postgres")],
        &["--yes", "--create", "--create-roles"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "create");
    assert_eq!(new.table_checksums("app"), old.table_checksums("app"));
    assert_eq!(
        new.psql(
            "app",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"
        )
        .trim(),
        "appowner"
    );
    // The schema is the same as far as PostgreSQL 18's pg_dump tells.
    let out = new.scratch().join("x");
    common::tar_extract(std::path::Path::new(&file), &out);
    common::pg_restore_into(&new, &out.join("app.dump"), "reference");
    assert_eq!(new.schema_dump("app"), new.schema_dump("reference"));
}

#[test]
fn only_and_map_restore_a_subset_under_another_name() {
    let cluster = Cluster::start(15);
    platform(&cluster, "core");
    cluster.create_db("backend");
    cluster.psql("backend", MIGRATIONS);
    let home = Home::new();
    let file = snapshot(&home, &cluster, &["core", "backend"]);
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("postgres")],
        &[
            "--yes",
            "--create",
            "--only",
            "core",
            "--map",
            "core=core_copy",
            "--no-safety-snapshot",
        ],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"].as_array().unwrap().len(), 1);
    assert_eq!(
        cluster.table_checksums("core_copy"),
        cluster.table_checksums("core")
    );
    let (code, _, err) = run(home
        .dbsnap()
        .arg("restore")
        .arg("--file")
        .arg(&file)
        .args(["--only", "nope", "--yes", "-d"])
        .arg(cluster.url("postgres")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no database \"nope\""), "{err}");
}

#[test]
fn a_pg18_snapshot_into_pg15_reports_version_noise_as_ignored() {
    let new = Cluster::start(18);
    new.create_db("app");
    new.psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g");
    let home = Home::new();
    let file = snapshot(&home, &new, &["app"]);
    let old = Cluster::start(15);
    // pg_restore 18 is needed to read the archive; it talks to the 15 server.
    let restore = |extra: &[&str]| {
        let mut cmd = home.dbsnap();
        cmd.args(["restore", "--yes", "--create", "--file", &file, "--pg-bin"])
            .arg(new.bin_dir())
            .arg("-d")
            .arg(old.url("postgres"))
            .args(extra);
        run_json(&mut cmd)
    };
    // A downgrade is refused unless asked for, before anything changes.
    let (code, v, err) = restore(&[]);
    assert_eq!(code, 14, "{err}\n{v}");
    assert!(
        common::error_text(&v).contains("downgrade from PostgreSQL 18 to 15"),
        "{v}"
    );
    assert!(common::error_text(&v).contains("--allow-downgrade"), "{v}");
    assert!(!old
        .psql("postgres", "SELECT datname FROM pg_database")
        .contains("app"));
    let (code, v, err) = restore(&["--allow-downgrade", "--dry-run"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert!(
        v["warnings"]
            .to_string()
            .contains("downgrade from PostgreSQL 18 to 15"),
        "{v}"
    );
    let (code, v, err) = restore(&["--allow-downgrade"]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(old.table_checksums("app"), new.table_checksums("app"));
    let ignored = v["databases"][0]["ignored"].to_string();
    assert!(
        ignored.contains("unrecognized configuration parameter"),
        "{v}"
    );
}

#[test]
fn drop_and_restore_with_parallel_jobs_pg18() {
    let cluster = Cluster::start(18);
    platform(&cluster, "app");
    let home = Home::new();
    let before = state(&cluster, "app");
    let file = snapshot(&home, &cluster, &["app"]);
    cluster.psql(
        "app",
        "INSERT INTO schema_migrations VALUES (2, false); CREATE TABLE later (id int)",
    );
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[cluster.url("app")],
        &["--yes", "--jobs", "2", "--no-safety-snapshot"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["databases"][0]["action"], "swap_restore");
    assert_same(&state(&cluster, "app"), &before, "parallel swap restore");
    // The temporary extracted member is gone.
    let leftovers: Vec<String> = home
        .snapshot_dir_entries()
        .into_iter()
        .filter(|e| e.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Two databases replaced in one run load at the same time and swap only
/// once both are loaded and checked: a copy that fails its check leaves
/// both live databases as they were (the other copy, loaded or stopped, is
/// dropped too); without the failing check both are replaced.
#[test]
fn a_failure_in_one_copy_changes_no_database() {
    let cluster = Cluster::start(15);
    platform(&cluster, "a");
    platform(&cluster, "b");
    let home = Home::new();
    let (a0, b0) = (state(&cluster, "a"), state(&cluster, "b"));
    let file = snapshot(&home, &cluster, &["a", "b"]);
    change_data(&cluster, "a");
    change_data(&cluster, "b");
    let (a1, b1) = (state(&cluster, "a"), state(&cluster, "b"));
    let urls = [cluster.url("a"), cluster.url("b")];
    // The check fails on b's copy only (copies are named after their database).
    let check = r"SELECT current_database() NOT LIKE 'b\_\_%'";
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &urls,
        &["--yes", "--drop", "--jobs", "2", "--check", check],
    );
    assert_ne!(code, 0, "{err}\n{v}");
    assert!(
        err.contains("did not return true") && err.contains("/b: check"),
        "{err}"
    );
    assert!(
        !err.contains("stopped"),
        "the cause is reported, not a stop: {err}"
    );
    assert_same(&state(&cluster, "a"), &a1, "a after b's copy failed");
    assert_same(&state(&cluster, "b"), &b1, "b after its copy failed");
    assert_eq!(common::kept_copies(&cluster), "0", "no copy is left");
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &urls,
        &["--yes", "--drop", "--jobs", "2"],
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_same(&state(&cluster, "a"), &a0, "a restored");
    assert_same(&state(&cluster, "b"), &b0, "b restored");
    assert!(
        v["databases"][0]["kept_as"].is_string() && v["databases"][1]["kept_as"].is_string(),
        "{v}"
    );
}

#[test]
fn a_downgrade_names_the_objects_that_fail() {
    let new = Cluster::start(18);
    new.create_db("app");
    new.psql(
        "app",
        "CREATE TABLE fine (id int PRIMARY KEY); \
         CREATE TABLE v (a int, b int GENERATED ALWAYS AS (a * 2) VIRTUAL); INSERT INTO v (a) VALUES (1)",
    );
    let home = Home::new();
    let file = snapshot(&home, &new, &["app"]);
    let old = Cluster::start(15);
    let mut cmd = home.dbsnap();
    cmd.args([
        "restore",
        "--yes",
        "--create",
        "--allow-downgrade",
        "--file",
        &file,
        "--pg-bin",
    ])
    .arg(new.bin_dir())
    .arg("-d")
    .arg(old.url("postgres"));
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 12, "{err}\n{v}");
    let msg = &common::error_text(&v);
    assert!(
        msg.contains("syntax error at or near \")\" -- CREATE TABLE public.v"),
        "{msg}"
    );
    // The half-created database is gone.
    let left = old.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname = 'app'",
    );
    assert_eq!(left.trim(), "0");
}

#[test]
fn restores_keep_only_the_newest_safety_snapshots() {
    let cluster = Cluster::start(15);
    platform(&cluster, "app");
    let home = Home::new();
    std::fs::write(
        home.path().join("dbsnap.toml"),
        "keep_safety_snapshots = 2\n",
    )
    .unwrap();
    // The repository also goes through create: a directory that does not
    // exist yet is made.
    let repo = home.path().join("new").join("repo");
    let v = common::create(
        &home,
        &cluster,
        &["app"],
        &["--dir", repo.to_str().unwrap()],
    );
    let file = v["file"].as_str().unwrap().to_string();
    assert!(repo.is_dir());
    let mut taken: Vec<String> = Vec::new();
    for i in 0..3 {
        let (code, v, err) = restore(
            &home,
            &cluster,
            &file,
            &[cluster.url("app")],
            &["--yes", "--dir", repo.to_str().unwrap()],
        );
        assert_eq!(code, 0, "restore {i}: {err}\n{v}");
        let safety = v["safety_snapshot"].as_str().unwrap().to_string();
        let removed: Vec<String> = v["removed_safety_snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        // The third restore removes the first safety snapshot, never its own.
        let want: Vec<String> = if i == 2 {
            vec![taken[0].clone()]
        } else {
            vec![]
        };
        assert_eq!(removed, want, "restore {i}");
        assert!(std::path::Path::new(&safety).exists());
        taken.push(safety);
    }
    let (_, v, _) = run_json(home.dbsnap().args(["list", "--dir"]).arg(&repo));
    let rows = v["snapshots"].as_array().unwrap();
    let safety: Vec<&str> = rows
        .iter()
        .filter(|r| r["safety"] == true)
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(safety, [taken[2].as_str(), taken[1].as_str()], "{v}");
    assert_eq!(rows.len(), 3, "the snapshot itself is never pruned: {v}");
}

/// A refused login on the server's maintenance database (a restore with
/// --create needs it) names that database, not its template1 fallback,
/// and says why dbsnap logs in there.
#[test]
fn a_wrong_password_for_the_server_names_the_maintenance_database() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let file = snapshot(&home, &cluster, &["app"]);
    let wrong = cluster.url_as("postgres", Some("not-the-password"), "postgres");
    let (code, v, err) = restore(
        &home,
        &cluster,
        &file,
        &[wrong],
        &["--yes", "--create", "--map", "app=app-new", "-w"],
    );
    assert_eq!(code, 4, "{err}\n{v}");
    let first = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(first.contains("/postgres:"), "{err}");
    assert!(!first.contains("template1"), "{err}");
    assert!(err.contains("maintenance database"), "{err}");
}
