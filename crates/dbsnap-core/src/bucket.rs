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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dbsnap_storage::s3::{self, object_store_at, object_store_existing, request_error};
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

/// What `bucket-backup` did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The run's id.
    pub run: String,
    /// Source.
    pub from: String,
    /// Backup location.
    pub to: String,
    /// Objects in the source.
    pub objects: usize,
    /// Their total size.
    pub bytes: u64,
    /// Objects copied by this run (new or changed).
    pub copied: usize,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// Objects whose blob was there already (unchanged).
    pub unchanged: usize,
    /// Seconds.
    pub seconds: f64,
}

/// What `bucket-restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The run restored.
    pub run: String,
    /// Backup location.
    pub from: String,
    /// Destination.
    pub to: String,
    /// Objects in the run.
    pub objects: usize,
    /// Objects written.
    pub written: usize,
    /// Bytes written.
    pub written_bytes: u64,
    /// Objects already at the destination with the same bytes.
    pub present: usize,
    /// Objects at the destination the run does not have (kept, unless
    /// deleted on request).
    pub extra: Vec<String>,
    /// Whether the extra ones were deleted.
    pub deleted_extra: bool,
    /// Seconds.
    pub seconds: f64,
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

fn source_store(from: &str) -> Result<(Arc<dyn ObjectStore>, Key), CoreError> {
    if !s3::is_object_store_url(from) {
        return Err(config(
            format!("--from {from}: bucket-backup copies an object store bucket"),
            "name it s3://BUCKET[/PREFIX] (or gs://BUCKET, az://CONTAINER)",
        ));
    }
    Ok(object_store_at(from)?)
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

/// The blob of an object version: its key, ETag (the modification time
/// where a server lists none) and size.
fn blob_id(key: &str, meta: &ObjectMeta) -> String {
    let version =
        etag(meta).unwrap_or_else(|| format!("mtime:{}", meta.last_modified.to_rfc3339()));
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(version.as_bytes());
    h.update([0]);
    h.update(meta.size.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Copies `from` (`s3://bucket[/prefix]`) into `to` incrementally and
/// records the run; see the module docs.
pub fn backup(
    from: &str,
    to: &str,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<BackupReport, CoreError> {
    let (from, to) = (from.to_string(), to.to_string());
    s3::run(async move { backup_async(&from, &to, progress, cancel).await })
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

async fn backup_async(
    from: &str,
    to: &str,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<BackupReport, CoreError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    refuse_overlap(
        from,
        to,
        "--to (the backups) would be inside --from (the bucket backed up), or hold it",
    )?;
    let (src, src_prefix) = source_store(from)?;
    let (repo, repo_prefix) = object_store_at(to)?;
    let blobs = repo_prefix.child("blobs");
    let runs = repo_prefix.child("runs");
    // What the earlier runs know, and that they are of this source.
    let mut known: HashMap<String, RunObject> = HashMap::new();
    for run in run_ids(&repo, &runs, to).await? {
        let Some(m) = read_run_or_skip(&repo, &runs, &run, to).await else {
            continue;
        };
        if m.source.trim_end_matches('/') != from.trim_end_matches('/') {
            return Err(config(
                format!("{to} holds backups of {}, not of {from}", m.source),
                "give each backed-up bucket or prefix its own --to",
            ));
        }
        for o in m.objects {
            known.insert(o.blob.clone(), o);
        }
    }
    progress.phase(&format!("listing {from}"));
    let objects = list_all(&src, &src_prefix, from).await?;
    if objects.is_empty() {
        return Err(config(
            format!("{from} holds no objects: no run recorded"),
            "check the bucket and prefix in --from (a run of nothing would restore as nothing)",
        ));
    }
    // Blobs there already (earlier runs, or a killed one), by size: one
    // whose size is not its object's (cut short, damaged) is copied again.
    let have: HashMap<String, u64> = list_all(&repo, &blobs, to)
        .await?
        .into_iter()
        .filter_map(|m| m.location.filename().map(|f| (f.to_string(), m.size)))
        .collect();
    let total = objects.len();
    let tally = Arc::new(Tally::default());
    let (have, known) = (Arc::new(have), Arc::new(known));
    let results: Vec<Result<RunObject, CoreError>> = futures::stream::iter(objects)
        .map(|meta| {
            let (src, repo, blobs) = (src.clone(), repo.clone(), blobs.clone());
            let (have, known, cancel) = (have.clone(), known.clone(), cancel.clone());
            let (tally, progress) = (tally.clone(), progress.clone());
            let key = relative(&src_prefix, &meta.location);
            async move {
                if cancel.load(Ordering::Relaxed) {
                    return Err(CoreError::Interrupted(String::new()));
                }
                let id = blob_id(&key, &meta);
                let present = have.get(&id) == Some(&meta.size);
                let entry = match (present, known.get(&id)) {
                    (true, Some(o)) => RunObject {
                        key: key.clone(),
                        ..o.clone()
                    },
                    (true, None) => {
                        let at = blobs.child(id.as_str());
                        let (sha256, md5, _) = hash_object(&repo, &at, to).await?;
                        RunObject {
                            key: key.clone(),
                            size: meta.size,
                            etag: etag(&meta),
                            last_modified: meta.last_modified.to_rfc3339(),
                            blob: id,
                            sha256,
                            md5,
                        }
                    }
                    (false, _) => {
                        let o =
                            copy_in(&src, &repo, &blobs, &key, &meta, from, to, &cancel).await?;
                        tally.moved(o.size);
                        o
                    }
                };
                tally.done(total, "copied", &*progress);
                Ok(entry)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let copied = tally.moved.load(Ordering::Relaxed);
    let mut entries = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(e) => entries.push(e),
            Err(CoreError::Interrupted(_)) => {
                return Err(CoreError::Interrupted(format!(
                    "; {copied} object(s) were copied and are kept: run bucket-backup again to finish (no run was recorded)"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let run = new_run_id(&repo, &runs, to).await?;
    let manifest = RunManifest {
        format: 1,
        run: run.clone(),
        source: from.to_string(),
        started_at,
        finished_at: now_rfc3339(),
        objects: entries,
    };
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| CoreError::Internal(e.to_string()))?;
    let at = runs.child(format!("{run}.json").as_str());
    repo.put(&at, json.into())
        .await
        .map_err(|e| request_error(to, at.as_ref(), e))?;
    Ok(BackupReport {
        run,
        from: from.to_string(),
        to: to.to_string(),
        objects: manifest.objects.len(),
        bytes: manifest.objects.iter().map(|o| o.size).sum(),
        copied,
        copied_bytes: tally.bytes.load(Ordering::Relaxed),
        unchanged: manifest.objects.len() - copied,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A run id that is not taken: the time now, `-2`… when one is.
async fn new_run_id(
    repo: &Arc<dyn ObjectStore>,
    runs: &Key,
    to: &str,
) -> Result<String, CoreError> {
    let now = time::OffsetDateTime::now_utc();
    let base = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let taken: HashSet<String> = run_ids(repo, runs, to).await?.into_iter().collect();
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    Ok(id)
}

/// Streams one object from the source into its blob, hashing it.
#[allow(clippy::too_many_arguments)]
async fn copy_in(
    src: &Arc<dyn ObjectStore>,
    repo: &Arc<dyn ObjectStore>,
    blobs: &Key,
    key: &str,
    listed: &ObjectMeta,
    from: &str,
    to: &str,
    cancel: &AtomicBool,
) -> Result<RunObject, CoreError> {
    let got = src
        .get(&listed.location)
        .await
        .map_err(|e| request_error(from, listed.location.as_ref(), e))?;
    // Changed since the listing: this run records what it read.
    let changed = got.meta.size != listed.size
        || matches!((etag(&got.meta), etag(listed)), (Some(a), Some(b)) if a != b);
    let meta = if changed {
        got.meta.clone()
    } else {
        listed.clone()
    };
    let id = blob_id(key, &meta);
    let at = blobs.child(id.as_str());
    let (sha256, md5, size) =
        stream_to(got.into_stream(), repo, &at, from, to, None, cancel).await?;
    if size != meta.size {
        return Err(StorageError::Io {
            path: format!("{from}/{key}"),
            source: std::io::Error::other(format!(
                "read {size} bytes, the server said {}",
                meta.size
            )),
        }
        .into());
    }
    Ok(RunObject {
        key: key.to_string(),
        size,
        etag: etag(&meta),
        last_modified: meta.last_modified.to_rfc3339(),
        blob: id,
        sha256,
        md5,
    })
}

/// SHA-256, MD5 and size of an object's bytes, read in full.
async fn hash_object(
    store: &Arc<dyn ObjectStore>,
    at: &Key,
    location: &str,
) -> Result<(String, String, u64), CoreError> {
    let mut stream = store
        .get(at)
        .await
        .map_err(|e| request_error(location, at.as_ref(), e))?
        .into_stream();
    let (mut sha, mut md5, mut size) = (Sha256::new(), Md5::new(), 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| request_error(location, at.as_ref(), e))?;
        sha.update(&chunk);
        md5.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((
        hex::encode(sha.finalize()),
        hex::encode(md5.finalize()),
        size,
    ))
}

/// Writes `stream` to `at` in `dst`, hashing it; with `want` (a SHA-256),
/// a stream that does not match is not written (its upload aborted).
/// Returns SHA-256, MD5 and size.
async fn stream_to(
    mut stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    dst: &Arc<dyn ObjectStore>,
    at: &Key,
    from: &str,
    to: &str,
    want: Option<(&str, &str)>,
    cancel: &AtomicBool,
) -> Result<(String, String, u64), CoreError> {
    let mut out = object_store::buffered::BufWriter::with_capacity(dst.clone(), at.clone(), PART)
        .with_max_concurrency(2);
    let (mut sha, mut md5, mut size) = (Sha256::new(), Md5::new(), 0u64);
    let outcome: Result<(String, String), CoreError> = async {
        while let Some(chunk) = stream.next().await {
            // Ctrl-C: this object's upload is aborted, not finished.
            if cancel.load(Ordering::Relaxed) {
                return Err(CoreError::Interrupted(String::new()));
            }
            let chunk = chunk.map_err(|e| request_error(from, "", e))?;
            sha.update(&chunk);
            md5.update(&chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(|e| io_err(to, at, e))?;
        }
        let (sha, md5) = (hex::encode(sha.finalize()), hex::encode(md5.finalize()));
        if let Some((want, what)) = want {
            if sha != want {
                return Err(CoreError::Verify {
                    file: from.to_string(),
                    message: format!("{what} does not match its checksum; it was not written"),
                });
            }
        }
        out.shutdown().await.map_err(|e| io_err(to, at, e))?;
        Ok((sha, md5))
    }
    .await;
    match outcome {
        Ok((sha, md5)) => Ok((sha, md5, size)),
        Err(e) => {
            let _ = out.abort().await;
            Err(e)
        }
    }
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
pub fn runs(from: &str) -> Result<Vec<RunInfo>, CoreError> {
    let from = from.to_string();
    s3::run(async move {
        let (repo, prefix) = object_store_existing(&from)?;
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

/// Which run to restore: `run` by id, else the newest that started at or
/// before `at` (the bucket as it was then), else the newest.
fn choose(
    runs: &[RunInfo],
    run: Option<&str>,
    at: Option<time::OffsetDateTime>,
    from: &str,
) -> Result<String, CoreError> {
    let hint = "see the runs with `dbsnap bucket-restore --from … --list`";
    let Some(newest) = runs.last() else {
        return Err(config(
            format!("no bucket-backup run in {from}"),
            "run `dbsnap bucket-backup` first, or check --from",
        ));
    };
    if let Some(id) = run {
        return runs
            .iter()
            .find(|r| r.run == id)
            .map(|r| r.run.clone())
            .ok_or_else(|| config(format!("no run {id} in {from}"), hint));
    }
    let Some(at) = at else {
        return Ok(newest.run.clone());
    };
    runs.iter()
        .rev()
        .find(|r| crate::inspect::parse_time(&r.started_at).is_some_and(|t| t <= at))
        .map(|r| r.run.clone())
        .ok_or_else(|| {
            let at = at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            config(format!("no run in {from} had started by {at}"), hint)
        })
}

/// Puts a run's objects back under `to` (a bucket or prefix, or a
/// directory): objects already there with the same bytes are skipped;
/// `delete_extra` removes the objects under `to` the run does not have.
#[allow(clippy::too_many_arguments)]
pub fn restore(
    from: &str,
    to: &str,
    run: Option<&str>,
    at: Option<time::OffsetDateTime>,
    delete_extra: bool,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<RestoreReport, CoreError> {
    refuse_overlap(
        from,
        to,
        "--to would hold the backups being restored (--from), or lie inside them",
    )?;
    let listed = runs(from)?;
    let chosen = choose(&listed, run, at, from)?;
    let (from, to) = (from.to_string(), to.to_string());
    s3::run(async move { restore_async(&from, &to, &chosen, delete_extra, progress, cancel).await })
}

async fn restore_async(
    from: &str,
    to: &str,
    run: &str,
    delete_extra: bool,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<RestoreReport, CoreError> {
    let started = Instant::now();
    let (repo, repo_prefix) = object_store_existing(from)?;
    let manifest = read_run(&repo, &repo_prefix.child("runs"), run, from).await?;
    let blobs = repo_prefix.child("blobs");
    let (dst, dst_prefix) = object_store_at(to)?;
    progress.phase(&format!("listing {to}"));
    let existing: HashMap<String, ObjectMeta> = list_all(&dst, &dst_prefix, to)
        .await?
        .into_iter()
        .map(|m| (relative(&dst_prefix, &m.location), m))
        .collect();
    let total = manifest.objects.len();
    let tally = Arc::new(Tally::default());
    let existing = Arc::new(existing);
    let results: Vec<Result<(), CoreError>> = futures::stream::iter(manifest.objects.clone())
        .map(|o| {
            let (repo, dst, blobs) = (repo.clone(), dst.clone(), blobs.clone());
            let dst_prefix = dst_prefix.clone();
            let (existing, cancel) = (existing.clone(), cancel.clone());
            let (tally, progress) = (tally.clone(), progress.clone());
            async move {
                if cancel.load(Ordering::Relaxed) {
                    return Err(CoreError::Interrupted(String::new()));
                }
                let at = join(&dst_prefix, &o.key)?;
                let same = match existing.get(&o.key) {
                    Some(m) if m.size == o.size => match etag(m) {
                        Some(e) => e == o.md5,
                        // Servers that list no ETag give it on HEAD.
                        None => dst
                            .head(&at)
                            .await
                            .ok()
                            .and_then(|m| etag(&m))
                            .is_some_and(|e| e == o.md5),
                    },
                    _ => false,
                };
                if !same {
                    let blob = blobs.child(o.blob.as_str());
                    let got = match repo.get(&blob).await {
                        Ok(g) => g,
                        Err(object_store::Error::NotFound { .. }) => {
                            return Err(CoreError::Verify {
                                file: from.to_string(),
                                message: format!(
                                    "the blob of \"{}\" (blobs/{}) is missing",
                                    o.key, o.blob
                                ),
                            })
                        }
                        Err(e) => return Err(request_error(from, blob.as_ref(), e).into()),
                    };
                    let what = format!("the blob of \"{}\" (blobs/{})", o.key, o.blob);
                    let want = Some((o.sha256.as_str(), what.as_str()));
                    stream_to(got.into_stream(), &dst, &at, from, to, want, &cancel).await?;
                    tally.moved(o.size);
                }
                tally.done(total, "written", &*progress);
                Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let written = tally.moved.load(Ordering::Relaxed);
    let mut failed: Vec<CoreError> = Vec::new();
    for r in results {
        match r {
            Ok(()) => {}
            Err(CoreError::Interrupted(_)) => {
                return Err(CoreError::Interrupted(format!(
                    "; {written} object(s) were written: run bucket-restore again to finish"
                )))
            }
            Err(e) => failed.push(e),
        }
    }
    if let Some(first) = failed.first() {
        let code_of = first.exit_code();
        let list: Vec<String> = failed.iter().take(5).map(|e| e.to_string()).collect();
        let message = format!(
            "{} of {total} object(s) could not be restored ({written} written, nothing deleted):\n  {}{}",
            failed.len(),
            list.join("\n  "),
            if failed.len() > 5 { "\n  …" } else { "" }
        );
        return Err(if code_of == crate::error::exit::VERIFY {
            CoreError::Verify {
                file: from.to_string(),
                message,
            }
        } else {
            failed.swap_remove(0)
        });
    }
    let keys: HashSet<&str> = manifest.objects.iter().map(|o| o.key.as_str()).collect();
    let mut extra: Vec<String> = existing
        .keys()
        .filter(|k| !keys.contains(k.as_str()))
        .cloned()
        .collect();
    extra.sort();
    if delete_extra {
        for k in &extra {
            let at = join(&dst_prefix, k)?;
            match dst.delete(&at).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(request_error(to, at.as_ref(), e).into()),
            }
        }
    }
    Ok(RestoreReport {
        run: run.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        objects: total,
        written,
        written_bytes: tally.bytes.load(Ordering::Relaxed),
        present: total - written,
        extra,
        deleted_extra: delete_extra,
        seconds: started.elapsed().as_secs_f64(),
    })
}
