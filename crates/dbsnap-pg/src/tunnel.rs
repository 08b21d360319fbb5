//! A private local door to a far relay.
//!
//! A [`Tunnel`] listens on a Unix socket in a directory only this user can
//! enter (mode 0700), named as libpq expects (`.s.PGSQL.5432`), so dbsnap's
//! own connections and pg_dump, pg_restore and psql reach it with
//! `host=<dir>`. Each connection accepted is carried over a fresh stream
//! from the tunnel's [`Dial`] (an exec session running the relay in a jump
//! pod, say). No TCP port is opened: another local user cannot borrow the
//! relay's authentication.
//!
//! When the far side cannot be reached, the client still gets a proper
//! PostgreSQL error naming why, not a bare closed connection.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::conninfo::{ConnInfo, SslMode};
use crate::relay::{error_response, read_startup, GSSENC_REQUEST, SSL_REQUEST};

/// A byte stream both ways.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A stream being opened to the far side.
pub type Dialing = Pin<Box<dyn Future<Output = io::Result<Box<dyn Duplex>>> + Send>>;

/// Opens one stream to the far side per client connection.
pub type Dial = Arc<dyn Fn() -> Dialing + Send + Sync>;

/// The port in the socket's name (any would do; this one is libpq's default).
const PORT: u16 = 5432;

/// A listening tunnel; closed, with every connection through it, when dropped.
#[derive(Debug)]
pub struct Tunnel {
    dir: tempfile::TempDir,
    accept: JoinHandle<()>,
}

impl Tunnel {
    /// Starts listening; `label` names the far side in error messages.
    pub fn open(label: &str, dial: Dial) -> io::Result<Tunnel> {
        sweep_stale(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let listener = UnixListener::bind(socket_path(dir.path()))?;
        let label = label.to_string();
        let accept = tokio::spawn(accept_loop(listener, dial, label));
        Ok(Tunnel { dir, accept })
    }

    /// The directory holding the socket (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `base`'s settings pointed at this tunnel: same database, role and
    /// application name, no password (the relay authenticates), no TLS
    /// (the tunnel's transport is private already).
    pub fn point(&self, base: &ConnInfo) -> ConnInfo {
        let mut info = base.clone();
        info.hosts = vec![self.dir.path().display().to_string()];
        info.hostaddrs.clear();
        info.ports = vec![PORT];
        info.password = None;
        info.sslmode = SslMode::Disable;
        info.sslrootcert = None;
        info.sslcert = None;
        info.sslkey = None;
        info.target_session_attrs = None;
        info.channel_binding = None;
        info
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Tunnel directories are `dbsnap-tunnel-<pid>-<random>`.
const PREFIX: &str = "dbsnap-tunnel-";

/// Removes the tunnel directories of dbsnap processes that are gone (a
/// crash or `kill -9` leaves its directory and dead socket behind).
/// Only this user's, and only when that process no longer exists.
fn sweep_stale(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !Path::new("/proc").join(pid.to_string()).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::debug!(
                    "removed {} (its process {pid} is gone)",
                    entry.path().display()
                ),
                Err(e) => tracing::debug!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join(format!(".s.PGSQL.{PORT}"))
}

/// Accepts until aborted; the connections live in a set that dies with it.
async fn accept_loop(listener: UnixListener, dial: Dial, label: String) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let dial = dial.clone();
                    let label = label.clone();
                    connections.spawn(carry(client, dial, label));
                }
                Err(e) => {
                    tracing::warn!("tunnel to {label}: accept failed: {e}");
                    return;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Carries one client connection over a fresh far stream.
async fn carry(mut client: UnixStream, dial: Dial, label: String) {
    match dial().await {
        Ok(mut far) => {
            const BUF: usize = 256 * 1024;
            if let Err(e) =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut far, BUF, BUF).await
            {
                tracing::debug!("tunnel to {label}: connection ended: {e}");
            }
        }
        Err(e) => {
            tracing::warn!("tunnel to {label}: {e}");
            let text = format!("could not open a connection through {label}: {e}");
            let _ = refuse(&mut client, &text).await;
        }
    }
}

/// Answers a client's start-up with an error (after declining TLS).
async fn refuse(client: &mut UnixStream, text: &str) -> io::Result<()> {
    loop {
        let (code, _) = read_startup(client).await?;
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            client.write_all(b"N").await?;
            continue;
        }
        client.write_all(&error_response("08001", text)).await?;
        return client.flush().await;
    }
}
