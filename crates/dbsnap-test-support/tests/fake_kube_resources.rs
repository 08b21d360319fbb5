//! The fake's other resources (claims, ingresses, cron jobs, autoscalers,
//! volume snapshots and their classes) through kubectl, discovery included.

mod common;

use dbsnap_test_support::fake_kube::FakeKube;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const NS: &str = "shop";

fn kubectl(dir: &Path, args: &[&str]) -> String {
    common::kubectl_ok(dir, NS, args)
}

fn manifests() -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data-db-0"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                     "resources": {"requests": {"storage": "8Gi"}}}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web"},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.example"}]}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "core-api"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "core-api"},
                     "minReplicas": 2, "maxReplicas": 5}}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "csi-snaps"}, "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Delete"}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "before-restore"},
            "spec": {"volumeSnapshotClassName": "csi-snaps",
                     "source": {"persistentVolumeClaimName": "data-db-0"}}}),
    ]
}

#[test]
fn kubectl_creates_lists_and_deletes_the_other_resources() {
    let kube = FakeKube::start();
    kube.insert("namespaces", "", json!({"metadata": {"name": NS}}));
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    kube.write_kubeconfig(&dir.join("kubeconfig")).unwrap();

    let resources = kubectl(dir, &["api-resources", "-o", "name"]);
    for name in [
        "persistentvolumeclaims",
        "ingresses.networking.k8s.io",
        "cronjobs.batch",
        "horizontalpodautoscalers.autoscaling",
        "volumesnapshots.snapshot.storage.k8s.io",
        "volumesnapshotclasses.snapshot.storage.k8s.io",
    ] {
        assert!(
            resources.lines().any(|l| l == name),
            "{name} in {resources}"
        );
    }

    for (i, manifest) in manifests().iter().enumerate() {
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, manifest.to_string()).unwrap();
        let created = kubectl(
            dir,
            &["create", "--validate=false", "-f", file.to_str().unwrap()],
        );
        assert!(created.contains("created"), "{created}");
    }

    let pvc = kubectl(dir, &["get", "pvc"]);
    assert!(
        pvc.contains("STORAGECLASS") && pvc.contains("Bound") && pvc.contains("8Gi"),
        "{pvc}"
    );
    let ingress = kubectl(dir, &["get", "ingress"]);
    assert!(ingress.contains("shop.example"), "{ingress}");
    let cron = kubectl(dir, &["get", "cronjobs"]);
    assert!(cron.contains("0 3 * * *"), "{cron}");
    let hpa = kubectl(dir, &["get", "hpa"]);
    assert!(hpa.contains("Deployment/core-api"), "{hpa}");
    let class = kubectl(dir, &["get", "volumesnapshotclass"]);
    assert!(class.contains("hostpath.csi.k8s.io"), "{class}");

    let deadline = Instant::now() + common::PATIENCE;
    let snapshot = loop {
        let snapshot = kube
            .object("volumesnapshots", NS, "before-restore")
            .unwrap();
        if snapshot["status"]["readyToUse"] == true {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "never ready: {snapshot:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let uid = snapshot["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        snapshot["status"]["boundVolumeSnapshotContentName"],
        format!("snapcontent-{uid}")
    );
    assert_eq!(snapshot["status"]["restoreSize"], "8Gi");
    assert!(snapshot["status"]["creationTime"].is_string());
    let listed = kubectl(dir, &["get", "volumesnapshots"]);
    assert!(
        listed.contains("READYTOUSE") && listed.contains("true"),
        "{listed}"
    );

    kubectl(dir, &["delete", "volumesnapshot", "before-restore"]);
    kubectl(dir, &["delete", "volumesnapshotclass", "csi-snaps"]);
    assert!(kube
        .object("volumesnapshots", NS, "before-restore")
        .is_none());
    assert!(kube
        .object("volumesnapshotclasses", "", "csi-snaps")
        .is_none());
}
