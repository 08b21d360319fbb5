//! A real container registry for the image-lookup tests: Debian's
//! `docker-registry` (distribution 2.8), installed by `scripts/setup.sh`,
//! on a free loopback port in a temporary directory, killed on drop.
//!
//! Flavours: TLS (a CA made here) or plain HTTP; no authentication,
//! htpasswd basic authentication ([`USER`] / [`PASSWORD`]), or docker's
//! token authentication with a token service run here (ES256 JWTs signed
//! by a key whose certificate the registry trusts).
//!
//! Tags are pushed over the distribution API before the registry is
//! opened to the test: the same storage is first served plain and open,
//! the blobs and one manifest per tag are pushed, then the registry is
//! restarted with the flavour asked for. A registry that cannot start is
//! a panic with its log: tests never pass without it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use tokio_rustls::rustls;

use crate::tls::TlsMaterial;

/// The registry's user (basic and token flavours).
pub const USER: &str = "dbsnap-puller";
/// Its password.
pub const PASSWORD: &str = "Registry-Pw-4711";
/// bcrypt of [`PASSWORD`] (distribution's htpasswd takes bcrypt only),
/// made once with `crypt(3)`'s `$2b$` so that no bcrypt crate is needed.
const PASSWORD_BCRYPT: &str = "$2b$05$abcdefghijklmnopqrstuuWXe0k8plamHOoy/tW9BWEviGR1iew2a";
/// Where `scripts/setup.sh` installs distribution.
const BINARY: &str = "/usr/bin/docker-registry";
/// The token service's name and issuer, as the registry is told.
const TOKEN_SERVICE: &str = "dbsnap-test-registry";
const TOKEN_ISSUER: &str = "dbsnap-test-token-issuer";

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may pull.
    None,
    /// HTTP basic authentication against an htpasswd file.
    Basic,
    /// Bearer tokens from a token service (which takes basic credentials).
    Token,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Builder {
    tls: bool,
    /// Host names of its certificate (None: 127.0.0.1 and localhost).
    tls_names: Option<Vec<String>>,
    auth: Auth,
    repositories: Vec<(String, Vec<String>)>,
}

impl Builder {
    /// Serve TLS (default) or plain HTTP.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Serve TLS with a certificate for these names only (not the address
    /// clients reach it by, unless listed).
    pub fn tls_names(mut self, names: &[&str]) -> Self {
        self.tls_names = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// How clients authenticate (default none).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Pushes `tags` of `repository` (each a tiny image) before the start.
    pub fn tags(mut self, repository: &str, tags: &[&str]) -> Self {
        self.repositories.push((
            repository.to_string(),
            tags.iter().map(|t| t.to_string()).collect(),
        ));
        self
    }

    /// Starts the registry; panics (with its log) if it cannot.
    pub fn start(self) -> Registry {
        assert!(
            Path::new(BINARY).is_file(),
            "{BINARY} is missing: run bash scripts/setup.sh (it installs Debian's docker-registry)"
        );
        let dir = tempfile::tempdir().expect("registry temp dir");
        let storage = dir.path().join("storage");
        if !self.repositories.is_empty() {
            let loader = Process::start(dir.path(), "load", &storage, None, "");
            for (repository, tags) in &self.repositories {
                push(&loader.host, repository, tags);
            }
            drop(loader);
        }
        let tls = self.tls.then(|| match &self.tls_names {
            Some(names) => TlsMaterial::generate_for(
                "dbsnap-test-registry",
                &names.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
            None => TlsMaterial::generate("dbsnap-test-registry"),
        });
        let mut token = None;
        let mut auth = String::new();
        match self.auth {
            Auth::None => {}
            Auth::Basic => {
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{USER}:{PASSWORD_BCRYPT}\n"))
                    .expect("write htpasswd");
                auth = format!(
                    "auth:\n  htpasswd:\n    realm: dbsnap-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            Auth::Token => {
                let service = TokenService::start(
                    tls.as_ref()
                        .expect("the token flavour needs TLS (the realm is https)"),
                );
                let bundle = dir.path().join("token-signer.crt");
                std::fs::write(&bundle, &service.signer_pem).expect("write the token bundle");
                auth = format!(
                    "auth:\n  token:\n    realm: https://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    service.host,
                    bundle.display()
                );
                token = Some(service);
            }
        }
        let mut http_tls = String::new();
        if let Some(tls) = &tls {
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert, &tls.server_pem).expect("write the server certificate");
            std::fs::write(&key, &tls.server_key_pem).expect("write the server key");
            http_tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        let ca_file = tls.as_ref().map(|t| {
            let path = dir.path().join("ca.crt");
            std::fs::write(&path, &t.ca_pem).expect("write the CA");
            path
        });
        let process = Process::start(dir.path(), "serve", &storage, Some(&http_tls), &auth);
        Registry {
            process,
            token,
            ca_file,
            _dir: dir,
        }
    }
}

/// A running registry; killed (and its files removed) when dropped.
pub struct Registry {
    process: Process,
    token: Option<TokenService>,
    ca_file: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A TLS registry without authentication and without tags.
    pub fn builder() -> Builder {
        Builder {
            tls: true,
            tls_names: None,
            auth: Auth::None,
            repositories: Vec::new(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.process.host
    }

    /// The CA file (PEM) that signed the registry's (and the token
    /// service's) certificate; panics for a plain HTTP registry.
    pub fn ca_file(&self) -> &Path {
        self.ca_file.as_deref().expect("a TLS registry")
    }

    /// Token requests the token service answered (all, and those that
    /// came with valid credentials).
    pub fn token_requests(&self) -> (usize, usize) {
        self.token.as_ref().map_or((0, 0), |t| {
            (
                t.state.requests.load(Ordering::SeqCst),
                t.state.authenticated.load(Ordering::SeqCst),
            )
        })
    }

    /// Writes `dir/config.json` as `docker login` leaves it, with a login
    /// for this registry.
    pub fn write_docker_config(&self, dir: &Path, user: &str, password: &str) {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let config = json!({"auths": {self.host(): {"auth": auth}}});
        std::fs::create_dir_all(dir).expect("docker config dir");
        std::fs::write(dir.join("config.json"), format!("{config:#}\n"))
            .expect("write docker config");
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}

/// One `docker-registry serve` process.
struct Process {
    child: Child,
    host: String,
    log: PathBuf,
}

impl Process {
    /// Starts the registry on a free port; another one when that port is
    /// taken before the registry binds it (parallel tests listen too).
    fn start(dir: &Path, name: &str, storage: &Path, tls: Option<&str>, auth: &str) -> Process {
        let mut attempt = 1;
        loop {
            let port = crate::free_port();
            let host = format!("127.0.0.1:{port}");
            let config = dir.join(format!("{name}.yml"));
            let text = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {host}\n  secret: dbsnap-test-secret\n{}{auth}",
                storage.display(),
                tls.unwrap_or("")
            );
            std::fs::write(&config, text).expect("write the registry config");
            let log = dir.join(format!("{name}.log"));
            let out = std::fs::File::create(&log).expect("registry log");
            let err = out.try_clone().expect("registry log");
            let child = Command::new(BINARY)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"));
            let mut process = Process { child, host, log };
            match process.wait_ready() {
                Ok(()) => return process,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    attempt += 1;
                }
                Err(log) => panic!(
                    "docker-registry did not start on {}; its log:\n{log}",
                    process.host
                ),
            }
        }
    }

    /// Waits (every 20 ms, for at most 20 s) until the registry says it
    /// listens and the port accepts; its log when it does not.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("listening on") && TcpStream::connect(&self.host).is_ok() {
                return Ok(());
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("({exited:?})\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes one tiny image per tag over the distribution API (plain, open).
fn push(host: &str, repository: &str, tags: &[String]) {
    let layer = b"dbsnap test layer".to_vec();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    })
    .to_string()
    .into_bytes();
    for blob in [&layer, &config] {
        let started = request(
            host,
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            &[],
        );
        assert_eq!(started.status, 202, "start an upload: {}", started.text());
        let location = started.header("location").expect("upload location");
        let path = location
            .split_once(host)
            .map_or(location.as_str(), |(_, path)| path)
            .to_string();
        let separator = if path.contains('?') { '&' } else { '?' };
        let done = request(
            host,
            "PUT",
            &format!("{path}{separator}digest={}", digest(blob)),
            &[("Content-Type", "application/octet-stream")],
            blob,
        );
        assert_eq!(done.status, 201, "finish an upload: {}", done.text());
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": config.len(), "digest": digest(&config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": layer.len(), "digest": digest(&layer)}],
    })
    .to_string()
    .into_bytes();
    for tag in tags {
        let put = request(
            host,
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            &manifest,
        );
        assert_eq!(put.status, 201, "push {repository}:{tag}: {}", put.text());
    }
}

fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A response read whole.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One plain HTTP/1.1 request, `Connection: close`, read to the end.
fn request(host: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(host).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Reply {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// Docker's token protocol, served here: `GET /token?service=&scope=`
/// with optional basic credentials; an ES256 JWT granting `pull` on the
/// scope's repository to [`USER`], nothing to anyone else.
struct TokenService {
    host: String,
    signer_pem: String,
    state: Arc<TokenState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct TokenState {
    stop: AtomicBool,
    requests: AtomicUsize,
    authenticated: AtomicUsize,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl TokenService {
    fn start(tls: &TlsMaterial) -> TokenService {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("token signing key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("token signing key");
        let rcgen_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).expect("the key for rcgen");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dbsnap-test-token-signer");
        let cert = params
            .self_signed(&rcgen_key)
            .expect("token signer certificate");
        assert_eq!(
            key.public_key().as_ref().len(),
            65,
            "an uncompressed P-256 key"
        );
        let signer = Signer {
            key,
            cert_der: cert.der().to_vec(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        let host = listener.local_addr().expect("address").to_string();
        let state = Arc::new(TokenState {
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            authenticated: AtomicUsize::new(0),
        });
        let config = tls.server_config();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("token-service".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if served.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        serve_token(stream, config.clone(), &signer, &served);
                    }
                }
            })
            .expect("spawn the token service");
        TokenService {
            host,
            signer_pem: cert.pem(),
            state,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    signer: &Signer,
    state: &TokenState,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let authorization = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    });
    let (status, body) = match authorization {
        Some(a) if a != expected => ("401 Unauthorized", json!({"details": "bad login"})),
        known => {
            let granted = known.is_some();
            if granted {
                state.authenticated.fetch_add(1, Ordering::SeqCst);
            }
            let scope = query_value(path, "scope").unwrap_or_default();
            let token = signer.token(&scope, granted);
            ("200 OK", json!({"token": token, "access_token": token}))
        }
    };
    let body = body.to_string();
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(reply.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A query parameter, percent-decoded.
fn query_value(path: &str, key: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Signer {
    /// A JWT for `scope` (`repository:NAME:ACTIONS`): `pull` on NAME when
    /// `granted`, no access otherwise.
    fn token(&self, scope: &str, granted: bool) -> String {
        let b64url = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs();
        let access = match scope.split(':').collect::<Vec<_>>().as_slice() {
            ["repository", name, _] if granted => {
                json!([{"type": "repository", "name": name, "actions": ["pull"]}])
            }
            _ => json!([]),
        };
        let header = json!({
            "typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let claims = json!({
            "iss": TOKEN_ISSUER, "sub": if granted { USER } else { "" }, "aud": TOKEN_SERVICE,
            "exp": now + 600, "nbf": now.saturating_sub(60), "iat": now,
            "jti": format!("dbsnap-test-{now}"),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = self
            .key
            .sign(&rng, signing_input.as_bytes())
            .expect("sign the token");
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}
