//! The lock of a backup location: one `bucket-backup` or `bucket-prune`
//! at a time, so a prune never removes a blob a backup in progress has
//! copied or is about to reuse, and a backup never removes another one's
//! temporary files.
//!
//! A lock is an object `locks/<token>.json` naming its command and process
//! (host, pid, process start), refreshed every minute while held. Taking
//! one writes it first and then lists the others (so of two processes
//! starting at once, at least one sees the other; both may give up, never
//! both go on). A lock whose process no longer runs (same host) or that
//! was not refreshed for 15 minutes (any host) is removed by whoever finds
//! it. `bucket-restore` and `bucket-verify` only read and take none.

use std::sync::Arc;
use std::time::SystemTime;

use dbsnap_storage::s3::{request_error, stale, Owner, HEARTBEAT};
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore};
use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// `bucket-backup` or `bucket-prune`.
    command: String,
    /// When it was taken (RFC 3339).
    since: String,
    #[serde(flatten)]
    owner: Owner,
}

/// A lock held by this process; [`Lock::release`] removes it.
pub(super) struct Lock {
    store: Arc<dyn ObjectStore>,
    at: Key,
    location: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Takes the lock of `location` (store `repo`, under `prefix`) for
/// `command`, or says who holds it ([`CoreError::Busy`], nothing changed).
pub(super) async fn acquire(
    repo: &Arc<dyn ObjectStore>,
    prefix: &Key,
    location: &str,
    command: &str,
) -> Result<Lock, CoreError> {
    let dir = prefix.child("locks");
    let token = hex::encode(rand::random::<[u8; 8]>());
    let at = dir.child(format!("{token}.json").as_str());
    let body = serde_json::to_vec(&Body {
        command: command.to_string(),
        since: super::now_rfc3339(),
        owner: Owner::me(),
    })
    .map_err(|e| CoreError::Internal(e.to_string()))?;
    repo.put(&at, body.clone().into())
        .await
        .map_err(|e| request_error(location, at.as_ref(), e))?;
    let held = match others(repo, &dir, &at, location).await {
        Ok(held) => held,
        Err(e) => {
            let _ = repo.delete(&at).await;
            return Err(e);
        }
    };
    if let Some((key, other)) = held.first() {
        let _ = repo.delete(&at).await;
        let name = key.filename().unwrap_or_default();
        return Err(CoreError::Busy {
            message: format!(
                "{location} is in use by {} (host {}, pid {}, since {}): {command} changes nothing while it runs",
                other.command, other.owner.host, other.owner.pid, other.since
            ),
            hint: format!(
                "run {command} again once it has finished; a lock whose process is gone is removed by the next run on its host, or 15 minutes after its last refresh from any host (locks/{name})"
            ),
        });
    }
    let (store, key) = (repo.clone(), at.clone());
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = store.put(&key, body.clone().into()).await {
                tracing::warn!("could not refresh the lock {key}: {e}");
            }
        }
    });
    Ok(Lock {
        store: repo.clone(),
        at,
        location: location.to_string(),
        heartbeat,
    })
}

/// The live locks under `dir` other than `mine`; those of processes that
/// are gone are removed on the way.
async fn others(
    repo: &Arc<dyn ObjectStore>,
    dir: &Key,
    mine: &Key,
    location: &str,
) -> Result<Vec<(Key, Body)>, CoreError> {
    let listed: Vec<_> = repo
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(|e| request_error(location, dir.as_ref(), e))?;
    let mut live = Vec::new();
    for meta in listed {
        if &meta.location == mine {
            continue;
        }
        let bytes = match repo.get(&meta.location).await {
            Ok(g) => g.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            // Released meanwhile.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(request_error(location, meta.location.as_ref(), e).into()),
        };
        let refreshed = SystemTime::from(meta.last_modified);
        let body: Option<Body> = serde_json::from_slice(&bytes).ok();
        // One that cannot be read counts as held until it is stale.
        let gone = match &body {
            Some(b) => b.owner.is_gone(refreshed),
            None => stale(refreshed),
        };
        if gone {
            tracing::info!(
                "removing the lock {} of a process that is gone",
                meta.location
            );
            match repo.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(request_error(location, meta.location.as_ref(), e).into()),
            }
            continue;
        }
        let body = body.unwrap_or(Body {
            command: "an unknown process".into(),
            since: "unknown".into(),
            owner: Owner {
                host: "unknown".into(),
                pid: 0,
                start: None,
            },
        });
        live.push((meta.location, body));
    }
    Ok(live)
}

impl Lock {
    /// Removes the lock (a failure is a warning: the lock goes stale).
    pub(super) async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.store.delete(&self.at).await {
            tracing::warn!(
                "could not remove the lock {} of {}: {e}",
                self.at,
                self.location
            );
        }
    }
}

/// Runs `work` holding the lock of `location` for `command`; the lock is
/// released however `work` ends. `work` is given the lock object as the
/// store lists it (its time is when the lock was taken, by the store's
/// clock).
pub(super) async fn with_lock<T, F>(
    repo: &Arc<dyn ObjectStore>,
    prefix: &Key,
    location: &str,
    command: &str,
    work: impl FnOnce(ObjectMeta) -> F,
) -> Result<T, CoreError>
where
    F: std::future::Future<Output = Result<T, CoreError>>,
{
    let lock = acquire(repo, prefix, location, command).await?;
    let taken = match repo.head(&lock.at).await {
        Ok(meta) => meta,
        Err(e) => {
            lock.release().await;
            return Err(request_error(location, "locks/", e).into());
        }
    };
    let outcome = work(taken).await;
    lock.release().await;
    outcome
}
