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

use std::sync::Arc;

use crate::conninfo::ConnInfo;
use crate::error::PgError;

/// Turns what the user named into connection settings.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    /// The route's name, recorded in restore journals (`direct`).
    fn route(&self) -> &str;

    /// Connection settings for `named`: a connection string (URI or
    /// `key=value`) as the user gave it.
    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError>;
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
