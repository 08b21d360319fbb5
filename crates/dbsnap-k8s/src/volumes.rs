//! CSI VolumeSnapshots of an in-cluster PostgreSQL's volumes: taken
//! together (one moment for every PVC, while the app is scaled down when
//! asked), waited for until the storage says they are ready, and listed
//! with their readiness.

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::Client;
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::cluster::K8sError;
use crate::hint;
use crate::hint::Setting;
use crate::jump::{MANAGED_BY, RUN_LABEL};

/// A VolumeSnapshot as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSnapshot {
    /// Its name.
    pub name: String,
    /// The PVC it was taken of.
    pub pvc: String,
    /// Whether the storage says it can be restored from.
    pub ready: bool,
    /// Size a volume made from it needs (`restoreSize`), when known.
    pub restore_size: Option<String>,
    /// When the storage took it (`creationTime`), else when it was asked for.
    pub created: String,
    /// The storage's error, if any.
    pub error: Option<String>,
}

fn api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn api_error(e: kube::Error, verb: &str, namespace: &str) -> K8sError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => K8sError::new(
            format!("the cluster has no VolumeSnapshot API (snapshot.storage.k8s.io/v1) in namespace {namespace}: {}", s.message),
            "install the CSI external-snapshotter and a VolumeSnapshotClass for the PVCs' storage",
        ),
        kube::Error::Api(s) if s.code == 403 => K8sError::new(
            format!("RBAC denied: cannot {verb} volumesnapshots in namespace {namespace}: {}", s.message),
            format!("ask for a Role that allows {verb} on volumesnapshots.snapshot.storage.k8s.io"),
        ),
        _ => K8sError::new(
            format!("cannot {verb} volumesnapshots in namespace {namespace}: {}", crate::cluster::describe(&e)),
            "check that the cluster is reachable (kubectl cluster-info)",
        ),
    }
}

/// The VolumeSnapshot object for `pvc`.
pub fn snapshot_object(run: &str, pvc: &str, class: Option<&str>) -> Json {
    let mut spec = json!({"source": {"persistentVolumeClaimName": pvc}});
    if let Some(c) = class {
        spec["volumeSnapshotClassName"] = Json::String(c.into());
    }
    let name =
        crate::jump::pod_name(&format!("{pvc}-{run}")).replacen("dbsnap-jump-", "dbsnap-", 1);
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, RUN_LABEL: run, "dbsnap.io/pvc": pvc}
        },
        "spec": spec
    })
}

/// Asks for a snapshot of every PVC at once, then waits up to `wait`
/// until all are ready. Returns them as listed.
pub async fn create(
    client: &Client,
    namespace: &str,
    run: &str,
    pvcs: &[String],
    class: Option<&str>,
    wait: Duration,
) -> Result<Vec<VolumeSnapshot>, K8sError> {
    let api = api(client, namespace);
    let mut names = Vec::new();
    for pvc in pvcs {
        let object: DynamicObject = serde_json::from_value(snapshot_object(run, pvc, class))
            .map_err(|e| K8sError::new(format!("internal: {e}"), "report this"))?;
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| api_error(e, "create", namespace))?;
        names.push(created.metadata.name.unwrap_or_default());
    }
    let started = Instant::now();
    loop {
        let all = list(client, namespace).await?;
        let ours: Vec<VolumeSnapshot> = all
            .into_iter()
            .filter(|s| names.contains(&s.name))
            .collect();
        if let Some(failed) = ours.iter().find(|s| s.error.is_some()) {
            return Err(K8sError::new(
                format!("VolumeSnapshot {} of {} failed: {}", failed.name, failed.pvc, failed.error.clone().unwrap_or_default()),
                "check the VolumeSnapshotClass and the CSI driver (kubectl describe volumesnapshot NAME)",
            ));
        }
        if ours.len() == names.len() && ours.iter().all(|s| s.ready) {
            return Ok(ours);
        }
        if started.elapsed() >= wait {
            let pending: Vec<String> = ours
                .iter()
                .filter(|s| !s.ready)
                .map(|s| s.name.clone())
                .collect();
            return Err(K8sError::new(
                format!("VolumeSnapshots not ready after {} s: {} (they were asked for and may still become ready)", wait.as_secs(), pending.join(", ")),
                hint!["check them with dbsnap volume-snapshot list, or raise ", Setting::Wait],
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks that every claim exists (before anything is scaled or asked).
pub async fn check_claims(
    client: &Client,
    namespace: &str,
    pvcs: &[String],
) -> Result<(), K8sError> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    for pvc in pvcs {
        match claims.get_opt(pvc).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(K8sError::new(
                    format!("persistentvolumeclaim {pvc} not found in namespace {namespace}"),
                    format!("name a claim that exists (kubectl get pvc -n {namespace})"),
                ))
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(K8sError::new(
                    format!(
                    "RBAC denied: cannot get persistentvolumeclaims in namespace {namespace}: {}",
                    s.message
                ),
                    "ask for get on persistentvolumeclaims (see docs/KUBERNETES.md)",
                ))
            }
            Err(e) => {
                return Err(K8sError::new(
                    format!(
                        "cannot read persistentvolumeclaim {pvc} in namespace {namespace}: {}",
                        crate::cluster::describe(&e)
                    ),
                    "check that the cluster is reachable (kubectl cluster-info)",
                ))
            }
        }
    }
    Ok(())
}

/// Every VolumeSnapshot of the namespace, oldest first.
pub async fn list(client: &Client, namespace: &str) -> Result<Vec<VolumeSnapshot>, K8sError> {
    let list = api(client, namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(e, "list", namespace))?;
    let mut out: Vec<VolumeSnapshot> = list
        .items
        .iter()
        .map(|o| describe(&serde_json::to_value(o).unwrap_or(Json::Null)))
        .collect();
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

fn describe(o: &Json) -> VolumeSnapshot {
    let text = |p: &str| o.pointer(p).and_then(Json::as_str).map(String::from);
    VolumeSnapshot {
        name: text("/metadata/name").unwrap_or_default(),
        pvc: text("/spec/source/persistentVolumeClaimName").unwrap_or_default(),
        ready: o
            .pointer("/status/readyToUse")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        restore_size: o.pointer("/status/restoreSize").map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }),
        created: text("/status/creationTime")
            .or_else(|| text("/metadata/creationTimestamp"))
            .unwrap_or_default(),
        error: text("/status/error/message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_listing() {
        let o = snapshot_object("20261123t0400", "data-db-0", Some("csi-snap"));
        assert_eq!(
            o["spec"]["source"]["persistentVolumeClaimName"],
            "data-db-0"
        );
        assert_eq!(o["spec"]["volumeSnapshotClassName"], "csi-snap");
        assert_eq!(o["metadata"]["name"], "dbsnap-data-db-0-20261123t0400");
        let listed = describe(&json!({
            "metadata": {"name": "s1", "creationTimestamp": "2026-11-23T04:00:00Z"},
            "spec": {"source": {"persistentVolumeClaimName": "data-db-0"}},
            "status": {"readyToUse": true, "restoreSize": "10Gi"}
        }));
        assert!(listed.ready);
        assert_eq!(listed.restore_size.as_deref(), Some("10Gi"));
        assert_eq!(listed.pvc, "data-db-0");
    }
}
