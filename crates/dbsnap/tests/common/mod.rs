//! Helpers shared by the binary's end-to-end tests: run `dbsnap` with its
//! own DBSNAP_HOME, parse `--json`, extract members with stock `tar`,
//! restore with stock `pg_restore`.
#![allow(dead_code)]

pub mod pty;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dbsnap_test_support::{Cluster, SUPERUSER, SUPERUSER_PASSWORD};

/// An isolated dbsnap home (snapshots, logs) for one test.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn snapshots(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }

    /// A `dbsnap` command with this home and no inherited PG* settings.
    pub fn dbsnap(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dbsnap"));
        c.env("DBSNAP_HOME", self.path())
            .env_remove("DBSNAP_PG_BIN")
            .current_dir(self.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                c.env_remove(k);
            }
        }
        c.stdin(Stdio::null());
        c
    }

    /// All log files' contents. Panics when there is no log file at all:
    /// a check that something is *not* in the logs must not pass because
    /// they went elsewhere.
    pub fn logs(&self) -> String {
        let dir = self.path().join("logs");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no log directory {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "no log file in {}", dir.display());
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }

    /// Files in the snapshot directory (all, hidden included); none when
    /// the directory was never made. Panics when `DBSNAP_HOME` itself is
    /// gone or the directory cannot be read: an empty list must mean that
    /// nothing is there.
    pub fn snapshot_dir_entries(&self) -> Vec<String> {
        assert!(self.path().is_dir(), "the test's DBSNAP_HOME is gone");
        match std::fs::read_dir(self.snapshots()) {
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => panic!("cannot read {}: {e}", self.snapshots().display()),
        }
    }
}

/// Runs a command; returns exit code, stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out: Output = cmd.output().expect("run dbsnap");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs with `--json` appended; parses stdout, which must be one JSON
/// envelope (`ok`, `warnings`, `result` and/or `error`, see
/// docs/SCRIPTING.md). For the tests' convenience an object `result` is
/// returned with the envelope's `ok`, `dry_run`, `warnings`, `error` and
/// `log` beside its own fields; any other result stays under `result`.
pub fn run_json(cmd: &mut Command) -> (i32, serde_json::Value, String) {
    let (code, envelope, err) = run_envelope(cmd);
    let mut v = envelope.clone();
    if let Some(serde_json::Value::Object(result)) = envelope.get("result") {
        let mut merged = result.clone();
        for key in ["ok", "dry_run", "warnings", "error", "log"] {
            if let Some(x) = envelope.get(key) {
                merged.insert(key.to_string(), x.clone());
            }
        }
        v = serde_json::Value::Object(merged);
    }
    (code, v, err)
}

/// An envelope error's words: its message, then its hint (as on stderr).
pub fn error_text(v: &serde_json::Value) -> String {
    let e = &v["error"];
    match e["hint"].as_str() {
        Some(h) => format!("{}\nhint: {h}", e["message"].as_str().unwrap_or_default()),
        None => e["message"].as_str().unwrap_or_default().to_string(),
    }
}

/// Runs with `--json` appended; parses stdout as the envelope and checks
/// its shape: `ok` a boolean, `warnings` a list, an `error` with `kind`,
/// `exit_code` and `message` exactly when not ok, and the exit code 0
/// exactly when ok.
pub fn run_envelope(cmd: &mut Command) -> (i32, serde_json::Value, String) {
    let (code, out, err) = run(cmd.arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {out}\nstderr: {err}"));
    let ok = v["ok"]
        .as_bool()
        .unwrap_or_else(|| panic!("no boolean ok: {v}"));
    assert!(v["warnings"].is_array(), "no warnings list: {v}");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    for k in &keys {
        assert!(
            ["ok", "dry_run", "warnings", "result", "error", "log"].contains(&k.as_str()),
            "{k} is not an envelope field: {v}"
        );
    }
    if ok {
        assert!(v.get("error").is_none(), "ok with an error: {v}");
    } else {
        let e = &v["error"];
        assert!(
            e["kind"].is_string() && e["exit_code"].is_u64() && e["message"].is_string(),
            "not ok without a full error: {v}"
        );
        assert_eq!(e["exit_code"].as_u64(), Some(code as u64), "exit code: {v}");
    }
    assert_eq!(ok, code == 0, "ok is {ok}, exit code {code}: {v}\n{err}");
    (code, v, err)
}

/// The `dbsnap create` command for the given databases of a cluster, with
/// the cluster's own pg_dump directory.
pub fn create_command(home: &Home, cluster: &Cluster, dbs: &[&str]) -> Command {
    let mut cmd = home.dbsnap();
    cmd.arg("create").arg("--pg-bin").arg(cluster.bin_dir());
    for db in dbs {
        cmd.arg("-d").arg(cluster.url(db));
    }
    cmd
}

/// `dbsnap create` for the given databases of a cluster, with the cluster's
/// own pg_dump directory; returns the JSON result (asserting success).
pub fn create(home: &Home, cluster: &Cluster, dbs: &[&str], extra: &[&str]) -> serde_json::Value {
    let mut cmd = create_command(home, cluster, dbs);
    cmd.args(extra);
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "create failed: {v}\n{err}");
    v
}

/// `dbsnap resume --json` with the cluster's superuser; asserts success.
pub fn resume(home: &Home, cluster: &Cluster) -> serde_json::Value {
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["resume", "-d"])
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}");
    v
}

/// A snapshot's `dbsnap.json`, read with stock `tar`.
pub fn metadata(file: impl AsRef<Path>) -> serde_json::Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(file.as_ref())
        .arg("dbsnap.json")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -xOf failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Extracts every member of a snapshot with stock `tar` into a new directory.
pub fn tar_extract(file: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("xf")
        .arg(file)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar xf failed");
}

/// Restores a pg_dump custom archive into a new database with stock pg_restore.
pub fn pg_restore_into(cluster: &Cluster, dump: &Path, db: &str) {
    cluster.create_db(db);
    let out = Command::new(cluster.bin_dir().join("pg_restore"))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .args([
            "--exit-on-error",
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            db,
        ])
        .arg(dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The COPY data of one table in a dump, as lines, via `pg_restore -a -t`.
pub fn dump_table_rows(cluster: &Cluster, dump: &Path, table: &str) -> Vec<String> {
    let out = Command::new(cluster.bin_dir().join("pg_restore"))
        .args(["-a", "-t", table, "-f", "-"])
        .arg(dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore -a failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut rows = Vec::new();
    let mut in_copy = false;
    for line in text.lines() {
        if line.starts_with("COPY ") {
            in_copy = true;
            continue;
        }
        if in_copy {
            if line == "\\." {
                in_copy = false;
                continue;
            }
            rows.push(line.to_string());
        }
    }
    rows
}

/// Whether a pg_dump for the cluster on `port` is still running.
pub fn pg_dump_running(port: u16) -> bool {
    // The bracket keeps pgrep from matching the shell running it.
    let ps = Command::new("sh")
        .arg("-c")
        .arg(format!("pgrep -f 'pg_dum[p] .*port={port} ' || true"))
        .output()
        .unwrap();
    !String::from_utf8_lossy(&ps.stdout).trim().is_empty()
}

/// `dbsnap create` of one database given by URL; returns the snapshot path.
pub fn create_from_url(home: &Home, cluster: &Cluster, url: &str) -> String {
    let mut cmd = home.dbsnap();
    cmd.args(["create", "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(url);
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "create failed: {err}");
    v["file"].as_str().unwrap().to_string()
}

/// Data checksums and schema of a database, for before/after comparisons.
pub fn fingerprint(cluster: &Cluster, db: &str) -> String {
    format!(
        "{}\n{}",
        cluster.table_checksums(db),
        cluster.schema_dump(db)
    )
}

/// `dbsnap restore --yes --no-safety-snapshot --file F` with the cluster's
/// client programs, into the given databases of the cluster.
pub fn quick_restore(home: &Home, cluster: &Cluster, file: &str, dbs: &[&str]) -> Command {
    let urls: Vec<String> = dbs.iter().map(|db| cluster.url(db)).collect();
    quick_restore_urls(home, cluster, file, &urls)
}

/// [`quick_restore`] into the databases the connection strings name.
pub fn quick_restore_urls(home: &Home, cluster: &Cluster, file: &str, urls: &[String]) -> Command {
    let mut cmd = home.dbsnap();
    cmd.args([
        "restore",
        "--yes",
        "--no-safety-snapshot",
        "--file",
        file,
        "--pg-bin",
    ])
    .arg(cluster.bin_dir());
    for url in urls {
        cmd.arg("-d").arg(url);
    }
    cmd
}

/// `--stop-cmd`/`--start-cmd` arguments that append `stop`/`start` to `log`
/// (the start command then runs `start_extra`, e.g. `; exit 4`).
pub fn hook_args(log: &Path, start_extra: &str) -> [String; 4] {
    [
        "--stop-cmd".into(),
        format!("echo stop >> {}", log.display()),
        "--start-cmd".into(),
        format!("echo start >> {}{start_extra}", log.display()),
    ]
}

/// How many databases dbsnap keeps or half-loaded (`__dbsnap_` names).
pub fn kept_copies(cluster: &Cluster) -> String {
    cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_\\_dbsnap\\_%'",
        )
        .trim()
        .to_string()
}
