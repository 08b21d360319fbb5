//! Controllers: Deployments and StatefulSets keep `spec.replicas` pods.

use super::*;

/// Whether a resource is a workload with replicas.
pub(super) fn is_workload(resource: &str) -> bool {
    resource == "deployments" || resource == "statefulsets"
}

/// Queues a reconcile of the workload owning `pod`, if any.
pub(super) fn owner_needs_reconcile(_state: &mut State, _pod: &Value) {}

/// Brings a workload's pods in line with its spec.
pub(super) fn reconcile(_shared: &Shared, _key: &Key) {}

/// A new VolumeSnapshot becomes ready shortly.
pub(super) fn snapshot_created(_state: &mut State, _snapshot: &Value) {}
