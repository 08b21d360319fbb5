//! Pods of the fake Kubernetes API run as local processes: created,
//! started, ended and deleted through the unmodified kube-rs client.

mod common;

use common::{client, running, shell_pod, wait_for, wait_gone, wait_no_processes};
use dbsnap_test_support::fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NS: &str = "shop";

fn started() -> FakeKube {
    let kube = FakeKube::start();
    kube.insert("namespaces", "", json!({"metadata": {"name": NS}}));
    kube
}

fn pod_from(value: Value) -> Pod {
    serde_json::from_value(value).expect("a pod")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_runs_its_command_with_the_environment_its_spec_resolves() {
    // The test's own environment must not reach the pod.
    std::env::set_var("PGPASSWORD", "leaked-from-the-test");
    let kube = started();
    kube.insert(
        "secrets",
        NS,
        json!({"metadata": {"name": "db"}, "stringData": {"password": "pw-123", "user": "app"}}),
    );
    kube.insert(
        "configmaps",
        NS,
        json!({"metadata": {"name": "settings"}, "data": {"MODE": "fast"}}),
    );
    let out = tempfile::tempdir().unwrap();
    let env_file = out.path().join("env");
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let pod = pod_from(json!({
        "metadata": {"name": "jump"},
        "spec": {"containers": [{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c"],
            "args": ["env > $(OUT); sleep 300"],
            "env": [
                {"name": "OUT", "value": env_file.to_str().unwrap()},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "URL", "value": "postgresql://$(DB_user):$(PW)@db/shop"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
            "envFrom": [
                {"secretRef": {"name": "db"}, "prefix": "DB_"},
                {"configMapRef": {"name": "settings"}},
            ],
        }]},
    }));
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = created.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert!(status.pod_ip.is_some() && status.start_time.is_some());

    let pod = wait_for(&kube, NS, "jump", running).await;
    let ready = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{pod:#}");
    assert!(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());

    let env = wait_for_file(&env_file).await;
    let has = |line: &str| env.lines().any(|l| l == line);
    assert!(has("PW=pw-123"), "{env}");
    assert!(has("URL=postgresql://app:pw-123@db/shop"), "{env}");
    assert!(has("DB_user=app") && has("MODE=fast"), "{env}");
    assert!(has("POD=jump") && has(&format!("NS={NS}")), "{env}");
    assert!(
        has(&format!("IP={}", pod["status"]["podIP"].as_str().unwrap())),
        "{env}"
    );
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(
        !env.contains("PGPASSWORD"),
        "the test's environment leaked: {env}"
    );
    assert!(
        !kube.requests().iter().any(|r| r.path.contains("/secrets")),
        "the kubelet's reads are not the client's: {:#?}",
        kube.requests()
    );
    assert!(kube.live_processes() >= 1);

    pods.delete("jump", &DeleteParams::default()).await.unwrap();
    wait_gone(&kube, NS, "jump").await;
    wait_no_processes(&kube).await;
}

async fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.contains("PATH=") {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_ends_succeeded_or_failed_with_its_exit_code_and_log() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let params = PostParams::default();
    pods.create(&params, &shell_pod("ok", "echo hello; echo oops >&2"))
        .await
        .unwrap();
    pods.create(&params, &shell_pod("bad", "exit 3"))
        .await
        .unwrap();
    pods.create(&params, &shell_pod("missing", "x"))
        .await
        .unwrap();

    let ok = wait_for(&kube, NS, "ok", |p| p["status"]["phase"] == "Succeeded").await;
    let terminated = &ok["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0);
    assert_eq!(terminated["reason"], "Completed");
    let bad = wait_for(&kube, NS, "bad", |p| p["status"]["phase"] == "Failed").await;
    let terminated = &bad["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3);
    assert_eq!(terminated["reason"], "Error");

    let log = pods.logs("ok", &Default::default()).await.unwrap();
    assert!(log.contains("hello") && log.contains("oops"), "{log:?}");

    // An ended pod is removed at once.
    pods.delete("bad", &DeleteParams::default()).await.unwrap();
    assert!(kube.object("pods", NS, "bad").is_none());
    wait_no_processes(&kube).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_fails_the_pod() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let mut pod = shell_pod("nope", "");
    pod.spec.as_mut().unwrap().containers[0].command = Some(vec!["/no/such/binary".into()]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let failed = wait_for(&kube, NS, "nope", |p| p["status"]["phase"] == "Failed").await;
    let terminated = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "StartError");
    assert!(
        terminated["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/binary"),
        "{terminated}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_pod_kills_its_process_group_after_the_grace_period() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    // Ignores SIGTERM, and has a child: both must go.
    let script = "trap '' TERM; sleep 300 & sleep 300; wait";
    pods.create(&PostParams::default(), &shell_pod("stubborn", script))
        .await
        .unwrap();
    wait_for(&kube, NS, "stubborn", running).await;
    let deadline = Instant::now() + common::PATIENCE;
    while kube.live_processes() < 3 {
        assert!(
            Instant::now() < deadline,
            "{} processes",
            kube.live_processes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let asked = Instant::now();
    let params = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    let answer = pods.delete("stubborn", &params).await.unwrap();
    let terminating = answer.left().expect("the pod, terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(
        kube.object("pods", NS, "stubborn").is_some(),
        "still terminating"
    );
    wait_gone(&kube, NS, "stubborn").await;
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "killed after the grace period, not {took:?}"
    );
    wait_no_processes(&kube).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_past_its_active_deadline_is_killed() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let mut pod = shell_pod("late", "sleep 300");
    pod.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for(&kube, NS, "late", running).await;
    let failed = wait_for(&kube, NS, "late", |p| p["status"]["phase"] == "Failed").await;
    assert_eq!(failed["status"]["reason"], "DeadlineExceeded");
    assert!(
        failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"].is_number()
    );
    wait_no_processes(&kube).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_key_holds_the_container_until_it_exists() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let mut pod = shell_pod("waits", "sleep 300");
    pod.spec.as_mut().unwrap().containers[0].env = Some(vec![serde_json::from_value(
        json!({"name": "PW", "valueFrom": {"secretKeyRef": {"name": "later", "key": "pw"}}}),
    )
    .unwrap()]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let waiting = wait_for(&kube, NS, "waits", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(waiting["status"]["phase"], "Pending");
    assert_eq!(
        waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "secret \"later\" not found"
    );
    kube.insert(
        "secrets",
        NS,
        json!({"metadata": {"name": "later"}, "stringData": {"pw": "x"}}),
    );
    wait_for(&kube, NS, "waits", running).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_image_pulls_back_off_and_slow_starts_stay_pending() {
    let kube = started();
    kube.fail_image_pulls("registry.invalid/");
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let mut pod = shell_pod("pull", "sleep 300");
    pod.spec.as_mut().unwrap().containers[0].image = Some("registry.invalid/dbsnap:9".into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let backing_off = wait_for(&kube, NS, "pull", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;
    assert_eq!(backing_off["status"]["phase"], "Pending");
    assert_eq!(
        backing_off["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "Back-off pulling image \"registry.invalid/dbsnap:9\""
    );

    kube.set_pod_start_delay(Duration::from_millis(800));
    pods.create(&PostParams::default(), &shell_pod("slow", "sleep 300"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = kube.object("pods", NS, "slow").unwrap();
    assert_eq!(pending["status"]["phase"], "Pending", "{pending:#}");
    assert_eq!(
        pending["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    wait_for(&kube, NS, "slow", running).await;
    assert!(kube.live_processes() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_beyond_the_quota_are_forbidden() {
    let kube = started();
    kube.set_pod_quota(NS, 1);
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    pods.create(&PostParams::default(), &shell_pod("one", "sleep 300"))
        .await
        .unwrap();
    let refused = pods
        .create(&PostParams::default(), &shell_pod("two", "sleep 300"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else {
        panic!("not an API error: {refused}");
    };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"two\" is forbidden: exceeded quota: compute-resources, requested: pods=1, used: pods=1, limited: pods=1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_without_a_command_is_virtual_and_names_can_be_generated() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let pod = pod_from(json!({
        "metadata": {"generateName": "db-"},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:17"}]},
    }));
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("db-") && name.len() == 8, "{name}");
    wait_for(&kube, NS, &name, running).await;
    assert_eq!(kube.live_processes(), 0);
    kube.set_termination_delay(Duration::from_millis(400));
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    assert!(kube.object("pods", NS, &name).unwrap()["metadata"]["deletionTimestamp"].is_string());
    wait_gone(&kube, NS, &name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_deleted_as_soon_as_it_is_created_goes() {
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    for round in 0..10 {
        let name = format!("brief-{round}");
        pods.create(&PostParams::default(), &shell_pod(&name, "sleep 300"))
            .await
            .unwrap();
        pods.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    for round in 0..10 {
        wait_gone(&kube, NS, &format!("brief-{round}")).await;
    }
    wait_no_processes(&kube).await;
}

/// kube-rs' watch (`?watch=true` from a resource version) sees a pod
/// added, started and deleted, filtered by its label selector.
#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_watches_a_pod_from_a_resource_version() {
    use futures::{StreamExt as _, TryStreamExt as _};
    use kube::api::{ListParams, WatchEvent, WatchParams};
    let kube = started();
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let listed = pods.list(&ListParams::default()).await.unwrap();
    let from = listed.metadata.resource_version.unwrap();
    let params = WatchParams::default().labels("watch=me").timeout(20);
    let mut events = pods.watch(&params, &from).await.unwrap().boxed();

    let mut ignored = shell_pod("ignored", "sleep 300");
    ignored.metadata.labels = None;
    pods.create(&PostParams::default(), &ignored).await.unwrap();
    let mut watched = shell_pod("watched", "sleep 300");
    watched.metadata.labels = Some([("watch".to_string(), "me".to_string())].into());
    pods.create(&PostParams::default(), &watched).await.unwrap();
    wait_for(&kube, NS, "watched", running).await;
    pods.delete("watched", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    while let Some(event) = events.try_next().await.unwrap() {
        let (kind, pod) = match event {
            WatchEvent::Added(p) => ("ADDED", p),
            WatchEvent::Modified(p) => ("MODIFIED", p),
            WatchEvent::Deleted(p) => ("DELETED", p),
            other => panic!("unexpected event {other:?}"),
        };
        seen.push((kind, pod.metadata.name.unwrap()));
        if kind == "DELETED" {
            break;
        }
    }
    assert!(seen.iter().all(|(_, name)| name == "watched"), "{seen:?}");
    assert_eq!(seen.first().map(|s| s.0), Some("ADDED"), "{seen:?}");
    assert!(seen.iter().any(|s| s.0 == "MODIFIED"), "{seen:?}");
    assert_eq!(seen.last().map(|s| s.0), Some("DELETED"), "{seen:?}");
}
