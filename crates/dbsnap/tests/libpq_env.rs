//! Connection settings reach dbsnap the ways they reach psql: PG*
//! environment variables, ~/.pgpass, and service files.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{run_json, Home};
use dbsnap_test_support::{Cluster, SUPERUSER_PASSWORD};

#[test]
fn environment_pgpass_and_service_files() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let port = cluster.port.to_string();

    // PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGAPPNAME, PGCONNECT_TIMEOUT, PGSSLMODE.
    let mut cmd = home.dbsnap();
    cmd.envs([
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGPASSWORD", SUPERUSER_PASSWORD),
        ("PGDATABASE", "app"),
        ("PGAPPNAME", "env-test"),
        ("PGCONNECT_TIMEOUT", "10"),
        ("PGSSLMODE", "disable"),
    ]);
    cmd.args(["create", "--pg-bin"])
        .arg(cluster.bin_dir())
        .args(["-d", "application_name=env-test"]);
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"][0]["name"], "app");

    // ~/.pgpass from HOME.
    let user_home = home.path().join("user");
    std::fs::create_dir_all(&user_home).unwrap();
    let pgpass = user_home.join(".pgpass");
    std::fs::write(
        &pgpass,
        format!("127.0.0.1:{port}:*:postgres:{SUPERUSER_PASSWORD}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = home.dbsnap();
    cmd.env("HOME", &user_home)
        .args(["create", "--pg-bin"])
        .arg(cluster.bin_dir());
    cmd.arg("-d")
        .arg(format!("postgres://postgres@127.0.0.1:{port}/app"));
    let (code, _, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");

    // A service file named by PGSERVICEFILE, chosen by PGSERVICE or service=.
    let services = home.path().join("services.conf");
    std::fs::write(
        &services,
        format!("[appdb]\nhost=127.0.0.1\nport={port}\nuser=postgres\ndbname=app\n"),
    )
    .unwrap();
    for how in ["env", "keyword"] {
        let mut cmd = home.dbsnap();
        cmd.env("HOME", &user_home)
            .env("PGSERVICEFILE", &services)
            .args(["create", "--pg-bin"])
            .arg(cluster.bin_dir());
        if how == "env" {
            cmd.env("PGSERVICE", "appdb").args(["-d", "sslmode=prefer"]);
        } else {
            cmd.args(["-d", "service=appdb"]);
        }
        let (code, v, err) = run_json(&mut cmd);
        assert_eq!(code, 0, "{how}: {err}");
        assert_eq!(v["databases"][0]["name"], "app");
    }
    let mut cmd = home.dbsnap();
    cmd.env("PGSERVICEFILE", &services)
        .env("PGSYSCONFDIR", home.path())
        .args(["create", "-d", "service=missing"]);
    let (code, _, err) = run_json(&mut cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("service \"missing\" not found"), "{err}");
}
