//! A snapshot knows where it came from: restoring it into an existing
//! database of another server (another app's `core`), or for another
//! target, is refused before anything starts, naming both sides, unless
//! `--into-other-origin` (or a confirmation on a terminal) says so; a
//! database created on a new server is a move the plan states.

mod common;

use common::pty::Pty;
use common::{create, run, run_json, Home};
use dbsnap_test_support::Cluster;

const APP: &str =
    "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
     INSERT INTO schema_migrations VALUES (1, false); \
     CREATE TABLE t (id int PRIMARY KEY, who text); ";

fn app(cluster: &Cluster, db: &str, who: &str) {
    cluster.create_db(db);
    cluster.psql(
        db,
        &format!("{APP} INSERT INTO t SELECT g, '{who}' FROM generate_series(1, 50) g"),
    );
}

fn system_identifier(cluster: &Cluster) -> String {
    cluster
        .psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .trim()
        .to_string()
}

fn restore(home: &Home, cluster: &Cluster, file: &str, url: &str) -> std::process::Command {
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--file", file, "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", url]);
    cmd
}

#[test]
fn another_servers_snapshot_is_refused_unless_allowed() {
    let (x, y) = (Cluster::start(15), Cluster::start(15));
    app(&x, "core", "x");
    app(&y, "core", "y");
    let home = Home::new();
    let v = create(&home, &x, &["core"], &[]);
    let file = v["file"].as_str().unwrap().to_string();
    let meta = common::metadata(&file);
    assert_eq!(meta["format_version"], "1.1");
    assert_eq!(
        meta["databases"][0]["system_identifier"],
        system_identifier(&x)
    );
    let before = y.table_checksums("core");

    // Same schema version, same name, another server: `--yes` does not do it.
    let (code, out, err) = run(restore(&home, &y, &file, &y.url("core")).arg("--yes"));
    assert_eq!(code, 19, "{out}\n{err}");
    let (sx, sy) = (system_identifier(&x), system_identifier(&y));
    assert!(
        err.contains("not the ones the snapshot was taken from")
            && err.contains(&format!("system {sx}"))
            && err.contains(&format!("system {sy}"))
            && err.contains("--into-other-origin"),
        "{err}"
    );
    // The plan was shown, with both sides.
    assert!(err.contains("another origin: core:"), "{err}");
    assert_eq!(y.table_checksums("core"), before, "nothing changed");
    assert!(
        home.snapshot_dir_entries()
            .iter()
            .all(|n| !n.starts_with("safety")),
        "no safety snapshot: {:?}",
        home.snapshot_dir_entries()
    );
    assert!(
        !home.path().join("state").exists()
            || std::fs::read_dir(home.path().join("state"))
                .unwrap()
                .next()
                .is_none(),
        "no journal"
    );

    // A dry run says so too, and exits with the refusal; --json has the reason.
    let (code, out, _) = run(restore(&home, &y, &file, &y.url("core")).arg("--dry-run"));
    assert_eq!(code, 19);
    assert!(
        out.contains("another origin: core:") && out.contains("dry run"),
        "{out}"
    );
    let (code, v, _) = run_json(restore(&home, &y, &file, &y.url("core")).arg("--dry-run"));
    assert_eq!(code, 19);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["kind"], "other_origin", "{v}");

    // Allowed: the restore goes ahead and says so.
    let (code, v, err) = run_json(
        restore(&home, &y, &file, &y.url("core")).args(["--dry-run", "--into-other-origin"]),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["origin"]["allowed"], true, "{v}");
    assert_eq!(v["origin"]["differences"][0]["kind"], "server", "{v}");
    assert_eq!(
        v["origin"]["differences"][0]["snapshot"]["system_identifier"],
        sx
    );
    let (code, _, err) = run(restore(&home, &y, &file, &y.url("core")).args([
        "--yes",
        "--into-other-origin",
        "--no-safety-snapshot",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(y.table_checksums("core"), x.table_checksums("core"));
}

#[test]
fn a_database_created_on_a_new_server_is_a_move_and_needs_no_flag() {
    let (x, y) = (Cluster::start(15), Cluster::start(15));
    app(&x, "core", "x");
    let home = Home::new();
    let v = create(&home, &x, &["core"], &[]);
    let file = v["file"].as_str().unwrap().to_string();
    let (code, out, err) =
        run(restore(&home, &y, &file, &y.url("postgres")).args(["--create", "--yes"]));
    assert_eq!(code, 0, "{out}\n{err}");
    let (sx, sy) = (system_identifier(&x), system_identifier(&y));
    assert!(
        err.contains(&format!(
            "core moves from 127.0.0.1:{} (system {sx}) to 127.0.0.1:{} (system {sy})",
            x.port, y.port
        )),
        "{err}"
    );
    assert_eq!(y.table_checksums("core"), x.table_checksums("core"));
    // The new server's database is its own origin now: its safety snapshots
    // and later snapshots restore back into it without the flag.
    let v = create(&home, &y, &["core"], &[]);
    let again = v["file"].as_str().unwrap().to_string();
    let (code, _, err) = run(restore(&home, &y, &again, &y.url("core")).args(["--yes"]));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn another_target_is_refused_and_a_terminal_may_confirm() {
    let x = Cluster::start(15);
    app(&x, "core", "x");
    let home = Home::new();
    std::fs::write(
        home.path().join("dbsnap.toml"),
        format!(
            "[targets.blue]\ndatabases = [\"{url}\"]\n[targets.green]\ndatabases = [\"{url}\"]\n",
            url = x.url("core")
        ),
    )
    .unwrap();
    let mut cmd = home.dbsnap();
    cmd.args(["create", "--target", "blue", "--pg-bin"])
        .arg(x.bin_dir());
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let file = v["file"].as_str().unwrap().to_string();
    x.psql("core", "DELETE FROM t WHERE id > 10");
    let before = x.table_checksums("core");

    let mut cmd = home.dbsnap();
    cmd.args([
        "restore", "--target", "green", "--yes", "--file", &file, "--pg-bin",
    ])
    .arg(x.bin_dir());
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 19, "{err}");
    assert!(
        err.contains("taken for target \"blue\", the restore is for target \"green\""),
        "{err}"
    );
    assert_eq!(x.table_checksums("core"), before);

    // Its own target: no question about origins.
    let mut cmd = home.dbsnap();
    cmd.args([
        "restore",
        "--target",
        "blue",
        "--dry-run",
        "--file",
        &file,
        "--pg-bin",
    ])
    .arg(x.bin_dir());
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("another origin"), "{out}");

    // On a terminal, without --yes: both sides shown, and a "no" changes nothing.
    let on_terminal = || {
        let mut cmd = home.dbsnap();
        cmd.args([
            "restore",
            "--target",
            "green",
            "--no-safety-snapshot",
            "--file",
        ])
        .arg(&file)
        .arg("--pg-bin")
        .arg(x.bin_dir());
        Pty::spawn(cmd)
    };
    let mut pty = on_terminal();
    pty.expect("Restore into them anyway?");
    pty.send("n\r");
    let (code, screen) = pty.wait();
    assert_eq!(code, 15, "{screen}");
    assert!(
        screen.contains("\"blue\"") && screen.contains("\"green\""),
        "{screen}"
    );
    assert_eq!(x.table_checksums("core"), before);

    // A "yes" goes on to the usual confirmation.
    let mut pty = on_terminal();
    pty.expect("Restore into them anyway?");
    pty.send("y\r");
    pty.expect("Replace the data of these databases");
    pty.send("y\r");
    let (code, screen) = pty.wait();
    assert_eq!(code, 0, "{screen}");
    assert_eq!(
        x.psql("core", "SELECT count(*) FROM t").trim(),
        "50",
        "{screen}"
    );
}

#[test]
fn moving_to_databases_created_first_on_an_external_server() {
    // docs/MOVING.md: the bundled server's app moves to an external server
    // where the operator created an empty database and its owner first.
    let (bundled, external) = (Cluster::start(15), Cluster::start(15));
    app(&bundled, "core", "bundled");
    bundled.psql("postgres", "CREATE ROLE app LOGIN");
    bundled.psql("core", "ALTER TABLE t OWNER TO app");
    external.psql("postgres", "CREATE ROLE app LOGIN");
    external.psql("postgres", "CREATE DATABASE core OWNER app");
    let home = Home::new();
    let v = create(&home, &bundled, &["core"], &[]);
    let file = v["file"].as_str().unwrap().to_string();
    let to = external.url("core");
    // The empty database has no schema version: refused as unknown.
    let (code, _, err) = run(restore(&home, &external, &file, &to).arg("--yes"));
    assert_eq!(code, 14, "{err}");
    // --drop replaces it, but it is another server's database.
    let (code, _, err) = run(restore(&home, &external, &file, &to).args(["--yes", "--drop"]));
    assert_eq!(code, 19, "{err}");
    let (code, _, err) =
        run(restore(&home, &external, &file, &to).args(["--yes", "--drop", "--into-other-origin"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        external.table_checksums("core"),
        bundled.table_checksums("core")
    );
    assert_eq!(external.schema_dump("core"), bundled.schema_dump("core"));
}
