//! Every command's `--json` is one envelope (docs/SCRIPTING.md): `ok`,
//! `warnings`, `result` and/or `error {kind, exit_code, message, hint}`,
//! `dry_run` where it applies; `ok` exactly when the exit code is 0. Each
//! command is run for real, succeeding and failing, and its output parsed
//! (common::run_envelope checks the shape).

mod common;

use common::{run_envelope, Home};
use dbsnap_test_support::Cluster;

#[test]
fn every_command_answers_in_the_one_envelope() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, false); CREATE TABLE t AS SELECT 1 AS id",
    );
    let home = Home::new();
    let bin = cluster.bin_dir().to_str().unwrap().to_string();
    let url = cluster.url("app");
    let other = home.path().join("other");
    let bucket_backup = home.path().join("bucket-backup");
    let dbsnap = |args: &[&str]| {
        let mut c = home.dbsnap();
        c.args(args);
        run_envelope(&mut c)
    };
    let (code, v, err) = dbsnap(&["create", "--pg-bin", &bin, "-d", &url]);
    assert_eq!(code, 0, "{err}");
    let file = v["result"]["file"].as_str().unwrap().to_string();
    let name = file.rsplit('/').next().unwrap().to_string();
    // (arguments, the exit code, and for a success the result's shape)
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["list"], 0),
        (vec!["verify", &file], 0),
        (vec!["extract-version", &file], 0),
        (
            vec![
                "restore",
                "--dry-run",
                "--file",
                &file,
                "--pg-bin",
                &bin,
                "-d",
                &url,
            ],
            0,
        ),
        (
            vec![
                "restore",
                "--yes",
                "--no-safety-snapshot",
                "--file",
                &file,
                "--pg-bin",
                &bin,
                "-d",
                &url,
            ],
            0,
        ),
        (vec!["pin", &name], 0),
        (vec!["delete", &name, "--yes"], 2),
        (vec!["unpin", &name], 0),
        (vec!["delete", &name, "--dry-run"], 0),
        (vec!["prune", "--keep-last", "1", "--dry-run"], 0),
        (vec!["copy", "--to", other.to_str().unwrap()], 0),
        (vec!["rollback", "--dry-run"], 2),
        (vec!["resume"], 0),
        (vec!["cleanup", "--dry-run"], 0),
        (
            vec!["bucket-verify", "--from", bucket_backup.to_str().unwrap()],
            2,
        ),
        (
            vec![
                "bucket-restore",
                "--list",
                "--from",
                bucket_backup.to_str().unwrap(),
            ],
            2,
        ),
        (vec!["verify", "nonexistent.tar"], 2),
        (
            vec![
                "restore",
                "--file",
                &file,
                "-d",
                "postgres://u@127.0.0.1:1/app",
            ],
            3,
        ),
        (vec!["create", "--jobs", "0", "-d", &url], 2),
        (vec!["no-such-command"], 2),
    ];
    for (args, expected) in cases {
        let (code, v, err) = dbsnap(&args);
        assert_eq!(code, expected, "{args:?}: {v}\n{err}");
        if code != 0 {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.contains("\nhint: ")),
                "{args:?}: the hint is apart: {v}"
            );
        } else {
            assert!(v.get("result").is_some(), "{args:?}: no result: {v}");
        }
        // Every document of a command that takes --dry-run says whether
        // it was given, success or failure; no other command's has it.
        let takes_dry_run = [
            "restore",
            "delete",
            "prune",
            "rollback",
            "cleanup",
            "bucket-prune",
        ]
        .contains(&args[0]);
        if takes_dry_run {
            assert_eq!(v["dry_run"], args.contains(&"--dry-run"), "{args:?}: {v}");
        } else {
            assert!(v.get("dry_run").is_none(), "{args:?}: {v}");
        }
    }
    // An error with a hint has both, apart.
    let (_, v, _) = dbsnap(&["verify", "nonexistent.tar"]);
    assert!(v["error"]["hint"].is_string(), "{v}");
    // Warnings a run logs are in the envelope too.
    let open = home.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, v, err) = dbsnap(&[
        "create",
        "--pg-bin",
        &bin,
        "-d",
        &url,
        "--dir",
        open.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        v["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("can be read by other users")),
        "{v}"
    );
}
