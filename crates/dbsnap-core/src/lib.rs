//! dbsnap's operations: plan and execute `create`, establish consistent
//! cuts, list, inspect and verify snapshots.
//!
//! No terminal I/O here: progress goes through [`create::Progress`], results
//! are returned as values for the binary to print.

pub mod bucket;
mod chunks;
pub mod config;
pub mod consistency;
pub mod copy;
pub mod create;
pub mod crypt;
pub mod demo;
pub mod drill;
pub mod error;
pub mod hooks;
pub mod housekeeping;
pub mod inspect;
pub mod k8s;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod settings;

pub use dbsnap_pg::process::{guard_children_with, run_watchdog, WATCHDOG_ARG};
pub use dbsnap_pg::relay;
pub use dbsnap_pg::Resolver;
pub use dbsnap_storage::{
    make_new_files_private, s3, Location, Locations, Repository, SnapshotRef,
};
pub use error::CoreError;

/// Tracing target of warnings that are also returned to the caller (a
/// result's `warnings`), which shows them itself: log files record them,
/// the terminal leaves them out so each is shown once.
pub const REPORTED: &str = "dbsnap::reported";

/// The direct route to databases (libpq's rules); see [`dbsnap_pg::endpoint`].
pub fn direct_route() -> std::sync::Arc<dyn dbsnap_pg::Resolver> {
    dbsnap_pg::endpoint::direct()
}

/// The direct route, for borrowers.
pub static DIRECT: dbsnap_pg::endpoint::Direct = dbsnap_pg::endpoint::Direct;

/// Crash-test hook: when `DBSNAP_FAILPOINT` names this point, the process
/// dies on the spot (abort: no destructors, no cleanup), as under `kill -9`.
/// Tests use it to prove every interruption point is recoverable.
pub fn failpoint(name: &str) {
    if std::env::var("DBSNAP_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
