//! Warnings that matter to a user are shown (and recorded): a dirty schema
//! version, an unsafe password file, a pg_dump compression setting.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{create_command, run, run_json, Home};
use dbsnap_test_support::{Cluster, SUPERUSER_PASSWORD};

#[test]
fn dirty_schema_version_is_snapshotted_with_a_warning() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql("app", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (12, true)");
    let home = Home::new();
    let mut cmd = home.dbsnap();
    cmd.args(["create", "--compress", "1", "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("app"));
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"][0]["dirty"], true);
    assert_eq!(v["databases"][0]["schema_version"], "12 (dirty)");
    let warning = v["warnings"][0].as_str().unwrap();
    let plain = "/app: the schema is marked dirty: migration 12 failed or is still running";
    assert!(warning.contains(plain), "{warning}");
    // Shown once, in plain words; logged.
    assert_eq!(err.matches("dirty").count(), 1, "{err}");
    assert!(err.starts_with("warning: ") && err.contains(plain), "{err}");
    assert!(!err.contains("(dirty) is dirty"), "{err}");
    assert!(home.logs().contains(plain), "warning not logged");
    let (_, v, _) = run_json(
        home.dbsnap()
            .arg("extract-version")
            .arg("--file")
            .arg(v["file"].as_str().unwrap()),
    );
    assert_eq!(v["databases"][0]["dirty"], true);
    // Text output shows it too.
    let (code, _, err) = run(&mut create_command(&home, &cluster, &["app"]));
    assert_eq!(code, 0);
    assert_eq!(err.matches(plain).count(), 1, "{err}");
    // With -v too (info on stderr): still once.
    let (code, _, err) = run(create_command(&home, &cluster, &["app"]).arg("-v"));
    assert_eq!(code, 0);
    assert_eq!(err.matches(plain).count(), 1, "{err}");
}

#[test]
fn no_colour_codes_in_pipes_or_log_files() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let (code, out, err) = run(create_command(&home, &cluster, &["app"]).arg("-vv"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("info: "), "no -v output: {err}");
    assert!(!err.contains("\x1b["), "colour in a pipe: {err:?}");
    assert!(!out.contains("\x1b["), "colour in a pipe: {out:?}");
    let logs = home.logs();
    assert!(logs.contains("snapshot written"), "{logs}");
    assert!(!logs.contains("\x1b["), "colour in the log file: {logs:?}");
}

#[test]
fn world_readable_password_file_is_ignored_with_a_warning() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let pgpass = home.path().join("pgpass");
    std::fs::write(&pgpass, format!("*:*:*:*:{SUPERUSER_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = cluster.url_as("postgres", None, "app");
    let mut cmd = home.dbsnap();
    cmd.env("PGPASSFILE", &pgpass)
        .args(["create", "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(&url);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 4, "stderr: {err}");
    assert!(err.contains("has group or world access"), "{err}");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = home.dbsnap();
    cmd.env("PGPASSFILE", &pgpass)
        .args(["create", "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(&url);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
}
