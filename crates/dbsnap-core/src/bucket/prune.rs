//! `bucket-prune`: removes the runs a retention policy does not keep, then
//! the blobs no remaining run needs.
//!
//! The keep rules are `prune`'s ([`crate::prune::decide`]), applied to the
//! runs by their start. Whatever they say: the newest run stays; a
//! manifest that cannot be read is never counted nor removed, and while
//! one is there no blob is removed (which ones it needs is unknown). Run
//! manifests go first, blobs after, so an interruption leaves only blobs
//! no run needs (the next prune removes them), never a run missing a
//! blob. Removing holds the location's lock (no backup runs meanwhile),
//! and a blob written after the lock was taken is never removed.

use std::collections::HashSet;
use std::sync::Arc;

use dbsnap_storage::s3::{self, request_error};
use dbsnap_storage::Location;
use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore};
use serde::Serialize;
use time::OffsetDateTime;

use super::{config, list_all, lock, read_run, run_ids, RunManifest};
use crate::error::CoreError;
use crate::prune::{decide, Item, Policy};

/// One run's fate.
#[derive(Debug, Clone, Serialize)]
pub struct RunFate {
    /// Its id.
    pub run: String,
    /// When it started (absent for a manifest that cannot be read).
    pub started_at: Option<String>,
    /// Its objects.
    pub objects: usize,
    /// Their size.
    pub bytes: u64,
    /// Why it stays (empty for one that goes).
    pub reasons: Vec<String>,
}

/// What `bucket-prune` did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The backup location.
    pub from: String,
    /// Nothing was removed.
    pub dry_run: bool,
    /// The runs that stay, each with why.
    pub kept: Vec<RunFate>,
    /// The runs removed.
    pub removed: Vec<RunFate>,
    /// Blobs removed (no remaining run needs them).
    pub removed_blobs: usize,
    /// Bytes those blobs held.
    pub freed: u64,
    /// Why no blob was removed, when that is not because none was unneeded.
    pub blobs_kept_because: Option<String>,
}

/// The state of a location as prune sees it.
struct Assessment {
    report: PruneReport,
    /// Blobs no kept run needs.
    unneeded: Vec<ObjectMeta>,
}

/// What `policy` would remove from `from`; nothing is changed.
pub fn plan_prune(
    location: &Location,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<PruneReport, CoreError> {
    let (location, from, policy) = (location.clone(), location.to_string(), policy.clone());
    s3::run(async move {
        let (repo, prefix) = location.object_store(false)?;
        Ok(assess(&repo, &prefix, &from, Some(&policy), now)
            .await?
            .report)
    })
}

/// Removes what `plan` (a [`plan_prune`]) removes, holding the lock:
/// the runs it names that the policy still removes now, then every blob
/// no remaining run needs.
pub fn prune(
    location: &Location,
    policy: &Policy,
    plan: PruneReport,
) -> Result<PruneReport, CoreError> {
    let (location, from, policy) = (location.clone(), location.to_string(), policy.clone());
    s3::run(async move {
        let (repo, prefix) = location.object_store(false)?;
        lock::with_lock(&repo, &prefix, &from, "bucket-prune", |taken| {
            carry_out(&repo, &prefix, &from, &policy, plan, taken)
        })
        .await
    })
}

async fn carry_out(
    repo: &Arc<dyn ObjectStore>,
    prefix: &Key,
    from: &str,
    policy: &Policy,
    plan: PruneReport,
    lock: ObjectMeta,
) -> Result<PruneReport, CoreError> {
    let now = OffsetDateTime::now_utc();
    let confirmed: HashSet<String> = plan.removed.into_iter().map(|f| f.run).collect();
    let mut report = assess(repo, prefix, from, Some(policy), now).await?.report;
    let mut removed = Vec::new();
    let runs = prefix.child("runs");
    for mut fate in std::mem::take(&mut report.removed) {
        if !confirmed.contains(&fate.run) {
            fate.reasons.push("not in the plan confirmed".into());
            report.kept.push(fate);
            continue;
        }
        let at = runs.child(format!("{}.json", fate.run).as_str());
        match repo.delete(&at).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(request_error(from, at.as_ref(), e).into()),
        }
        tracing::info!("removed run {} from {from}", fate.run);
        removed.push(fate);
    }
    // What the runs left need, read again after the removal.
    let after = assess(repo, prefix, from, None, now).await?;
    let doomed: Vec<ObjectMeta> = after
        .unneeded
        .into_iter()
        // Nothing written since the lock was taken (by the store's clock).
        .filter(|b| b.last_modified < lock.last_modified)
        .collect();
    let freed = doomed.iter().map(|b| b.size).sum();
    let count = doomed.len();
    let results: Vec<Result<(), CoreError>> = futures::stream::iter(doomed)
        .map(|b| {
            let repo = repo.clone();
            async move {
                match repo.delete(&b.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(request_error(from, b.location.as_ref(), e).into()),
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r?;
    }
    if count > 0 {
        tracing::info!("removed {count} blob(s) no run needs from {from}");
    }
    report.removed = removed;
    report.removed_blobs = count;
    report.freed = freed;
    report.blobs_kept_because = after.report.blobs_kept_because;
    report.dry_run = false;
    Ok(report)
}

/// Reads every run of `from` and decides by `policy` (None: every run
/// stays); lists the blobs no kept run needs (none while a manifest
/// cannot be read).
async fn assess(
    repo: &Arc<dyn ObjectStore>,
    prefix: &Key,
    from: &str,
    policy: Option<&Policy>,
    now: OffsetDateTime,
) -> Result<Assessment, CoreError> {
    let runs = prefix.child("runs");
    let ids = run_ids(repo, &runs, from).await?;
    if ids.is_empty() {
        return Err(config(
            format!("no bucket-backup run in {from}"),
            "run `dbsnap bucket-backup` first, or check --from",
        ));
    }
    let mut readable: Vec<(RunManifest, OffsetDateTime)> = Vec::new();
    let mut unreadable: Vec<RunFate> = Vec::new();
    for id in &ids {
        let m = match read_run(repo, &runs, id, from).await {
            Ok(m) => m,
            Err(e @ CoreError::Verify { .. }) => {
                tracing::warn!("{e}; bucket-prune keeps it and removes no blob");
                unreadable.push(unreadable_fate(id));
                continue;
            }
            Err(e) => return Err(e),
        };
        match crate::inspect::parse_time(&m.started_at) {
            Some(t) => readable.push((m, t)),
            None => unreadable.push(unreadable_fate(id)),
        }
    }
    let items: Vec<Item> = readable
        .iter()
        .map(|(_, t)| Item {
            time: Some(*t),
            group: String::new(),
            safety: false,
            pinned: false,
            verified: false,
            drilled: false,
        })
        .collect();
    let mut reasons = match policy {
        Some(p) => decide(&items, p, now),
        None => vec![vec!["remaining".to_string()]; items.len()],
    };
    if let Some(newest) = (0..readable.len()).max_by_key(|&i| (readable[i].1, i)) {
        if reasons[newest].is_empty() {
            reasons[newest].push("newest run".into());
        }
    }
    let mut report = PruneReport {
        from: from.to_string(),
        dry_run: true,
        kept: Vec::new(),
        removed: Vec::new(),
        removed_blobs: 0,
        freed: 0,
        blobs_kept_because: None,
    };
    let mut needed: HashSet<String> = HashSet::new();
    for ((m, _), why) in readable.into_iter().zip(reasons) {
        let fate = RunFate {
            run: m.run.clone(),
            started_at: Some(m.started_at.clone()),
            objects: m.objects.len(),
            bytes: m.objects.iter().map(|o| o.size).sum(),
            reasons: why,
        };
        if fate.reasons.is_empty() {
            report.removed.push(fate);
        } else {
            needed.extend(m.objects.into_iter().map(|o| o.blob));
            report.kept.push(fate);
        }
    }
    let mut unneeded = Vec::new();
    if let Some(first) = unreadable.first() {
        report.blobs_kept_because = Some(format!(
            "runs/{}.json cannot be read as a run manifest: which blobs it needs is unknown, so none is removed (remove it if it is not a run)",
            first.run
        ));
    } else {
        unneeded = list_all(repo, &prefix.child("blobs"), from)
            .await?
            .into_iter()
            .filter(|b| b.location.filename().is_some_and(|f| !needed.contains(f)))
            .collect();
        report.removed_blobs = unneeded.len();
        report.freed = unneeded.iter().map(|b| b.size).sum();
    }
    report.kept.extend(unreadable);
    Ok(Assessment { report, unneeded })
}

fn unreadable_fate(run: &str) -> RunFate {
    RunFate {
        run: run.to_string(),
        started_at: None,
        objects: 0,
        bytes: 0,
        reasons: vec![format!(
            "unreadable, not counted, its blobs kept (remove runs/{run}.json if it is not a run)"
        )],
    }
}
