//! Where repositories (and backed-up buckets) are, and how each is
//! reached: a [`Location`] is what the user wrote (a directory, or an
//! `s3://`, `az://` or `gs://` URL) together with the object-store options
//! of that one place, so two locations in one run can be two services
//! with their own endpoints and credentials. [`Locations`] resolves what
//! a user writes: the name of a repository configured in dbsnap.toml, a
//! URL (with the options of the named repository it lies in, else the
//! defaults), or a directory. Nothing here is process-wide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as Key;
use object_store::ObjectStore;

use crate::local::LocalRepository;
use crate::s3::{self, S3Options, S3Repository};
use crate::{Repository, SnapshotRef, StorageError, Unusable};

/// One place snapshots (or a bucket's backup) live, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    text: String,
    options: S3Options,
}

impl Location {
    /// A local directory.
    pub fn directory(path: impl AsRef<Path>) -> Location {
        Location {
            text: path.as_ref().display().to_string(),
            options: S3Options::default(),
        }
    }

    /// `text` (a directory or an object-store URL) reached with `options`.
    pub fn with_options(text: impl Into<String>, options: S3Options) -> Location {
        Location {
            text: text.into(),
            options,
        }
    }

    /// The directory or URL, as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// As a path (a URL stays its text).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.text)
    }

    /// The object-store options (unused for a directory).
    pub fn options(&self) -> &S3Options {
        &self.options
    }

    /// Whether it is an object store URL (`s3://`, `az://`, `gs://`).
    pub fn is_object_store(&self) -> bool {
        s3::is_object_store_url(&self.text)
    }

    /// The repository there. One that cannot be opened as configured
    /// answers every call with the reason.
    pub fn repository(&self) -> Arc<dyn Repository> {
        let url = &self.text;
        if !s3::is_url(url) {
            return Arc::new(LocalRepository::new(Path::new(url)));
        }
        if !s3::is_object_store_url(url) {
            return Arc::new(Unusable {
                location: url.clone(),
                why: format!(
                    "repository {url}: not a directory or an object store URL (s3://BUCKET/PREFIX, az://CONTAINER/PREFIX, gs://BUCKET/PREFIX)"
                ),
            });
        }
        match S3Repository::with_options(url, &self.options) {
            Ok(r) => Arc::new(r),
            Err(e) => Arc::new(Unusable {
                location: url.clone(),
                why: e.to_string(),
            }),
        }
    }

    /// An object store there and the prefix in it, for copies of whole
    /// buckets; a directory is created (0700) when `create`, else a
    /// missing one is [`StorageError::NoRepository`].
    pub fn object_store(&self, create: bool) -> Result<(Arc<dyn ObjectStore>, Key), StorageError> {
        s3::object_store_opened(&self.text, &self.options, create)
    }

    /// The location under this one at `sub` (a subdirectory or key
    /// prefix), with the same options.
    pub fn join(&self, sub: &str) -> Location {
        Location {
            text: format!("{}/{sub}", self.text.trim_end_matches('/')),
            options: self.options.clone(),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A repository configured by name (`[repositories.NAME]` in dbsnap.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedLocation {
    /// Its directory or URL.
    pub location: String,
    /// How its object store is reached.
    pub options: S3Options,
}

/// How the locations a user writes are resolved: object-store options for
/// URLs that no named repository covers, and the named repositories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    /// Options of an object-store URL outside every named repository.
    pub defaults: S3Options,
    /// Repositories by name.
    pub named: BTreeMap<String, NamedLocation>,
}

impl Locations {
    /// What `text` names: a configured repository by its name; else a URL,
    /// with the options of the named repository whose URL it lies under
    /// (the longest), else the defaults; else a directory.
    pub fn resolve(&self, text: &str) -> Location {
        if let Some(n) = self.named.get(text) {
            return Location::with_options(n.location.clone(), n.options.clone());
        }
        if s3::is_url(text) {
            let within = self
                .named
                .values()
                .filter(|n| under(text, &n.location))
                .max_by_key(|n| n.location.len());
            let options = within.map_or_else(|| self.defaults.clone(), |n| n.options.clone());
            return Location::with_options(text, options);
        }
        Location::directory(text)
    }

    /// The repository `text` names (see [`Locations::resolve`]).
    pub fn open(&self, text: &Path) -> Arc<dyn Repository> {
        self.resolve(&text.display().to_string()).repository()
    }

    /// A snapshot file given by path (or `s3://bucket/prefix/name.tar`):
    /// the location it is in is the repository.
    pub fn snapshot(&self, path: &Path) -> SnapshotRef {
        if let Some((repo, name)) = path
            .to_str()
            .filter(|p| s3::is_object_store_url(p))
            .and_then(|p| p.rsplit_once('/'))
        {
            return SnapshotRef::new(self.resolve(repo).repository(), name);
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        SnapshotRef::new(Arc::new(LocalRepository::new(dir)), name)
    }
}

/// Whether URL `text` is `base` or lies under it.
fn under(text: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    text == base
        || text
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(location: &str, endpoint: &str) -> NamedLocation {
        NamedLocation {
            location: location.into(),
            options: S3Options {
                endpoint: Some(endpoint.into()),
                ..S3Options::default()
            },
        }
    }

    #[test]
    fn names_urls_and_directories_resolve_with_their_own_options() {
        let mut l = Locations::default();
        l.defaults.region = Some("eu-west-1".into());
        l.named.insert(
            "offsite".into(),
            named("s3://far/snaps", "https://far.example"),
        );
        l.named.insert(
            "deep".into(),
            named("s3://far/snaps/deep", "https://deep.example"),
        );
        let r = l.resolve("offsite");
        assert_eq!(r.as_str(), "s3://far/snaps");
        assert_eq!(r.options().endpoint.as_deref(), Some("https://far.example"));
        // A snapshot's URL inside a named repository takes its options; the
        // longest match wins.
        let r = l.resolve("s3://far/snaps/deep/x.tar");
        assert_eq!(
            r.options().endpoint.as_deref(),
            Some("https://deep.example")
        );
        assert_eq!(
            l.resolve("s3://far/snaps2").options().region.as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(l.resolve("s3://other/x").options(), &l.defaults);
        assert!(!l.resolve("/var/backups").is_object_store());
        assert_eq!(l.resolve("/var/backups").as_str(), "/var/backups");
    }
}
