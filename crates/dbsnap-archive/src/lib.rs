//! dbsnap's snapshot archive format (v1) and a reader for pg_dump's custom
//! archive format.
//!
//! Pure readers and writers over `Read`/`Write`/`Seek`: no network, no
//! processes. The format is described in `docs/FORMAT.md`.

pub mod custom;
pub mod identify;
pub mod pgdump;
pub mod snapshot;
pub mod sql;
pub mod toc;
pub mod version;
