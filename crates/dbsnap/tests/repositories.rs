//! Named repositories (`[repositories.NAME]` in dbsnap.toml): each with
//! its own service, endpoint and credentials, usable wherever a
//! repository is taken, so one run can copy between two S3-compatible
//! services (here s3s-fs and moto, with different keys), whatever the AWS
//! environment says.

mod common;

use common::{run, run_json, Home};
use dbsnap_test_support::s3::{S3Kind, S3Server};
use dbsnap_test_support::Cluster;

fn repository(name: &str, bucket: &str, server: &S3Server, var: &str) -> String {
    format!(
        "[repositories.{name}]\nlocation = \"s3://{bucket}/platform\"\nendpoint = \"{}\"\nregion = \"{}\"\nforce_insecure = true\naccess_key_id_env = \"{var}_KEY\"\nsecret_access_key_env = \"{var}_SECRET\"\n",
        server.endpoint, server.region
    )
}

#[test]
fn copy_between_two_services_with_their_own_keys_in_one_run() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, false); \
         CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let (near, far) = (
        S3Server::start(S3Kind::S3sFs),
        S3Server::start(S3Kind::Moto),
    );
    near.create_bucket("near");
    far.create_bucket("far");
    assert_ne!(near.access_key, far.access_key, "two services, two keys");
    let home = Home::new();
    std::fs::write(
        home.path().join("dbsnap.toml"),
        format!(
            "{}\n{}",
            repository("near", "near", &near, "NEAR"),
            repository("far", "far", &far, "FAR")
        ),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dbsnap = || {
        let mut c = home.dbsnap();
        c.env("NEAR_KEY", &near.access_key)
            .env("NEAR_SECRET", &near.secret_key)
            .env("FAR_KEY", &far.access_key)
            .env("FAR_SECRET", &far.secret_key)
            // The environment names neither service: the repositories' own
            // settings win over it.
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "not-a-key")
            .env("AWS_SECRET_ACCESS_KEY", "not-a-secret")
            .env("TMPDIR", tmp.path());
        c
    };
    let mut c = dbsnap();
    c.args(["create", "--repo", "near", "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app")]);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{v}\n{err}");
    let name = v["file"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        v["file"]
            .as_str()
            .unwrap()
            .starts_with("s3://near/platform/"),
        "{v}"
    );
    let (code, v, err) = run_json(dbsnap().args(["copy", "--from", "near", "--to", "far"]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["snapshots"][0]["name"], name.as_str(), "{v}");
    assert_eq!(v["snapshots"][0]["status"], "copied", "{v}");
    let (code, v, err) = run_json(dbsnap().args(["list", "--repo", "far"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["snapshots"][0]["name"], name.as_str(), "{v}");
    let (code, _, err) = run(dbsnap().args(["verify", "--repo", "far", &name]));
    assert_eq!(code, 0, "{err}");
    // A snapshot's URL inside a named repository is reached with its settings.
    cluster.psql("app", "DELETE FROM t WHERE id > 10");
    let (code, _, err) = run(dbsnap()
        .args(["restore", "--yes", "--no-safety-snapshot", "--file"])
        .arg(format!("s3://far/platform/{name}"))
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .args(["-d", &cluster.url("app")]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM t").trim(), "1000");

    // A credential variable that is not set is named when its repository
    // is used; other repositories do not need it.
    let (code, _, err) = run(dbsnap()
        .env_remove("FAR_SECRET")
        .args(["list", "--repo", "near"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(dbsnap()
        .env_remove("FAR_SECRET")
        .args(["list", "--repo", "far"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the environment variable FAR_SECRET (named in dbsnap.toml for this repository) is not set"),
        "{err}"
    );
}
