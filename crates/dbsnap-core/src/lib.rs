//! dbsnap's operations: plan and execute `create`, establish consistent
//! cuts, list, inspect and verify snapshots.
//!
//! No terminal I/O here: progress goes through [`create::Progress`], results
//! are returned as values for the binary to print.

pub mod config;
pub mod consistency;
pub mod create;
pub mod demo;
pub mod error;
pub mod hooks;
pub mod inspect;

pub use error::CoreError;
