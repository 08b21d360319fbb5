//! Opening connections with tokio-postgres and rustls, honouring libpq's
//! sslmode semantics (tokio-postgres itself only knows disable/prefer/require;
//! certificate checks are done here).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio_postgres::{CancelToken, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::conninfo::{ConnInfo, SslMode};
use crate::error::{PgError, PgErrorKind};

/// Default connect timeout when none is configured, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 30;

/// Facts about the server behind a connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerInfo {
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    /// `server_version`, e.g. "15.18 (Debian 15.18-0+deb12u1)".
    pub version: String,
    /// An identity of the running instance: databases with equal identities
    /// share one transaction-ID space.
    pub instance_id: String,
    /// `pg_control_system()`'s system identifier: the same for a cluster
    /// and its physical replicas, new for every `initdb`. None where the
    /// role may not read it.
    pub system_identifier: Option<String>,
    /// Whether the connected role is a superuser.
    pub is_superuser: bool,
}

impl ServerInfo {
    /// Major version (e.g. 15).
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

/// Why a peer's certificate was not accepted, in words (never a Debug dump).
pub fn certificate_problem(e: &CertificateError) -> String {
    match e {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names = if presented.is_empty() {
                "no host name".to_string()
            } else {
                presented
                    .iter()
                    .map(|n| presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "its certificate is for {names}, not for {}",
                expected.to_str()
            )
        }
        CertificateError::NotValidForName => "its certificate is not for this host name".into(),
        CertificateError::UnknownIssuer => {
            "its certificate is not signed by a trusted certificate authority".into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "its certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "its certificate is not valid yet (check this machine's clock)".into()
        }
        CertificateError::BadSignature => "its certificate's signature does not verify".into(),
        CertificateError::Revoked => "its certificate was revoked".into(),
        other => format!("its certificate was refused: {other}"),
    }
}

/// A name rustls reports a certificate holds, without its Debug wrapping
/// (`DnsName("registry.internal")`, `IpAddress(V4(…))`).
pub fn presented_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .unwrap_or(name)
}

/// The TLS failure somewhere in an error's chain of causes, in words: a
/// refused certificate as [`certificate_problem`] says it. None when no
/// TLS error is in the chain.
pub fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(match t {
                rustls::Error::InvalidCertificate(c) => certificate_problem(c),
                other => format!("TLS failed: {other}"),
            });
        }
        // An io::Error hides its inner error from `source()`.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = tls_problem(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

/// Opens a connection to `info`; the connection task runs on the current
/// tokio runtime until the client is dropped.
pub async fn connect(info: &ConnInfo) -> Result<Client, PgError> {
    let target = info.display();
    if info.sslmode == SslMode::Allow {
        // libpq's allow: plain first, TLS only if the server insists.
        match connect_mode(info, SslMode::Disable).await {
            Ok(c) => return Ok(c),
            Err(e) if matches!(e.kind, PgErrorKind::Auth | PgErrorKind::Unreachable) => {
                tracing::debug!(target = %target, "plain connection refused; retrying with TLS");
                return connect_mode(info, SslMode::Require).await;
            }
            Err(e) => return Err(e),
        }
    }
    connect_mode(info, info.sslmode).await
}

async fn connect_mode(info: &ConnInfo, mode: SslMode) -> Result<Client, PgError> {
    let target = info.display();
    let config = pg_config(info, mode)?;
    let tls = tls_connector(info, mode).map_err(|e| e.on(&target))?;
    let attempt = config.connect(tls.clone());
    // tokio-postgres bounds only the TCP connect; libpq's connect_timeout
    // bounds the whole start-up (TLS, authentication) of each host.
    let (client, connection) = match connect_limit(info) {
        Some(limit) => tokio::time::timeout(limit, attempt)
            .await
            .map_err(|_| timed_out(&target, limit))?,
        None => attempt.await,
    }
    .map_err(|e| {
        let db_error = e.as_db_error().is_some();
        let mut err = PgError::from_pg(e, &target, "could not connect");
        // Not an error the server sent: the server was not reached.
        if !db_error && err.kind == PgErrorKind::Server {
            err.kind = PgErrorKind::Unreachable;
            err.hint = Some(
                "check that the server is running and that host, port and sslmode are right".into(),
            );
        }
        err
    })?;
    let open = OpenConnection::register(client.cancel_token(), tls);
    let t = target.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(target = %t, "connection ended: {e}");
        }
        drop(open);
    });
    Ok(client)
}

/// The bound on one connection attempt: `connect_timeout` (or dbsnap's
/// default) per host, at least 2 s as in libpq; none for 0.
fn connect_limit(info: &ConnInfo) -> Option<Duration> {
    let per_host = info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    (per_host > 0).then(|| Duration::from_secs(per_host.max(2)) * info.hosts.len().max(1) as u32)
}

fn timed_out(target: &str, limit: Duration) -> PgError {
    PgError::new(
        PgErrorKind::Unreachable,
        format!(
            "the server did not complete the connection within {} s (connect_timeout)",
            limit.as_secs()
        ),
    )
    .on(target)
    .hint("check that host and port point at a running PostgreSQL server; connect_timeout in the connection string or PGCONNECT_TIMEOUT sets the limit (0 waits forever)")
}

/// Every connection still open, with what it takes to cancel its query.
static OPEN: Mutex<BTreeMap<u64, (CancelToken, MakeRustlsConnect)>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A registered connection; unregistered when its task ends.
struct OpenConnection(u64);

impl OpenConnection {
    fn register(token: CancelToken, tls: MakeRustlsConnect) -> OpenConnection {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = OPEN.lock() {
            open.insert(id, (token, tls));
        }
        OpenConnection(id)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Ok(mut open) = OPEN.lock() {
            open.remove(&self.0);
        }
    }
}

/// Cancels the query in flight on every open connection (for Ctrl-C and
/// SIGTERM: a cancelled query ends its transaction, so no lock outlives
/// the run), then waits up to `wait` for the connections to close. Returns
/// how many connections were open.
pub async fn cancel_all(wait: Duration) -> usize {
    let open: Vec<(CancelToken, MakeRustlsConnect)> = match OPEN.lock() {
        Ok(o) => o.values().cloned().collect(),
        Err(_) => return 0,
    };
    let mut cancels = tokio::task::JoinSet::new();
    for (token, tls) in open.iter().cloned() {
        cancels.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), token.cancel_query(tls)).await;
        });
    }
    while cancels.join_next().await.is_some() {}
    let deadline = tokio::time::Instant::now() + wait;
    while open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    open.len()
}

/// How many connections are open.
pub fn open_connections() -> usize {
    OPEN.lock().map(|o| o.len()).unwrap_or(0)
}

fn pg_config(info: &ConnInfo, mode: SslMode) -> Result<tokio_postgres::Config, PgError> {
    let mut c = tokio_postgres::Config::new();
    for (i, h) in info.hosts.iter().enumerate() {
        if info.is_unix_socket(i) {
            c.host_path(h);
        } else if h.is_empty() {
            // hostaddr only: use the address as host name too.
            c.host(
                info.hostaddrs
                    .get(i)
                    .map(String::as_str)
                    .unwrap_or_default(),
            );
        } else {
            c.host(h);
        }
        c.port(info.port(i));
    }
    if !info.hostaddrs.is_empty() {
        for a in &info.hostaddrs {
            let ip: IpAddr = a.parse().map_err(|_| {
                PgError::new(PgErrorKind::Config, format!("invalid hostaddr \"{a}\""))
                    .hint("hostaddr takes numeric IP addresses")
            })?;
            c.hostaddr(ip);
        }
    }
    c.user(&info.user).dbname(&info.dbname);
    if let Some(p) = &info.password {
        c.password(p.as_bytes());
    }
    if let Some(a) = &info.application_name {
        c.application_name(a);
    } else {
        c.application_name("dbsnap");
    }
    if let Some(o) = &info.options {
        c.options(o);
    }
    let timeout = info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if timeout > 0 {
        c.connect_timeout(Duration::from_secs(timeout.max(2)));
    }
    c.ssl_mode(match mode {
        SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if let Some(cb) = &info.channel_binding {
        use tokio_postgres::config::ChannelBinding;
        c.channel_binding(match cb.as_str() {
            "disable" => ChannelBinding::Disable,
            "require" => ChannelBinding::Require,
            _ => ChannelBinding::Prefer,
        });
    }
    if let Some(t) = &info.target_session_attrs {
        use tokio_postgres::config::TargetSessionAttrs;
        c.target_session_attrs(match t.as_str() {
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            _ => TargetSessionAttrs::Any,
        });
    }
    Ok(c)
}

fn home_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql").join(name))
}

fn tls_connector(
    info: &ConnInfo,
    mode: SslMode,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
        info, mode,
    )?))
}

/// The TLS client settings libpq's `mode` and `info`'s certificate files
/// ask for (root, client certificate, name check).
pub(crate) fn tls_config(info: &ConnInfo, mode: SslMode) -> Result<rustls::ClientConfig, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // libpq: an existing root certificate turns `require` into `verify-ca`.
    let root_path = info
        .sslrootcert
        .clone()
        .map(PathBuf::from)
        .or_else(|| home_file("root.crt").filter(|p| p.exists()));
    let (roots, check_name) = match mode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let Some(path) = root_path else {
                return Err(PgError::new(
                    PgErrorKind::Config,
                    format!("sslmode={} needs a root certificate, and ~/.postgresql/root.crt does not exist", mode.as_str()),
                )
                .hint("set sslrootcert (or PGSSLROOTCERT) to the CA file, or sslrootcert=system"));
            };
            (Some(load_roots(&path)?), mode == SslMode::VerifyFull)
        }
        SslMode::Require if root_path.is_some() => {
            (Some(load_roots(root_path.as_ref().unwrap())?), false)
        }
        _ => (None, false),
    };
    let inner = match roots {
        Some(store) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| {
                    PgError::new(PgErrorKind::Config, format!("bad root certificates: {e}"))
                })?,
        ),
        None => None,
    };
    let verifier = Arc::new(Verifier {
        inner,
        check_name,
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::new(PgErrorKind::Config, format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cert = info
        .sslcert
        .clone()
        .map(PathBuf::from)
        .or_else(|| home_file("postgresql.crt").filter(|p| p.exists()));
    let key = info
        .sslkey
        .clone()
        .map(PathBuf::from)
        .or_else(|| home_file("postgresql.key").filter(|p| p.exists()));
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let certs = read_pem_certs(&cert)?;
            let key_bytes = std::fs::read(&key).map_err(|e| io_config(&key, e))?;
            let key = rustls_pemfile::private_key(&mut key_bytes.as_slice())
                .ok()
                .flatten()
                .ok_or_else(|| {
                    PgError::new(
                        PgErrorKind::Config,
                        format!("no private key in \"{}\"", key.display()),
                    )
                })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                PgError::new(PgErrorKind::Config, format!("client certificate: {e}"))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

fn io_config(path: &std::path::Path, e: std::io::Error) -> PgError {
    PgError::new(
        PgErrorKind::Config,
        format!("could not read \"{}\": {e}", path.display()),
    )
}

fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let bytes = std::fs::read(path).map_err(|e| io_config(path, e))?;
    rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            PgError::new(
                PgErrorKind::Config,
                format!("bad certificate file \"{}\": {e}", path.display()),
            )
        })
}

fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, PgError> {
    let mut store = rustls::RootCertStore::empty();
    if path.as_os_str() == "system" {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    for cert in read_pem_certs(path)? {
        store.add(cert).map_err(|e| {
            PgError::new(
                PgErrorKind::Config,
                format!("bad root certificate in \"{}\": {e}", path.display()),
            )
        })?;
    }
    Ok(store)
}

/// A verifier that accepts any certificate while still checking the
/// handshake's signatures: the connection is encrypted, not authenticated
/// (sslmode prefer/require without roots; a registry's `--force-insecure`).
pub fn any_certificate(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Verifier {
        inner: None,
        check_name: false,
        provider,
    })
}

/// Certificate checks per sslmode: none (prefer/require without roots),
/// chain only (verify-ca), chain and name (verify-full).
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reads version, instance identity and role facts.
pub async fn server_info(client: &Client, target: &str) -> Result<ServerInfo, PgError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version'), \
                    pg_postmaster_start_time()::text, \
                    coalesce(inet_server_addr()::text, 'socket') || ':' || coalesce(inet_server_port(), 0)::text, \
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(|e| PgError::from_pg(e, target, "could not read server facts"))?;
    let version_num: i32 = row.get(0);
    // system_identifier is the best identity; it may be restricted, so it is optional.
    let sysid = match client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
    {
        Ok(r) => Some(r.get::<_, String>(0)),
        Err(_) => None,
    };
    let started: String = row.get(2);
    let instance_id = match &sysid {
        Some(s) => format!("{s}/{started}"),
        None => format!("{}/{started}", row.get::<_, String>(3)),
    };
    Ok(ServerInfo {
        version_num: version_num as u32,
        version: row.get(1),
        instance_id,
        system_identifier: sysid,
        is_superuser: row.get::<_, Option<bool>>(4).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(conn: &str) -> ConnInfo {
        ConnInfo::resolve_with(conn, &BTreeMap::<String, String>::new()).unwrap()
    }

    #[test]
    fn connect_timeout_is_per_host_at_least_two_seconds() {
        let secs = |c: &str| connect_limit(&info(c)).map(|d| d.as_secs());
        assert_eq!(secs("host=a dbname=x connect_timeout=10"), Some(10));
        assert_eq!(secs("host=a dbname=x connect_timeout=1"), Some(2));
        assert_eq!(secs("host=a,b dbname=x connect_timeout=5"), Some(10));
        assert_eq!(secs("host=a dbname=x connect_timeout=0"), None);
        assert_eq!(secs("host=a dbname=x"), Some(DEFAULT_CONNECT_TIMEOUT));
    }
}
