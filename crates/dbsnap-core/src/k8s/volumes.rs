//! `volume-snapshot`: CSI VolumeSnapshots of a namespace's claims, taken
//! together (the app optionally scaled to 0 meanwhile, and always scaled
//! back, whatever became of the snapshots), and listed.

use std::time::Duration;

use dbsnap_k8s::cluster::{self, ClusterAccess};
use dbsnap_k8s::scale::{self, Workload};
use dbsnap_k8s::volumes::{self, VolumeSnapshot};

use super::k8s_error;
use crate::CoreError;

/// Which claims to snapshot, and how.
#[derive(Debug, Clone)]
pub struct TakeRequest {
    /// The cluster and namespace.
    pub access: ClusterAccess,
    /// The PersistentVolumeClaims, snapshotted together.
    pub claims: Vec<String>,
    /// The VolumeSnapshotClass (none: the cluster's default).
    pub class: Option<String>,
    /// Workloads scaled to 0 while the snapshots are taken, and back after.
    pub scale: Vec<Workload>,
    /// How long the pods may take to go, and the snapshots to be ready.
    pub wait: Duration,
    /// The name of `wait`'s setting, for messages that say how to give
    /// more time.
    pub wait_setting: String,
}

/// Takes the snapshots (named after `run`) and waits until they are ready.
/// The claims are checked before anything is scaled.
pub async fn take(r: &TakeRequest, run: &str) -> Result<Vec<VolumeSnapshot>, CoreError> {
    let (client, ns) = cluster::connect(&r.access).await.map_err(k8s_error)?;
    volumes::check_claims(&client, &ns, &r.claims)
        .await
        .map_err(k8s_error)?;
    if !r.scale.is_empty() {
        scale::scale_down(&client, &ns, &r.scale, r.wait, &r.wait_setting)
            .await
            .map_err(k8s_error)?;
    }
    let taken = volumes::create(&client, &ns, run, &r.claims, r.class.as_deref(), r.wait).await;
    // The app comes back whatever happened to the snapshots.
    let back = if r.scale.is_empty() {
        Ok(Vec::new())
    } else {
        scale::scale_up(&client, &ns, &r.scale).await
    };
    let taken = taken.map_err(k8s_error)?;
    back.map_err(k8s_error)?;
    Ok(taken)
}

/// The namespace's VolumeSnapshots with their readiness.
pub async fn list(access: &ClusterAccess) -> Result<Vec<VolumeSnapshot>, CoreError> {
    let (client, ns) = cluster::connect(access).await.map_err(k8s_error)?;
    volumes::list(&client, &ns).await.map_err(k8s_error)
}
