//! Acceptance: what dbsnap writes holds the application's data, so only its
//! user can read it: 0600 files, 0700 directories; a repository directory
//! others can read gets a warning; hooks still run with the user's umask.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{run, run_json, Home};
use dbsnap_test_support::Cluster;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` must be 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            assert_private(&p);
        } else {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

#[test]
fn snapshots_logs_journals_and_safety_snapshots_are_private() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, false); CREATE TABLE t AS SELECT 1 AS id",
    );
    let home = Home::new();
    let file = common::create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    // A restore with a safety snapshot, a journal, and a hook that records its umask.
    let umask_file = home.path().join("hook-umask");
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--yes", "--file", &file, "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("app"))
        .arg("--stop-cmd")
        .arg(format!("umask > {}", umask_file.display()))
        .arg("--start-cmd")
        .arg("true");
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}\n{v}");
    assert!(v["safety_snapshot"].is_string(), "{v}");
    for dir in ["snapshots", "logs", "state"] {
        assert_private(&home.path().join(dir));
    }
    // The user's own commands keep the user's umask.
    let user = std::process::Command::new("sh")
        .args(["-c", "umask"])
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&umask_file).unwrap().trim(),
        String::from_utf8_lossy(&user.stdout).trim()
    );
}

#[test]
fn a_repository_others_can_read_gets_a_warning() {
    let home = Home::new();
    let repo = home.path().join("shared");
    std::fs::create_dir(&repo).unwrap();
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = run(home.dbsnap().arg("list").arg("--dir").arg(&repo));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("can be read by other users (mode 0755)")
            && err.contains(&format!("chmod 700 {}", repo.display())),
        "{err}"
    );
    assert_eq!(
        err.matches("can be read by other users").count(),
        1,
        "{err}"
    );
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, _, err) = run(home.dbsnap().arg("list").arg("--dir").arg(&repo));
    assert!(!err.contains("other users"), "{err}");
}
