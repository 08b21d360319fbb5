//! Acceptance: a password never appears in a child's argv or environment,
//! in a log line, in JSON or text output, or inside the snapshot.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{run, tar_extract, Home};
use dbsnap_test_support::Cluster;

const PASSWORD: &str = "Sup3r-S3cret:Value\\x";

#[test]
fn password_never_leaks() {
    let cluster = Cluster::start(15);
    cluster.psql(
        "postgres",
        &format!(
            "CREATE ROLE app LOGIN PASSWORD '{}'",
            PASSWORD.replace('\'', "''")
        ),
    );
    cluster.psql("postgres", "CREATE DATABASE app OWNER app");
    cluster.psql(
        "app",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1); ALTER TABLE t OWNER TO app",
    );
    let home = Home::new();

    // A pg_dump wrapper that records its argv and environment, then runs the real one.
    let wrap = home.path().join("wrap");
    std::fs::create_dir_all(&wrap).unwrap();
    let argv_log = home.path().join("argv.log");
    let env_log = home.path().join("env.log");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nenv >> {}\nif [ -n \"$PGPASSFILE\" ]; then stat -L -c %a \"$PGPASSFILE\" >> {}; ls -l \"$PGPASSFILE\" >> {}; fi\nexec {} \"$@\"\n",
        argv_log.display(),
        env_log.display(),
        env_log.display(),
        env_log.display(),
        cluster.bin_dir().join("pg_dump").display()
    );
    std::fs::write(wrap.join("pg_dump"), script).unwrap();
    std::fs::set_permissions(wrap.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let encoded: String = PASSWORD
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let url = format!("postgres://app:{encoded}@127.0.0.1:{}/app", cluster.port);
    let mut outputs = String::new();
    // Password in the URL, then in PGPASSWORD; text and JSON output; verbose logs.
    for (i, json) in [false, true].iter().enumerate() {
        let mut cmd = home.dbsnap();
        cmd.arg("-vv").arg("create").arg("--pg-bin").arg(&wrap);
        if i == 0 {
            cmd.arg("-d").arg(&url);
        } else {
            cmd.env("PGPASSWORD", PASSWORD)
                .arg("-d")
                .arg(format!("postgres://app@127.0.0.1:{}/app", cluster.port));
        }
        if *json {
            cmd.arg("--json");
        }
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{err}");
        outputs.push_str(&out);
        outputs.push_str(&err);
    }
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    let env = std::fs::read_to_string(&env_log).unwrap();
    assert!(argv.contains("--snapshot="), "wrapper did not run: {argv}");
    // The password reaches pg_dump as an anonymous in-memory file passed by
    // descriptor: it has no name in any file system to leak from.
    assert!(
        env.contains("PGPASSFILE=/dev/fd/3"),
        "password file not passed by descriptor: {env}"
    );
    assert!(
        env.contains("memfd:dbsnap-pgpass"),
        "not an in-memory file: {env}"
    );
    assert!(
        env.lines().any(|l| l == "600"),
        "password file is not 0600: {env}"
    );
    let extracted = home.path().join("x");
    let files: Vec<_> = std::fs::read_dir(home.snapshots())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut inside = String::new();
    for f in &files {
        tar_extract(f, &extracted);
        inside.push_str(&std::fs::read_to_string(extracted.join("dbsnap.json")).unwrap());
        inside.push_str(&std::fs::read_to_string(extracted.join("manifest.json")).unwrap());
    }
    for (what, text) in [
        ("argv", &argv),
        ("child environment", &env),
        ("output", &outputs),
        ("logs", &home.logs()),
        ("snapshot metadata", &inside),
    ] {
        assert!(!text.contains(PASSWORD), "password found in {what}");
        assert!(!text.contains(&encoded), "encoded password found in {what}");
        assert!(
            !text.contains("Sup3r-S3cret"),
            "part of the password found in {what}"
        );
    }
    // No password file was ever written to the temporary directory.
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dbsnap-secrets-")
        })
        .filter_map(|e| std::fs::read_dir(e.path()).ok())
        .flat_map(|rd| {
            rd.flatten()
                .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        })
        .any(|content| content.contains("Sup3r-S3cret"));
    assert!(
        !leftovers,
        "a password file was left in the temporary directory"
    );
}
