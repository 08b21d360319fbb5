//! PostgreSQL for dbsnap: libpq-compatible connection settings, connections
//! over tokio-postgres with rustls, catalog queries, snapshot transactions,
//! schema-version detection, and the client programs (pg_dump).
//!
//! This crate never logs or formats a password.

pub mod admin;
pub mod catalog;
pub mod connect;
pub mod conninfo;
pub mod endpoint;
pub mod error;
pub mod local;
pub mod process;
pub mod relay;
pub mod schema_version;
pub mod snapshot;
pub mod tools;
pub mod tunnel;
pub mod twophase;

pub use connect::{connect, server_info, ServerInfo};
pub use conninfo::{ConnInfo, SslMode};
pub use endpoint::Resolver;
pub use error::{PgError, PgErrorKind, Remedy};
