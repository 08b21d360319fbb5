//! `bucket-backup`: a run copying new and changed objects into the
//! location's blobs and recording every object in its manifest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dbsnap_storage::s3::{self, object_store_at, request_error};
use dbsnap_storage::StorageError;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    config, etag, list_all, now_rfc3339, read_run_or_skip, refuse_overlap, relative, run_ids,
    stream_to, Hashes, RunManifest, RunObject, Sums, Tally, PARALLEL,
};
use crate::create::Progress;
use crate::error::CoreError;

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

fn source_store(from: &str) -> Result<(Arc<dyn ObjectStore>, Key), CoreError> {
    if !s3::is_object_store_url(from) {
        return Err(config(
            format!("--from {from}: bucket-backup copies an object store bucket"),
            "name it s3://BUCKET[/PREFIX] (or gs://BUCKET, az://CONTAINER)",
        ));
    }
    Ok(object_store_at(from)?)
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
