//! Shared by the fake Kubernetes tests: a kube-rs client for a fake, and pods.

#![allow(dead_code)]

use dbsnap_test_support::fake_kube::FakeKube;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::time::Duration;

/// How long a test waits for the fake to reach a state.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A kube-rs client for the fake, through a kubeconfig as users have one.
pub async fn client(kube: &FakeKube) -> kube::Client {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&path).expect("write kubeconfig");
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

/// A pod of one container `main` (image `busybox`) running `script` with `sh -c`.
pub fn shell_pod(name: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "jump"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sh", "-c", script],
            }],
        },
    }))
    .expect("a pod")
}

/// Polls the fake (off the async runtime's threads) until the pod passes `check`.
pub async fn wait_for(
    kube: &FakeKube,
    ns: &str,
    name: &str,
    check: fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(pod) = kube.object("pods", ns, name).filter(check) {
            return pod;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {ns}/{name} never got there: {:#}",
            kube.object("pods", ns, name).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the pod is `Running` and ready.
pub fn running(pod: &serde_json::Value) -> bool {
    pod["status"]["phase"] == "Running" && pod["status"]["containerStatuses"][0]["ready"] == true
}

/// Polls until the pod is gone.
pub async fn wait_gone(kube: &FakeKube, ns: &str, name: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while kube.object("pods", ns, name).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {ns}/{name} never went"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until no process the fake started is alive.
pub async fn wait_no_processes(kube: &FakeKube) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while kube.live_processes() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} processes left",
            kube.live_processes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// kubectl 1.33 with the kubeconfig `dir/kubeconfig`, a private cache and
/// home in `dir`, in namespace `ns`.
pub fn kubectl_command(dir: &std::path::Path, ns: &str) -> std::process::Command {
    let mut command = std::process::Command::new(dbsnap_test_support::kubectl_bin());
    command
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["-n", ns])
        .env("HOME", dir)
        .env_remove("KUBECONFIG");
    command
}

/// Runs kubectl (as [`kubectl_command`]), asserts it succeeded, returns stdout.
pub fn kubectl_ok(dir: &std::path::Path, ns: &str, args: &[&str]) -> String {
    let output = kubectl_command(dir, ns)
        .args(args)
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kubectl {args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
