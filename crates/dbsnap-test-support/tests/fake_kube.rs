//! Real kubectl 1.33 against the fake Kubernetes API server.

use dbsnap_test_support::fake_kube::{Deny, FakeKube, APP, APP_SECRET};
use dbsnap_test_support::kubectl_bin;
use std::path::Path;
use std::process::{Command, Output};

const NS: &str = "poolside";
const PG_URL: &str = "postgresql://app:pw-123@127.0.0.1:55432/shop";

/// kubectl with the fake's kubeconfig and a private cache and home.
fn kubectl_command(dir: &Path) -> Command {
    let mut command = Command::new(kubectl_bin());
    command
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .env("HOME", dir)
        .env_remove("KUBECONFIG");
    command
}

/// Runs kubectl (as [`kubectl_command`]) and logs what it said.
fn kubectl(dir: &Path, args: &[&str]) -> Output {
    let output = kubectl_command(dir)
        .args(args)
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

/// kubectl's own watches: `get -w` sees a pod added, changed and deleted;
/// `wait --for=condition=Ready` follows a slow start; `wait --for=delete`
/// returns once the pod is gone.
#[test]
fn kubectl_watches_pods_come_and_go() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    let (kube, dir) = started();
    let dir = dir.path();
    kube.set_pod_start_delay(std::time::Duration::from_millis(1500));
    let mut watching = kubectl_command(dir)
        .args([
            "get",
            "pods",
            "-n",
            NS,
            "-w",
            "--output-watch-events",
            "--no-headers",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubectl get -w");
    let (seen, lines) = std::sync::mpsc::channel::<String>();
    let stdout = watching.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // EVENT NAME READY STATUS RESTARTS AGE, from the server's tables.
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.get(1) == Some(&"watched") {
                let _ = seen.send(words[..2].join(" "));
            }
        }
    });
    // Let the watch start before the pod exists.
    std::thread::sleep(std::time::Duration::from_millis(500));
    kube.insert(
        "pods",
        NS,
        serde_json::json!({"metadata": {"name": "watched"}, "spec": {"containers": [{
            "name": "main", "image": "app:1", "command": ["sleep", "300"]}]}}),
    );
    let ready = ok_stdout(
        dir,
        &[
            "wait",
            "-n",
            NS,
            "--for=condition=Ready",
            "pod/watched",
            "--timeout=30s",
        ],
    );
    assert_eq!(ready.trim(), "pod/watched condition met");

    let deleting = kubectl_command(dir)
        .args([
            "wait",
            "-n",
            NS,
            "--for=delete",
            "pod/watched",
            "--timeout=30s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kubectl wait --for=delete");
    std::thread::sleep(std::time::Duration::from_millis(500));
    ok_stdout(dir, &["delete", "pod", "watched", "-n", NS, "--wait=false"]);
    let gone = deleting.wait_with_output().unwrap();
    assert!(gone.status.success());

    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !events.iter().any(|e: &String| e.starts_with("DELETED")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => events.push(line),
            Err(_) => break,
        }
    }
    let _ = watching.kill();
    let _ = watching.wait();
    assert_eq!(
        events.first().map(String::as_str),
        Some("ADDED watched"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "MODIFIED watched"), "{events:?}");
    assert_eq!(
        events.last().map(String::as_str),
        Some("DELETED watched"),
        "{events:?}"
    );
    assert!(kube
        .requests()
        .iter()
        .any(|r| r.query.contains("watch=true")));
}
