//! Real kubectl 1.33 against the fake Kubernetes API server.

use dbsnap_test_support::fake_kube::{Deny, FakeKube, APP, APP_SECRET};
use dbsnap_test_support::kubectl_bin;
use std::path::Path;
use std::process::{Command, Output};

const NS: &str = "poolside";
const PG_URL: &str = "postgresql://app:pw-123@127.0.0.1:55432/shop";

/// Runs kubectl with the fake's kubeconfig and a private cache and home.
fn kubectl(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl");
    eprintln!(
        "kubectl {args:?} -> {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn ok_stdout(dir: &Path, args: &[&str]) -> String {
    let output = kubectl(dir, args);
    assert!(output.status.success(), "kubectl {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failing_stderr(dir: &Path, args: &[&str]) -> String {
    let output = kubectl(dir, args);
    assert!(!output.status.success(), "kubectl {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn started() -> (FakeKube, tempfile::TempDir) {
    let kube = FakeKube::start();
    let dir = tempfile::tempdir().expect("temp dir");
    kube.write_kubeconfig(&dir.path().join("kubeconfig"))
        .expect("write kubeconfig");
    kube.seed_app(NS, PG_URL);
    (kube, dir)
}

#[test]
fn kubectl_lists_gets_and_scales_the_seeded_app() {
    let (kube, dir) = started();
    let dir = dir.path();

    let listed = ok_stdout(dir, &["get", "deploy", "-n", NS]);
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(listed.contains("UP-TO-DATE"), "{listed}");
    let row = listed.lines().nth(1).unwrap_or("");
    assert!(row.starts_with(APP) && row.contains("1/1"), "{listed}");

    let json: serde_json::Value = serde_json::from_str(&ok_stdout(
        dir,
        &["get", "deploy", APP, "-n", NS, "-o", "json"],
    ))
    .expect("kubectl prints JSON");
    let env = &json["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |name: &str| {
        env.as_array()
            .and_then(|vars| vars.iter().find(|v| v["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {env}"))
    };
    assert_eq!(var("DB_HOST")["value"], "127.0.0.1");
    assert_eq!(var("DB_PORT")["value"], "55432");
    assert_eq!(
        var("DB_PASSWORD")["valueFrom"]["secretKeyRef"]["name"],
        APP_SECRET
    );
    assert!(var("DATABASE_URL")["value"]
        .as_str()
        .is_some_and(|v| v.contains("$(DB_PASSWORD)")));

    let scaled = ok_stdout(
        dir,
        &["scale", &format!("deploy/{APP}"), "--replicas=0", "-n", NS],
    );
    assert!(scaled.contains("scaled"), "{scaled}");
    let replicas = ok_stdout(
        dir,
        &[
            "get",
            "deploy",
            APP,
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas.trim(), "0");
    assert_eq!(
        kube.object("deployments", NS, APP).expect("deployment")["spec"]["replicas"],
        0
    );

    let paths: Vec<String> = kube
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    eprintln!("request log:\n{}", paths.join("\n"));
    assert!(kube.requested("GET", "/apis/apps/v1/namespaces/poolside/deployments"));
    assert!(kube.requested(
        "GET",
        "/apis/apps/v1/namespaces/poolside/deployments/core-api"
    ));
    assert!(kube.requested(
        "PATCH",
        "/apis/apps/v1/namespaces/poolside/deployments/core-api/scale"
    ));
    let secret_path = format!("/api/v1/namespaces/{NS}/secrets/{APP_SECRET}");
    assert!(
        !kube.requests().iter().any(|r| r.path == secret_path),
        "nothing read the Secret"
    );
}

#[test]
fn kubectl_reports_not_found_and_forbidden() {
    let (kube, dir) = started();
    let dir = dir.path();

    let missing = failing_stderr(dir, &["get", "secret", "missing", "-n", NS]);
    assert!(
        missing.contains(r#"Error from server (NotFound): secrets "missing" not found"#),
        "{missing}"
    );

    kube.deny(
        Deny::new("get", "secrets")
            .in_namespace(NS)
            .named(APP_SECRET),
    );
    let denied = failing_stderr(dir, &["get", "secret", APP_SECRET, "-n", NS]);
    assert!(
        denied.contains(&format!(
            r#"Error from server (Forbidden): secrets "{APP_SECRET}" is forbidden: User "dbsnap-tester" cannot get resource "secrets" in API group "" in the namespace "{NS}""#
        )),
        "{denied}"
    );

    kube.deny(Deny::new("patch", "deployments/scale"));
    let scale = failing_stderr(
        dir,
        &["scale", &format!("deploy/{APP}"), "--replicas=2", "-n", NS],
    );
    assert!(scale.contains("forbidden"), "{scale}");
    assert_eq!(
        kube.object("deployments", NS, APP).expect("deployment")["spec"]["replicas"],
        1
    );

    let forbidden: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert_eq!(forbidden.len(), 2, "{forbidden:?}");
}

#[test]
fn kubectl_creates_and_deletes_a_configmap() {
    let (kube, dir) = started();
    let dir = dir.path();
    let manifest = dir.join("settings.json");
    let configmap = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"a": "b"},
    });
    std::fs::write(&manifest, configmap.to_string()).expect("write manifest");
    let manifest = manifest.to_string_lossy().into_owned();
    let created = ok_stdout(
        dir,
        &["create", "--validate=false", "-f", &manifest, "-n", NS],
    );
    assert!(created.contains("configmap/settings created"), "{created}");
    let value = ok_stdout(
        dir,
        &[
            "get",
            "cm",
            "settings",
            "-n",
            NS,
            "-o",
            "jsonpath={.data.a}",
        ],
    );
    assert_eq!(value, "b");
    let deleted = ok_stdout(dir, &["delete", "configmap", "settings", "-n", NS]);
    assert!(deleted.contains("deleted"), "{deleted}");
    assert!(kube.object("configmaps", NS, "settings").is_none());
    let again = failing_stderr(dir, &["delete", "configmap", "settings", "-n", NS]);
    assert!(again.contains("NotFound"), "{again}");
    let generated = failing_stderr(
        dir,
        &[
            "create",
            "configmap",
            "other",
            "--from-literal=a=b",
            "-n",
            NS,
        ],
    );
    assert!(generated.contains("protobuf"), "{generated}");
    let namespaces = ok_stdout(dir, &["get", "ns"]);
    assert!(namespaces.contains(NS), "{namespaces}");
}

#[test]
fn kubectl_scales_a_statefulset_through_its_scale_subresource() {
    let (kube, dir) = started();
    let dir = dir.path();
    kube.insert(
        "statefulsets",
        NS,
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "worker"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "worker"}}},
        }),
    );
    let listed = ok_stdout(dir, &["get", "sts", "-n", NS]);
    assert!(
        listed.contains("worker") && listed.contains("2/2"),
        "{listed}"
    );
    ok_stdout(
        dir,
        &["scale", "statefulset/worker", "--replicas=3", "-n", NS],
    );
    let replicas = ok_stdout(
        dir,
        &[
            "get",
            "sts",
            "worker",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas, "3");
    assert!(kube.requested(
        "PATCH",
        "/apis/apps/v1/namespaces/poolside/statefulsets/worker/scale"
    ));
}
