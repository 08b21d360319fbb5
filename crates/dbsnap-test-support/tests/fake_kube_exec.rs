//! Exec into the fake's pods over websockets: stock kubectl 1.33 and the
//! kube-rs client, binary-safe, concurrent, with exit codes and refusals.

mod common;

use common::{client, running, shell_pod, wait_for, wait_no_processes};
use dbsnap_test_support::fake_kube::{Deny, FakeKube};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, DeleteParams, PostParams};
use serde_json::json;
use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NS: &str = "shop";

/// Bytes of every value, in a scrambled order (xorshift), `len` long.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A fake with a namespace and a running pod `jump` (`sleep 3600`), its
/// kubeconfig in `dir`.
fn with_jump_pod(dir: &Path) -> FakeKube {
    let kube = FakeKube::start();
    kube.write_kubeconfig(&dir.join("kubeconfig"))
        .expect("write kubeconfig");
    kube.insert("namespaces", "", json!({"metadata": {"name": NS}}));
    kube.insert(
        "secrets",
        NS,
        json!({"metadata": {"name": "db"}, "stringData": {"password": "pw-123"}}),
    );
    kube.insert(
        "pods",
        NS,
        json!({
            "metadata": {"name": "jump"},
            "spec": {"containers": [{
                "name": "relay", "image": "dbsnap:1", "command": ["sleep", "3600"],
                "env": [{"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
            }]},
        }),
    );
    let ready = kube.wait_for_pod(NS, "jump", common::PATIENCE, running);
    assert!(ready.is_some(), "the jump pod never ran");
    kube
}

/// Runs kubectl against the fake with `stdin` piped in.
fn kubectl(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = common::kubectl_command(dir, NS)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("kubectl output");
    feeder.join().expect("stdin feeder");
    eprintln!(
        "kubectl {args:?} -> {}\nstdout: {} bytes\nstderr: {}",
        output.status,
        output.stdout.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn kubectl_exec_round_trips_megabytes_and_propagates_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let kube = with_jump_pod(dir);

    let data = noise(3 * 1024 * 1024 + 17, 7);
    let echoed = kubectl(dir, &["exec", "-i", "jump", "--", "cat"], &data);
    assert!(echoed.status.success());
    assert_eq!(echoed.stdout.len(), data.len());
    assert!(echoed.stdout == data, "the bytes came back changed");

    let env = kubectl(
        dir,
        &[
            "exec",
            "jump",
            "--",
            "sh",
            "-c",
            "echo $PGPASSWORD; echo to-stderr >&2",
        ],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&env.stdout), "pw-123\n");
    assert!(String::from_utf8_lossy(&env.stderr).contains("to-stderr"));

    let failed = kubectl(dir, &["exec", "jump", "--", "sh", "-c", "exit 7"], b"");
    assert_eq!(failed.status.code(), Some(7));
    let missing = kubectl(dir, &["exec", "jump", "--", "no-such-command"], b"");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no-such-command"),
        "the error names the command"
    );

    let exec_path = format!("/api/v1/namespaces/{NS}/pods/jump/exec");
    let upgraded = kube
        .requests()
        .iter()
        .filter(|r| r.path == exec_path && r.status == 101)
        .count();
    assert_eq!(upgraded, 4, "{:#?}", kube.requests());

    kube.deny(Deny::new("create", "pods/exec").in_namespace(NS));
    let denied = kubectl(dir, &["exec", "jump", "--", "true"], b"");
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains(
            r#"cannot create resource "pods/exec" in API group "" in the namespace "shop""#
        ),
        "{stderr}"
    );
}

#[test]
fn kubectl_exec_into_a_pod_that_is_not_running_fails() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let kube = with_jump_pod(dir);
    kube.fail_image_pulls("broken");
    kube.insert(
        "pods",
        NS,
        json!({"metadata": {"name": "stuck"}, "spec": {"containers": [{
            "name": "main", "image": "broken:1", "command": ["sleep", "1"]}]}}),
    );
    let refused = kubectl(dir, &["exec", "stuck", "--", "true"], b"");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(r#"container not found ("main")"#),
        "{stderr}"
    );
}

/// One exec of `argv` through kube-rs: writes `input`, closes stdin, reads
/// stdout to the end; returns it and the final status.
async fn exec(pods: &Api<Pod>, argv: &[&str], input: Vec<u8>) -> (Vec<u8>, Status) {
    let params = AttachParams::default()
        .container("relay")
        .stdin(true)
        .stdout(true)
        .stderr(false);
    let mut attached = pods.exec("jump", argv.to_vec(), &params).await.unwrap();
    let mut stdin = attached.stdin().unwrap();
    let mut stdout = attached.stdout().unwrap();
    let status = attached.take_status().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut output = Vec::new();
    stdout.read_to_end(&mut output).await.unwrap();
    writer.await.unwrap();
    let status = status.await.expect("a status");
    attached.join().await.unwrap();
    (output, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_runs_concurrent_binary_execs() {
    let dir = tempfile::tempdir().unwrap();
    let kube = with_jump_pod(dir.path());
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);

    let sessions: Vec<_> = (0..6)
        .map(|i| {
            let pods = pods.clone();
            tokio::spawn(async move {
                let data = noise(1024 * 1024 + i, i as u64 + 1);
                let (echoed, status) = exec(&pods, &["cat"], data.clone()).await;
                assert!(echoed == data, "session {i} changed the bytes");
                assert_eq!(status.status.as_deref(), Some("Success"));
            })
        })
        .collect();
    for session in sessions {
        session.await.unwrap();
    }

    let (_, status) = exec(&pods, &["sh", "-c", "exit 5"], Vec::new()).await;
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.message.as_deref(),
        Some("command terminated with non-zero exit code: error executing command [sh -c exit 5], exit code 5")
    );
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
    assert_eq!(causes[0].message.as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_pod_ends_its_exec_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let kube = with_jump_pod(dir.path());
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let params = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(false);
    let mut attached = pods
        .exec("jump", vec!["sleep", "300"], &params)
        .await
        .unwrap();
    let status = attached.take_status().unwrap();
    let params = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    pods.delete("jump", &params).await.unwrap();
    let status = tokio::time::timeout(common::PATIENCE, status)
        .await
        .expect("the session ended")
        .expect("a status");
    assert_eq!(
        status.reason.as_deref(),
        Some("NonZeroExitCode"),
        "{status:?}"
    );
    common::wait_gone(&kube, NS, "jump").await;
    wait_no_processes(&kube).await;

    // Exec into a pod that is gone is a 404.
    let gone = pods
        .exec("jump", vec!["true"], &AttachParams::default())
        .await;
    let Err(kube::Error::Api(status)) = gone else {
        panic!("exec into a deleted pod: {:?}", gone.err());
    };
    assert_eq!(status.code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_dropped_by_its_client_kills_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let kube = with_jump_pod(dir.path());
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);
    let before = kube.live_processes();
    let params = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(false);
    let attached = pods
        .exec("jump", vec!["sleep", "300"], &params)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while kube.live_processes() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exec never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    attached.abort();
    drop(attached);
    while kube.live_processes() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exec outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pods.create(&PostParams::default(), &shell_pod("other", "sleep 300"))
        .await
        .unwrap();
    wait_for(&kube, NS, "other", running).await;
}
