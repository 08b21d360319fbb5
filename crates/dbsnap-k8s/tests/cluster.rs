//! Discovery through a cluster with the unmodified kube-rs client, against
//! the fake API server: the workload and its ConfigMaps are read, the
//! Secret never is; RBAC refusals and missing workloads are named.

use dbsnap_k8s::cluster::{connect, discover_workload, ClusterAccess};
use dbsnap_k8s::scale::parse_workloads;
use dbsnap_test_support::fake_kube::{Deny, FakeKube};

#[tokio::test(flavor = "multi_thread")]
async fn the_app_s_databases_are_found_without_reading_its_secret() {
    let kube = FakeKube::start();
    kube.seed_app(
        "poolside",
        "postgresql://app:s3cret@db.poolside.svc:5432/core",
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let access = ClusterAccess {
        kubeconfig: Some(kubeconfig.clone()),
        ..Default::default()
    };
    let (_, namespace) = connect(&access).await.unwrap();
    assert_eq!(namespace, "default", "the context's namespace");
    let access = ClusterAccess {
        kubeconfig: Some(kubeconfig),
        namespace: Some("poolside".into()),
        ..Default::default()
    };
    let (client, namespace) = connect(&access).await.unwrap();
    assert_eq!(namespace, "poolside", "the flag beats the context");

    let core_api = &parse_workloads("deploy/core-api").unwrap()[0];
    let (found, _) = discover_workload(&client, &namespace, core_api, None)
        .await
        .unwrap();
    let db = &found.databases[0];
    assert_eq!(db.source, "DATABASE_URL");
    // The password is a reference to the Secret: $(DB_PASSWORD) cannot be
    // expanded here, so the URL's user, host and database are known and the
    // password stays with the cluster.
    let conn = db.connection.as_deref().unwrap();
    assert!(
        conn.contains("host=db.poolside.svc") && conn.contains("dbname=core"),
        "{conn}"
    );
    assert!(!serde_json::to_string(&found).unwrap().contains("s3cret"));
    assert!(
        !kube.requests().iter().any(|r| r.path.contains("/secrets")),
        "a Secret was read: {:#?}",
        kube.requests()
    );

    let missing = &parse_workloads("sts/nope").unwrap()[0];
    let e = discover_workload(&client, &namespace, missing, None)
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("sts/nope not found in namespace poolside"),
        "{e}"
    );

    kube.deny(Deny::new("get", "deployments"));
    let e = discover_workload(&client, &namespace, core_api, None)
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("RBAC denied: cannot get deploy/core-api"),
        "{e}"
    );
}
