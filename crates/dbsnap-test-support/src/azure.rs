//! A real Azure Blob Storage server for tests: Azurite (npm `azurite`,
//! installed into `.cache/azurite` by `scripts/setup.sh`), on a free port
//! with its own directory, killed on drop. It checks Shared Key
//! signatures; containers are made with a signed request.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::workspace_root;

/// Azurite's well-known development account and key.
pub const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service.
pub struct Azurite {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Starts one (another port if the first is taken meanwhile).
    pub fn start() -> Azurite {
        let program = workspace_root().join(".cache/azurite/node_modules/.bin/azurite-blob");
        assert!(
            program.is_file(),
            "{} is missing: run bash scripts/setup.sh",
            program.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        for attempt in 1..=5 {
            let port = crate::free_port();
            let log = dir.path().join(format!("azurite-{attempt}.log"));
            let out = std::fs::File::create(&log).expect("log");
            let err = out.try_clone().expect("log");
            let mut child = Command::new(&program)
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(dir.path().join("data"))
                .args(["--skipApiVersionCheck", "--silent"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
            match crate::s3::wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    return Azurite {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        port,
                        child,
                        log,
                        _dir: dir,
                    }
                }
                Err(out) if out.to_lowercase().contains("eaddrinuse") => {}
                Err(out) => panic!("Azurite did not start on port {port}:\n{out}"),
            }
        }
        panic!("Azurite found no free port in 5 attempts")
    }

    /// Creates a container with a Shared Key signed request.
    pub fn create_container(&self, name: &str) {
        use base64::Engine;
        use std::io::{Read, Write};
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = httpdate_now();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b64.decode(KEY).unwrap());
        let sig = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Azurite");
        write!(
            s,
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("create container");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "Azurite refused container {name}: {answer}"
        );
    }

    /// The environment of a client (object_store's emulator settings).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY", KEY.into()),
        ]
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The time now as HTTP writes it (`Mon, 23 Nov 2026 19:00:00 GMT`).
fn httpdate_now() -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc().format(&f).expect("date")
}
