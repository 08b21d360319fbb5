//! The relay: a PostgreSQL front door that authenticates for its client.
//!
//! It runs where the password is (in a jump pod, whose environment takes
//! the password from the app's Secret) and speaks the wire protocol on one
//! stream (the stdin and stdout of an exec session). Its client (dbsnap, or
//! pg_dump, pg_restore and psql through dbsnap's local socket) starts a
//! session with no password; the relay opens the real connection with the
//! password it holds, answers the server's authentication (SCRAM-SHA-256,
//! MD5 or a clear-text request), tells the client it is in, and from then
//! on passes bytes both ways untouched. So the password never crosses the
//! stream, and every guarantee of the session (transactions, COPY,
//! cancellation by the server's own key) is the server's.
//!
//! The client picks the database; the role is always the relay's, since
//! the password it holds is that role's. A cancel request is passed on to
//! the server as it came. TLS to the server follows the relay's `sslmode`;
//! the client side never negotiates TLS (the stream is the exec session,
//! already inside the cluster's TLS).

use std::io;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::conninfo::{ConnInfo, SslMode};
use crate::error::PgError;

/// The hidden command that runs the relay: `dbsnap __relay ...`.
pub const RELAY_ARG: &str = "__relay";

const PROTOCOL_3: i32 = 196_608;
const CANCEL_REQUEST: i32 = 80_877_102;
pub(crate) const SSL_REQUEST: i32 = 80_877_103;
pub(crate) const GSSENC_REQUEST: i32 = 80_877_104;
/// The longest start-up packet accepted (the server's own limit is 10000).
const MAX_STARTUP: usize = 10_000;

use crate::tunnel::Duplex as Stream;

/// Where the relay's settings come from, as its command line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayArgs {
    /// A connection string without the password.
    pub conninfo: Option<String>,
    /// An environment variable holding a whole connection URL.
    pub url_env: Option<String>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// Print the settings (without the password) and stop.
    pub describe: bool,
}

impl RelayArgs {
    /// Parses `--conninfo S`, `--url-env VAR`, `--password-env VAR` and
    /// `--describe` (the words after `__relay`).
    pub fn parse(args: &[String]) -> Result<RelayArgs, String> {
        let mut out = RelayArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--conninfo" => out.conninfo = Some(value(a)?),
                "--url-env" => out.url_env = Some(value(a)?),
                "--password-env" => out.password_env = Some(value(a)?),
                "--describe" => out.describe = true,
                other => return Err(format!("unknown relay argument \"{other}\"")),
            }
        }
        if out.conninfo.is_some() == out.url_env.is_some() {
            return Err("the relay needs exactly one of --conninfo and --url-env".into());
        }
        Ok(out)
    }

    /// The command line that starts a relay with these settings.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec![RELAY_ARG.to_string()];
        let pairs = [
            ("--conninfo", &self.conninfo),
            ("--url-env", &self.url_env),
            ("--password-env", &self.password_env),
        ];
        for (flag, value) in pairs {
            if let Some(v) = value {
                out.extend([flag.to_string(), v.clone()]);
            }
        }
        if self.describe {
            out.push("--describe".into());
        }
        out
    }

    /// The server's settings, read from this process's environment (the
    /// pod's, where the Secret's value is).
    pub fn settings(&self) -> Result<ConnInfo, String> {
        let env = |name: &str| {
            std::env::var(name).map_err(|_| format!("the environment variable {name} is not set"))
        };
        let text = match (&self.url_env, &self.conninfo) {
            (Some(var), _) => env(var)?,
            (None, Some(c)) => c.clone(),
            (None, None) => String::new(),
        };
        let mut info = ConnInfo::resolve(&text).map_err(|e| e.to_string())?;
        if let Some(var) = &self.password_env {
            info.password = Some(env(var)?);
        }
        Ok(info)
    }
}

/// Runs the relay on stdin and stdout until either side ends.
pub async fn run_on_stdio(server: &ConnInfo) -> io::Result<()> {
    let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    serve(stdio, server).await
}

/// Serves one client on `client`: the start-up (or a cancel request), then
/// the session.
pub async fn serve<C: AsyncRead + AsyncWrite + Unpin + Send>(
    mut client: C,
    server: &ConnInfo,
) -> io::Result<()> {
    let (code, body) = loop {
        let (code, body) = read_startup(&mut client).await?;
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            // The stream is already private; no TLS inside it.
            client.write_all(b"N").await?;
            client.flush().await?;
            continue;
        }
        break (code, body);
    };
    match code {
        CANCEL_REQUEST => forward_cancel(server, &body).await,
        PROTOCOL_3 => {
            let params = startup_params(&body);
            match open_session(server, &params).await {
                Ok((stream, ok)) => {
                    client.write_all(&ok).await?;
                    client.flush().await?;
                    pass_through(client, stream).await
                }
                Err(Refused::Server(message)) => {
                    client.write_all(&message).await?;
                    client.flush().await
                }
                Err(Refused::Relay(code, text)) => {
                    client.write_all(&error_response(code, &text)).await?;
                    client.flush().await
                }
            }
        }
        other => {
            let text = format!("unsupported start-up request {other}");
            client.write_all(&error_response("08P01", &text)).await?;
            client.flush().await
        }
    }
}

/// Copies bytes both ways until both directions are done.
async fn pass_through<C: AsyncRead + AsyncWrite + Unpin + Send>(
    mut client: C,
    mut server: Box<dyn Stream>,
) -> io::Result<()> {
    const BUF: usize = 256 * 1024;
    match tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, BUF, BUF).await {
        Ok(_) => Ok(()),
        // The client went away (its session was cancelled or dropped):
        // closing the server connection ends the backend's transaction.
        Err(e) if is_disconnect(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}

/// Reads one start-up packet: its code and the rest.
pub(crate) async fn read_startup<C: AsyncRead + Unpin>(
    client: &mut C,
) -> io::Result<(i32, Vec<u8>)> {
    let len = client.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (8..=MAX_STARTUP).contains(l))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad start-up packet length"))?;
    let code = client.read_i32().await?;
    let mut body = vec![0; len - 8];
    client.read_exact(&mut body).await?;
    Ok((code, body))
}

/// The name/value pairs of a start-up packet.
fn startup_params(body: &[u8]) -> Vec<(String, String)> {
    let mut words = body
        .split(|b| *b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned());
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (words.next(), words.next()) {
        if k.is_empty() {
            break;
        }
        out.push((k, v));
    }
    out
}

/// Why a session could not be opened.
enum Refused {
    /// The server said no: its ErrorResponse, passed on as it came.
    Server(Vec<u8>),
    /// The relay could not get there: a SQLSTATE and a message.
    Relay(&'static str, String),
}

impl From<io::Error> for Refused {
    fn from(e: io::Error) -> Refused {
        Refused::Relay(
            "08006",
            format!("the relay lost the server during start-up: {e}"),
        )
    }
}

/// Connects, authenticates, and returns the stream plus the bytes to send
/// the client (AuthenticationOk; the rest follows in the pass-through).
async fn open_session(
    server: &ConnInfo,
    params: &[(String, String)],
) -> Result<(Box<dyn Stream>, Vec<u8>), Refused> {
    let mut stream = reach(server).await?;
    let database = params
        .iter()
        .find(|(k, _)| k == "database")
        .map_or(server.dbname.as_str(), |(_, v)| v.as_str());
    let mut startup: Vec<(&str, &str)> = vec![("user", &server.user), ("database", database)];
    for (k, v) in params {
        if k != "user" && k != "database" {
            startup.push((k, v));
        }
    }
    let mut buf = BytesMut::new();
    frontend::startup_message(startup, &mut buf)?;
    stream.write_all(&buf).await?;
    stream.flush().await?;
    authenticate(&mut stream, server).await?;
    Ok((stream, auth_ok()))
}

/// Answers the server's authentication requests until it says OK.
async fn authenticate(stream: &mut Box<dyn Stream>, server: &ConnInfo) -> Result<(), Refused> {
    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, body) = read_message(stream).await?;
        match tag {
            b'R' => {}
            b'E' => return Err(Refused::Server(frame(tag, &body))),
            // NegotiateProtocolVersion and notices before authentication
            // are rare; the relay speaks 3.0 and carries on.
            b'v' | b'N' => continue,
            other => {
                return Err(Refused::Relay(
                    "08P01",
                    format!(
                        "unexpected message '{}' during authentication",
                        other as char
                    ),
                ))
            }
        }
        let code = be_i32(&body, 0);
        let rest = body.get(4..).unwrap_or_default();
        let mut out = BytesMut::new();
        match code {
            0 => return Ok(()),
            3 => frontend::password_message(password(server)?.as_bytes(), &mut out)?,
            5 => {
                let salt: [u8; 4] = rest.get(..4).and_then(|s| s.try_into().ok()).unwrap_or_default();
                let hash = postgres_protocol::authentication::md5_hash(
                    server.user.as_bytes(),
                    password(server)?.as_bytes(),
                    salt,
                );
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            10 => {
                let offered = mechanisms(rest);
                if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(Refused::Relay(
                        "28000",
                        format!("the server offers only {}, which the relay does not speak", offered.join(", ")),
                    ));
                }
                let s = ScramSha256::new(password(server)?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                scram = Some(s);
            }
            11 | 12 => {
                let Some(s) = scram.as_mut() else {
                    return Err(Refused::Relay("08P01", "SASL message without a SASL start".into()));
                };
                if code == 11 {
                    s.update(rest)?;
                    frontend::sasl_response(s.message(), &mut out)?;
                } else {
                    s.finish(rest)?;
                    continue;
                }
            }
            other => {
                return Err(Refused::Relay(
                    "28000",
                    format!("the server asks for authentication method {other}, which the relay does not speak (password, md5 and scram-sha-256 are)"),
                ))
            }
        }
        stream.write_all(&out).await?;
        stream.flush().await?;
    }
}

fn password(server: &ConnInfo) -> Result<&str, Refused> {
    server.password.as_deref().ok_or_else(|| {
        Refused::Relay(
            "28P01",
            format!(
                "the server asks for a password for role \"{}\" and the relay has none",
                server.user
            ),
        )
    })
}

/// The SASL mechanism names: NUL-terminated strings ending with an empty one.
fn mechanisms(body: &[u8]) -> Vec<String> {
    body.split(|b| *b == 0)
        .take_while(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// Opens the connection to the first host that answers, with TLS as
/// `sslmode` asks.
async fn reach(server: &ConnInfo) -> Result<Box<dyn Stream>, Refused> {
    let mut last = String::from("no host given");
    for i in 0..server.hosts.len().max(1) {
        let host = server
            .hosts
            .get(i)
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let port = server.port(i);
        let stream: Box<dyn Stream> = if server.is_unix_socket(i) {
            match UnixStream::connect(format!("{host}/.s.PGSQL.{port}")).await {
                Ok(s) => Box::new(s),
                Err(e) => {
                    last = format!("{host}: {e}");
                    continue;
                }
            }
        } else {
            let addr = server
                .hostaddrs
                .get(i)
                .filter(|a| !a.is_empty())
                .unwrap_or(&host);
            match TcpStream::connect((addr.as_str(), port)).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    match negotiate_tls(s, server, &host).await {
                        Ok(s) => s,
                        Err(e) => {
                            last = format!("{host}:{port}: {e}");
                            continue;
                        }
                    }
                }
                Err(e) => {
                    last = format!("{host}:{port}: {e}");
                    continue;
                }
            }
        };
        return Ok(stream);
    }
    Err(Refused::Relay(
        "08001",
        format!("the relay could not reach the database server ({last})"),
    ))
}

/// Asks for TLS unless `sslmode=disable`; takes plain when the server
/// declines and the mode allows it.
async fn negotiate_tls(
    mut tcp: TcpStream,
    server: &ConnInfo,
    host: &str,
) -> io::Result<Box<dyn Stream>> {
    if server.sslmode == SslMode::Disable || server.sslmode == SslMode::Allow {
        return Ok(Box::new(tcp));
    }
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await?;
    let answer = tcp.read_u8().await?;
    let required = !matches!(server.sslmode, SslMode::Prefer);
    match answer {
        b'S' => {
            let config = crate::connect::tls_config(server, server.sslmode).map_err(pg_to_io)?;
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            Ok(Box::new(tls))
        }
        b'N' if !required => Ok(Box::new(tcp)),
        b'N' => Err(io::Error::other(format!(
            "the server does not accept TLS and sslmode={} requires it",
            server.sslmode.as_str()
        ))),
        other => Err(io::Error::other(format!(
            "unexpected answer {other} to the TLS request"
        ))),
    }
}

fn pg_to_io(e: PgError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Passes a cancel request on to the server (plain TCP, as libpq does).
async fn forward_cancel(server: &ConnInfo, body: &[u8]) -> io::Result<()> {
    let (pid, key) = (be_i32(body, 0), be_i32(body, 4));
    let mut buf = BytesMut::new();
    frontend::cancel_request(pid, key, &mut buf);
    let host = server
        .hosts
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".into());
    let port = server.port(0);
    if server.is_unix_socket(0) {
        let mut s = UnixStream::connect(format!("{host}/.s.PGSQL.{port}")).await?;
        s.write_all(&buf).await
    } else {
        let addr = server
            .hostaddrs
            .first()
            .filter(|a| !a.is_empty())
            .unwrap_or(&host);
        let mut s = TcpStream::connect((addr.as_str(), port)).await?;
        s.write_all(&buf).await
    }
}

/// Reads one backend message: its tag and body.
async fn read_message<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> io::Result<(u8, Vec<u8>)> {
    let tag = s.read_u8().await?;
    let len = s.read_i32().await?;
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=1 << 20).contains(l))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad message length"))?;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await?;
    Ok((tag, body))
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, i32::from_be_bytes)
}

/// A message with its tag and length.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.put_slice(body);
    out.to_vec()
}

fn auth_ok() -> Vec<u8> {
    frame(b'R', &0i32.to_be_bytes())
}

/// A FATAL ErrorResponse, as the server would send it.
pub(crate) fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    frame(b'E', &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_need_one_source() {
        let args = RelayArgs {
            conninfo: Some("host=db user=app".into()),
            password_env: Some("DB_PASSWORD".into()),
            ..RelayArgs::default()
        };
        let line = args.to_args();
        assert_eq!(line[0], RELAY_ARG);
        assert_eq!(RelayArgs::parse(&line[1..]).unwrap(), args);
        assert!(RelayArgs::parse(&[]).is_err());
        assert!(RelayArgs::parse(&["--bogus".into()]).is_err());
    }

    #[test]
    fn start_up_parameters_are_read_in_order() {
        let body = b"user\0app\0database\0shop\0application_name\0pg_dump\0\0";
        let p = startup_params(body);
        assert_eq!(p[1], ("database".into(), "shop".into()));
        assert_eq!(p.len(), 3);
    }
}
