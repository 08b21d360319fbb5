//! Label and field selectors on lists, and collection deletes, through
//! kube-rs and kubectl.

mod common;

use common::{client, running, wait_for, wait_gone};
use dbsnap_test_support::fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const NS: &str = "shop";

fn virtual_pod(name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "app:1"}]},
    })
}

fn seeded() -> FakeKube {
    let kube = FakeKube::start();
    kube.insert(
        "pods",
        NS,
        virtual_pod("web-1", json!({"app": "web", "tier": "front"})),
    );
    kube.insert(
        "pods",
        NS,
        virtual_pod("web-2", json!({"app": "web", "tier": "back"})),
    );
    kube.insert("pods", NS, virtual_pod("db-0", json!({"app": "db"})));
    kube.insert("pods", "other", virtual_pod("web-9", json!({"app": "web"})));
    kube
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_lists_by_label_and_field_and_deletes_a_collection() {
    let kube = seeded();
    for name in ["web-1", "web-2", "db-0"] {
        wait_for(&kube, NS, name, running).await;
    }
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let list = |labels: &str, fields: &str| {
        let pods = pods.clone();
        let params = ListParams::default().labels(labels).fields(fields);
        async move { names(&pods.list(&params).await.unwrap().items) }
    };
    assert_eq!(list("app=web", "").await, ["web-1", "web-2"]);
    assert_eq!(list("app=web,tier!=front", "").await, ["web-2"]);
    assert_eq!(list("tier", "").await, ["web-1", "web-2"]);
    assert_eq!(list("!tier", "").await, ["db-0"]);
    assert_eq!(list("app in (db, cache)", "").await, ["db-0"]);
    assert_eq!(list("app notin (db)", "").await, ["web-1", "web-2"]);
    assert_eq!(list("", "metadata.name=web-2").await, ["web-2"]);
    assert_eq!(
        list("app=web", "status.phase=Running").await,
        ["web-1", "web-2"]
    );
    assert!(list("", "status.phase=Pending").await.is_empty());
    let all: Api<Pod> = Api::all(client(&kube).await);
    let everywhere = all
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 3);

    let bad = pods
        .list(&ListParams::default().labels("app in web"))
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, kube::Error::Api(s) if s.code == 400),
        "{bad}"
    );

    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=web"),
    )
    .await
    .unwrap();
    wait_gone(&kube, NS, "web-1").await;
    wait_gone(&kube, NS, "web-2").await;
    assert!(kube.object("pods", NS, "db-0").is_some());
    assert!(kube.object("pods", "other", "web-9").is_some());
}

#[test]
fn kubectl_gets_and_deletes_by_label() {
    let kube = seeded();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    kube.write_kubeconfig(&dir.join("kubeconfig")).unwrap();
    let kubectl = |args: &[&str]| common::kubectl_ok(dir, NS, args);
    let listed = kubectl(&["get", "pods", "-l", "app=web", "-o", "name"]);
    assert_eq!(listed, "pod/web-1\npod/web-2\n");
    let listed = kubectl(&[
        "get",
        "pods",
        "--field-selector",
        "metadata.name=db-0",
        "-o",
        "name",
    ]);
    assert_eq!(listed, "pod/db-0\n");
    let deleted = kubectl(&["delete", "pods", "-l", "tier=front", "--wait=false"]);
    assert!(deleted.contains("pod \"web-1\" deleted"), "{deleted}");
    assert!(kube.wait_for_pod_gone(NS, "web-1", common::PATIENCE));
    assert!(kube.object("pods", NS, "web-2").is_some());
}
