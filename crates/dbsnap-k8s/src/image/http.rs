//! The little HTTP a registry lookup needs: one `GET` per connection
//! (HTTP/1.1 over rustls, or plain), its body read whole up to a bound.
//!
//! Trust: the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set,
//! as OpenSSL reads them), plus docker's per-registry
//! `/etc/docker/certs.d/HOST[:PORT]/*.crt`. `force_insecure` (the user's
//! `--force-insecure`) accepts any certificate, and falls back to plain
//! HTTP when the server does not speak TLS. This transport is used for the
//! registry (and its token service) only — never for the Kubernetes API.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{header, HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest response body read (a page of tags, a token).
const MAX_BODY: usize = 8 << 20;

/// An absolute URL, split the way a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https` (else plain `http`).
    pub secure: bool,
    /// `HOST[:PORT]`.
    pub host: String,
    /// `/path?query`.
    pub path: String,
}

impl Url {
    /// Parses `http(s)://HOST[:PORT][/PATH][?QUERY]`.
    pub fn parse(text: &str) -> Option<Url> {
        let (scheme, rest) = text.split_once("://")?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host, path) = rest.split_at(split);
        if host.is_empty() || host.contains('@') {
            return None;
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Some(Url {
            secure,
            host: host.to_string(),
            path,
        })
    }

    /// `other` (absolute, or a path on this URL's host) resolved against this URL.
    pub fn join(&self, other: &str) -> Option<Url> {
        if other.starts_with('/') {
            return Some(Url {
                path: other.to_string(),
                ..self.clone()
            });
        }
        Url::parse(other)
    }

    /// The URL as text.
    pub fn display(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}", self.host, self.path)
    }
}

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value as text.
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// No TCP connection (refused, unreachable, name unknown, timed out).
    Connect(String),
    /// The server answered the TLS handshake with something else (plain HTTP).
    NotTls,
    /// The server's certificate is not trusted.
    Untrusted(String),
    /// The server's certificate is for other names (those).
    WrongName(Vec<String>),
    /// Any other TLS failure.
    Tls(String),
    /// Plain `http://` refused without `force_insecure`.
    PlainRefused,
    /// The exchange broke off or made no sense.
    Protocol(String),
}

/// Sends `GET`s to one registry (and its token service).
pub struct Transport {
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
    force_insecure: bool,
    connect_timeout: Duration,
    /// Hosts found to speak plain HTTP (with `force_insecure` only).
    plain: Mutex<HashSet<String>>,
}

impl Transport {
    /// A transport trusting the roots the environment names (see the
    /// module docs) plus docker's `certs.d` for `registry_host`.
    pub fn new(
        registry_host: &str,
        force_insecure: bool,
        connect_timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Transport {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = roots(registry_host, env);
        let verified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(dbsnap_pg::connect::any_certificate(provider))
                    .with_no_client_auth()
            });
        // The ring provider supports the safe defaults; the builder cannot fail.
        let (verified, unverified) = match (verified, unverified) {
            (Ok(v), Ok(u)) => (v, u),
            (Err(e), _) | (_, Err(e)) => panic!("rustls rejected its own defaults: {e}"),
        };
        Transport {
            verified: Arc::new(with_http1(verified)),
            unverified: Arc::new(with_http1(unverified)),
            force_insecure,
            connect_timeout,
            plain: Mutex::new(HashSet::new()),
        }
    }

    /// `GET url` with an optional `Authorization` header value.
    pub async fn get(&self, url: &Url, authorization: Option<&str>) -> Result<Response, HttpError> {
        if !url.secure && !self.force_insecure {
            return Err(HttpError::PlainRefused);
        }
        let known_plain = self
            .plain
            .lock()
            .map(|p| p.contains(&url.host))
            .unwrap_or(false);
        if !url.secure || known_plain {
            let tcp = self.connect(&url.host, false).await?;
            return exchange(tcp, url, authorization).await;
        }
        match self.get_tls(url, authorization).await {
            // As docker does for an insecure registry: any failed
            // handshake (an HTTP answer, or a server that just hangs up)
            // means trying plain HTTP.
            Err(HttpError::NotTls | HttpError::Tls(_)) if self.force_insecure => {
                tracing::info!(host = %url.host, "registry does not speak TLS; plain HTTP, as the insecure-registry setting allows");
                if let Ok(mut plain) = self.plain.lock() {
                    plain.insert(url.host.clone());
                }
                let tcp = self.connect(&url.host, false).await?;
                exchange(tcp, url, authorization).await
            }
            other => other,
        }
    }

    async fn get_tls(&self, url: &Url, authorization: Option<&str>) -> Result<Response, HttpError> {
        let tcp = self.connect(&url.host, true).await?;
        let config = if self.force_insecure {
            self.unverified.clone()
        } else {
            self.verified.clone()
        };
        let name = ServerName::try_from(host_name(&url.host).to_string())
            .map_err(|e| HttpError::Connect(format!("{}: {e}", url.host)))?;
        let tls = tokio::time::timeout(
            self.connect_timeout,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| HttpError::Connect(format!("TLS handshake with {} timed out", url.host)))?
        .map_err(tls_error)?;
        exchange(tls, url, authorization).await
    }

    /// A TCP connection to `host`, on port 443 (TLS) or 80 when it names none.
    async fn connect(&self, host: &str, tls: bool) -> Result<TcpStream, HttpError> {
        let address = match (host_port(host), tls) {
            (Some(_), _) => host.to_string(),
            (None, true) => format!("{host}:443"),
            (None, false) => format!("{host}:80"),
        };
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&address)).await {
            Ok(Ok(tcp)) => Ok(tcp),
            Ok(Err(e)) => Err(HttpError::Connect(format!("{host}: {e}"))),
            Err(_) => Err(HttpError::Connect(format!(
                "{host}: no answer within {} s",
                self.connect_timeout.as_secs()
            ))),
        }
    }
}

fn with_http1(mut config: ClientConfig) -> ClientConfig {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// `HOST` of `HOST[:PORT]` (IPv6 brackets removed).
pub(super) fn host_name(host: &str) -> &str {
    let name = match host_port(host) {
        Some(_) => &host[..host.rfind(':').unwrap_or(host.len())],
        None => host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}

fn host_port(host: &str) -> Option<u16> {
    let (name, port) = host.rsplit_once(':')?;
    if name.contains(':') && !name.ends_with(']') {
        return None;
    }
    port.parse().ok()
}

fn tls_error(e: std::io::Error) -> HttpError {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned();
    match inner {
        Some(rustls::Error::InvalidMessage(_)) => HttpError::NotTls,
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { presented, .. },
        )) => HttpError::WrongName(presented),
        Some(rustls::Error::InvalidCertificate(c)) => {
            HttpError::Untrusted(dbsnap_pg::connect::certificate_problem(&c))
        }
        Some(other) => HttpError::Tls(other.to_string()),
        None => HttpError::Tls(e.to_string()),
    }
}

async fn exchange<S>(
    stream: S,
    url: &Url,
    authorization: Option<&str>,
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: &dyn std::fmt::Display| HttpError::Protocol(format!("{}: {e}", url.host));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(&e))?;
    let driver = tokio::spawn(connection);
    let mut request = Request::get(url.path.as_str())
        .header(header::HOST, url.host.as_str())
        .header(
            header::USER_AGENT,
            concat!("dbsnap/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| protocol(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| protocol(&e))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| protocol(&e))?
        .to_bytes();
    driver.abort();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Trust anchors: `SSL_CERT_FILE`/`SSL_CERT_DIR` if set, else the
/// system's; plus `/etc/docker/certs.d/HOST/*.crt`.
fn roots(registry_host: &str, env: &dyn Fn(&str) -> Option<String>) -> RootCertStore {
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    let file = env("SSL_CERT_FILE").filter(|v| !v.is_empty());
    let dirs = env("SSL_CERT_DIR").filter(|v| !v.is_empty());
    if file.is_none() && dirs.is_none() {
        certs.extend(rustls_native_certs::load_native_certs().certs);
    }
    if let Some(file) = file {
        certs.extend(pem_file(Path::new(&file)));
    }
    for dir in dirs.iter().flat_map(|d| d.split(':')) {
        certs.extend(pem_dir(Path::new(dir), |_| true));
    }
    let docker = Path::new("/etc/docker/certs.d").join(registry_host);
    certs.extend(pem_dir(&docker, |p| {
        p.extension().is_some_and(|e| e == "crt")
    }));
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(certs);
    store
}

fn pem_file(path: &Path) -> Vec<CertificateDer<'static>> {
    match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

fn pem_dir(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<CertificateDer<'static>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && keep(p))
        .flat_map(|p| pem_file(&p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_joined() {
        let u = Url::parse("https://127.0.0.1:5000/v2/x/tags/list?n=2").unwrap();
        assert!(u.secure);
        assert_eq!(u.host, "127.0.0.1:5000");
        assert_eq!(u.path, "/v2/x/tags/list?n=2");
        let next = u.join("/v2/x/tags/list?last=b&n=2").unwrap();
        assert_eq!(
            next.display(),
            "https://127.0.0.1:5000/v2/x/tags/list?last=b&n=2"
        );
        assert_eq!(
            u.join("http://auth.example/token").unwrap().display(),
            "http://auth.example/token"
        );
        assert_eq!(Url::parse("https://h?a=b").unwrap().path, "/?a=b");
        assert!(Url::parse("ftp://h/").is_none());
        assert!(Url::parse("https://user@h/").is_none());
    }

    #[test]
    fn hosts_and_ports_are_told_apart() {
        assert_eq!(
            host_name("registry.example.com:5000"),
            "registry.example.com"
        );
        assert_eq!(host_name("registry.example.com"), "registry.example.com");
        assert_eq!(host_name("[::1]:5000"), "::1");
        assert_eq!(host_port("[::1]:5000"), Some(5000));
        assert_eq!(host_port("registry.example.com"), None);
    }
}
