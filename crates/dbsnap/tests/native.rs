//! The native engine's members against pg_dump's own, on every server major
//! from 13 (no TID range scan: its fallback) to 18: the same entries in the
//! same order (`pg_restore -l` without dump ids), and stock pg_restore (the
//! server's own, or 18's for the server-only installs) restores them, from
//! a file with `-j2` and from a pipe, into databases whose per-table
//! checksums, sequences, large objects and `pg_dump --schema-only` equal
//! the source's, with big tables split into ctid ranges.

mod common;

use std::path::Path;
use std::process::Command;

use common::{create_command, quick_restore_urls, run_json, tar_extract, Home};
use dbsnap_test_support::{rich_schema_sql, Cluster, SUPERUSER, SUPERUSER_PASSWORD};

/// Tables and names the rich schema lacks.
const EXTRA_SQL: &str = r#"
CREATE TABLE nocols ();
INSERT INTO nocols DEFAULT VALUES;
INSERT INTO nocols DEFAULT VALUES;
CREATE TABLE "Odd ""Name"" *" ("Col A" int, "select" text, g int GENERATED ALWAYS AS ("Col A" * 2) STORED);
INSERT INTO "Odd ""Name"" *" ("Col A", "select") SELECT g, 'v' || g FROM generate_series(1, 500) g;
CREATE UNLOGGED TABLE scratch (a int);
INSERT INTO scratch SELECT generate_series(1, 100);
CREATE TABLE empty_table (a int);
CREATE SCHEMA "other schema";
CREATE TABLE "other schema".big (id int, doc jsonb);
INSERT INTO "other schema".big SELECT g, jsonb_build_object('g', g, 'pad', repeat('y', 200)) FROM generate_series(1, 20000) g;
"#;

fn restore_list(cluster: &Cluster, dump: &Path) -> Vec<String> {
    let out = Command::new(cluster.bin_dir().join("pg_restore"))
        .arg("-l")
        .arg(dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_once("; ").map_or(l, |(_, rest)| rest).to_string())
        .collect()
}

fn pg_restore(cluster: &Cluster, db: &str, how: &str, dump: &Path, snapshot: &Path) {
    cluster.create_db(db);
    let tool = cluster.bin_dir().join("pg_restore");
    let conn = format!("-h 127.0.0.1 -p {} -U {SUPERUSER} -d '{db}'", cluster.port);
    let script = match how {
        "file" => format!("'{}' -j2 {conn} '{}'", tool.display(), dump.display()),
        _ => format!(
            "tar xOf '{}' app.dump | '{}' {conn}",
            snapshot.display(),
            tool.display()
        ),
    };
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; {script}"))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .output()
        .unwrap();
    // pg_restore 17+ sets transaction_timeout, which servers before 17
    // do not know: that error is the stock tool's, and harmless.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("transaction_timeout") && !l.contains("errors ignored on restore:"))
        .collect();
    assert!(
        other.is_empty() && (out.status.success() || stderr.contains("transaction_timeout")),
        "pg_restore ({how}) failed: {stderr}"
    );
}

fn snapshot(home: &Home, cluster: &Cluster, extra: &[&str]) -> std::path::PathBuf {
    let mut cmd = create_command(home, cluster, &["app"]);
    cmd.args(extra).env("DBSNAP_SPLIT_BYTES", "1000000");
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "create failed: {v}\n{err}");
    std::path::PathBuf::from(v["file"].as_str().unwrap())
}

fn native_matches_pg_dump(major: u32) {
    let cluster = Cluster::start(major);
    cluster.create_db("app");
    let sql = cluster.scratch().join("rich.sql");
    std::fs::write(&sql, rich_schema_sql(200_000) + EXTRA_SQL).unwrap();
    cluster.psql_file("app", &sql);

    let home = Home::new();
    let native = snapshot(&home, &cluster, &["--jobs", "2"]);
    let logs = home.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("native dump"))
        .unwrap_or_else(|| panic!("no native dump line in the log:\n{logs}"));
    let count = |key: &str| -> usize {
        line.split(&format!("{key}="))
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    assert!(
        count("pieces") > count("tables"),
        "big tables were not split: {line}"
    );
    let reference = snapshot(&home, &cluster, &["--engine", "pg-dump", "--compress", "2"]);

    let dir = cluster.scratch();
    tar_extract(&native, &dir.join("native"));
    tar_extract(&reference, &dir.join("reference"));
    let native_dump = dir.join("native/app.dump");
    assert_eq!(
        restore_list(&cluster, &native_dump),
        restore_list(&cluster, &dir.join("reference/app.dump")),
        "the native member's entries differ from pg_dump's"
    );

    let source = (
        cluster.table_checksums("app"),
        cluster.schema_dump("app"),
        cluster.properties("app").replacen("database app:", "", 1),
    );
    assert!(source.0.contains("public.big|200000|"), "{}", source.0);
    for how in ["file", "pipe"] {
        let db = format!("app-{how}");
        pg_restore(&cluster, &db, how, &native_dump, &native);
        assert_eq!(cluster.table_checksums(&db), source.0, "data ({how})");
        assert_eq!(cluster.schema_dump(&db), source.1, "schema ({how})");
        let props = cluster
            .properties(&db)
            .replacen(&format!("database {db}:"), "", 1);
        let sequences = |p: &str| -> Vec<String> {
            p.lines()
                .filter(|l| l.starts_with("sequence") || l.starts_with("large object"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(sequences(&props), sequences(&source.2), "sequences ({how})");
    }

    // dbsnap's own reader checks the member structurally.
    let (code, v, err) = run_json(home.dbsnap().arg("verify").arg(&native));
    assert_eq!(code, 0, "verify: {v}\n{err}");

    // dbsnap's restore loads it natively: into a new database (--create),
    // then over the source by swap (--drop).
    let file = native.to_str().unwrap();
    for (db, extra) in [
        ("app-dbsnap", &["--create", "--map", "app=app-dbsnap"][..]),
        ("app", &["--drop"][..]),
    ] {
        let url = cluster.url(if db == "app" { "app" } else { "postgres" });
        let mut cmd = quick_restore_urls(&home, &cluster, file, &[url]);
        cmd.args(extra).args(["--jobs", "2"]);
        let (code, v, err) = run_json(&mut cmd);
        assert_eq!(code, 0, "dbsnap restore into {db}: {v}\n{err}");
        assert_eq!(cluster.table_checksums(db), source.0, "data (dbsnap {db})");
        assert_eq!(cluster.schema_dump(db), source.1, "schema (dbsnap {db})");
        let props = cluster
            .properties(db)
            .replacen(&format!("database {db}:"), "", 1);
        assert_eq!(props, source.2, "properties (dbsnap {db})");
    }
    let logs = home.logs();
    let loads: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("native load:"))
        .collect();
    assert_eq!(loads.len(), 2, "both restores load natively:\n{logs}");
    assert!(
        loads.iter().all(|l| !l.contains("(0 pieces")),
        "split tables load in pieces: {loads:?}"
    );

    // A piece whose data does not match the manifest's checksum is a
    // corrupt snapshot: the restore fails and its new database is gone.
    if major == 18 {
        let bad = dir.join("bad.tar");
        let mut bytes = std::fs::read(&native).unwrap();
        let key = b"\"adler32\": ";
        let at = bytes.windows(key.len()).rposition(|w| w == key).unwrap() + key.len();
        bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
        std::fs::write(&bad, &bytes).unwrap();
        let mut cmd = quick_restore_urls(
            &home,
            &cluster,
            bad.to_str().unwrap(),
            &[cluster.url("postgres")],
        );
        cmd.args(["--create", "--map", "app=app-bad", "--jobs", "2"]);
        let (code, v, err) = run_json(&mut cmd);
        assert_eq!(code, 10, "{v}\n{err}");
        assert!(common::error_text(&v).contains("Adler-32"), "{v}");
        let dbs = cluster.psql(
            "postgres",
            "SELECT string_agg(datname, ',') FROM pg_database",
        );
        assert!(!dbs.contains("app-bad"), "{dbs}");
    }
}

#[test]
fn native_members_equal_pg_dump_s_on_13() {
    native_matches_pg_dump(13);
}

#[test]
fn native_members_equal_pg_dump_s_on_14() {
    native_matches_pg_dump(14);
}

#[test]
fn native_members_equal_pg_dump_s_on_15() {
    native_matches_pg_dump(15);
}

#[test]
fn native_members_equal_pg_dump_s_on_16() {
    native_matches_pg_dump(16);
}

#[test]
fn native_members_equal_pg_dump_s_on_17() {
    native_matches_pg_dump(17);
}

#[test]
fn native_members_equal_pg_dump_s_on_18() {
    native_matches_pg_dump(18);
}

/// Row level security that would hide rows from the dumping role fails the
/// snapshot (as pg_dump does) instead of dumping fewer rows.
#[test]
fn rows_hidden_by_row_level_security_fail_the_snapshot() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE ROLE reader LOGIN PASSWORD 'r3ader-pw'; \
         CREATE TABLE secrets (id int, owner text); \
         INSERT INTO secrets SELECT g, 'o' || g FROM generate_series(1, 100) g; \
         ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY only_mine ON secrets USING (owner = current_user); \
         GRANT SELECT ON secrets TO reader;",
    );
    let home = Home::new();
    let mut cmd = home.dbsnap();
    cmd.arg("create")
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url_as("reader", Some("r3ader-pw"), "app"));
    let (code, v, err) = run_json(&mut cmd);
    assert_ne!(code, 0, "a partial snapshot was taken: {v}");
    assert!(err.contains("row-level security"), "{err}");
    assert!(
        home.snapshot_dir_entries().is_empty(),
        "{:?}",
        home.snapshot_dir_entries()
    );
}
