//! `bucket-restore`: a run's objects put back, each checked against its
//! SHA-256 as it streams.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dbsnap_storage::s3::{self, request_error};
use dbsnap_storage::Location;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use serde::Serialize;

use super::{
    config, etag, join, list_all, read_run, refuse_overlap, relative, runs, stream_to, RunInfo,
    Tally, PARALLEL,
};
use crate::create::Progress;
use crate::error::CoreError;

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
    from: &Location,
    to: &Location,
    run: Option<&str>,
    at: Option<time::OffsetDateTime>,
    delete_extra: bool,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<RestoreReport, CoreError> {
    refuse_overlap(
        from.as_str(),
        to.as_str(),
        "--to would hold the backups being restored (--from), or lie inside them",
    )?;
    let listed = runs(from)?;
    let chosen = choose(&listed, run, at, from.as_str())?;
    let (from, to) = (from.clone(), to.clone());
    s3::run(async move { restore_async(&from, &to, &chosen, delete_extra, progress, cancel).await })
}

async fn restore_async(
    from_at: &Location,
    to_at: &Location,
    run: &str,
    delete_extra: bool,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<RestoreReport, CoreError> {
    let started = Instant::now();
    let (from, to) = (from_at.as_str(), to_at.as_str());
    let (repo, repo_prefix) = from_at.object_store(false)?;
    let manifest = read_run(&repo, &repo_prefix.child("runs"), run, from).await?;
    let blobs = repo_prefix.child("blobs");
    let (dst, dst_prefix) = to_at.object_store(true)?;
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
