//! The fake's Deployment and StatefulSet controllers, driven through kube-rs.

mod common;

use common::{client, running};
use dbsnap_test_support::fake_kube::{FakeKube, APP};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;

const NS: &str = "poolside";

async fn pods_labelled(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Polls until exactly `count` pods match and none is terminating.
async fn settle(pods: &Api<Pod>, selector: &str, count: usize) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let found = pods_labelled(pods, selector).await;
        let terminating = found
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some());
        if found.len() == count && !terminating {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{selector}: {:?}",
            found.iter().map(name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn scale_to(replicas: i32) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"spec": {"replicas": replicas}}))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_keeps_its_replicas_as_pods() {
    let kube = FakeKube::start();
    kube.seed_app(NS, "postgresql://app:pw@db:5432/app");
    let client = client(&kube).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client, NS);

    let seeded = settle(&pods, "app=core-api", 1).await;
    let pod = &seeded[0];
    let pod_name = name(pod);
    let parts: Vec<&str> = pod_name.rsplitn(3, '-').collect();
    assert_eq!(parts.len(), 3, "{pod_name}");
    assert_eq!((parts[2], parts[1].len(), parts[0].len()), (APP, 10, 5));
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "ReplicaSet");
    assert_eq!(owner.name, format!("{APP}-{}", parts[1]));
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["pod-template-hash"], parts[1]);
    let status = deployments.get(APP).await.unwrap().status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(1)));

    let params = PatchParams::default();
    deployments
        .patch_scale(APP, &params, &scale_to(3))
        .await
        .unwrap();
    let three = settle(&pods, "app=core-api", 3).await;
    assert!(
        three.iter().any(|p| name(p) == pod_name),
        "the old pod stays"
    );
    let status = deployments.get(APP).await.unwrap().status.unwrap();
    assert_eq!(
        status.ready_replicas,
        Some(3),
        "{status:?} {:#?}",
        kube.objects("pods", Some(NS))
    );

    deployments
        .patch_scale(APP, &params, &scale_to(0))
        .await
        .unwrap();
    let terminating = pods_labelled(&pods, "app=core-api").await;
    assert_eq!(terminating.len(), 3, "pods linger while they terminate");
    assert!(terminating
        .iter()
        .all(|p| p.metadata.deletion_timestamp.is_some()));
    settle(&pods, "app=core-api", 0).await;
    let status = deployments.get(APP).await.unwrap().status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas), (Some(0), Some(0)));

    deployments.patch(APP, &params, &scale_to(2)).await.unwrap();
    settle(&pods, "app=core-api", 2).await;
    deployments
        .delete(APP, &DeleteParams::default())
        .await
        .unwrap();
    settle(&pods, "app=core-api", 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statefulset_keeps_ordinal_pods() {
    let kube = FakeKube::start();
    kube.set_termination_delay(Duration::from_millis(500));
    kube.seed_database(NS, "db", 55432);
    let client = client(&kube).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let sets: Api<StatefulSet> = Api::namespaced(client, NS);
    assert!(kube.object("services", NS, "db").is_some());

    let db0 = kube.object("pods", NS, "db-0").expect("db-0");
    assert!(running(&db0), "{db0:#}");
    assert_eq!(db0["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(
        db0["spec"]["containers"][0]["ports"][0]["containerPort"],
        5432
    );

    let params = PatchParams::default();
    sets.patch_scale("db", &params, &scale_to(3)).await.unwrap();
    let names: Vec<String> = settle(&pods, "app=db", 3).await.iter().map(name).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);

    sets.patch_scale("db", &params, &scale_to(1)).await.unwrap();
    let db2 = kube.object("pods", NS, "db-2").expect("db-2 terminating");
    assert!(db2["metadata"]["deletionTimestamp"].is_string());
    // Scaling back up while db-2 terminates waits for the name to be free
    // (one key holds one pod): a new db-2 comes once the old one is gone.
    sets.patch_scale("db", &params, &scale_to(3)).await.unwrap();
    let old_uid = db2["metadata"]["uid"].clone();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let now = kube.object("pods", NS, "db-2");
        let current = now.as_ref().map(|p| &p["metadata"]["uid"]);
        if current.is_some_and(|uid| *uid != old_uid) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "db-2 never came back: {:#}",
            serde_json::Value::Array(kube.objects("pods", Some(NS)))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names: Vec<String> = settle(&pods, "app=db", 3).await.iter().map(name).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    let status = sets.get("db").await.unwrap().status.unwrap();
    assert_eq!(status.ready_replicas, Some(3));
}
