//! `cleanup` with a server that cannot be reached: journals that left no
//! kept database there need no connection; a server that holds kept
//! databases and cannot be reached is a warning that names it and what to
//! do, while the other servers are still cleaned up and reported, and the
//! exit code says that not everything was done.

mod common;

use std::path::PathBuf;

use common::{run, run_json, Home};
use dbsnap_test_support::Cluster;

fn app(cluster: &Cluster) {
    cluster.create_db("app");
    cluster.psql("app", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false); CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
}

/// Runs a restore (`--yes`, no safety snapshot) into `urls`; returns the
/// path of its journal.
fn restore(home: &Home, cluster: &Cluster, file: &str, urls: &[String], extra: &[&str]) -> PathBuf {
    // Restores started in the same second get their own journals (ids
    // `…Z`, `…Z-2`): no pause needed between them.
    let mut cmd = common::quick_restore_urls(home, cluster, file, urls);
    let (code, v, err) = run_json(cmd.args(extra));
    assert_eq!(code, 0, "restore {extra:?}: {err}\n{v}");
    home.path()
        .join("state")
        .join(format!("restore-{}.json", v["id"].as_str().unwrap()))
}

#[test]
fn a_server_that_cannot_be_reached_is_reported_and_the_others_are_cleaned_up() {
    let reachable = Cluster::start(15);
    let gone = Cluster::start(15);
    app(&reachable);
    app(&gone);
    let home = Home::new();
    let file = common::create(&home, &reachable, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    // A swap on each server keeps the previous database there; a restore
    // that creates a database keeps nothing.
    restore(
        &home,
        &reachable,
        &file,
        &[reachable.url("app")],
        &["--drop"],
    );
    let kept_on_gone = restore(
        &home,
        &gone,
        &file,
        &[gone.url("app")],
        &["--drop", "--into-other-origin"],
    );
    let created = restore(
        &home,
        &gone,
        &file,
        &[gone.url("postgres")],
        &["--create", "--map", "app=created"],
    );
    let created_journal = std::fs::read_to_string(&created).unwrap();
    assert!(
        created_journal.contains("\"committed\""),
        "{created_journal}"
    );
    assert_eq!(common::kept_copies(&reachable), "1");
    assert_eq!(common::kept_copies(&gone), "1");
    gone.stop();

    let cleanup = |args: &[&str]| {
        let mut cmd = home.dbsnap();
        cmd.arg("cleanup")
            .args(args)
            .arg("-d")
            .arg(reachable.url("postgres"));
        cmd
    };
    let gone_server = format!("127.0.0.1:{}", gone.port);
    // --dry-run: what is on the reachable server is listed; the other is a
    // warning naming it, the journal that sends cleanup there, and what to
    // do; the exit code is the unreachable server's (3).
    let (code, v, err) = run_json(&mut cleanup(&["--dry-run"]));
    assert_eq!(code, 3, "{err}\n{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"]["exit_code"], 3, "{v}");
    let kept = v["kept_copies"].as_array().unwrap();
    assert_eq!(kept.len(), 1, "{v}");
    assert_eq!(kept[0]["server"], format!("127.0.0.1:{}", reachable.port));
    let failed = &v["failed_servers"];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(failed[0]["server"], gone_server, "{v}");
    // Only the journal that left a kept database there, not the one that
    // created a database.
    assert_eq!(
        failed[0]["journals"],
        serde_json::json!([kept_on_gone]),
        "{v}"
    );
    let hint = failed[0]["hint"].as_str().unwrap();
    assert!(hint.contains("start the server"), "{hint}");
    assert!(hint.contains(&kept_on_gone.display().to_string()), "{hint}");
    assert!(
        err.contains(&format!("warning: could not clean up server {gone_server}")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(common::kept_copies(&reachable), "1", "a dry run dropped");

    // --yes: the reachable server's kept database is dropped and reported
    // on stdout; the error says what was done and what was not.
    let (code, out, err) = run(&mut cleanup(&["--yes"]));
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        out.contains("dropped: app__dbsnap_old_")
            && out.contains(&format!("on 127.0.0.1:{}", reachable.port)),
        "{out}"
    );
    assert!(
        err.contains(&format!("warning: could not clean up server {gone_server}")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: cleanup incomplete: dropped 1 kept database; not cleaned up: server {gone_server}"
        )),
        "{err}"
    );
    assert_eq!(common::kept_copies(&reachable), "0");

    // The server is gone for good: once its journal with a kept database
    // is removed, as the hint says, cleanup needs it no more, although the
    // journal of the database created there still names it.
    std::fs::remove_file(&kept_on_gone).unwrap();
    let (code, v, err) = run_json(&mut cleanup(&["--yes"]));
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["failed_servers"], serde_json::json!([]), "{v}");
    assert!(!err.contains("warning"), "{err}");
    assert!(created.exists());
}

#[test]
fn a_kept_copy_cleanup_dropped_needs_no_server_afterwards() {
    let cluster = Cluster::start(15);
    app(&cluster);
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    let journal = restore(&home, &cluster, &file, &[cluster.url("app")], &["--drop"]);
    assert_eq!(common::kept_copies(&cluster), "1");
    let (code, _, err) = run(home
        .dbsnap()
        .args(["cleanup", "--yes", "-d"])
        .arg(cluster.url("postgres")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(common::kept_copies(&cluster), "0");
    assert!(
        std::fs::read_to_string(&journal)
            .unwrap()
            .contains("\"kept_dropped\": true"),
        "the journal records that the kept copy is gone"
    );
    // Its server gone, nothing sends cleanup there any more.
    cluster.stop();
    let (code, out, err) = run(home.dbsnap().args(["cleanup", "--dry-run"]));
    assert_eq!(code, 0, "{out}{err}");
}
