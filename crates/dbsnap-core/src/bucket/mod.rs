//! `bucket-backup` and `bucket-restore`: incremental copies of an S3
//! bucket (or a prefix of one) into a backup location, restorable as any
//! run saw it.
//!
//! Layout under the backup location (a directory or `s3://…`):
//!
//! - `blobs/<id>`: one object's bytes, `<id>` being the SHA-256 of its key,
//!   ETag and size: an object unchanged since an earlier run (same ETag and
//!   size) has its blob already and is not copied again;
//! - `runs/<YYYYMMDDTHHMMSSZ>.json`: one manifest per run, written last,
//!   listing every object the run saw (key, size, ETag, time, blob,
//!   SHA-256 and MD5 of its bytes). A run without its manifest (killed) is
//!   invisible; running again skips the blobs it already wrote.
//!
//! Every write is atomic (an S3 upload, a local temporary file renamed),
//! so a blob is complete or absent. A restore checks each object's SHA-256
//! as it streams and aborts that object's upload when it does not match.
//!
//! A blob is never trusted forever: each run records when every blob was
//! last read in full and found to match (`verified_at`), and a backup
//! reusing a blob last verified longer ago than its re-verification period
//! reads it again, copying the object again when it no longer matches.
//! `bucket-verify` reads every blob of a run; `bucket-prune` removes runs
//! and the blobs no remaining run needs, never while a backup runs
//! ([`lock`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dbsnap_storage::s3::{self, request_error};
use dbsnap_storage::Location;
use dbsnap_storage::StorageError;
use futures::{StreamExt, TryStreamExt};
use md5::Md5;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::create::Progress;
use crate::error::CoreError;

mod backup;
mod lock;
mod prune;
mod restore;
mod verify;

pub use backup::{backup, BackupOptions, BackupReport};
pub use prune::{plan_prune, prune, PruneReport, RunFate};
pub use restore::{restore, RestoreReport};
pub use verify::{verify, Damage, Damaged, UnreadableRun, VerifyReport, Which};

/// Objects copied at once.
const PARALLEL: usize = 4;
/// Upload buffer per object (larger objects go up in parts of this size).
const PART: usize = 8 << 20;

/// One object as a run saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunObject {
    /// Key, relative to the backed-up prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The source's ETag.
    pub etag: Option<String>,
    /// When the source last changed it (RFC 3339).
    pub last_modified: String,
    /// Its blob under `blobs/`.
    pub blob: String,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// MD5 of its bytes (a single-part upload's ETag).
    pub md5: String,
    /// When the blob was last read in full and matched `sha256` (RFC 3339):
    /// written by this or an earlier run, or re-read on reuse. Absent in
    /// manifests of versions before it was recorded: never verified.
    #[serde(default)]
    pub verified_at: Option<String>,
}

/// `runs/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    /// Manifest format (1).
    pub format: u32,
    /// The run's id (its start, UTC).
    pub run: String,
    /// What was backed up (`s3://bucket/prefix`).
    pub source: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Every object seen, by key.
    pub objects: Vec<RunObject>,
}

/// One run, for `--list`.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Its id.
    pub run: String,
    /// What it backed up.
    pub source: String,
    /// When it started (the bucket as it was then).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Objects.
    pub objects: usize,
    /// Bytes.
    pub bytes: u64,
}

fn config(message: String, hint: &str) -> CoreError {
    CoreError::Config {
        message,
        hint: hint.into(),
    }
}

fn join(prefix: &Key, rel: &str) -> Result<Key, CoreError> {
    let raw = if prefix.as_ref().is_empty() {
        rel.to_string()
    } else {
        format!("{}/{rel}", prefix.as_ref())
    };
    Key::parse(&raw).map_err(|e| CoreError::Internal(format!("object key {raw:?}: {e}")))
}

fn relative(prefix: &Key, key: &Key) -> String {
    let (p, k) = (prefix.as_ref(), key.as_ref());
    if p.is_empty() {
        return k.to_string();
    }
    k.strip_prefix(p)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(k)
        .to_string()
}

async fn list_all(
    store: &Arc<dyn ObjectStore>,
    prefix: &Key,
    location: &str,
) -> Result<Vec<ObjectMeta>, CoreError> {
    let p = (!prefix.as_ref().is_empty()).then_some(prefix);
    match store.list(p).try_collect::<Vec<_>>().await {
        Ok(v) => Ok(v),
        Err(object_store::Error::NotFound { .. }) if !s3::is_object_store_url(location) => {
            Ok(Vec::new())
        }
        Err(e) => Err(request_error(location, "", e).into()),
    }
}

/// An ETag as servers differ in writing it (quoted or not, weak or not).
fn etag(meta: &ObjectMeta) -> Option<String> {
    meta.e_tag
        .as_deref()
        .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
        .filter(|e| !e.is_empty())
}

/// Refuses two locations of which one holds the other (a backup inside the
/// bucket it backs up, a restore over its own backups).
fn refuse_overlap(a: &str, b: &str, what: &str) -> Result<(), CoreError> {
    let norm = |l: &str| format!("{}/", l.trim_end_matches('/'));
    let (a, b) = (norm(a), norm(b));
    if a.starts_with(&b) || b.starts_with(&a) {
        return Err(config(
            format!(
                "{what}: {} and {}",
                a.trim_end_matches('/'),
                b.trim_end_matches('/')
            ),
            "keep the backups in another bucket, or beside the backed-up prefix, never inside it",
        ));
    }
    Ok(())
}

/// A run's manifest, or `None` (with a warning) when it cannot be read.
async fn read_run_or_skip(
    repo: &Arc<dyn ObjectStore>,
    runs: &Key,
    run: &str,
    location: &str,
) -> Option<RunManifest> {
    match read_run(repo, runs, run, location).await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("{e}; skipping run {run} (remove runs/{run}.json if it is not one)");
            None
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Counters of a run in progress.
#[derive(Default)]
struct Tally {
    done: AtomicUsize,
    moved: AtomicUsize,
    bytes: AtomicU64,
    /// When progress was last shown.
    shown: std::sync::Mutex<Option<Instant>>,
}

impl Tally {
    fn moved(&self, bytes: u64) {
        self.moved.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One more object done; a progress line at most every second (and
    /// every 100th, and the last).
    fn done(&self, total: usize, verb: &str, progress: &dyn Progress) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.shown.lock().is_ok_and(|mut t| {
            let due = t.is_none_or(|t| t.elapsed().as_secs() >= 1);
            if due {
                *t = Some(Instant::now());
            }
            due
        });
        if due || n.is_multiple_of(100) || n == total {
            progress.phase(&format!(
                "{n}/{total} objects, {} {verb} ({} MiB)",
                self.moved.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed) >> 20
            ));
        }
    }
}

/// SHA-256, MD5 and size of bytes as they stream.
#[derive(Default)]
struct Hashes {
    sha: Sha256,
    md5: Md5,
    size: u64,
}

/// What [`Hashes`] ends with: SHA-256 and MD5 in hex, and the size.
type Sums = (String, String, u64);

impl Hashes {
    fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.md5.update(chunk);
        self.size += chunk.len() as u64;
    }

    fn finish(self) -> Sums {
        (
            hex::encode(self.sha.finalize()),
            hex::encode(self.md5.finalize()),
            self.size,
        )
    }
}

/// Writes `stream` to `at` in `dst`, hashing it; with `want` (a SHA-256),
/// a stream that does not match is not written (its upload aborted).
async fn stream_to(
    mut stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    dst: &Arc<dyn ObjectStore>,
    at: &Key,
    from: &str,
    to: &str,
    want: Option<(&str, &str)>,
    cancel: &AtomicBool,
) -> Result<Sums, CoreError> {
    let mut out = object_store::buffered::BufWriter::with_capacity(dst.clone(), at.clone(), PART)
        .with_max_concurrency(2);
    let mut hashes = Hashes::default();
    let outcome: Result<Sums, CoreError> = async {
        while let Some(chunk) = stream.next().await {
            // Ctrl-C: this object's upload is aborted, not finished.
            if cancel.load(Ordering::Relaxed) {
                return Err(CoreError::Interrupted(String::new()));
            }
            let chunk = chunk.map_err(|e| request_error(from, "", e))?;
            hashes.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| io_err(to, at, e))?;
        }
        let sums = std::mem::take(&mut hashes).finish();
        if let Some((want, what)) = want {
            if sums.0 != want {
                return Err(CoreError::Verify {
                    file: from.to_string(),
                    message: format!("{what} does not match its checksum; it was not written"),
                });
            }
        }
        out.shutdown().await.map_err(|e| io_err(to, at, e))?;
        Ok(sums)
    }
    .await;
    if outcome.is_err() {
        let _ = out.abort().await;
    }
    outcome
}

/// SHA-256, MD5 and size of an object's bytes, read in full.
async fn hash_object(
    store: &Arc<dyn ObjectStore>,
    at: &Key,
    location: &str,
) -> Result<Sums, CoreError> {
    let mut stream = store
        .get(at)
        .await
        .map_err(|e| request_error(location, at.as_ref(), e))?
        .into_stream();
    let mut hashes = Hashes::default();
    while let Some(chunk) = stream.next().await {
        hashes.update(&chunk.map_err(|e| request_error(location, at.as_ref(), e))?);
    }
    Ok(hashes.finish())
}

fn io_err(location: &str, at: &Key, e: std::io::Error) -> CoreError {
    StorageError::Io {
        path: format!("{location}: {at}"),
        source: e,
    }
    .into()
}

/// The runs recorded, oldest first.
async fn run_ids(
    repo: &Arc<dyn ObjectStore>,
    runs: &Key,
    location: &str,
) -> Result<Vec<String>, CoreError> {
    let mut ids: Vec<String> = list_all(repo, runs, location)
        .await?
        .into_iter()
        .filter_map(|m| {
            m.location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

async fn read_run(
    repo: &Arc<dyn ObjectStore>,
    runs: &Key,
    run: &str,
    location: &str,
) -> Result<RunManifest, CoreError> {
    let at = runs.child(format!("{run}.json").as_str());
    let bytes = repo
        .get(&at)
        .await
        .map_err(|e| request_error(location, at.as_ref(), e))?
        .bytes()
        .await
        .map_err(|e| request_error(location, at.as_ref(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| CoreError::Verify {
        file: format!("{location}/runs/{run}.json"),
        message: format!("not a bucket-backup run manifest: {e}"),
    })
}

/// The runs recorded at `from`, oldest first, with their sizes.
pub fn runs(location: &Location) -> Result<Vec<RunInfo>, CoreError> {
    let (location, from) = (location.clone(), location.to_string());
    s3::run(async move {
        let (repo, prefix) = location.object_store(false)?;
        let runs = prefix.child("runs");
        let mut out = Vec::new();
        for id in run_ids(&repo, &runs, &from).await? {
            let Some(m) = read_run_or_skip(&repo, &runs, &id, &from).await else {
                continue;
            };
            out.push(RunInfo {
                run: m.run,
                source: m.source,
                started_at: m.started_at,
                finished_at: m.finished_at,
                objects: m.objects.len(),
                bytes: m.objects.iter().map(|o| o.size).sum(),
            });
        }
        Ok(out)
    })
}
