//! The S3 repository: snapshots are objects under a prefix of a bucket
//! (`s3://bucket/prefix`), on AWS or any S3-compatible server (SeaweedFS,
//! MinIO, Ceph, moto, s3s), through `object_store`.
//!
//! # Layout
//!
//! Under the prefix, each snapshot is one object `<name>.tar`, byte for
//! byte what a local repository holds. Beside it, hidden objects (names
//! starting with `.`, never listed as snapshots):
//! - `.<name>.pin`: an empty object pinning the snapshot;
//! - `.<name>.upload-<token>`: the marker of a multipart upload in progress
//!   (its upload id, and the host and process writing it), refreshed every
//!   minute while the writer lives.
//!
//! # Writing
//!
//! A snapshot is uploaded straight to its final key in parts of a fixed
//! size (16 MiB unless configured), a few at a time: memory stays bounded
//! whatever the size, and nothing is written to local disk. S3 shows an
//! object only when its multipart upload completes, so the snapshot is
//! invisible until commit: an interrupted upload leaves no visible object.
//! Placeholders (a tar header filled in at the end of its member) keep the
//! part holding them in memory until filled; parts are uploaded in any
//! order and completed in order. A snapshot smaller than one part is one
//! plain PUT at commit.
//!
//! Commit refuses a name taken meanwhile (checked just before completing:
//! S3 has no create-only completion on every server, so two writers of the
//! same name committing in the same instant are not told apart; snapshot
//! names carry the time to the second and a random suffix on collision).
//!
//! An upload whose writer died (killed, or its server unreachable when it
//! tried to abort) is found by its marker: the marker's process is gone
//! (same host) or it was last refreshed more than [`STALE_AFTER`] ago (any
//! host). [`Repository::remove_stale`] (run by every `create`) aborts such
//! uploads and removes their markers. An upload started and killed before
//! its marker was written is not found: a bucket lifecycle rule
//! `AbortIncompleteMultipartUpload` catches those (documented).
//!
//! # Reading
//!
//! Reads are ranged GETs, 64 KiB first and doubling up to [`READ_CHUNK`],
//! the next ones requested while the current one is consumed: any offset
//! costs nothing before it, a reader that wants only a header fetches
//! little more, a slow reader holds at most a few chunks, and a failed
//! request is retried alone.
//!
//! # Calls
//!
//! The trait is blocking. Every request runs on one runtime owned by this
//! module; a caller blocks on its result without needing (or disturbing) a
//! runtime of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::{scratch, PendingWrite, Repository, Scratch, SnapshotInfo, StorageError};

mod marker;
pub use marker::{stale, Owner};
mod read;
pub use read::LOST;
mod upload;

use marker::Marker;
use read::RangeReader;
use upload::S3Pending;

/// Default part size of uploads.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;
/// S3's minimum size of every part but the last.
const MIN_PART_SIZE: usize = 5 << 20;
/// Parts uploading at once per snapshot.
const PARTS_IN_FLIGHT: usize = 4;
/// Size of the largest ranged GET.
pub const READ_CHUNK: u64 = 8 << 20;
/// Size of the first ranged GET of a read (a header, often all a reader
/// wants before it seeks); each next one is twice as large.
const FIRST_CHUNK: u64 = 64 << 10;
/// Ranged GETs ahead of the reader.
const READ_AHEAD: usize = 2;
/// How often a writer refreshes its upload marker (and a bucket backup
/// its lock).
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// An upload marker not refreshed for this long belongs to a dead writer.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How long dropping a pending write waits for its abort.
const ABORT_WAIT: Duration = Duration::from_secs(20);

const PIN: &str = ".pin";
/// A drill record is the object `.<name>.drill` beside the snapshot.
const DRILL: &str = ".drill";
const UPLOAD: &str = ".upload-";

/// Settings of S3 repositories beyond the URL. Unset fields come from the
/// standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_ALLOW_HTTP`, `AWS_CA_BUNDLE`, web identity and instance
/// credentials), which win over dbsnap.toml like they do for other tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL (`https://minio.example:9000`); AWS when unset.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when unset).
    pub region: Option<String>,
    /// Virtual-hosted-style requests (`bucket.endpoint/key`) instead of
    /// path-style (`endpoint/bucket/key`, the default, which every
    /// S3-compatible server accepts).
    pub virtual_hosted: bool,
    /// Allow a plain-HTTP endpoint (`--force-insecure`).
    pub allow_http: bool,
    /// PEM file of extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// Part size of uploads in bytes (S3 allows 10,000 parts per object).
    pub part_size: Option<usize>,
    /// An access key id and secret, instead of the environment's (tests).
    pub credentials: Option<(String, String)>,
    /// The names of the environment variables holding the access key id
    /// and secret (a named repository's own), read when it is opened.
    pub credentials_env: Option<(String, String)>,
    /// For `az://`, with `credentials` (account, key): an Azurite blob URL
    /// (`http://127.0.0.1:10000`), path-style, instead of the environment's
    /// (tests; users set `AZURE_STORAGE_USE_EMULATOR=true` and
    /// `AZURITE_BLOB_STORAGE_URL`).
    pub azure_emulator: Option<String>,
    /// These settings win over the AWS environment's endpoint, region,
    /// plain-HTTP and CA settings: a named repository's own service,
    /// whatever `AWS_ENDPOINT_URL` says (the `[s3]` defaults leave the
    /// environment first, as other tools do).
    pub own_settings_first: bool,
}

/// Whether `location` is an S3 URL.
pub fn is_s3_url(location: &str) -> bool {
    location.starts_with("s3://")
}

/// The URL schemes of object stores: S3, Azure Blob Storage (`az://`
/// container) and Google Cloud Storage (`gs://` bucket).
const SCHEMES: [&str; 3] = ["s3", "az", "gs"];

/// Whether `location` is an object store URL (`s3://`, `az://`, `gs://`).
pub fn is_object_store_url(location: &str) -> bool {
    location
        .split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}

/// What a repository's requests go through: an object store with
/// multipart uploads (S3, Azure, GCS).
pub(crate) trait Store: ObjectStore + MultipartStore {}
impl<T: ObjectStore + MultipartStore> Store for T {}

/// Whether `location` looks like a URL (`scheme://…`, `s3:/…`) rather
/// than a directory: only `s3://` ones are repositories.
pub fn is_url(location: &str) -> bool {
    location.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            && rest.starts_with('/')
    })
}

/// Where a repository's requests run: the application's runtime, the one
/// the repository was opened from (storage has none of its own).
///
/// The repository's calls block ([`crate::Repository`]'s contract). Made
/// from a thread that may block (a `spawn_blocking` thread, one outside
/// the runtime), a call waits there. Made from async code on the
/// application's multi-threaded runtime, the worker first hands its other
/// tasks to the rest of the runtime (`block_in_place`), so that nothing
/// else stalls while it waits.
#[derive(Debug, Clone)]
pub(crate) struct Io(tokio::runtime::Handle);

impl Io {
    /// The runtime of the calling thread.
    fn current(location: &str) -> Result<Io, StorageError> {
        tokio::runtime::Handle::try_current()
            .map(Io)
            .map_err(|_| {
                config_error(
                    location,
                    "an object store repository is opened from inside the application's runtime (internal error)",
                )
            })
    }

    /// Runs `f` on the runtime and waits for it.
    pub(crate) fn wait<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.0.block_on(f))
    }

    /// Starts `f` on the runtime.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.0.spawn(f)
    }

    /// Waits for a started request.
    pub(crate) fn join<T>(
        &self,
        h: tokio::task::JoinHandle<T>,
    ) -> Result<T, tokio::task::JoinError> {
        self.wait(h)
    }
}

/// A repository under `s3://bucket/prefix` (or `az://container/prefix`,
/// `gs://bucket/prefix`).
#[derive(Debug, Clone)]
pub struct S3Repository {
    store: Arc<dyn Store>,
    scheme: &'static str,
    bucket: String,
    prefix: String,
    part_size: usize,
    io: Io,
}

impl S3Repository {
    /// The repository at `url` with `opts`.
    pub fn with_options(url: &str, opts: &S3Options) -> Result<S3Repository, StorageError> {
        if url.contains(['?', '#']) {
            return Err(config_error(
                url,
                "an S3 repository URL has no query or fragment",
            ));
        }
        let (scheme, rest) = url
            .split_once("://")
            .and_then(|(s, r)| SCHEMES.iter().find(|k| **k == s).map(|k| (*k, r)))
            .ok_or_else(|| {
                config_error(
                    url,
                    "an object store repository is written s3://BUCKET/PREFIX (or az://CONTAINER/PREFIX, gs://BUCKET/PREFIX)",
                )
            })?;
        let io = Io::current(url)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/').to_string();
        if bucket.is_empty() {
            return Err(config_error(
                url,
                "the URL names no bucket (s3://BUCKET/PREFIX)",
            ));
        }
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(config_error(url, "the prefix has an empty, . or .. part"));
        }
        // The environment, unless the options come first (a named repository).
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty() && !opts.own_settings_first)
        };
        let retry = RetryConfig {
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            ..Default::default()
        };
        let client = || {
            ClientOptions::new()
                .with_allow_http(opts.allow_http)
                .with_connect_timeout(Duration::from_secs(10))
                .with_timeout(Duration::from_secs(120))
        };
        let part_size = opts.part_size.unwrap_or(DEFAULT_PART_SIZE);
        let other: Option<Arc<dyn Store>> = match scheme {
            // Azure and GCS: their standard environment (AZURE_STORAGE_*,
            // GOOGLE_*); [s3]'s endpoint and CA do not apply.
            "az" => Some(Arc::new(
                match (&opts.azure_emulator, &opts.credentials) {
                    (Some(url), Some((account, key))) => MicrosoftAzureBuilder::new()
                        .with_account(account)
                        .with_access_key(key)
                        .with_endpoint(format!("{url}/{account}")),
                    _ => MicrosoftAzureBuilder::from_env(),
                }
                .with_container_name(bucket)
                .with_client_options(client())
                .with_retry(retry.clone())
                .build()
                .map_err(|e| config_error(url, &e.to_string()))?,
            )),
            "gs" => Some(Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(client())
                    .with_retry(retry.clone())
                    .build()
                    .map_err(|e| config_error(url, &e.to_string()))?,
            )),
            _ => None,
        };
        if let Some(store) = other {
            return Ok(S3Repository {
                store,
                scheme,
                bucket: bucket.to_string(),
                prefix,
                part_size,
                io,
            });
        }
        let named_credentials = match &opts.credentials_env {
            None => None,
            Some((id, secret)) => {
                let var = |v: &str| {
                    std::env::var(v).ok().filter(|s| !s.is_empty()).ok_or_else(|| {
                        config_error(
                            url,
                            &format!("the environment variable {v} (named in dbsnap.toml for this repository) is not set; export it with the repository's key"),
                        )
                    })
                };
                Some((var(id)?, var(secret)?))
            }
        };
        let credentials = opts.credentials.clone().or(named_credentials);
        let mut b = if opts.own_settings_first {
            // Only the environment's credentials, when the repository has none.
            let mut b = AmazonS3Builder::new();
            if credentials.is_none() {
                let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                if let (Some(id), Some(secret)) =
                    (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
                {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                if let Some(token) = var("AWS_SESSION_TOKEN") {
                    b = b.with_token(token);
                }
            }
            b
        } else {
            AmazonS3Builder::from_env()
        }
        .with_bucket_name(bucket);
        let (endpoint, source) = match env("AWS_ENDPOINT_URL").or(env("AWS_ENDPOINT")) {
            Some(e) => (Some(e), "AWS_ENDPOINT_URL"),
            None => (
                opts.endpoint.clone(),
                "the repository's endpoint in dbsnap.toml",
            ),
        };
        if let Some(e) = endpoint {
            let Some((scheme, host)) = e
                .split_once("://")
                .filter(|(s, h)| matches!(*s, "http" | "https") && !h.is_empty())
            else {
                return Err(config_error(
                    url,
                    &format!("the endpoint {e:?} ({source}) is not an http:// or https:// URL"),
                ));
            };
            // Virtual-hosted style names the bucket in the host name;
            // object_store takes a custom endpoint as the bucket's own.
            let e = if opts.virtual_hosted {
                format!("{scheme}://{bucket}.{host}")
            } else {
                e.clone()
            };
            b = b.with_endpoint(e);
        }
        if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
            b = b.with_region(opts.region.as_deref().unwrap_or("us-east-1"));
        }
        b = b.with_virtual_hosted_style_request(opts.virtual_hosted);
        if let Some((id, secret)) = &credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let allow_http = opts.allow_http
            || env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let mut client = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        let ca = env("AWS_CA_BUNDLE")
            .map(PathBuf::from)
            .or(opts.ca_file.clone());
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).map_err(|e| StorageError::io(&ca, e))?;
            let certs = object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| config_error(url, &format!("the CA file {}: {e}", ca.display())))?;
            for c in certs {
                client = client.with_root_certificate(c);
            }
        }
        let store = b
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| config_error(url, &e.to_string()))?;
        if part_size < MIN_PART_SIZE {
            return Err(config_error(
                url,
                "part_size is below S3's minimum of 5 MiB",
            ));
        }
        Ok(S3Repository {
            store: Arc::new(store),
            scheme,
            bucket: bucket.to_string(),
            prefix,
            part_size,
            io,
        })
    }

    fn key(&self, name: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(name)
        } else {
            Key::from(format!("{}/{name}", self.prefix))
        }
    }

    fn pin_key(&self, name: &str) -> Key {
        self.key(&format!(".{name}{PIN}"))
    }

    fn drill_key(&self, name: &str) -> Key {
        self.key(&format!(".{name}{DRILL}"))
    }

    fn dir_key(&self) -> Option<Key> {
        (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()))
    }

    /// An error of a request about `what` (a snapshot name, or "" for the
    /// repository).
    fn error(&self, what: &str, e: object_store::Error) -> StorageError {
        remote_error(&self.location(), what, e)
    }

    /// The objects directly under the prefix.
    fn objects(&self) -> Result<Vec<object_store::ObjectMeta>, StorageError> {
        let store = self.store.clone();
        let dir = self.dir_key();
        let listed = self
            .io
            .wait(async move { store.list_with_delimiter(dir.as_ref()).await });
        listed.map(|l| l.objects).map_err(|e| self.error("", e))
    }

    fn head(&self, name: &str) -> Result<object_store::ObjectMeta, StorageError> {
        if !is_snapshot_name(name) {
            return Err(StorageError::NotFound(name.into()));
        }
        let (store, key) = (self.store.clone(), self.key(name));
        self.io
            .wait(async move { store.head(&key).await })
            .map_err(|e| self.error(name, e))
    }

    fn delete_key(&self, key: Key) -> Result<(), StorageError> {
        let store = self.store.clone();
        let what = key.to_string();
        match self.io.wait(async move { store.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&what, e)),
        }
    }

    /// Upload markers, pins of missing snapshots, and scratch files in the
    /// temporary directory that belong to dead runs; removed when `remove`.
    fn sweep(&self, remove: bool) -> Result<Vec<String>, StorageError> {
        // A missing bucket is an error here: `create` sweeps before it dumps.
        let objects = self.objects()?;
        let names: BTreeSet<String> = objects.iter().filter_map(file_name).collect();
        let mut found = Vec::new();
        for meta in &objects {
            let Some(name) = file_name(meta) else {
                continue;
            };
            if let Some(snapshot) = upload_of(&name) {
                // Gone meanwhile: its writer finished.
                let Some(body) = self.get_bytes(&meta.location)? else {
                    continue;
                };
                // One that cannot be read names no upload: only it goes.
                let marker: Option<Marker> = serde_json::from_slice(&body).ok();
                let refreshed = SystemTime::from(meta.last_modified);
                if !marker.as_ref().is_none_or(|m| m.is_dead(refreshed)) {
                    continue;
                }
                if remove {
                    if let Some(m) = &marker {
                        let (store, key, id) =
                            (self.store.clone(), self.key(snapshot), m.upload_id.clone());
                        match self
                            .io
                            .wait(async move { store.abort_multipart(&key, &id).await })
                        {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            // Completed or aborted already (a marker that
                            // outlived its upload).
                            Err(e) if error_chain(&e).contains("NoSuchUpload") => {}
                            Err(e) => return Err(self.error(snapshot, e)),
                        }
                    }
                    self.delete_key(meta.location.clone())?;
                }
                found.push(format!(
                    "{} (an unfinished upload of {snapshot})",
                    self.url_of(&name)
                ));
            } else if [PIN, DRILL]
                .iter()
                .find_map(|kind| name.strip_prefix('.')?.strip_suffix(kind))
                .is_some_and(|s| is_snapshot_name(s) && !names.contains(s))
            {
                // A pin (or drill record) whose snapshot went would speak
                // for a new one of its name.
                if remove {
                    self.delete_key(meta.location.clone())?;
                }
                found.push(self.url_of(&name));
            }
        }
        found.extend(
            scratch::sweep(&std::env::temp_dir(), remove)
                .iter()
                .map(|p| p.display().to_string()),
        );
        Ok(found)
    }

    fn get_bytes(&self, key: &Key) -> Result<Option<Bytes>, StorageError> {
        let (store, k) = (self.store.clone(), key.clone());
        let got = self.io.wait(async move {
            match store.get(&k).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map_err(|e| self.error(key.as_ref(), e))
    }

    fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.location())
    }
}

fn file_name(meta: &object_store::ObjectMeta) -> Option<String> {
    meta.location.filename().map(str::to_string)
}

/// The snapshot an upload marker's name belongs to.
fn upload_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?;
    let at = rest.rfind(UPLOAD)?;
    Some(&rest[..at]).filter(|s| is_snapshot_name(s))
}

fn is_snapshot_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".tar") && !name.contains('/')
}

fn config_error(url: &str, why: &str) -> StorageError {
    StorageError::Config(format!("repository {url}: {why}"))
}

/// Maps an object store error to a storage error that says what to do.
fn remote_error(location: &str, what: &str, e: object_store::Error) -> StorageError {
    let text = error_chain(&e);
    let lower = text.to_ascii_lowercase();
    if let object_store::Error::NotFound { .. } = e {
        // A write into a missing bucket is a 404 too (moto's and AWS's
        // NoSuchBucket, in the response body): not a missing object.
        if lower.contains("<code>nosuchbucket</code>") {
            return StorageError::NoBucket(location.to_string());
        }
        return StorageError::NotFound(what.to_string());
    }
    let hint = if lower.contains("nosuchbucket")
        || lower.contains("bucket does not exist")
        || lower.contains("containernotfound")
    {
        return StorageError::NoBucket(location.to_string());
    } else if lower.contains("invalidbucketname") {
        return StorageError::Config(format!(
            "{location}: the server says the bucket name is not valid (S3 bucket names are 3 to 63 lowercase letters, digits, dots and hyphens)"
        ));
    } else if lower.contains("169.254.169.254") || lower.contains("169.254.170.2") {
        // No credentials in the environment: the client asked the
        // instance (or container) metadata service, which had none.
        return StorageError::Remote {
            location: location.to_string(),
            message: format!("no credentials found: none in the environment, and the instance metadata service gave none ({text})"),
            hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN), or run where an instance or container role gives them".into(),
        };
    } else if lower.contains("signaturedoesnotmatch")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("accessdenied")
        || lower.contains("403 forbidden")
        || lower.contains("missing credentials")
        || lower.contains("no credentials")
    {
        if location.starts_with("az://") {
            "Azure refused the credentials: check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY, or the managed identity) and that they may read and write this container"
        } else if location.starts_with("gs://") {
            "Google Cloud Storage refused the credentials: check GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT) and that the account may read and write this bucket"
        } else {
            "the S3 server refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or web identity or the instance role) and that they may read and write this bucket"
        }
    } else if lower.contains("url scheme is not allowed") || lower.contains("allow_http") {
        return StorageError::PlainHttp(location.to_string());
    } else if lower.contains("connect")
        || lower.contains("dns")
        || lower.contains("timed out")
        || lower.contains("connection")
    {
        "the S3 endpoint cannot be reached: check AWS_ENDPOINT_URL (or endpoint in [s3] of dbsnap.toml) and that the server is up"
    } else {
        ""
    };
    StorageError::Remote {
        location: if what.is_empty() {
            location.to_string()
        } else {
            format!("{location}/{what}")
        },
        message: text,
        hint: hint.to_string(),
    }
}

/// An error and its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl Repository for S3Repository {
    fn location(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}://{}", self.scheme, self.bucket)
        } else {
            format!("{}://{}/{}", self.scheme, self.bucket, self.prefix)
        }
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        let mut out: Vec<SnapshotInfo> = self
            .objects()?
            .into_iter()
            .filter_map(|m| {
                let name = file_name(&m)?;
                is_snapshot_name(&name).then(|| SnapshotInfo {
                    name,
                    size: m.size,
                    modified: SystemTime::from(m.last_modified),
                })
            })
            .collect();
        crate::newest_first(&mut out);
        Ok(out)
    }

    fn stat(&self, name: &str) -> Result<SnapshotInfo, StorageError> {
        let m = self.head(name)?;
        Ok(SnapshotInfo {
            name: name.to_string(),
            size: m.size,
            modified: SystemTime::from(m.last_modified),
        })
    }

    fn open_range(&self, name: &str, offset: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let meta = self.head(name)?;
        Ok(Box::new(RangeReader::new(
            self.store.clone(),
            self.io.clone(),
            meta.location,
            self.url_of(name),
            offset,
            meta.size,
        )))
    }

    fn begin(&self, name: &str) -> Result<Box<dyn PendingWrite>, StorageError> {
        if !is_snapshot_name(name) {
            return Err(StorageError::Io {
                path: name.into(),
                source: io::Error::other("a snapshot name ends in .tar and does not start with ."),
            });
        }
        match self.head(name) {
            Ok(_) => return Err(StorageError::Exists(name.into())),
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(Box::new(S3Pending::new(self.clone(), name)))
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        let meta = self.head(name)?;
        self.delete_key(meta.location)?;
        self.delete_key(self.pin_key(name))?;
        self.delete_key(self.drill_key(name))
    }

    fn pinned(&self) -> Result<BTreeSet<String>, StorageError> {
        let objects = match self.objects() {
            Ok(o) => o,
            Err(StorageError::NoBucket(_)) => return Ok(BTreeSet::new()),
            Err(e) => return Err(e),
        };
        let names: BTreeSet<String> = objects.iter().filter_map(file_name).collect();
        Ok(names
            .iter()
            .filter_map(|n| n.strip_prefix('.')?.strip_suffix(PIN))
            .filter(|s| is_snapshot_name(s) && names.contains(*s))
            .map(str::to_string)
            .collect())
    }

    fn set_pinned(&self, name: &str, pinned: bool) -> Result<(), StorageError> {
        self.head(name)?;
        let key = self.pin_key(name);
        if !pinned {
            return self.delete_key(key);
        }
        let store = self.store.clone();
        self.io
            .wait(async move { store.put(&key, PutPayload::new()).await })
            .map(|_| ())
            .map_err(|e| self.error(name, e))
    }

    fn drills(&self) -> Result<BTreeMap<String, Vec<u8>>, StorageError> {
        let objects = match self.objects() {
            Ok(o) => o,
            Err(StorageError::NoBucket(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let names: BTreeSet<String> = objects.iter().filter_map(file_name).collect();
        let mut out = BTreeMap::new();
        for snapshot in names
            .iter()
            .filter_map(|n| n.strip_prefix('.')?.strip_suffix(DRILL))
            .filter(|s| is_snapshot_name(s) && names.contains(*s))
        {
            // One record that cannot be read is that snapshot's lack of
            // a record, not a repository that cannot be listed.
            match self.get_bytes(&self.drill_key(snapshot)) {
                Ok(Some(bytes)) => {
                    out.insert(snapshot.to_string(), bytes.to_vec());
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot read the drill record of {snapshot}: {e}"),
            }
        }
        Ok(out)
    }

    fn set_drill(&self, name: &str, record: &[u8]) -> Result<(), StorageError> {
        self.head(name)?;
        let (store, key) = (self.store.clone(), self.drill_key(name));
        let body = PutPayload::from(record.to_vec());
        self.io
            .wait(async move { store.put(&key, body).await })
            .map(|_| ())
            .map_err(|e| self.error(name, e))
    }

    fn scratch(&self, tag: &str) -> Result<Scratch, StorageError> {
        Scratch::in_temp_dir(tag)
    }

    fn remove_stale(&self) -> Result<Vec<String>, StorageError> {
        self.sweep(true)
    }

    fn stale(&self) -> Result<Vec<String>, StorageError> {
        self.sweep(false)
    }
}

/// An object store at `location` and the prefix in it (see
/// [`crate::Location::object_store`]).
pub(crate) fn object_store_opened(
    location: &str,
    options: &S3Options,
    create: bool,
) -> Result<(Arc<dyn object_store::ObjectStore>, Key), StorageError> {
    if is_object_store_url(location) {
        let r = S3Repository::with_options(location, options)?;
        let prefix = Key::from(r.prefix.as_str());
        let store: Arc<dyn ObjectStore> = r.store;
        return Ok((store, prefix));
    }
    if is_url(location) {
        return Err(config_error(
            location,
            "not a directory or an s3://, az:// or gs:// URL",
        ));
    }
    let dir = std::path::Path::new(location);
    if location.is_empty() {
        return Err(config_error(location, "an empty location"));
    }
    if create {
        crate::create_repository_dir(dir, location)?;
    }
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(StorageError::NotARepository(location.to_string())),
        Err(_) => return Err(StorageError::NoRepository(location.to_string())),
    }
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| config_error(location, &e.to_string()))?;
    Ok((Arc::new(store), Key::default()))
}

/// Runs `f` on the calling thread's runtime (the application's) and
/// waits for it, as repository calls do (see [`Io`]).
pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    Io(tokio::runtime::Handle::current()).wait(f)
}

/// A failed request about `what` at `location`, with a hint where one
/// helps (missing bucket, refused credentials, unreachable endpoint).
pub fn request_error(location: &str, what: &str, e: object_store::Error) -> StorageError {
    remote_error(location, what, e)
}
