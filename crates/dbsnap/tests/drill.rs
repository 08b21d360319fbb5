//! Acceptance for `drill`: a test restore into scratch databases that are
//! always dropped (success, a failing check, a damaged snapshot, Ctrl-C,
//! kill -9 then the next drill), never touching the live databases; its
//! verdict recorded beside the snapshot, shown by `list`, honoured by
//! `prune`; through another server, and from an encrypted snapshot in S3.

mod common;
#[path = "common/s3_client.rs"]
mod s3_client;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fingerprint, run, run_json, Home};
use dbsnap_test_support::s3::{S3Kind, S3Server};
use dbsnap_test_support::{rich_schema_sql, Cluster};

/// Two databases of an app with the rich schema (`big` has `rows` rows).
fn platform(cluster: &Cluster, rows: u64) {
    for db in ["app", "crm"] {
        cluster.create_db(db);
        let sql = cluster.scratch().join(format!("{db}.sql"));
        std::fs::write(&sql, rich_schema_sql(rows)).unwrap();
        cluster.psql_file(db, &sql);
    }
}

/// A config with target `app` (both databases, a check) in `home`.
fn config(home: &Home, cluster: &Cluster) -> PathBuf {
    let path = home.path().join("dbsnap.toml");
    std::fs::write(
        &path,
        format!(
            "[targets.app]\ndatabases = [\"{}\", \"{}\"]\n\
             checks = [\"SELECT count(*) > 0 FROM accounts\"]\n",
            cluster.url("app"),
            cluster.url("crm")
        ),
    )
    .unwrap();
    path
}

fn dbsnap(home: &Home, cluster: &Cluster, config: &Path) -> Command {
    let mut c = home.dbsnap();
    c.arg("--config").arg(config);
    c.env("DBSNAP_PG_BIN", cluster.bin_dir());
    c
}

fn snapshot(home: &Home, cluster: &Cluster, config: &Path) -> String {
    let (code, v, err) =
        run_json(dbsnap(home, cluster, config).args(["create", "--target", "app"]));
    assert_eq!(code, 0, "{v}\n{err}");
    v["file"].as_str().unwrap().to_string()
}

/// The databases whose names a drill uses.
fn scratch_databases(cluster: &Cluster) -> String {
    cluster
        .psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE '\\_\\_dbsnap%'",
        )
        .trim()
        .to_string()
}

/// The files in `$DBSNAP_HOME/state` (journals): none after a drill.
fn journals(home: &Home) -> Vec<String> {
    match std::fs::read_dir(home.path().join("state")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `list --json`'s row for the snapshot at `file`.
fn listed(home: &Home, cluster: &Cluster, config: &Path, file: &str) -> serde_json::Value {
    let (code, v, err) = run_json(dbsnap(home, cluster, config).arg("list"));
    assert_eq!(code, 0, "{err}");
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == file)
        .unwrap_or_else(|| panic!("{file} not listed: {v}"))
        .clone()
}

/// The drill record of the newest snapshot, as `list --json` shows it.
fn listed_drill(home: &Home, cluster: &Cluster, config: &Path) -> serde_json::Value {
    let (code, v, err) = run_json(dbsnap(home, cluster, config).arg("list"));
    assert_eq!(code, 0, "{err}");
    v["snapshots"][0]["drill"].clone()
}

fn assert_nothing_left(home: &Home, cluster: &Cluster, what: &str) {
    assert_eq!(
        scratch_databases(cluster),
        "",
        "{what}: scratch databases left"
    );
    assert!(
        journals(home).is_empty(),
        "{what}: journals left: {:?}",
        journals(home)
    );
}

#[test]
fn a_drill_restores_checks_drops_records_and_prune_keeps_the_newest_that_passed() {
    let cluster = Cluster::start(15);
    platform(&cluster, 5_000);
    let home = Home::new();
    let config = config(&home, &cluster);
    let file = snapshot(&home, &cluster, &config);
    let live = (fingerprint(&cluster, "app"), fingerprint(&cluster, "crm"));
    let sessions = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname IN ('app', 'crm')",
    );

    // The default: the target's newest snapshot.
    let (code, v, err) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--check",
        "SELECT count(*) = 2 FROM blobs",
    ]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["file"], file.as_str());
    assert_eq!(v["recorded"], true);
    assert_eq!(v["checks"], 2, "the target's check and --check: {v}");
    let dbs = v["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 2, "{v}");
    for (d, db) in dbs.iter().zip(["app", "crm"]) {
        assert_eq!(d["database"], db);
        assert!(
            d["scratch"]
                .as_str()
                .unwrap()
                .starts_with("__dbsnap_drill_"),
            "{d}"
        );
        let rows: u64 = cluster
            .psql(
                db,
                "SELECT sum(n) FROM (SELECT count(*) AS n FROM accounts UNION ALL SELECT count(*) FROM orders \
                 UNION ALL SELECT count(*) FROM big UNION ALL SELECT count(*) FROM blobs) t",
            )
            .trim()
            .parse()
            .unwrap();
        assert!(d["rows"].as_u64().unwrap() >= rows, "{db}: {d} < {rows}");
        assert!(d["tables"].as_u64().unwrap() >= 4, "{d}");
    }
    assert_nothing_left(&home, &cluster, "passed");
    assert_eq!(
        (fingerprint(&cluster, "app"), fingerprint(&cluster, "crm")),
        live,
        "the live databases changed"
    );
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname IN ('app', 'crm')"
        ),
        sessions,
        "the drill ended sessions on the live databases"
    );

    // list shows the verdict, in JSON and in words.
    let row = listed(&home, &cluster, &config, &file);
    assert_eq!(row["drill"]["passed"], true, "{row}");
    assert!(row["drill"]["drilled_at"].is_string(), "{row}");
    let (_, text, _) = run(dbsnap(&home, &cluster, &config).arg("list"));
    assert!(text.contains("[drill passed "), "{text}");

    // Newer snapshots; a prune that keeps only the newest keeps the drilled one too.
    let newer = [
        snapshot(&home, &cluster, &config),
        snapshot(&home, &cluster, &config),
    ];
    let (code, v, err) =
        run_json(dbsnap(&home, &cluster, &config).args(["prune", "--keep-last", "1", "--yes"]));
    assert_eq!(code, 0, "{v}\n{err}");
    let kept: Vec<&str> = v["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["path"].as_str().unwrap())
        .collect();
    let removed: Vec<&str> = v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["path"].as_str().unwrap())
        .collect();
    assert!(kept.contains(&file.as_str()), "{v}");
    assert_eq!(removed, [newer[0].as_str()], "{v}");
    let why = v["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["path"] == file.as_str())
        .unwrap();
    assert!(
        why["reasons"]
            .to_string()
            .contains("newest that passed a drill"),
        "{why}"
    );

    // A later drill of it that fails on a check of one's own does not
    // take its protection away: it passed once and is not damaged.
    let (code, v, _) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--file",
        &file,
        "--check",
        "SELECT false",
    ]));
    assert_eq!(code, 17, "{v}");
    let row = listed(&home, &cluster, &config, &file);
    assert_eq!(row["drill"]["passed"], false, "{row}");
    assert!(row["drill"]["passed_at"].is_string(), "{row}");
    let (_, text, _) = run(dbsnap(&home, &cluster, &config).arg("list"));
    assert!(text.contains(", passed "), "{text}");
    let (code, v, err) =
        run_json(dbsnap(&home, &cluster, &config).args(["prune", "--keep-last", "1", "--dry-run"]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(v["kept"].to_string().contains(&file), "{v}");

    // Text output of a drill of a named snapshot.
    let (code, out, err) =
        run(dbsnap(&home, &cluster, &config).args(["drill", "--file", &newer[1], "--no-progress"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("drill passed:") && out.contains("scratch databases dropped"),
        "{out}"
    );
    assert!(out.contains("row counts match the snapshot"), "{out}");
    assert_nothing_left(&home, &cluster, "second drill");
}

#[test]
fn a_failing_check_fails_the_drill_and_a_damaged_snapshot_exits_10_both_recorded() {
    let cluster = Cluster::start(15);
    platform(&cluster, 2_000);
    let home = Home::new();
    let config = config(&home, &cluster);
    let file = snapshot(&home, &cluster, &config);
    let (code, v, err) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--check",
        "SELECT count(*) = 0 FROM orders",
    ]));
    assert_eq!(code, 17, "{v}\n{err}");
    assert_eq!(v["error"]["kind"], "check_failed", "{v}");
    let message = common::error_text(&v);
    assert!(
        message.contains("SELECT count(*) = 0 FROM orders")
            && message.contains(" (the scratch copy of ")
            && message.contains("scratch databases were dropped"),
        "{message}"
    );
    assert!(
        !message.contains("rolled back"),
        "a restore's words: {message}"
    );
    assert_nothing_left(&home, &cluster, "failed check");
    let row = listed(&home, &cluster, &config, &file);
    assert_eq!(row["drill"]["passed"], false, "{row}");
    assert_eq!(row["drill"]["kind"], "check_failed", "{row}");
    assert!(
        row["drill"]["reason"]
            .as_str()
            .unwrap()
            .contains("did not return true"),
        "{row}"
    );
    let (_, text, _) = run(dbsnap(&home, &cluster, &config).arg("list"));
    assert!(text.contains("[drill FAILED "), "{text}");

    // A failed drill does not protect a snapshot from prune.
    let newer = snapshot(&home, &cluster, &config);
    let (code, v, err) =
        run_json(dbsnap(&home, &cluster, &config).args(["prune", "--keep-last", "1", "--dry-run"]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["removed"][0]["path"], file.as_str(), "{v}");

    // A damaged snapshot: a byte flipped inside a member.
    let damaged = home.path().join("damaged.tar");
    let mut bytes = std::fs::read(&newer).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let (code, v, err) = run_json(
        dbsnap(&home, &cluster, &config)
            .arg("drill")
            .arg("--file")
            .arg(&damaged),
    );
    assert_eq!(code, 10, "{v}\n{err}");
    assert_eq!(v["error"]["kind"], "verify", "{v}");
    assert_nothing_left(&home, &cluster, "damaged");
    let record = std::fs::read(home.path().join(".damaged.tar.drill"))
        .expect("the failure is recorded beside the snapshot");
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["passed"], false, "{record}");
    assert_eq!(record["kind"], "verify", "{record}");
}

#[test]
fn ctrl_c_and_kill_9_leave_no_scratch_database_behind() {
    let cluster = Cluster::start(15);
    platform(&cluster, 400_000);
    let home = Home::new();
    let config = config(&home, &cluster);
    let file = snapshot(&home, &cluster, &config);

    // Ctrl-C once the scratch databases are being loaded.
    let mut child = dbsnap(&home, &cluster, &config)
        .args(["drill", "--no-progress", "--file", &file])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while scratch_databases(&cluster).is_empty() {
        assert!(t0.elapsed().as_secs() < 60, "no scratch database appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the drill ended before it was interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let rc = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted by SIGINT; the drill's scratch databases were dropped"),
        "{err}"
    );
    assert!(!err.contains("resume"), "{err}");
    assert_nothing_left(&home, &cluster, "Ctrl-C");
    assert!(
        listed(&home, &cluster, &config, &file)["drill"].is_null(),
        "an interrupted drill has no verdict"
    );

    // Killed (as by kill -9) once the tables are loaded: the next drill drops what it left.
    let (code, _, err) = run(dbsnap(&home, &cluster, &config)
        .args(["drill", "--no-progress", "--file", &file])
        .env("DBSNAP_FAILPOINT", "restore-tables-loaded"));
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("failpoint restore-tables-loaded"), "{err}");
    let left = scratch_databases(&cluster);
    assert_eq!(left.split(',').count(), 2, "{left}");
    assert!(
        journals(&home).iter().any(|j| j.starts_with("drill-")),
        "{:?}",
        journals(&home)
    );
    let (code, v, err) =
        run_json(dbsnap(&home, &cluster, &config).args(["drill", "--file", &file]));
    assert_eq!(code, 0, "{v}\n{err}");
    let mut dropped: Vec<String> = v["dropped_leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    dropped.sort();
    assert_eq!(dropped.join(","), left, "{v}");
    assert_nothing_left(&home, &cluster, "after kill -9 and the next drill");

    // A drill whose journal went with its pod (an emptyDir): the server
    // alone knows its scratch database. A day old and unused, the next
    // drill drops it; a recent one (a drill elsewhere may be loading it) stays.
    cluster.create_db("__dbsnap_drill_20200101t000000_1_00000000_0");
    let recent = format!(
        "__dbsnap_drill_{}_1_00000000_0",
        cluster
            .psql(
                "postgres",
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD\"t\"HH24MISS')"
            )
            .trim()
    );
    cluster.create_db(&recent);
    let (code, v, err) =
        run_json(dbsnap(&home, &cluster, &config).args(["drill", "--file", &file]));
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(
        v["dropped_leftovers"],
        serde_json::json!(["__dbsnap_drill_20200101t000000_1_00000000_0"]),
        "{v}"
    );
    assert_eq!(scratch_databases(&cluster), recent);
}

#[test]
fn a_drill_on_another_server_creates_nothing_on_the_target_and_refuses_a_database_for_a_server() {
    let cluster = Cluster::start(15);
    platform(&cluster, 1_000);
    let other = Cluster::start(15);
    let home = Home::new();
    let config = config(&home, &cluster);
    snapshot(&home, &cluster, &config);
    // The snapshot's roles exist only on its own server: --no-owner.
    let (code, v, err) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--no-owner",
        "--no-privileges",
        "--server",
        &other.url("postgres"),
    ]));
    assert_eq!(code, 0, "{v}\n{err}");
    let server = format!("127.0.0.1:{}", other.port);
    for d in v["databases"].as_array().unwrap() {
        assert_eq!(d["server"], server.as_str(), "{d}");
    }
    assert_nothing_left(&home, &other, "other server");
    assert_eq!(scratch_databases(&cluster), "");
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '\\_\\_dbsnap%'"
            )
            .trim(),
        "0"
    );

    // A role with CREATEDB that is no superuser cannot give the objects
    // their owners: said with what to do; the snapshot keeps its proof.
    other.psql(
        "postgres",
        "CREATE ROLE cdb LOGIN CREATEDB PASSWORD 'Cdb-pw-1'",
    );
    let (code, v, _) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--server",
        &other.url_as("cdb", Some("Cdb-pw-1"), "postgres"),
    ]));
    assert_eq!(code, 12, "{v}");
    assert!(
        common::error_text(&v).contains("--no-owner --no-privileges"),
        "{v}"
    );
    assert_eq!(scratch_databases(&other), "");
    let record = listed_drill(&home, &cluster, &config);
    assert_eq!(record["passed"], false, "{record}");
    assert!(
        record["passed_at"].is_string(),
        "an earlier pass stands: {record}"
    );
    let (code, v, err) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--no-owner",
        "--no-privileges",
        "--server",
        &other.url_as("cdb", Some("Cdb-pw-1"), "postgres"),
    ]));
    assert_eq!(code, 0, "{v}\n{err}");

    // A role that may not create databases: said, nothing made, no verdict.
    other.psql("postgres", "CREATE ROLE lowly LOGIN PASSWORD 'Low-pw-1'");
    let before = listed_drill(&home, &cluster, &config);
    let (code, v, _) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--server",
        &other.url_as("lowly", Some("Low-pw-1"), "postgres"),
    ]));
    assert_eq!(code, 6, "{v}");
    assert!(common::error_text(&v).contains("CREATEDB"), "{v}");
    assert_eq!(scratch_databases(&other), "");
    assert_eq!(
        listed_drill(&home, &cluster, &config),
        before,
        "a missing privilege is no verdict"
    );

    let (code, v, _) = run_json(dbsnap(&home, &cluster, &config).args([
        "drill",
        "--target",
        "app",
        "--server",
        &other.url("app"),
    ]));
    assert_eq!(code, 2, "{v}");
    let message = common::error_text(&v);
    assert!(
        message.contains("names database \"app\"") && message.contains("maintenance database"),
        "{message}"
    );
    assert_eq!(scratch_databases(&other), "");
}

#[test]
fn an_encrypted_snapshot_in_s3_is_drilled_and_its_record_lands_beside_it() {
    let cluster = Cluster::start(15);
    platform(&cluster, 1_000);
    let home = Home::new();
    let config = config(&home, &cluster);
    let key = home.path().join("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (installed by scripts/setup.sh)");
    assert!(out.status.success());
    let recipient = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("backups");
    let cmd = || {
        let mut c = dbsnap(&home, &cluster, &config);
        for (k, v) in server.env() {
            c.env(k, v);
        }
        c.args(["--repo", "s3://backups/app"]);
        c
    };
    let (code, v, err) =
        run_json(cmd().args(["create", "--target", "app", "--encrypt-to", &recipient]));
    assert_eq!(code, 0, "{v}\n{err}");
    let name = v["file"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    // Without the key: the drill cannot open the snapshot, and says so.
    let (code, v, _) = run_json(cmd().args(["drill", "--target", "app"]));
    assert_eq!(code, 2, "{v}");
    assert!(common::error_text(&v).contains("--identity"), "{v}");
    assert_nothing_left(&home, &cluster, "no key");
    let (_, v, _) = run_json(cmd().arg("list"));
    assert!(
        v["snapshots"][0]["drill"].is_null(),
        "a missing key is no verdict on the snapshot: {v}"
    );
    // The key by DBSNAP_IDENTITY, as the drill unit passes it.
    let (code, v, err) = run_json(
        cmd()
            .args(["drill", "--target", "app"])
            .env("DBSNAP_IDENTITY", &key),
    );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["passed"], true);
    assert_nothing_left(&home, &cluster, "s3");
    let record = s3_client::Client::new(&server)
        .get("backups", &format!("app/.{name}.drill"))
        .expect("the record is an object beside the snapshot");
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["passed"], true, "{record}");
    let (code, v, err) = run_json(cmd().arg("list"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["snapshots"][0]["drill"]["passed"], true, "{v}");
}
