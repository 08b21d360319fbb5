//! `bucket-verify`: every blob a run (or every run) needs, read in full and
//! compared with the size and SHA-256 its manifest records. It only
//! reads: it changes nothing and takes no lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dbsnap_storage::s3::{self, request_error};
use dbsnap_storage::Location;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use serde::Serialize;

use super::{config, read_run, run_ids, Hashes, RunManifest, Tally, PARALLEL};
use crate::create::Progress;
use crate::error::CoreError;

/// Which runs to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// The newest run that can be read (the one `bucket-restore` restores
    /// by default).
    Newest,
    /// One run, by id.
    Run(String),
    /// Every run (each blob read once).
    All,
}

/// What is wrong with a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// No such blob.
    Missing,
    /// Not the size the run recorded.
    WrongSize,
    /// The size is right, the SHA-256 is not.
    ChecksumMismatch,
}

/// One object whose blob is damaged or missing.
#[derive(Debug, Clone, Serialize)]
pub struct Damaged {
    /// The object's key.
    pub key: String,
    /// Its blob (under `blobs/`).
    pub blob: String,
    /// The runs that have it.
    pub runs: Vec<String>,
    /// What is wrong.
    pub damage: Damage,
    /// In words.
    pub detail: String,
}

/// A run manifest that could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct UnreadableRun {
    /// Its id.
    pub run: String,
    /// Why.
    pub error: String,
}

/// What `bucket-verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup location.
    pub from: String,
    /// Everything matched.
    pub ok: bool,
    /// The runs checked.
    pub runs: Vec<String>,
    /// Objects in them (an object in several runs counts in each).
    pub objects: usize,
    /// Distinct blobs read.
    pub blobs: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Objects whose blob is damaged or missing, by key.
    pub damaged: Vec<Damaged>,
    /// Run manifests that could not be read (`--all`, or the run named).
    pub unreadable_runs: Vec<UnreadableRun>,
    /// What failed, in one message (when not ok).
    pub error: Option<String>,
    /// Seconds.
    pub seconds: f64,
}

/// What the runs expect of one blob: each (size, SHA-256) recorded, with
/// the (run, key) pairs that recorded it.
type Expected = BTreeMap<(u64, String), Vec<(String, String)>>;

/// Reads every blob the chosen runs of `from` need and compares it with
/// their manifests. A request that fails is an error (exit 9: the verdict
/// is unknown), not damage.
pub fn verify(
    from: &Location,
    which: Which,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<VerifyReport, CoreError> {
    let from = from.clone();
    s3::run(async move { verify_async(&from, which, progress, cancel).await })
}

async fn verify_async(
    location: &Location,
    which: Which,
    progress: Arc<dyn Progress>,
    cancel: Arc<AtomicBool>,
) -> Result<VerifyReport, CoreError> {
    let started = Instant::now();
    let from = location.as_str();
    let (repo, prefix) = location.object_store(false)?;
    let runs_key = prefix.child("runs");
    let ids = run_ids(&repo, &runs_key, from).await?;
    if ids.is_empty() {
        return Err(config(
            format!("no bucket-backup run in {from}"),
            "run `dbsnap bucket-backup` first, or check --from",
        ));
    }
    let (manifests, unreadable) = match &which {
        Which::All => read_all(&repo, &runs_key, &ids, from).await?,
        Which::Run(id) if !ids.contains(id) => {
            return Err(config(
                format!("no run {id} in {from}"),
                "see the runs with `dbsnap bucket-restore --from … --list`",
            ))
        }
        Which::Run(id) => read_all(&repo, &runs_key, std::slice::from_ref(id), from).await?,
        Which::Newest => newest(&repo, &runs_key, &ids, from).await?,
    };
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    for m in &manifests {
        for o in &m.objects {
            expected
                .entry(o.blob.clone())
                .or_default()
                .entry((o.size, o.sha256.clone()))
                .or_default()
                .push((m.run.clone(), o.key.clone()));
        }
    }
    let total = expected.len();
    progress.phase(&format!("reading {total} blob(s) of {from}"));
    let tally = Arc::new(Tally::default());
    let blobs = prefix.child("blobs");
    let results: Vec<Result<Vec<Damaged>, CoreError>> = futures::stream::iter(expected)
        .map(|(blob, expect)| {
            let (repo, at) = (repo.clone(), blobs.child(blob.as_str()));
            let (tally, progress, cancel) = (tally.clone(), progress.clone(), cancel.clone());
            async move {
                let got = read_blob(&repo, &at, from, &cancel).await?;
                if let Some((_, size)) = &got {
                    tally.moved(*size);
                }
                tally.done(total, "read", &*progress);
                Ok(judge(&blob, expect, got))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut damaged = Vec::new();
    for r in results {
        damaged.extend(r?);
    }
    // A blob missing because a prune removed its run meanwhile is not
    // damage: only runs still recorded count.
    let mut still = Vec::new();
    for mut d in damaged {
        if d.damage == Damage::Missing {
            let mut kept = Vec::new();
            for run in d.runs {
                let at = runs_key.child(format!("{run}.json").as_str());
                match repo.head(&at).await {
                    Ok(_) => kept.push(run),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(request_error(from, at.as_ref(), e).into()),
                }
            }
            d.runs = kept;
            if d.runs.is_empty() {
                continue;
            }
        }
        still.push(d);
    }
    let mut damaged = still;
    damaged.sort_by(|a, b| (&a.key, &a.blob).cmp(&(&b.key, &b.blob)));
    let runs: Vec<String> = manifests.iter().map(|m| m.run.clone()).collect();
    let objects = manifests.iter().map(|m| m.objects.len()).sum();
    let error = summary(from, objects, &damaged, &unreadable);
    Ok(VerifyReport {
        from: from.to_string(),
        ok: error.is_none(),
        runs,
        objects,
        blobs: total,
        bytes: tally.bytes.load(Ordering::Relaxed),
        damaged,
        unreadable_runs: unreadable,
        error,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The manifests of `ids`; those that are not manifests are listed apart
/// (a request that fails is an error).
async fn read_all(
    repo: &Arc<dyn ObjectStore>,
    runs: &Key,
    ids: &[String],
    from: &str,
) -> Result<(Vec<RunManifest>, Vec<UnreadableRun>), CoreError> {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for id in ids {
        match read_run(repo, runs, id, from).await {
            Ok(m) => good.push(m),
            Err(e @ CoreError::Verify { .. }) => bad.push(UnreadableRun {
                run: id.clone(),
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((good, bad))
}

/// The newest manifest that can be read (newer ones that cannot are
/// warned about, as `bucket-restore` skips them); none: all are listed.
async fn newest(
    repo: &Arc<dyn ObjectStore>,
    runs: &Key,
    ids: &[String],
    from: &str,
) -> Result<(Vec<RunManifest>, Vec<UnreadableRun>), CoreError> {
    let mut bad = Vec::new();
    for id in ids.iter().rev() {
        match read_run(repo, runs, id, from).await {
            Ok(m) => {
                for b in &bad {
                    let UnreadableRun { run, error } = b;
                    tracing::warn!(
                        "{error}; skipping run {run} (remove runs/{run}.json if it is not one)"
                    );
                }
                return Ok((vec![m], Vec::new()));
            }
            Err(e @ CoreError::Verify { .. }) => bad.push(UnreadableRun {
                run: id.clone(),
                error: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok((Vec::new(), bad))
}

/// SHA-256 and size of a blob read in full; None when it does not exist.
async fn read_blob(
    repo: &Arc<dyn ObjectStore>,
    at: &Key,
    from: &str,
    cancel: &AtomicBool,
) -> Result<Option<(String, u64)>, CoreError> {
    let mut stream = match repo.get(at).await {
        Ok(g) => g.into_stream(),
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(request_error(from, at.as_ref(), e).into()),
    };
    let mut hashes = Hashes::default();
    while let Some(chunk) = stream.next().await {
        if cancel.load(Ordering::Relaxed) {
            return Err(CoreError::Interrupted(String::new()));
        }
        hashes.update(&chunk.map_err(|e| request_error(from, at.as_ref(), e))?);
    }
    let (sha, _, size) = hashes.finish();
    Ok(Some((sha, size)))
}

/// The objects whose expectation `got` does not meet.
fn judge(blob: &str, expect: Expected, got: Option<(String, u64)>) -> Vec<Damaged> {
    let mut out = Vec::new();
    for ((size, sha), holders) in expect {
        let (damage, detail) = match &got {
            None => (Damage::Missing, "its blob is missing".to_string()),
            Some((_, got_size)) if *got_size != size => (
                Damage::WrongSize,
                format!("its blob holds {got_size} bytes, the run recorded {size}"),
            ),
            Some((got_sha, _)) if *got_sha != sha => (
                Damage::ChecksumMismatch,
                format!(
                    "its blob's SHA-256 is {}…, the run recorded {}…",
                    &got_sha[..12],
                    &sha[..sha.len().min(12)]
                ),
            ),
            Some(_) => continue,
        };
        let keys: BTreeSet<&str> = holders.iter().map(|(_, k)| k.as_str()).collect();
        for key in keys {
            out.push(Damaged {
                key: key.to_string(),
                blob: blob.to_string(),
                runs: holders
                    .iter()
                    .filter(|(_, k)| k == key)
                    .map(|(r, _)| r.clone())
                    .collect(),
                damage,
                detail: detail.clone(),
            });
        }
    }
    out
}

/// The failure in one message (count and the first five), or None.
fn summary(
    from: &str,
    objects: usize,
    damaged: &[Damaged],
    unreadable: &[UnreadableRun],
) -> Option<String> {
    if damaged.is_empty() && unreadable.is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    if !damaged.is_empty() {
        lines.push(format!(
            "{} of {objects} object(s) in {from} are damaged or missing:",
            damaged.len()
        ));
        for d in damaged.iter().take(5) {
            lines.push(format!(
                "  \"{}\" (blobs/{}, run {}): {}",
                d.key,
                d.blob,
                d.runs.join(", "),
                d.detail
            ));
        }
        if damaged.len() > 5 {
            lines.push("  …".into());
        }
    }
    if !unreadable.is_empty() {
        lines.push(format!(
            "{} run manifest(s) cannot be read:",
            unreadable.len()
        ));
        for u in unreadable.iter().take(5) {
            lines.push(format!("  runs/{}.json: {}", u.run, u.error));
        }
    }
    let hint = if damaged.is_empty() {
        "remove a manifest that is not one (its run cannot be restored)"
    } else {
        "`dbsnap bucket-backup --reverify-after 0` copies each damaged blob again from the source where its object is still there unchanged; restoring a run with one of the others fails for that object"
    };
    Some(format!("{}\nhint: {hint}", lines.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(entries: &[(u64, &str, &str, &str)]) -> Expected {
        let mut e = Expected::new();
        for (size, sha, run, key) in entries {
            e.entry((*size, sha.to_string()))
                .or_default()
                .push((run.to_string(), key.to_string()));
        }
        e
    }

    #[test]
    fn a_blob_is_judged_against_every_run_that_recorded_it() {
        let sha = "a".repeat(64);
        let other = "b".repeat(64);
        let e = || expect(&[(5, &sha, "r1", "k"), (5, &sha, "r2", "k")]);
        assert!(judge("id", e(), Some((sha.clone(), 5))).is_empty());
        let d = judge("id", e(), Some((other.clone(), 5)));
        assert_eq!(d.len(), 1, "one object, named once with both runs");
        assert_eq!(
            (d[0].damage, d[0].runs.clone()),
            (
                Damage::ChecksumMismatch,
                vec!["r1".to_string(), "r2".to_string()]
            )
        );
        assert_eq!(
            judge("id", e(), Some((sha.clone(), 4)))[0].damage,
            Damage::WrongSize
        );
        assert_eq!(judge("id", e(), None)[0].damage, Damage::Missing);
    }

    #[test]
    fn the_summary_names_the_first_five_and_says_what_to_do() {
        assert!(summary("loc", 3, &[], &[]).is_none());
        let d = |k: &str| Damaged {
            key: k.into(),
            blob: "id".into(),
            runs: vec!["r".into()],
            damage: Damage::Missing,
            detail: "its blob is missing".into(),
        };
        let many: Vec<Damaged> = (0..7).map(|i| d(&format!("k{i}"))).collect();
        let s = summary("loc", 9, &many, &[]).unwrap();
        assert!(
            s.starts_with("7 of 9 object(s) in loc are damaged or missing:"),
            "{s}"
        );
        assert!(
            s.contains("\"k4\"") && !s.contains("\"k5\"") && s.contains('…'),
            "{s}"
        );
        assert!(s.contains("\nhint: "), "{s}");
    }
}
