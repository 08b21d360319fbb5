//! `bucket-backup`: a run copying new and changed objects into the
//! location's blobs and recording every object in its manifest.
//!
//! A blob is reused when its object is unchanged (same key, ETag and
//! size) and the blob has that size; one last verified longer ago than
//! [`BackupOptions::reverify_after`] (or never) is first read in full and
//! compared with the SHA-256 recorded for it, and copied again from the
//! source when it differs. A run never records a blob it has not either
//! written, re-read, or found verified within that period.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsnap_storage::s3::{self, request_error};
use dbsnap_storage::Location;
use dbsnap_storage::StorageError;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    config, etag, hash_object, list_all, lock, now_rfc3339, read_run_or_skip, refuse_overlap,
    relative, run_ids, stream_to, RunManifest, RunObject, Tally, PARALLEL,
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
    /// Of those, blobs read again and found to match (last verified
    /// longer ago than the re-verification period).
    pub reverified: usize,
    /// Keys whose blob was found damaged on reuse and copied again from
    /// the source (counted in `copied`).
    pub repaired: Vec<String>,
    /// Temporary files of killed runs removed (`blobs/<id>#<n>`, in a
    /// directory location).
    pub removed_temporary: usize,
    /// Seconds.
    pub seconds: f64,
}

/// How `bucket-backup` treats the blobs it reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupOptions {
    /// A reused blob last verified longer ago than this (or never) is read
    /// in full and compared with its SHA-256 first; zero: every one.
    pub reverify_after: Duration,
}

impl BackupOptions {
    /// The default re-verification period: 30 days.
    pub const DEFAULT_REVERIFY_AFTER: Duration = Duration::from_secs(30 * 86_400);
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            reverify_after: Self::DEFAULT_REVERIFY_AFTER,
        }
    }
}

/// What became of one object in a run.
enum Fate {
    /// New or changed: copied.
    Copied,
    /// Its blob reused, verified recently enough.
    Reused,
    /// Its blob reused after reading it again.
    Reverified,
    /// Its blob did not match: copied again.
    Repaired,
}

fn source_store(from: &Location) -> Result<(Arc<dyn ObjectStore>, Key), CoreError> {
    if !from.is_object_store() {
        return Err(config(
            format!("--from {from}: bucket-backup copies an object store bucket"),
            "name it s3://BUCKET[/PREFIX] (or gs://BUCKET, az://CONTAINER)",
        ));
    }
    Ok(from.object_store(true)?)
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
    from: &Location,
    to: &Location,
    options: BackupOptions,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<BackupReport, CoreError> {
    let (from_at, to_at) = (from.clone(), to.clone());
    let (from, to) = (from.to_string(), to.to_string());
    s3::run(async move {
        refuse_overlap(
            &from,
            &to,
            "--to (the backups) would be inside --from (the bucket backed up), or hold it",
        )?;
        let (src, src_prefix) = source_store(&from_at)?;
        let (repo, repo_prefix) = to_at.object_store(true)?;
        let store = (repo.clone(), repo_prefix.clone());
        lock::with_lock(&repo, &repo_prefix, &to, "bucket-backup", |_| {
            backup_locked(
                &from,
                &to,
                (src, src_prefix),
                store,
                options,
                progress,
                cancel,
            )
        })
        .await
    })
}

/// Removes the temporary files killed runs left in a directory
/// location's `blobs/` (`<id>#<n>`: object_store's staged writes, which
/// it never lists); the lock says no other run is writing them.
fn remove_temporaries(to: &str) -> Result<usize, CoreError> {
    if s3::is_object_store_url(to) {
        return Ok(0);
    }
    let dir = std::path::Path::new(to).join("blobs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io(&dir, e).into()),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(&dir, e))?;
        let name = entry.file_name();
        let temporary = name
            .to_str()
            .and_then(|n| n.split_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if temporary {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&entry.path(), e).into()),
            }
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} temporary file(s) of a killed run from {}",
            dir.display()
        );
    }
    Ok(removed)
}

/// Whether a blob verified at `at` (RFC 3339) is recent enough to reuse
/// without reading it.
fn verified_recently(at: Option<&str>, within: Duration, now: time::OffsetDateTime) -> bool {
    at.and_then(crate::inspect::parse_time)
        .is_some_and(|t| now - t < within)
}

/// An ETag that is the MD5 of the object's bytes (a single-part upload
/// without server-side encryption by KMS writes one): 32 hex digits.
fn md5_etag(meta: &ObjectMeta) -> Option<String> {
    etag(meta).filter(|e| e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[allow(clippy::too_many_arguments)]
async fn backup_locked(
    from: &str,
    to: &str,
    (src, src_prefix): (Arc<dyn ObjectStore>, Key),
    (repo, repo_prefix): (Arc<dyn ObjectStore>, Key),
    options: BackupOptions,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<BackupReport, CoreError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let now = time::OffsetDateTime::now_utc();
    let removed_temporary = remove_temporaries(to)?;
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
        for mut o in m.objects {
            // The newest verification any run recorded counts.
            if let Some(earlier) = known.get(&o.blob) {
                let t = |o: &RunObject| {
                    o.verified_at
                        .as_deref()
                        .and_then(crate::inspect::parse_time)
                };
                if t(earlier) > t(&o) {
                    o.verified_at = earlier.verified_at.clone();
                }
            }
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
    let results: Vec<Result<(RunObject, Fate), CoreError>> = futures::stream::iter(objects)
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
                let at = blobs.child(id.as_str());
                let present = have.get(&id) == Some(&meta.size);
                let reused = match (present, known.get(&id)) {
                    (false, _) => None,
                    (true, Some(o))
                        if verified_recently(
                            o.verified_at.as_deref(),
                            options.reverify_after,
                            now,
                        ) =>
                    {
                        Some((
                            RunObject {
                                key: key.clone(),
                                ..o.clone()
                            },
                            Fate::Reused,
                        ))
                    }
                    (true, Some(o)) => {
                        let (sha256, _, size) = hash_object(&repo, &at, to).await?;
                        (sha256 == o.sha256 && size == o.size).then(|| {
                            let o = RunObject {
                                key: key.clone(),
                                verified_at: Some(now_rfc3339()),
                                ..o.clone()
                            };
                            (o, Fate::Reverified)
                        })
                    }
                    // Written by a run killed before its manifest: its
                    // bytes are what it read, checked against an MD5 ETag
                    // where the source has one.
                    (true, None) => {
                        let (sha256, md5, _) = hash_object(&repo, &at, to).await?;
                        let matches = md5_etag(&meta).is_none_or(|e| e == md5);
                        matches.then(|| {
                            let o = RunObject {
                                key: key.clone(),
                                size: meta.size,
                                etag: etag(&meta),
                                last_modified: meta.last_modified.to_rfc3339(),
                                blob: id.clone(),
                                sha256,
                                md5,
                                verified_at: Some(now_rfc3339()),
                            };
                            (o, Fate::Reused)
                        })
                    }
                };
                let entry = match reused {
                    Some(r) => r,
                    None => {
                        let fate = if present {
                            tracing::warn!(
                                "the blob of \"{key}\" (blobs/{id}) does not match the object's checksum: copying it again from {from}"
                            );
                            Fate::Repaired
                        } else {
                            Fate::Copied
                        };
                        let o =
                            copy_in(&src, &repo, &blobs, &key, &meta, from, to, &cancel).await?;
                        tally.moved(o.size);
                        (o, fate)
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
    let (mut reverified, mut repaired) = (0, Vec::new());
    for r in results {
        match r {
            Ok((e, fate)) => {
                match fate {
                    Fate::Reverified => reverified += 1,
                    Fate::Repaired => repaired.push(e.key.clone()),
                    Fate::Copied | Fate::Reused => {}
                }
                entries.push(e);
            }
            Err(CoreError::Interrupted(_)) => {
                return Err(CoreError::Interrupted(format!(
                    "; {copied} object(s) were copied and are kept: run bucket-backup again to finish (no run was recorded)"
                )))
            }
            Err(e) => return Err(e),
        }
    }
    repaired.sort();
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
        reverified,
        repaired,
        removed_temporary,
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
        verified_at: Some(now_rfc3339()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_blob_is_read_again_once_its_verification_is_old() {
        let now = time::macros::datetime!(2026-12-01 12:00 UTC);
        let day = Duration::from_secs(86_400);
        let recent = Some("2026-11-20T12:00:00Z");
        assert!(verified_recently(recent, 30 * day, now));
        assert!(!verified_recently(recent, 10 * day, now));
        assert!(
            !verified_recently(recent, Duration::ZERO, now),
            "0: always read"
        );
        assert!(!verified_recently(None, 30 * day, now), "never verified");
        assert!(!verified_recently(Some("garbage"), 30 * day, now));
    }

    #[test]
    fn only_a_plain_md5_etag_checks_bytes() {
        let meta = |e: &str| ObjectMeta {
            location: Key::from("k"),
            last_modified: Default::default(),
            size: 1,
            e_tag: Some(e.to_string()),
            version: None,
        };
        let md5 = "0cc175b9c0f1b6a831c399e269772661";
        assert_eq!(md5_etag(&meta(&format!("\"{md5}\""))).as_deref(), Some(md5));
        assert_eq!(md5_etag(&meta(&format!("{md5}-3"))), None, "multipart");
        assert_eq!(md5_etag(&meta("1733500000")), None);
    }
}
