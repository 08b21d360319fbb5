//! Throwaway local PostgreSQL servers (initdb + pg_ctl) in a directory of
//! their own, on a free loopback port, with SCRAM password authentication.
//! Used by `dbsnap demo` and by the test clusters.
//!
//! PostgreSQL refuses to run as root; as root the server runs as the
//! `postgres` system user.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{PgError, PgErrorKind};

/// Settings of a new server.
#[derive(Debug, Clone)]
pub struct LocalServerOptions {
    /// Directory of initdb, pg_ctl, postgres.
    pub bin_dir: PathBuf,
    /// Directory that will hold `data/`, the socket and the log.
    pub dir: PathBuf,
    /// Superuser name.
    pub superuser: String,
    /// Superuser password.
    pub password: String,
    /// Extra `postgresql.conf` lines.
    pub conf: Vec<String>,
}

/// A running local server. Stopped by [`LocalServer::stop`] or on drop
/// (unless [`LocalServer::keep`] was called).
#[derive(Debug)]
pub struct LocalServer {
    opts: LocalServerOptions,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    run_as: Option<(u32, u32)>,
    keep: bool,
}

/// `(uid, gid)` of the `postgres` user, if there is one.
pub fn postgres_user_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, PgError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| PgError::new(PgErrorKind::Io, format!("could not find a free port: {e}")))
}

/// Directories holding a PostgreSQL server (`postgres` and `initdb`),
/// newest major first: `DBSNAP_PG_BIN`, `/usr/lib/postgresql/*/bin`, PATH.
pub fn find_server_bins() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = Vec::new();
    for dir in crate::tools::search_dirs(&[]) {
        // PATH may hold symlinks (/usr/local/bin/postgres): use the real
        // installation directory, where the client programs live too.
        let dir = std::fs::canonicalize(dir.join("postgres"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or(dir);
        if dir.join("postgres").is_file()
            && dir.join("initdb").is_file()
            && dir.join("pg_ctl").is_file()
        {
            let major = crate::tools::version_of(&dir.join("postgres"))
                .map(|(major, _)| major)
                .unwrap_or(0);
            if !dirs.iter().any(|(_, d)| d == &dir) {
                dirs.push((major, dir));
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.into_iter().map(|(_, d)| d).collect()
}

impl LocalServer {
    /// Runs initdb and starts the server; waits (bounded) until it accepts
    /// connections.
    pub fn start(opts: LocalServerOptions) -> Result<LocalServer, PgError> {
        let run_as = if running_as_root() {
            Some(postgres_user_ids().ok_or_else(|| {
                PgError::new(
                    PgErrorKind::Tooling,
                    "PostgreSQL cannot run as root and there is no `postgres` user",
                )
                .hint("create one (useradd --system postgres) or run as an ordinary user")
            })?)
        } else {
            None
        };
        let io =
            |what: &str, e: std::io::Error| PgError::new(PgErrorKind::Io, format!("{what}: {e}"));
        std::fs::create_dir_all(&opts.dir).map_err(|e| io("create server directory", e))?;
        std::fs::set_permissions(&opts.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod", e))?;
        let pwfile = opts.dir.join("pwfile");
        std::fs::write(&pwfile, &opts.password).map_err(|e| io("write password file", e))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("chmod", e))?;
        if let Some((uid, gid)) = run_as {
            for p in [&opts.dir, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| io("chown to postgres", e))?;
            }
        }
        let mut server = LocalServer {
            port: free_port()?,
            opts,
            run_as,
            keep: false,
        };
        let data = server.data_dir();
        server.run(
            server
                .command("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    &server.opts.superuser,
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        )?;
        let _ = std::fs::remove_file(&pwfile);
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n",
            server.opts.dir.display()
        );
        for line in &server.opts.conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut base =
            std::fs::read_to_string(&conf_path).map_err(|e| io("read postgresql.conf", e))?;
        base.push_str(&conf);
        // The free port may be taken by someone else before the server
        // binds it: then another one, a few times.
        let mut attempt = 1;
        loop {
            let text = format!("{base}port = {}\n", server.port);
            std::fs::write(&conf_path, text).map_err(|e| io("write postgresql.conf", e))?;
            // pg_ctl -w polls for readiness itself, bounded by -t.
            let started = server.run(
                server
                    .command("pg_ctl")
                    .args(["-w", "-t", "120", "-D"])
                    .arg(&data)
                    .arg("-l")
                    .arg(server.log_path())
                    .arg("start"),
                "pg_ctl start",
            );
            match started {
                Err(e) if attempt < 5 && e.to_string().contains("Address already in use") => {
                    attempt += 1;
                    server.port = free_port()?;
                    let _ = std::fs::remove_file(server.log_path());
                }
                Err(e) => return Err(e),
                Ok(_) => return Ok(server),
            }
        }
    }

    /// A command for one of the server's binaries, run as the server user.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.opts.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGPASSWORD")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, cmd: &mut Command, what: &str) -> Result<Output, PgError> {
        let out = cmd.output().map_err(|e| {
            PgError::new(PgErrorKind::Tooling, format!("could not run {what}: {e}"))
        })?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            return Err(PgError::new(
                PgErrorKind::Tooling,
                format!(
                    "{what} failed: {}{}\n{}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ),
            ));
        }
        Ok(out)
    }

    /// Data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.opts.dir.join("data")
    }

    /// Server log.
    pub fn log_path(&self) -> PathBuf {
        self.opts.dir.join("server.log")
    }

    /// Directory of the binaries.
    pub fn bin_dir(&self) -> &Path {
        &self.opts.bin_dir
    }

    /// The superuser's `postgres://` URL for `db`, with password.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{db}",
            self.opts.superuser, self.opts.password, self.port
        )
    }

    /// The same URL without the password (safe to print).
    pub fn url_without_password(&self, db: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{db}",
            self.opts.superuser, self.port
        )
    }

    /// Whether the server runs as another user (`postgres`, when started by root).
    pub fn runs_as_other_user(&self) -> bool {
        self.run_as.is_some()
    }

    /// Leaves the server running when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Stops the server immediately.
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if !self.keep {
            self.stop();
        }
    }
}
