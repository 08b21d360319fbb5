//! `dbsnap demo`: the built-in default. Starts a throwaway local
//! PostgreSQL, creates a sample platform (two databases with
//! `schema_migrations`), takes a consistent snapshot of both, lists and
//! verifies it, and cleans up unless asked to keep everything.

use std::path::PathBuf;

use dbsnap_archive::snapshot::ConsistencyMethod;
use dbsnap_pg::local::{find_server_bins, LocalServer, LocalServerOptions};
use dbsnap_pg::{PgError, PgErrorKind, Resolver};
use serde::Serialize;

use crate::create::{self, CreateOptions, CreateResult, Progress};
use crate::error::CoreError;
use crate::inspect::{self, ListEntry, VerifyReport};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where to put the server and snapshots (a new temporary directory if none).
    pub dir: Option<PathBuf>,
    /// Keep the server running and the files after the demo.
    pub keep: bool,
    /// Rows of sample jobs to generate.
    pub rows: u32,
}

/// What the demo did.
#[derive(Debug, Serialize)]
pub struct DemoResult {
    /// Working directory.
    pub dir: PathBuf,
    /// Server binaries used.
    pub server_bin: PathBuf,
    /// Connection URLs of the sample databases (no password).
    pub databases: Vec<String>,
    /// The snapshot taken.
    pub create: CreateResult,
    /// `list` of the demo repository.
    pub list: Vec<ListEntry>,
    /// `verify` of the snapshot.
    pub verify: VerifyReport,
    /// Whether the server and files were kept.
    pub kept: bool,
    /// How to stop a kept server.
    pub stop_command: Option<String>,
    /// How to snapshot the kept platform again.
    pub try_command: Option<String>,
    /// How to open psql on the kept platform.
    pub psql_command: Option<String>,
}

/// For a kept demo: a 0600 password file and a `dbsnap.toml` whose target
/// `demo` names both databases (URLs without the password).
fn write_kept_config(
    dir: &std::path::Path,
    server: &LocalServer,
    password: &str,
) -> Result<PathBuf, CoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pgpass = dir.join("pgpass");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&pgpass)
        .map_err(|e| CoreError::write_io(&pgpass, e))?;
    writeln!(f, "127.0.0.1:{}:*:postgres:{password}", server.port)
        .map_err(|e| CoreError::write_io(&pgpass, e))?;
    let config = dir.join("dbsnap.toml");
    let text = format!(
        "# Written by `dbsnap demo --keep`.\ndir = \"{}\"\n\n[targets.demo]\ndatabases = [\"{}\", \"{}\"]\n",
        dir.join("snapshots").display(),
        server.url_without_password("app-core"),
        server.url_without_password("app-backend")
    );
    std::fs::write(&config, text).map_err(|e| CoreError::write_io(&config, e))?;
    Ok(config)
}

const CORE_SQL: &str = r#"
CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations VALUES (20260301120000, false);
CREATE TYPE user_role AS ENUM ('owner', 'admin', 'member');
CREATE TABLE workspaces (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE,
                         created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE,
                    workspace_id bigint NOT NULL REFERENCES workspaces, role user_role NOT NULL DEFAULT 'member',
                    display_name text);
INSERT INTO workspaces (name) SELECT 'workspace-' || g FROM generate_series(1, 50) g;
INSERT INTO users (email, workspace_id, role, display_name)
  SELECT 'user' || g || '@example.com', 1 + g % 50, (ARRAY['owner','admin','member'])[1 + g % 3]::user_role,
         'Usér ' || g FROM generate_series(1, 2000) g;
CREATE VIEW workspace_sizes AS SELECT workspace_id, count(*) AS users FROM users GROUP BY workspace_id;
"#;

const BACKEND_SQL: &str = r#"
CREATE TABLE schema_migrations (version varchar PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20260110090000'), ('20260215101500'), ('20260301120000');
CREATE TABLE jobs (id bigserial PRIMARY KEY, workspace_id bigint NOT NULL, kind text NOT NULL,
                   payload jsonb NOT NULL, state text NOT NULL DEFAULT 'done', created_at timestamptz DEFAULT now());
CREATE INDEX jobs_workspace ON jobs (workspace_id, created_at);
"#;

/// Runs the demo.
pub async fn run(
    opts: &DemoOptions,
    progress: &std::sync::Arc<dyn Progress>,
) -> Result<DemoResult, CoreError> {
    let bins = find_server_bins();
    let Some(bin) = bins.first().cloned() else {
        return Err(PgError::new(PgErrorKind::Tooling, "no PostgreSQL server binaries (initdb, postgres) found")
            .hint("install PostgreSQL (apt-get install postgresql) or run `bash scripts/setup.sh`, or set DBSNAP_PG_BIN")
            .into());
    };
    let (dir, _tmp) = match &opts.dir {
        Some(d) => (server_reachable_dir(d)?, None),
        None => {
            let t = tempfile_dir()?;
            (
                t.clone(),
                Some(TempDirGuard {
                    path: t,
                    keep: opts.keep,
                }),
            )
        }
    };
    progress.phase(&format!(
        "starting a throwaway PostgreSQL from {}",
        bin.display()
    ));
    let password = random_password();
    let mut server = LocalServer::start(LocalServerOptions {
        bin_dir: bin.clone(),
        dir: dir.join("server"),
        superuser: "postgres".into(),
        password: password.clone(),
        conf: vec![],
    })?;
    progress.phase("creating the sample platform (app-core, app-backend)");
    let admin = crate::DIRECT.resolve(&server.url("postgres"))?;
    let client = crate::DIRECT.connect(&admin).await?;
    for db in ["app-core", "app-backend"] {
        client
            .batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .await
            .map_err(|e| PgError::from_pg(e, &admin.display(), "create sample database"))?;
    }
    drop(client);
    for (db, sql) in [("app-core", CORE_SQL), ("app-backend", BACKEND_SQL)] {
        let info = admin.with_dbname(db);
        let c = crate::DIRECT.connect(&info).await?;
        c.batch_execute(sql)
            .await
            .map_err(|e| PgError::from_pg(e, &info.display(), "load sample schema"))?;
        if db == "app-backend" {
            c.batch_execute(&format!(
                "INSERT INTO jobs (workspace_id, kind, payload) SELECT 1 + g % 50, (ARRAY['build','deploy','backup'])[1 + g % 3], \
                 jsonb_build_object('n', g, 'note', repeat('x', g % 200)) FROM generate_series(1, {}) g",
                opts.rows
            ))
            .await
            .map_err(|e| PgError::from_pg(e, &info.display(), "load sample rows"))?;
        }
    }
    let repo = crate::Location::directory(dir.join("snapshots")).repository();
    let databases = vec![server.url("app-core"), server.url("app-backend")];
    let create_opts = CreateOptions {
        databases: databases.clone(),
        resolver: crate::direct_route(),
        resolved: Vec::new(),
        target: Some("demo".into()),
        kubernetes: None,
        prefix: "db-snapshot".into(),
        safety_for: None,
        consistency: ConsistencyMethod::Snapshot,
        repo: repo.clone(),
        pg_bin: vec![bin.clone()],
        hooks: Default::default(),
        compress: None,
        jobs: None,
        engine: Default::default(),
        version_spec: Default::default(),
        version_specs: Default::default(),
        limits: Default::default(),
        extra_members: Vec::new(),
        crypto: crate::crypt::Crypto::none(),
    };
    let created = create::create(&create_opts, progress).await?;
    progress.phase("listing and verifying");
    let list = inspect::list(&repo)?;
    let verify = inspect::verify(&created.file, &crate::crypt::Crypto::default())?;
    let (stop_command, try_command, psql_command) = if opts.keep {
        server.keep();
        let config = write_kept_config(&dir, &server, &password)?;
        let as_server_user = if server.runs_as_other_user() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        (
            Some(format!(
                "{as_server_user}{} -D {} stop",
                bin.join("pg_ctl").display(),
                server.data_dir().display()
            )),
            Some(format!(
                "PGPASSFILE={} {} --config {} create --target demo",
                dir.join("pgpass").display(),
                this_program(),
                config.display()
            )),
            Some(format!(
                "PGPASSFILE={} {} {}",
                dir.join("pgpass").display(),
                bin.join("psql").display(),
                server.url_without_password("app-core")
            )),
        )
    } else {
        server.stop();
        (None, None, None)
    };
    Ok(DemoResult {
        dir,
        server_bin: bin,
        databases: vec![
            server.url_without_password("app-core"),
            server.url_without_password("app-backend"),
        ],
        create: created,
        list,
        verify,
        kept: opts.keep,
        stop_command,
        try_command,
        psql_command,
    })
}

/// How to run this dbsnap again: its full path (it may not be on PATH).
fn this_program() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "dbsnap".into())
}

struct TempDirGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates `dir` (if missing) so that the server user (postgres, when run
/// as root) can reach the server directory inside it: traversable (0711),
/// not listable; what dbsnap keeps inside stays private.
fn server_reachable_dir(dir: &std::path::Path) -> Result<PathBuf, CoreError> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() && !dir.is_dir() {
        return Err(CoreError::Config {
            message: format!("--dir {}: is a file, not a directory", dir.display()),
            hint: "demo's --dir names its working directory (made if missing); name another one"
                .into(),
        });
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::write_io(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| CoreError::write_io(dir, e))?;
    }
    Ok(dir.to_path_buf())
}

fn tempfile_dir() -> Result<PathBuf, CoreError> {
    let base = std::env::temp_dir();
    let name = format!(
        "dbsnap-demo-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    let p = base.join(name);
    std::fs::create_dir_all(&p).map_err(|e| CoreError::write_io(&p, e))?;
    // The server user (postgres, when run as root) must reach its directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711))
        .map_err(|e| CoreError::write_io(&p, e))?;
    Ok(p)
}

fn random_password() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
