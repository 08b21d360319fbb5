//! Errors about a location in the words of the flag that gave it.
//! dbsnap-storage says what is wrong with a location (it does not exist,
//! it is not a directory, its bucket does not exist, the disk is full);
//! the hint naming a flag is said here for copy and the bucket commands
//! (`--from`, `--to`), and in [`crate::hints`] for every other command.

use dbsnap_core::error::StorageError;
use dbsnap_core::CoreError;

/// A flag that named a location.
pub struct Named<'a> {
    flag: &'static str,
    location: &'a str,
    /// What it names, for hints ("the bucket to back up").
    names: &'static str,
    /// The command writes there (dbsnap makes a missing directory, never
    /// a bucket).
    writes: bool,
}

impl<'a> Named<'a> {
    /// `--from LOCATION`, read from.
    pub fn from(location: &'a str, names: &'static str) -> Named<'a> {
        Named {
            flag: "--from",
            location,
            names,
            writes: false,
        }
    }

    /// `--to LOCATION`, written to.
    pub fn to(location: &'a str, names: &'static str) -> Named<'a> {
        Named {
            flag: "--to",
            location,
            names,
            writes: true,
        }
    }
}

/// `e` in the words of the flag of `named` whose location it is about;
/// any other error as it is. The exit code stays 2.
pub fn in_flag_words(e: CoreError, named: &[Named<'_>]) -> CoreError {
    let CoreError::Storage(
        s @ (StorageError::NoBucket(at)
        | StorageError::NoRepository(at)
        | StorageError::NotARepository(at)),
    ) = &e
    else {
        return e;
    };
    let same = |l: &str| l.trim_end_matches('/') == at.trim_end_matches('/');
    let Some(n) = named.iter().find(|n| same(n.location)) else {
        return e;
    };
    let (what, hint) = match s {
        StorageError::NoBucket(_) if n.writes => (
            "the bucket does not exist",
            format!(
                "check {} (it names {}) and the S3 endpoint; dbsnap does not create buckets: create it with your storage's tools (e.g. `aws s3 mb s3://BUCKET`)",
                n.flag, n.names
            ),
        ),
        StorageError::NoBucket(_) => (
            "the bucket does not exist",
            format!(
                "check {} (it names {}) and the S3 endpoint (AWS_ENDPOINT_URL, or endpoint in [s3] of dbsnap.toml)",
                n.flag, n.names
            ),
        ),
        StorageError::NoRepository(_) => (
            "does not exist",
            format!("check {}: it names {}", n.flag, n.names),
        ),
        _ => (
            "is a file, not a directory or s3:// location",
            format!(
                "{} names {}: a directory or s3://BUCKET/PREFIX",
                n.flag, n.names
            ),
        ),
    };
    CoreError::Config {
        message: format!("{} {at}: {what}", n.flag),
        hint,
    }
}
