//! An `az://` repository (Azure Blob Storage) against a real Azurite
//! server and real PostgreSQL: create streams into the container, list and
//! verify read it, a replacing restore loads straight from it and gives
//! back exactly the data dumped; a missing container is exit 2.

mod common;

use common::{fingerprint, run, run_json, Home};
use dbsnap_test_support::azure::Azurite;
use dbsnap_test_support::Cluster;

#[test]
fn every_command_works_on_an_azure_container() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g; \
         CREATE INDEX ON t (v); CREATE SEQUENCE s; SELECT setval('s', 42);",
    );
    let before = fingerprint(&cluster, "app");
    let server = Azurite::start();
    server.create_container("backups");
    let home = Home::new();
    let tmp = tempfile::tempdir().unwrap();
    let cmd = || {
        let mut c = home.dbsnap();
        for (k, v) in server.env() {
            c.env(k, v);
        }
        c.env("TMPDIR", tmp.path())
            .args(["--repo", "az://backups/platform"]);
        c
    };
    let mut c = cmd();
    c.arg("create")
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app")]);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{v}\n{err}\n{}", server.log());
    let file = v["file"].as_str().unwrap().to_string();
    assert!(file.starts_with("az://backups/platform/"), "{file}");
    let name = file.rsplit('/').next().unwrap().to_string();
    assert!(!home.snapshots().exists(), "a local repository appeared");

    let (code, v, err) = run_json(cmd().arg("list"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["snapshots"][0]["name"], name.as_str(), "{v}");
    let (code, v, err) = run_json(cmd().args(["verify", &name]));
    assert_eq!(code, 0, "{v}\n{err}");

    cluster.psql(
        "app",
        "DELETE FROM t WHERE id % 3 = 0; SELECT setval('s', 7)",
    );
    let mut c = cmd();
    c.args(["restore", "--file", &name, "--yes", "--drop", "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app")]);
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(fingerprint(&cluster, "app"), before);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let mut c = home.dbsnap();
    for (k, v) in server.env() {
        c.env(k, v);
    }
    let (code, _, err) = run(c.args(["list", "--repo", "az://nosuch/x"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
}
