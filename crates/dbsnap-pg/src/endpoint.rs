//! How a database the user named is reached: the seam between what the
//! user wrote (`-d` strings, a target's databases, the connection a
//! snapshot recorded) and the connection settings dbsnap uses for its own
//! connections and for every client program.
//!
//! [`Direct`] applies libpq's rules (environment, password and service
//! files). Other routes (a port-forward into a cluster, a relay in a jump
//! pod) set up their transport first and then resolve each name to
//! settings that reach the database through it; core code never knows
//! which route it uses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::conninfo::ConnInfo;
use crate::error::PgError;
use crate::process::Tool;

/// A connection being opened.
pub type Connecting<'a> = Pin<Box<dyn Future<Output = Result<Client, PgError>> + Send + 'a>>;

/// Turns what the user named into connection settings.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    /// The route's name, recorded in restore journals (`direct`).
    fn route(&self) -> &str;

    /// Connection settings for `named`: a connection string (URI or
    /// `key=value`) as the user gave it.
    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError>;

    /// Opens one of dbsnap's own connections to `info` (settings this
    /// route resolved). A route that reaches servers through a transport
    /// translates the address here.
    fn connect<'a>(&'a self, info: &'a ConnInfo) -> Connecting<'a> {
        Box::pin(crate::connect(info))
    }

    /// Points a client program (pg_dump, pg_restore, psql) at `info`.
    fn prepare_tool(&self, tool: &mut Tool, info: &ConnInfo, tag: &str) -> Result<(), PgError> {
        tool.connect(info, tag).map(|_| ())
    }
}

/// Straight to the server, as libpq would connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Resolver for Direct {
    fn route(&self) -> &str {
        "direct"
    }

    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError> {
        ConnInfo::resolve(named).map_err(PgError::from)
    }
}

/// The direct route, shared.
pub fn direct() -> Arc<dyn Resolver> {
    Arc::new(Direct)
}
