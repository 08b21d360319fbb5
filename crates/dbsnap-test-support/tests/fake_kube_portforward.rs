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
