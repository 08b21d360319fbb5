//! The systemd units in deploy/systemd: `systemd-analyze verify` finds
//! nothing to say about them (with their paths pointed at this build and
//! the man page their Documentation= names), and the command lines they
//! run, with their environment and a config file like docs/guide/schedule.md's,
//! snapshot a real server, drill the newest snapshot and keep what `[prune]`
//! says.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::run;
use dbsnap_test_support::{Cluster, SUPERUSER, SUPERUSER_PASSWORD};

const INSTALLED: &str = "/usr/local/bin/dbsnap";

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(units_dir().join(name))
        .unwrap_or_else(|e| panic!("deploy/systemd/{name}: {e}"))
}

/// The values of `key=` in a unit, in order.
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(units_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(INSTALLED) || !path.to_string_lossy().ends_with(".service"),
            "{} does not run {INSTALLED}",
            path.display()
        );
        std::fs::write(
            dir.path().join(path.file_name().unwrap()),
            text.replace(INSTALLED, env!("CARGO_BIN_EXE_dbsnap")),
        )
        .unwrap();
    }
    // Documentation=man:dbsnap(1) is checked too: the page `dbsnap man`
    // writes, where the guide tells users to put it.
    let man = dir.path().join("man/man1");
    std::fs::create_dir_all(&man).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbsnap"))
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(man.join("dbsnap.1"), out.stdout).unwrap();

    let units = [
        "dbsnap-create@app.service",
        "dbsnap-create@app.timer",
        "dbsnap-prune.service",
        "dbsnap-prune.timer",
        "dbsnap-drill@app.service",
        "dbsnap-drill@app.timer",
    ];
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.map(|u| dir.path().join(u)))
        .env("MANPATH", dir.path().join("man"))
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (scripts/setup.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // The drill's key lines, which its comment says to add with systemctl
    // edit, verify too (LoadCredential=, the %d specifier).
    let drill = unit("dbsnap-drill@.service");
    let key_lines: Vec<&str> = drill
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| {
            l.starts_with("LoadCredential=") || l.starts_with("Environment=DBSNAP_IDENTITY=")
        })
        .collect();
    assert_eq!(key_lines.len(), 2, "{drill}");
    let with_key = drill
        .replace(INSTALLED, env!("CARGO_BIN_EXE_dbsnap"))
        .replace(
            "[Service]\n",
            &format!("[Service]\n{}\n", key_lines.join("\n")),
        );
    std::fs::write(dir.path().join("dbsnap-drill@.service"), with_key).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("dbsnap-drill@app.service"))
        .env("MANPATH", dir.path().join("man"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // A broken unit is not passed over: verify's warnings are what fails.
    let broken = unit("dbsnap-prune.service").replace("PrivateTmp=true", "PrivateTmp=perhaps");
    std::fs::write(dir.path().join("dbsnap-prune.service"), broken).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("dbsnap-prune.service"))
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("perhaps"));

    for service in [
        "dbsnap-create@.service",
        "dbsnap-prune.service",
        "dbsnap-drill@.service",
    ] {
        let text = unit(service);
        for hardening in [
            "ProtectSystem=strict",
            "ProtectHome=true",
            "PrivateTmp=true",
            "NoNewPrivileges=true",
            "CapabilityBoundingSet=",
            "StateDirectory=dbsnap",
            "Environment=DBSNAP_HOME=/var/lib/dbsnap",
            "User=dbsnap",
        ] {
            assert!(
                text.lines().any(|l| l == hardening),
                "{service} lacks {hardening}"
            );
        }
        let timer = service.replace(".service", ".timer");
        assert!(values(&unit(&timer), "Persistent") == ["true"], "{timer}");
    }
}

/// What a service runs: its ExecStart= split into words, with the paths of
/// a real installation moved into `root` and `%i` as `instance`.
fn exec_start(
    service: &str,
    instance: &str,
    root: &Path,
) -> (Vec<String>, BTreeMap<String, String>) {
    let text = unit(service);
    let place = |s: &str| {
        s.replace(INSTALLED, env!("CARGO_BIN_EXE_dbsnap"))
            .replace("/etc/dbsnap", &root.join("etc").display().to_string())
            .replace("/var/lib/dbsnap", &root.join("var").display().to_string())
            .replace("%i", instance)
    };
    let [line] = &values(&text, "ExecStart")[..] else {
        panic!("{service}: one ExecStart=")
    };
    let words = place(line).split_whitespace().map(str::to_string).collect();
    let mut env = BTreeMap::new();
    for e in values(&text, "Environment") {
        let (k, v) = e.split_once('=').unwrap();
        env.insert(k.to_string(), place(v));
    }
    for file in values(&text, "EnvironmentFile") {
        let file = place(file.trim_start_matches('-'));
        for l in std::fs::read_to_string(&file).unwrap_or_default().lines() {
            if let Some((k, v)) = l.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    (words, env)
}

fn run_service(service: &str, instance: &str, root: &Path) -> (i32, String, String) {
    let (words, env) = exec_start(service, instance, root);
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    cmd.envs(env).current_dir(root.join("var"));
    run(&mut cmd)
}

#[test]
fn the_units_commands_snapshot_and_prune_as_configured() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g",
    );
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(root.path().join("var")).unwrap();
    // As docs/guide/schedule.md sets it up: the password in the env file,
    // not in the config.
    std::fs::write(
        etc.join("env"),
        format!("PGPASSWORD={SUPERUSER_PASSWORD}\n"),
    )
    .unwrap();
    std::fs::write(
        etc.join("dbsnap.toml"),
        format!(
            "pg_bin = [\"{bin}\"]\n\n[targets.app]\ndatabases = [\"{url}\"]\n\n[prune]\nkeep_last = 2\n",
            bin = cluster.bin_dir().display(),
            url = cluster.url_as(SUPERUSER, None, "app"),
        ),
    )
    .unwrap();
    let snapshots = root.path().join("var/snapshots");
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&snapshots)
            .unwrap_or_else(|e| panic!("{}: {e}", snapshots.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar"))
            .collect();
        v.sort();
        v
    };
    for i in 1..=3 {
        let (code, out, err) = run_service("dbsnap-create@.service", "app", root.path());
        assert_eq!(code, 0, "create {i}: {out}\n{err}");
        assert_eq!(names().len(), i, "{out}\n{err}");
        // Snapshot names have a one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let before = names();
    // The drill restores the newest into scratch databases and drops them.
    let (code, out, err) = run_service("dbsnap-drill@.service", "app", root.path());
    assert_eq!(code, 0, "drill: {out}\n{err}");
    assert!(out.contains("drill passed:"), "{out}");
    assert!(
        std::fs::read_dir(&snapshots)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy() == format!(".{}.drill", before[2])),
        "no drill record beside {}",
        before[2]
    );
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname LIKE '\\_\\_dbsnap%'"
            )
            .trim(),
        "0"
    );
    let (code, out, err) = run_service("dbsnap-prune.service", "", root.path());
    assert_eq!(code, 0, "prune: {out}\n{err}");
    assert_eq!(names(), before[1..], "{out}\n{err}");
    // The logs went to DBSNAP_HOME, the state directory.
    assert!(root.path().join("var/logs").is_dir());

    // A target the config lacks is an error the journal shows, not a pass.
    let (code, _, err) = run_service("dbsnap-create@.service", "nosuch", root.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nosuch"), "{err}");
}
