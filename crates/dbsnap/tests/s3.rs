//! Every command on an S3 repository, against real S3 servers (s3s-fs and
//! moto) and real PostgreSQL: create streams to the bucket (a multipart
//! upload; nothing written locally), list, verify, extract-version,
//! restore (data-only and replace, straight from the bucket) gives back
//! exactly the data dumped, pin/prune/delete; wrong credentials, a missing
//! bucket, a plain-HTTP endpoint without --force-insecure and a server
//! killed mid-upload each fail clearly and leave nothing behind.

mod common;

use std::process::Command;

use common::{fingerprint, run, run_json, Home};
use dbsnap_test_support::s3::{S3Kind, S3Server, KINDS};
use dbsnap_test_support::Cluster;

/// `dbsnap` reaching `server` through the standard AWS environment, with
/// its own temporary directory (to show nothing is left there).
fn dbsnap(home: &Home, server: &S3Server, tmp: &std::path::Path) -> Command {
    let mut c = home.dbsnap();
    for (k, v) in server.env() {
        c.env(k, v);
    }
    c.env("TMPDIR", tmp);
    c
}

/// 5 MiB parts (the S3 minimum), so the snapshot below is a multipart upload.
fn small_parts(home: &Home) -> String {
    let config = home.path().join("dbsnap.toml");
    std::fs::write(&config, "[s3]\npart_size_mib = 5\n").unwrap();
    config.display().to_string()
}

fn platform(cluster: &Cluster) {
    for db in ["core", "usage"] {
        cluster.create_db(db);
        // A migration table: equal versions make the first restore data-only.
        cluster.psql(
            db,
            "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
             INSERT INTO schema_migrations VALUES (3, false)",
        );
    }
    // About 12 MiB compressed: three parts.
    cluster.psql(
        "core",
        "CREATE TABLE events AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 300000) g; \
         CREATE INDEX ON events (v); CREATE SEQUENCE s; SELECT setval('s', 42);",
    );
    cluster.psql(
        "usage",
        "CREATE TABLE meters AS SELECT g AS id, g % 17 AS n FROM generate_series(1, 5000) g",
    );
}

#[test]
fn every_command_works_on_an_s3_repository() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let before = [
        fingerprint(&cluster, "core"),
        fingerprint(&cluster, "usage"),
    ];
    for kind in KINDS {
        let server = S3Server::start(kind);
        server.create_bucket("backups");
        let home = Home::new();
        let tmp = tempfile::tempdir().unwrap();
        let config = small_parts(&home);
        let repo = "s3://backups/platform";
        let cmd = || {
            let mut c = dbsnap(&home, &server, tmp.path());
            c.args(["--config", &config, "--repo", repo]);
            c
        };

        let mut create = cmd();
        create.arg("create").arg("--pg-bin").arg(cluster.bin_dir());
        for db in ["core", "usage"] {
            create.arg("-d").arg(cluster.url(db));
        }
        let (code, v, err) = run_json(&mut create);
        assert_eq!(code, 0, "{kind:?} create: {v}\n{err}\n{}", server.log());
        let file = v["file"].as_str().unwrap().to_string();
        assert!(file.starts_with("s3://backups/platform/"), "{file}");
        let name = file.rsplit('/').next().unwrap().to_string();
        assert!(v["size"].as_u64().unwrap() > 10 << 20, "{v}");
        // Nothing local: no snapshot directory, no temporary files.
        assert!(
            !home.snapshots().exists(),
            "{kind:?}: a local repository appeared"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

        let (code, v, err) = run_json(cmd().arg("list"));
        assert_eq!(code, 0, "{err}");
        let listed: Vec<&str> = v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [name.as_str()], "{kind:?}: {v}");

        let (code, v, err) = run_json(cmd().args(["verify", "--file", &name]));
        assert_eq!(code, 0, "{kind:?} verify: {v}\n{err}");
        let (code, v, err) = run_json(cmd().args(["extract-version", "--file", &name]));
        assert_eq!(code, 0, "{kind:?} extract-version: {v}\n{err}");

        // Data-only restore, then a replace (--drop) by the native engine
        // (range reads) and by stock pg_restore (a checked scratch copy).
        for extra in [
            &[][..],
            &["--drop"][..],
            &["--drop", "--engine", "pg-restore", "--jobs", "2"][..],
        ] {
            cluster.psql(
                "core",
                "DELETE FROM events WHERE id % 3 = 0; SELECT setval('s', 7)",
            );
            cluster.psql("usage", "UPDATE meters SET n = -1");
            let mut restore = cmd();
            restore
                .args(["restore", "--yes", "--no-safety-snapshot", "--file", &file])
                .args(extra)
                .arg("--pg-bin")
                .arg(cluster.bin_dir());
            for db in ["core", "usage"] {
                restore.arg("-d").arg(cluster.url(db));
            }
            let (code, v, err) = run_json(&mut restore);
            assert_eq!(code, 0, "{kind:?} restore {extra:?}: {v}\n{err}");
            assert_eq!(
                fingerprint(&cluster, "core"),
                before[0],
                "{kind:?} {extra:?}"
            );
            assert_eq!(
                fingerprint(&cluster, "usage"),
                before[1],
                "{kind:?} {extra:?}"
            );
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        }
        // The replaced databases' previous copies are not wanted here.
        let (code, _, err) = run(cmd()
            .args(["cleanup", "--yes"])
            .arg("-d")
            .arg(cluster.url("core")));
        assert!(code == 0 || code == 2, "{err}");

        // Pin, prune keeps it, delete refuses it; unpin, delete.
        let (code, _, err) = run_json(cmd().args(["pin", &name]));
        assert_eq!(code, 0, "{err}");
        let (code, v, err) = run_json(cmd().args(["prune", "--keep-last", "1", "--dry-run"]));
        assert_eq!(code, 0, "{v}\n{err}");
        let (code, _, err) = run_json(cmd().args(["delete", "--yes", &name]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("unpin"), "{err}");
        let (code, _, err) = run_json(cmd().args(["unpin", &name]));
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run_json(cmd().args(["delete", "--yes", &name]));
        assert_eq!(code, 0, "{err}");
        let (_, v, _) = run_json(cmd().arg("list"));
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 0, "{v}");
        if kind == S3Kind::S3sFs {
            assert_eq!(server.open_uploads(), Vec::<String>::new());
        }
    }
}

#[test]
fn wrong_credentials_a_missing_bucket_and_plain_http_each_say_what_to_do() {
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("backups");
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();

    let (code, _, err) = run_json(
        dbsnap(&home, &server, tmp.path())
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .args(["list", "--repo", "s3://backups/p"]),
    );
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    // No credentials at all: the client falls back to the instance
    // metadata service, which has none here; that is what is said.
    let (code, _, err) = run_json(
        dbsnap(&home, &server, tmp.path())
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .args(["list", "--repo", "s3://backups/p"]),
    );
    assert_eq!(code, 9, "{err}");
    assert!(
        err.contains("no credentials found") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(!err.contains("refused the credentials"), "{err}");

    let (code, _, err) =
        run_json(dbsnap(&home, &server, tmp.path()).args(["list", "--repo", "s3://nosuch/p"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bucket of s3://nosuch/p does not exist"),
        "{err}"
    );

    // Another scheme, an endpoint that is not a URL: usage errors.
    let (code, _, err) =
        run_json(dbsnap(&home, &server, tmp.path()).args(["list", "--repo", "ftp://backups/p"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not a directory or an object store URL"),
        "{err}"
    );
    assert!(!tmp.path().join("ftp:").exists());
    let (code, _, err) = run_json(
        dbsnap(&home, &server, tmp.path())
            .env("AWS_ENDPOINT_URL", "127.0.0.1:9")
            .args(["list", "--repo", "s3://backups/p"]),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("AWS_ENDPOINT_URL"), "{err}");

    let plain = || {
        let mut c = dbsnap(&home, &server, tmp.path());
        c.env_remove("AWS_ALLOW_HTTP")
            .args(["list", "--repo", "s3://backups/p"]);
        c
    };
    let (code, _, err) = run_json(&mut plain());
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("--force-insecure"), "{err}");
    let (code, v, err) = run_json(plain().arg("--force-insecure"));
    assert_eq!(code, 0, "{v}\n{err}");
}

#[test]
fn a_server_killed_mid_upload_leaves_nothing_and_the_next_create_cleans_up() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let mut server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("backups");
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let config = small_parts(&home);
    let create = |server: &S3Server| {
        let mut c = dbsnap(&home, server, tmp.path());
        c.args([
            "--config",
            &config,
            "--repo",
            "s3://backups/p",
            "create",
            "--pg-bin",
        ])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("core"));
        c
    };
    let child = create(&server)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the first part has arrived.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.open_uploads().iter().all(|f| !f.contains(".part-")) {
        assert!(std::time::Instant::now() < deadline, "no part arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains("s3://backups/p/"), "{err}");
    assert!(err.contains("cannot be reached"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    server.restart();
    // create into a missing bucket fails before it dumps anything.
    let (code, _, err) = run_json(
        dbsnap(&home, &server, tmp.path())
            .args(["create", "--repo", "s3://nosuch/p", "--pg-bin"])
            .arg(cluster.bin_dir())
            .arg("-d")
            .arg(cluster.url("usage")),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the bucket of s3://nosuch/p does not exist"),
        "{err}"
    );
    assert!(!server.bucket_dir("nosuch").exists(), "the bucket was made");
    let (_, v, _) =
        run_json(dbsnap(&home, &server, tmp.path()).args(["list", "--repo", "s3://backups/p"]));
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 0, "{v}");
    assert!(
        !server.open_uploads().is_empty(),
        "the upload should still be open"
    );
    let (code, v, err) = run_json(&mut create(&server));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(
        server.open_uploads(),
        Vec::<String>::new(),
        "a stale upload stayed"
    );
}
