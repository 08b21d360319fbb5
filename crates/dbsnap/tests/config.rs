//! Targets from dbsnap.toml: lookup order, settings from the file, flags
//! over the file, and clear errors for a missing file or target.

mod common;

use common::{run, run_json, Home};
use dbsnap_test_support::Cluster;

#[test]
fn targets_from_the_config_file() {
    let cluster = Cluster::start(15);
    for db in ["core", "backend"] {
        cluster.create_db(db);
    }
    cluster.psql("core", "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (3, false)");
    cluster.psql(
        "backend",
        "CREATE TABLE my_versions (id text); INSERT INTO my_versions VALUES ('v1'), ('v2')",
    );
    let home = Home::new();
    let repo = home.path().join("platform-snaps");
    let config = format!(
        r#"
pg_bin = ["{bin}"]

[targets.platform]
databases = ["{core}", "{backend}"]
prefix = "platform"
consistency = "barrier"
dir = "{repo}"

[targets.platform.schema_versions.backend]
query = "select id from my_versions order by id"
"#,
        bin = cluster.bin_dir().display(),
        core = cluster.url("core"),
        backend = cluster.url("backend"),
        repo = repo.display()
    );
    // ./dbsnap.toml is found from the working directory (the test home).
    std::fs::write(home.path().join("dbsnap.toml"), &config).unwrap();
    let (code, v, err) = run_json(home.dbsnap().args(["create", "--target", "platform"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["consistency"]["method"], "barrier");
    let file = v["file"].as_str().unwrap();
    assert!(file.starts_with(repo.to_str().unwrap()), "{file}");
    assert!(file.contains("/platform-3-"), "{file}");
    assert_eq!(v["databases"][1]["schema_version"], "v2");
    assert_eq!(v["databases"][1]["schema_tool"], "custom");

    // Flags win over the file.
    let (code, v, err) = run_json(home.dbsnap().args([
        "create",
        "--target",
        "platform",
        "--consistency",
        "snapshot",
        "--prefix",
        "adhoc",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["consistency"]["method"], "snapshot");
    assert!(v["file"].as_str().unwrap().contains("/adhoc-3-"));

    // list --target uses the target's repository.
    let (code, v, _) = run_json(home.dbsnap().args(["list", "--target", "platform"]));
    assert_eq!(code, 0);
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2);

    // $DBSNAP_HOME/config.toml is the fallback; --config names a file.
    std::fs::remove_file(home.path().join("dbsnap.toml")).unwrap();
    std::fs::write(home.path().join("config.toml"), &config).unwrap();
    let (code, v, _) = run_json(home.dbsnap().args(["list", "--target", "platform"]));
    assert_eq!(code, 0, "{v}");
    let (code, _, err) = run(home
        .dbsnap()
        .args(["list", "--config", "/nonexistent/dbsnap.toml"]));
    assert_eq!(code, 2);
    assert!(err.contains("not found"), "{err}");

    // Unknown target: exit 2, naming the known ones.
    let (code, _, err) = run(home.dbsnap().args(["create", "--target", "nope"]));
    assert_eq!(code, 2);
    assert!(err.contains("known targets: platform"), "{err}");
    // A typo in the file is reported with its location.
    std::fs::write(
        home.path().join("config.toml"),
        "[targets.x]\ndatabses = []\n",
    )
    .unwrap();
    let (code, _, err) = run(home.dbsnap().args(["create", "--target", "x"]));
    assert_eq!(code, 2);
    assert!(err.contains("databses"), "{err}");
    // No databases at all.
    std::fs::remove_file(home.path().join("config.toml")).unwrap();
    let (code, _, err) = run(home.dbsnap().arg("create"));
    assert_eq!(code, 2);
    assert!(err.contains("-d <connection string>"), "{err}");
}
