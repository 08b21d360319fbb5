//! Port-forward through the fake with kube-rs: a real PostgreSQL session
//! to a seeded in-cluster database pod, an echo server behind a process
//! pod, and the error of a port nothing listens on.

mod common;

use common::{client, running, wait_for};
use dbsnap_test_support::fake_kube::FakeKube;
use dbsnap_test_support::{versions, Cluster, SUPERUSER, SUPERUSER_PASSWORD};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NS: &str = "shop";

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_session_runs_through_a_port_forward_to_the_database_pod() {
    let cluster = Cluster::start(versions()[0]);
    let kube = FakeKube::start();
    kube.seed_database(NS, "db", cluster.port);
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);

    let mut forwarder = pods.portforward("db-0", &[5432]).await.unwrap();
    let stream = forwarder.take_stream(5432).expect("the port's stream");
    let mut config = tokio_postgres::Config::new();
    config
        .user(SUPERUSER)
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres");
    let (pg, connection) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .expect("a PostgreSQL session through the port-forward");
    let driver = tokio::spawn(connection);
    let row = pg
        .query_one(
            "select repeat('x', 4000000) as big, current_user::text as who",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("big").len(), 4_000_000);
    assert_eq!(row.get::<_, String>("who"), SUPERUSER);
    drop(pg);
    driver.await.unwrap().unwrap();
    forwarder.join().await.unwrap();
    assert!(kube.requested(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods/db-0/portforward")
    ));
}

/// An echo server on a free local port; returns the port.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_pod_s_port_is_the_local_port_and_unreachable_ports_say_so() {
    let port = echo_server().await;
    let kube = FakeKube::start();
    kube.insert(
        "pods",
        NS,
        json!({"metadata": {"name": "app"}, "spec": {"containers": [{
            "name": "main", "image": "app:1", "command": ["sleep", "300"]}]}}),
    );
    wait_for(&kube, NS, "app", running).await;
    let pods: Api<Pod> = Api::namespaced(client(&kube).await, NS);

    let sessions: Vec<_> = (0..4u8)
        .map(|i| {
            let pods = pods.clone();
            tokio::spawn(async move {
                let mut forwarder = pods.portforward("app", &[port]).await.unwrap();
                let mut stream = forwarder.take_stream(port).unwrap();
                let data: Vec<u8> = (0..300_000u32).map(|n| (n as u8) ^ i).collect();
                stream.write_all(&data).await.unwrap();
                let mut back = vec![0u8; data.len()];
                stream.read_exact(&mut back).await.unwrap();
                assert!(back == data, "session {i} changed the bytes");
            })
        })
        .collect();
    for session in sessions {
        session.await.unwrap();
    }

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut forwarder = pods.portforward("app", &[closed]).await.unwrap();
    let error = forwarder
        .take_error(closed)
        .unwrap()
        .await
        .expect("an error");
    assert!(
        error.contains(&format!("error forwarding port {closed} to pod app"))
            && error.contains("refused"),
        "{error}"
    );

    let missing = pods.portforward("nope", &[port]).await;
    assert!(
        matches!(&missing, Err(kube::Error::Api(s)) if s.code == 404),
        "{:?}",
        missing.err()
    );
}

/// A `kubectl port-forward` running in the background; killed on drop.
struct Forward {
    child: std::process::Child,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Forward {
    /// Starts `kubectl port-forward TARGET :REMOTE` and waits for its
    /// "Forwarding from 127.0.0.1:PORT" line.
    fn start(dir: &std::path::Path, target: &str, remote: u16) -> Forward {
        use std::io::BufRead as _;
        use std::process::Stdio;
        let mut child = common::kubectl_command(dir, NS)
            .args(["port-forward", target, &format!(":{remote}")])
            .args(["--address", "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl port-forward");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let errors = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(errors)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "kubectl port-forward printed nothing: {}",
                stderr.lock().unwrap()
            )
        });
        // Forwarding from 127.0.0.1:PORT -> REMOTE
        let port = first
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line: {first}"));
        // Keep draining stdout ("Handling connection for …").
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Forward {
            child,
            port,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kubectl 1.33 tunnels SPDY through a websocket for port-forward: psql
/// sessions through `pod/db-0` and `svc/db` reach the real PostgreSQL
/// behind the database pod, one after another and side by side, and a
/// port nothing listens on gets the kubelet's message.
#[test]
fn kubectl_port_forward_carries_postgresql_sessions() {
    let cluster = Cluster::start(versions()[0]);
    let kube = FakeKube::start();
    kube.seed_database(NS, "db", cluster.port);
    let dir = tempfile::tempdir().unwrap();
    kube.write_kubeconfig(&dir.path().join("kubeconfig"))
        .unwrap();

    for target in ["pod/db-0", "svc/db"] {
        let forward = Forward::start(dir.path(), target, 5432);
        let psql = |sql: &str| {
            let out = cluster
                .command("psql")
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .arg(format!(
                    "postgresql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
                    forward.port
                ))
                .args(["-c", sql])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "psql through kubectl port-forward {target}: {}\nkubectl: {}",
                String::from_utf8_lossy(&out.stderr),
                forward.stderr()
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(psql("select length(repeat('x', 3000000))"), "3000000");
        let together: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    s.spawn(move || {
                        psql(&format!(
                            "select {i} + count(*) from generate_series(1, 50000)"
                        ))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(together, ["50000", "50001", "50002"]);
        assert!(forward.stderr().is_empty(), "{}", forward.stderr());
    }
    assert!(kube.requested(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods/db-0/portforward")
    ));

    // A port nothing listens on: kubectl reports the kubelet's words.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    kube.insert(
        "pods",
        NS,
        json!({"metadata": {"name": "app"}, "spec": {"containers": [{
            "name": "main", "image": "app:1", "command": ["sleep", "300"]}]}}),
    );
    kube.wait_for_pod(NS, "app", std::time::Duration::from_secs(30), running)
        .expect("pod app running");
    let mut forward = Forward::start(dir.path(), "pod/app", closed);
    let refused = std::net::TcpStream::connect(("127.0.0.1", forward.port)).map(|mut s| {
        use std::io::Read as _;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf.len()
    });
    assert_eq!(refused.ok(), Some(0), "no bytes through a closed port");
    let status = forward.child.wait().unwrap();
    let stderr = forward.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("error forwarding port {closed} to pod app")),
        "{stderr}"
    );
}
