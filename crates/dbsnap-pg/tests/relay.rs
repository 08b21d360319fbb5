//! The relay and the tunnel against a real server: sessions opened with no
//! password on the client side (SCRAM and MD5 roles), pg_dump through the
//! tunnel, cancellation by the server's key, and clear errors for a wrong
//! password, an unreachable server and a far side that cannot be dialled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsnap_pg::relay;
use dbsnap_pg::tunnel::{Dial, Duplex, Tunnel};
use dbsnap_pg::{ConnInfo, PgErrorKind};
use dbsnap_test_support::{free_port, Cluster};

/// A dial that runs a relay in this process for each connection.
fn in_process(server: ConnInfo) -> Dial {
    Arc::new(move || {
        let server = server.clone();
        Box::pin(async move {
            let (near, far) = tokio::io::duplex(256 * 1024);
            tokio::spawn(async move { relay::serve(far, &server).await });
            Ok(Box::new(near) as Box<dyn Duplex>)
        })
    })
}

fn settings(cluster: &Cluster, user: &str, password: &str, db: &str) -> ConnInfo {
    ConnInfo::resolve(&cluster.url_as(user, Some(password), db)).unwrap()
}

/// What the local side knows: everything but the password.
fn named(cluster: &Cluster, user: &str, db: &str) -> ConnInfo {
    let mut info = ConnInfo::resolve(&cluster.url_as(user, None, db)).unwrap();
    info.password = None;
    info
}

fn cluster_with_roles() -> Cluster {
    let cluster = Cluster::start(18);
    // md5 in pg_hba.conf takes SCRAM from roles that have a SCRAM secret.
    cluster.set_hba("local all all md5\nhost all all 127.0.0.1/32 md5\nhost all all ::1/128 md5\n");
    cluster.create_db("shop");
    cluster.psql(
        "shop",
        "CREATE ROLE app LOGIN PASSWORD 'app-pw''\"x';
         SET password_encryption = 'md5';
         CREATE ROLE legacy LOGIN PASSWORD 'legacy-pw';
         CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
         GRANT SELECT ON items TO app, legacy;",
    );
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_open_without_a_password_on_the_client_side() {
    let cluster = cluster_with_roles();
    for (user, password) in [("app", "app-pw'\"x"), ("legacy", "legacy-pw")] {
        let tunnel = Tunnel::open(
            "a test relay",
            in_process(settings(&cluster, user, password, "postgres")),
        )
        .unwrap();
        // The client asks for `shop`; the relay connects as its own role.
        let client = dbsnap_pg::connect(&tunnel.point(&named(&cluster, "nobody", "shop")))
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT current_user::text, current_database()::text, count(*) FROM items",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), user);
        assert_eq!(row.get::<_, String>(1), "shop");
        assert_eq!(row.get::<_, i64>(2), 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_runs_through_the_tunnel() {
    let cluster = cluster_with_roles();
    let tunnel = Tunnel::open(
        "a test relay",
        in_process(settings(&cluster, "app", "app-pw'\"x", "shop")),
    )
    .unwrap();
    let dir = tunnel.socket_dir().to_path_buf();
    let bin = cluster.bin_dir().join("pg_dump");
    let out = tokio::process::Command::new(bin)
        .args([
            "--data-only",
            "--table=items",
            "-w",
            "-U",
            "app",
            "-d",
            "shop",
        ])
        .arg("-h")
        .arg(&dir)
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("999\titem 999"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_cancelled_by_the_servers_own_key() {
    let cluster = cluster_with_roles();
    let tunnel = Tunnel::open(
        "a test relay",
        in_process(settings(&cluster, "app", "app-pw'\"x", "shop")),
    )
    .unwrap();
    let client = dbsnap_pg::connect(&tunnel.point(&named(&cluster, "app", "shop")))
        .await
        .unwrap();
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeping.await.unwrap().unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .unwrap_or_default()
            .contains("canceling statement"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_client_as_postgresql_errors() {
    let cluster = cluster_with_roles();
    let local = named(&cluster, "app", "shop");

    let wrong = Tunnel::open(
        "a test relay",
        in_process(settings(&cluster, "app", "wrong", "shop")),
    )
    .unwrap();
    let err = dbsnap_pg::connect(&wrong.point(&local)).await.unwrap_err();
    assert_eq!(err.kind, PgErrorKind::Auth, "{err}");
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );

    let mut nowhere = settings(&cluster, "app", "x", "shop");
    nowhere.ports = vec![free_port()];
    let unreachable = Tunnel::open("a test relay", in_process(nowhere)).unwrap();
    let err = dbsnap_pg::connect(&unreachable.point(&local))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("relay could not reach"), "{err}");

    let broken: Dial =
        Arc::new(|| Box::pin(async { Err(std::io::Error::other("the jump pod is gone")) }));
    let refused = Tunnel::open("jump pod dbsnap-jump-x", broken).unwrap();
    let err = dbsnap_pg::connect(&refused.point(&local))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("through jump pod dbsnap-jump-x") && text.contains("the jump pod is gone"),
        "{text}"
    );
}

#[test]
fn the_socket_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let dial: Dial = Arc::new(|| Box::pin(async { Err(std::io::Error::other("unused")) }));
    let tunnel = Tunnel::open("x", dial).unwrap();
    let mode = std::fs::metadata(tunnel.socket_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let dir = tunnel.socket_dir().to_path_buf();
    drop(tunnel);
    drop(_guard);
    drop(rt);
    assert!(!dir.exists(), "the tunnel's directory outlived it");
}

/// A crashed run's tunnel directory (its process gone) is removed by the
/// next tunnel; a live process's is left alone.
#[test]
fn a_crashed_runs_socket_directory_is_swept_by_the_next_tunnel() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let tmp = std::env::temp_dir();
    let stale = tmp.join(format!("dbsnap-tunnel-{dead_pid}-crashed"));
    let live = tmp.join(format!("dbsnap-tunnel-{}-alive", std::process::id()));
    for dir in [&stale, &live] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(".s.PGSQL.5432"), b"").unwrap();
    }
    let dial: Dial = Arc::new(|| Box::pin(async { Err(std::io::Error::other("unused")) }));
    let tunnel = Tunnel::open("x", dial).unwrap();
    assert!(
        !stale.exists(),
        "the crashed run's directory is still there"
    );
    assert!(live.exists(), "a live process's directory was removed");
    std::fs::remove_dir_all(&live).unwrap();
    drop(tunnel);
}
