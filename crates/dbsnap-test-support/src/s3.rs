//! Real S3 servers for the object-storage tests, each started on a free
//! port of 127.0.0.1 and killed on drop, installed by `scripts/setup.sh`:
//!
//! - [`S3Kind::S3sFs`]: `s3s-fs` (crates.io), a bucket per directory of a
//!   temporary root; it checks SigV4 signatures against its one key pair;
//! - [`S3Kind::Moto`]: moto's server mode (PyPI `moto[server]`), an
//!   independent implementation in Python, state in memory; it checks
//!   signatures against the key of an IAM user made at start.
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
    program: PathBuf,
    port: u16,
}

const ACCESS_KEY: &str = "dbsnap-test-key";
const SECRET_KEY: &str = "dbsnap-test-secret";

fn spawn(
    kind: S3Kind,
    program: &std::path::Path,
    port: u16,
    root: &std::path::Path,
    log: &std::path::Path,
) -> Child {
    let out = std::fs::File::create(log).expect("server log");
    let err = out.try_clone().expect("server log");
    let mut cmd = Command::new(program);
    match kind {
        S3Kind::S3sFs => cmd
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root),
        // Signatures are checked after the first three requests (the IAM
        // user, its policy and its key, see `moto_credentials`).
        S3Kind::Moto => cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3"),
    };
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
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
        for attempt in 1..=5 {
            let port = crate::free_port();
            let log = dir.path().join(format!("server-{attempt}.log"));
            let mut child = spawn(kind, &program, port, &root, &log);
            match wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    let (access_key, secret_key) = match kind {
                        S3Kind::S3sFs => (ACCESS_KEY.to_string(), SECRET_KEY.to_string()),
                        S3Kind::Moto => moto_credentials(port),
                    };
                    return S3Server {
                        kind,
                        endpoint: format!("http://127.0.0.1:{port}"),
                        access_key,
                        secret_key,
                        region: "us-east-1".into(),
                        child,
                        log,
                        dir,
                        program,
                        port,
                    };
                }
                // Another test took the port first: try another.
                Err(out) if out.to_lowercase().contains("address already in use") => {}
                Err(out) => panic!("{kind:?} did not start on port {port}:\n{out}"),
            }
        }
        panic!("{kind:?} found no free port in 5 attempts")
    }

    /// Creates a bucket (s3s-fs: its directory; moto: a signed PUT).
    pub fn create_bucket(&self, name: &str) {
        match self.kind {
            S3Kind::S3sFs => {
                std::fs::create_dir(self.dir.path().join("buckets").join(name)).expect("bucket")
            }
            S3Kind::Moto => {
                let host = self.endpoint.trim_start_matches("http://");
                let mut stream = TcpStream::connect(host).expect("connect to moto");
                use std::io::{Read, Write};
                let auth =
                    sigv4_put_bucket(host, name, &self.region, &self.access_key, &self.secret_key);
                write!(
                    stream,
                    "PUT /{name} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
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

    /// Starts a killed server again on its port, with the objects it had
    /// (s3s-fs keeps them on disk; moto starts empty).
    pub fn restart(&mut self) {
        self.kill();
        let root = self.dir.path().join("buckets");
        let log = self.dir.path().join("server-restarted.log");
        self.child = spawn(self.kind, &self.program, self.port, &root, &log);
        if let Err(out) = wait_ready(&mut self.child, self.port, &log) {
            panic!(
                "{:?} did not restart on port {}:\n{out}",
                self.kind, self.port
            );
        }
        self.log = log;
    }

    /// Files of multipart uploads s3s-fs still holds (neither completed
    /// nor aborted).
    pub fn open_uploads(&self) -> Vec<String> {
        let root = self.dir.path().join("buckets");
        std::fs::read_dir(&root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".upload"))
                    .collect()
            })
            .unwrap_or_default()
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
pub(crate) fn wait_ready(
    child: &mut Child,
    port: u16,
    log: &std::path::Path,
) -> Result<(), String> {
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
        // moto's own API: not an S3 action, so it does not use up the
        // requests moto serves before it checks signatures.
        "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// Makes moto check signatures like S3: an IAM user allowed everything,
/// and its access key (moto refuses requests signed otherwise once its
/// unchecked ones are used up). Returns the key pair.
fn moto_credentials(port: u16) -> (String, String) {
    use std::io::{Read, Write};
    // moto routes an unsigned request by the service in its credential scope.
    let iam = |form: &str| -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=bootstrap/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        )
        .expect("IAM request to moto");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "moto IAM {form}: {answer}"
        );
        answer
    };
    iam("Action=CreateUser&UserName=dbsnap&Version=2010-05-08");
    iam("Action=PutUserPolicy&UserName=dbsnap&PolicyName=all&Version=2010-05-08&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D");
    let key = iam("Action=CreateAccessKey&UserName=dbsnap&Version=2010-05-08");
    let field = |tag: &str| -> String {
        let open = format!("<{tag}>");
        let start = key
            .find(&open)
            .unwrap_or_else(|| panic!("no {tag} in {key}"))
            + open.len();
        key[start..start + key[start..].find('<').expect("closing tag")].to_string()
    };
    (field("AccessKeyId"), field("SecretAccessKey"))
}

/// The SigV4 headers (`Authorization`, `x-amz-date`,
/// `x-amz-content-sha256`, each ending in CRLF) of `PUT /bucket` with an
/// empty body.
fn sigv4_put_bucket(host: &str, bucket: &str, region: &str, key: &str, secret: &str) -> String {
    use ring::{digest, hmac};
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let now = time::OffsetDateTime::now_utc();
    let date = format!(
        "{:04}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        now.hour(),
        now.minute(),
        now.second()
    );
    let payload = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "PUT\n/{bucket}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{stamp}\n\n{signed}\n{payload}"
    );
    let scope = format!("{date}/{region}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mac = |k: &[u8], m: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), m.as_bytes());
    let mut k = mac(format!("AWS4{secret}").as_bytes(), &date);
    for part in [region, "s3", "aws4_request"] {
        k = mac(k.as_ref(), part);
    }
    let signature = hex(mac(k.as_ref(), &to_sign).as_ref());
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={signature}\r\nx-amz-date: {stamp}\r\nx-amz-content-sha256: {payload}\r\n"
    )
}
