//! Encryption at rest (age) with real PostgreSQL, the stock `age` tool and
//! a real S3 server: what is stored is ciphertext; `verify` checks
//! checksums without a key and reads the dumps with one; a restore without
//! the key or with a wrong one fails before anything changes (exit 2); with
//! the key, data-only, replace (native, also straight from S3) and stock
//! pg_restore give back exactly the data dumped; the stock tools recover a
//! snapshot as the docs say; a passphrase works the same way.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fingerprint, run, run_json, tar_extract, Home};
use dbsnap_test_support::s3::{S3Kind, S3Server};
use dbsnap_test_support::Cluster;

/// A value that must never be readable in an encrypted snapshot.
const MARKER: &str = "plaintext-marker-7f3a9c";

/// Makes an age key with the stock `age-keygen`; returns (file, recipient).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (installed by scripts/setup.sh)");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (path, recipient)
}

fn platform(cluster: &Cluster) {
    cluster.create_db("app");
    cluster.psql(
        "app",
        &format!(
            "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
             INSERT INTO schema_migrations VALUES (3, false); \
             CREATE TABLE t AS SELECT g AS id, md5(g::text) || '{MARKER}' AS v FROM generate_series(1, 100000) g; \
             CREATE INDEX ON t (v); CREATE SEQUENCE s; SELECT setval('s', 42);"
        ),
    );
}

fn damage(cluster: &Cluster) {
    cluster.psql(
        "app",
        "DELETE FROM t WHERE id % 3 = 0; SELECT setval('s', 7)",
    );
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn create(home: &Home, cluster: &Cluster, extra: &[&str]) -> String {
    let mut c = home.dbsnap();
    c.arg("create")
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app"), "--compress", "0"])
        .args(extra);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "create: {v}\n{err}");
    v["file"].as_str().unwrap().to_string()
}

fn restore(home: &Home, cluster: &Cluster, file: &str, extra: &[&str]) -> (i32, String) {
    let mut c = home.dbsnap();
    c.args(["restore", "--file", file, "--yes", "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app")])
        .args(extra);
    let (code, out, err) = run(&mut c);
    (code, format!("{out}\n{err}"))
}

#[test]
fn an_encrypted_snapshot_needs_its_key_and_restores_exactly() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let before = fingerprint(&cluster, "app");
    let home = Home::new();
    let (key, recipient) = keygen(home.path(), "key.txt");
    let (other, _) = keygen(home.path(), "other.txt");
    let key_s = key.to_str().unwrap();
    let other_s = other.to_str().unwrap();

    let file = create(&home, &cluster, &["--encrypt-to", &recipient]);
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !contains(&bytes, MARKER),
        "table data readable in the snapshot"
    );
    assert!(
        !contains(&bytes, "CREATE TABLE"),
        "schema readable in the snapshot"
    );
    let members = home.path().join("members");
    tar_extract(Path::new(&file), &members);
    for m in ["snapshot-key.age", "app.dump"] {
        let head = std::fs::read(members.join(m)).unwrap();
        assert!(head.starts_with(b"age-encryption.org/v1\n"), "{m}");
    }
    let meta = std::fs::read_to_string(members.join("dbsnap.json")).unwrap();
    assert!(meta.contains(&recipient), "{meta}");

    // list and verify without a key: checksums only; with it: the dumps.
    let (code, v, err) = run_json(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["snapshots"][0]["encrypted"], true, "{v}");
    let (code, v, err) = run_json(home.dbsnap().args(["verify", &file]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["contents_checked"], false, "{v}");
    let (code, v, err) = run_json(home.dbsnap().args(["verify", &file, "--identity", key_s]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["contents_checked"], true, "{v}");
    assert!(v["members"][2]["toc_entries"].as_u64().unwrap() > 3, "{v}");
    let (code, _, err) = run(home.dbsnap().args(["verify", &file, "--identity", other_s]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("none of the keys given opens it"), "{err}");

    // No key, a wrong key: refused before anything changes.
    damage(&cluster);
    let damaged = fingerprint(&cluster, "app");
    let (code, out) = restore(&home, &cluster, &file, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("is encrypted (age) and no key to open it was given"),
        "{out}"
    );
    assert!(
        out.contains(&recipient),
        "the hint names the recipient: {out}"
    );
    let (code, out) = restore(&home, &cluster, &file, &["--identity", other_s]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        fingerprint(&cluster, "app"),
        damaged,
        "a refused restore changed data"
    );

    // With the key: data-only, replace (native), replace by stock pg_restore.
    for extra in [
        &[][..],
        &["--drop"][..],
        &["--drop", "--engine", "pg-restore", "--jobs", "2"][..],
    ] {
        damage(&cluster);
        let mut args = vec!["--identity", key_s];
        args.extend_from_slice(extra);
        let (code, out) = restore(&home, &cluster, &file, &args);
        assert_eq!(code, 0, "{extra:?}: {out}");
        assert_eq!(fingerprint(&cluster, "app"), before, "{extra:?}");
    }

    // The safety snapshots those restores took are encrypted like the
    // snapshot (no [encryption] here).
    let (code, v, err) = run_json(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
    let safety: Vec<_> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["safety"] == true)
        .collect();
    assert!(!safety.is_empty(), "{v}");
    assert!(safety.iter().all(|r| r["encrypted"] == true), "{v}");

    // A secret key where a public key belongs is refused without being
    // repeated; a missing identity file is an error at once.
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    for given in [key_s, secret] {
        let mut c = home.dbsnap();
        c.args(["create", "-d", &cluster.url("app"), "--encrypt-to", given]);
        let (code, out, err) = run(&mut c);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("a secret key"), "{err}");
        assert!(
            !out.contains(&secret[20..]) && !err.contains(&secret[20..]),
            "secret key echoed"
        );
    }
    assert!(!home.logs().contains(&secret[20..]), "secret key in a log");
    let (code, _, err) =
        run(home
            .dbsnap()
            .args(["verify", &file, "--identity", "/nonexistent/key.txt"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the age identity file"), "{err}");

    // Stock tools, as docs/ENCRYPTION.md says.
    let k = members.join("k.txt");
    let st = Command::new("age")
        .args(["-d", "-i", key_s, "-o"])
        .arg(&k)
        .arg(members.join("snapshot-key.age"))
        .status()
        .unwrap();
    assert!(st.success());
    let dump = members.join("app.pgdump");
    let st = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&k)
        .arg("-o")
        .arg(&dump)
        .arg(members.join("app.dump"))
        .status()
        .unwrap();
    assert!(st.success());
    common::pg_restore_into(&cluster, &dump, "stock");
    let restored = cluster.psql("stock", "SELECT count(*), sum(length(v)) FROM t");
    let original = cluster.psql("app", "SELECT count(*), sum(length(v)) FROM t");
    assert_eq!(restored, original);
}

#[test]
fn a_passphrase_and_the_config_encrypt_safety_snapshots_too() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let before = fingerprint(&cluster, "app");
    let home = Home::new();
    let pass = |c: &mut Command, p: &str| {
        c.env("DBSNAP_PASSPHRASE", p);
    };

    let mut c = home.dbsnap();
    c.args(["create", "--passphrase", "-d", &cluster.url("app")]);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 2, "no DBSNAP_PASSPHRASE: {err}");
    assert!(err.contains("DBSNAP_PASSPHRASE"), "{err}");
    let (code, _, err) = run(home.dbsnap().args([
        "create",
        "--encrypt-to",
        "age1notakey",
        "-d",
        &cluster.url("app"),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an age public key"), "{err}");
    assert!(!home.snapshots().exists() || common::Home::snapshot_dir_entries(&home).is_empty());

    let mut c = home.dbsnap();
    pass(&mut c, "correct horse");
    c.arg("create")
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .args(["--passphrase", "-d", &cluster.url("app")]);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{v}\n{err}");
    let file = v["file"].as_str().unwrap().to_string();
    damage(&cluster);
    let damaged = fingerprint(&cluster, "app");
    let restore_with = |p: &str, extra: &[&str]| {
        let mut c = home.dbsnap();
        pass(&mut c, p);
        c.args(["restore", "--file", &file, "--yes", "--pg-bin"])
            .arg(cluster.bin_dir())
            .args(["-d", &cluster.url("app")])
            .args(extra);
        run(&mut c)
    };
    let (code, _, err) = restore_with("wrong horse", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the passphrase given does not open it"),
        "{err}"
    );
    assert_eq!(fingerprint(&cluster, "app"), damaged);
    let (code, out, err) = restore_with("correct horse", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(fingerprint(&cluster, "app"), before);

    // [encryption] in dbsnap.toml: create and restore's safety snapshot
    // are encrypted to its recipient, its identity opens them.
    let (key, recipient) = keygen(home.path(), "key.txt");
    std::fs::write(
        home.path().join("dbsnap.toml"),
        format!(
            "[encryption]\nrecipients = [\"{recipient}\"]\nidentity = [\"{}\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let file = create(&home, &cluster, &[]);
    damage(&cluster);
    let (code, out) = restore(&home, &cluster, &file, &["--drop"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fingerprint(&cluster, "app"), before);
    let (code, v, err) = run_json(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
    let rows = v["snapshots"].as_array().unwrap();
    // Newest first: the safety snapshot of this restore, then the snapshot.
    assert_eq!(rows[0]["safety"], true, "{v}");
    assert_eq!(
        rows[0]["encrypted"], true,
        "safety snapshot not encrypted: {v}"
    );
    assert_eq!(rows[1]["encrypted"], true, "{v}");
    // --identity replaces the config's identity: a wrong key on the command
    // line is refused even though the config's would open it.
    let (wrong, _) = keygen(home.path(), "wrong.txt");
    damage(&cluster);
    let damaged = fingerprint(&cluster, "app");
    let (code, out) = restore(
        &home,
        &cluster,
        &file,
        &["--identity", wrong.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{out}");
    assert_eq!(fingerprint(&cluster, "app"), damaged);
}

#[test]
fn an_encrypted_snapshot_restores_straight_from_s3() {
    let cluster = Cluster::start(15);
    platform(&cluster);
    let before = fingerprint(&cluster, "app");
    let home = Home::new();
    let (key, recipient) = keygen(home.path(), "key.txt");
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("backups");
    let cmd = || {
        let mut c = home.dbsnap();
        for (k, v) in server.env() {
            c.env(k, v);
        }
        c.args(["--repo", "s3://backups/enc"]);
        c
    };
    let mut c = cmd();
    c.arg("create")
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app"), "--encrypt-to", &recipient]);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{v}\n{err}");
    let name = v["file"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    for extra in [&[][..], &["--drop"][..]] {
        damage(&cluster);
        let mut c = cmd();
        c.args(["restore", "--file", &name, "--yes", "--identity"])
            .arg(&key)
            .arg("--pg-bin")
            .arg(cluster.bin_dir())
            .args(["-d", &cluster.url("app")])
            .args(extra);
        let (code, out, err) = run(&mut c);
        assert_eq!(code, 0, "{extra:?}: {out}\n{err}");
        assert_eq!(fingerprint(&cluster, "app"), before, "{extra:?}");
    }
}
