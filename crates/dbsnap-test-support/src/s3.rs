//! Real S3 servers for the object-storage tests, each started on a free
//! port of 127.0.0.1 and killed on drop, installed by `scripts/setup.sh`:
//!
//! - [`S3Kind::S3sFs`]: `s3s-fs` (crates.io), a bucket per directory of a
//!   temporary root; it checks SigV4 signatures against its one key pair;
//! - [`S3Kind::Moto`]: moto's server mode (PyPI `moto[server]`), an
//!   independent implementation in Python, state in memory.
//!
//! A test that asks for a server that cannot start panics with the reason
//! and the server's output: it never passes without one.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_root;

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// s3s-fs.
    S3sFs,
    /// moto's server mode.
    Moto,
}

/// Every implementation under test.
pub const KINDS: [S3Kind; 2] = [S3Kind::S3sFs, S3Kind::Moto];

/// A running S3 server.
pub struct S3Server {
    /// Which one.
    pub kind: S3Kind,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its access key id.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
    /// The region to sign for.
    pub region: String,
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts one; another port when the first is taken before the server
    /// binds it (parallel tests listen too).
    pub fn start(kind: S3Kind) -> S3Server {
        let program = match kind {
            S3Kind::S3sFs => workspace_root().join(".cache/s3s/bin/s3s-fs"),
            S3Kind::Moto => workspace_root().join(".cache/moto/bin/moto_server"),
        };
        assert!(
            program.is_file(),
            "{} is missing: run bash scripts/setup.sh",
            program.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("buckets");
        std::fs::create_dir(&root).expect("bucket root");
        let (access_key, secret_key) = ("dbsnap-test-key", "dbsnap-test-secret");
        for attempt in 1..=5 {
            let port = crate::free_port();
            let log = dir.path().join(format!("server-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("server log");
            let err = out.try_clone().expect("server log");
            let mut cmd = Command::new(&program);
            match kind {
                S3Kind::S3sFs => cmd
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", access_key, "--secret-key", secret_key])
                    .arg(&root),
                S3Kind::Moto => cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            };
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
            match wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    return S3Server {
                        kind,
                        endpoint: format!("http://127.0.0.1:{port}"),
                        access_key: access_key.into(),
                        secret_key: secret_key.into(),
                        region: "us-east-1".into(),
                        child,
                        log,
                        dir,
                    }
                }
                // Another test took the port first: try another.
                Err(out) if out.to_lowercase().contains("address already in use") => {}
                Err(out) => panic!("{kind:?} did not start on port {port}:\n{out}"),
            }
        }
        panic!("{kind:?} found no free port in 5 attempts")
    }

    /// Creates a bucket (s3s-fs: its directory; moto: a PUT, which it
    /// accepts unsigned).
    pub fn create_bucket(&self, name: &str) {
        match self.kind {
            S3Kind::S3sFs => {
                std::fs::create_dir(self.dir.path().join("buckets").join(name)).expect("bucket")
            }
            S3Kind::Moto => {
                let host = self.endpoint.trim_start_matches("http://");
                let mut stream = TcpStream::connect(host).expect("connect to moto");
                use std::io::{Read, Write};
                write!(
                    stream,
                    "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .expect("create bucket");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                assert!(
                    answer.starts_with("HTTP/1.1 200"),
                    "moto refused bucket {name}: {answer}"
                );
            }
        }
    }

    /// The standard AWS environment for a client of this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server now (a test of what a dead endpoint does).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where s3s-fs keeps a bucket's objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join("buckets").join(bucket)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (every 20 ms, at most 30 s) until the server on `port` answers
/// HTTP; its output (killed) when it does not.
fn wait_ready(child: &mut Child, port: u16, log: &std::path::Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if answers_http(port) {
            return Ok(());
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("({exited:?})\n{out}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something on `port` answers an HTTP request with a status line.
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
