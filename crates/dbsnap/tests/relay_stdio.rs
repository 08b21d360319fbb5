//! `dbsnap __relay` as a jump pod runs it: a process whose environment
//! holds the password, speaking the wire protocol on stdin and stdout. Here
//! each connection through a private tunnel starts one such process, as an
//! exec session would, and pg_dump and dbsnap's own connections use it with
//! no password on their side.

use std::process::Stdio;
use std::sync::Arc;

use dbsnap_pg::tunnel::{Dial, Duplex, Tunnel};
use dbsnap_pg::ConnInfo;
use dbsnap_test_support::Cluster;

const PASSWORD: &str = "only-in-the-pod";

/// Starts `dbsnap __relay ARGS` with `env` for each connection.
fn process_dial(args: Vec<String>, env: Vec<(String, String)>) -> Dial {
    Arc::new(move || {
        let (args, env) = (args.clone(), env.clone());
        Box::pin(async move {
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbsnap"))
                .args(&args)
                .env_clear()
                .envs(env)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().expect("stdin");
            let stdout = child.stdout.take().expect("stdout");
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Ok(Box::new(tokio::io::join(stdout, stdin)) as Box<dyn Duplex>)
        })
    })
}

fn cluster() -> Cluster {
    let cluster = Cluster::start(15);
    cluster.create_db("core");
    cluster.psql(
        "core",
        &format!(
            "CREATE ROLE core_app LOGIN PASSWORD '{PASSWORD}';
             ALTER DATABASE core OWNER TO core_app;
             SET ROLE core_app;
             CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;"
        ),
    );
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_process_serves_a_url_from_its_environment() {
    let cluster = cluster();
    let url = cluster.url_as("core_app", Some(PASSWORD), "core");
    let dial = process_dial(
        vec!["__relay".into(), "--url-env".into(), "DATABASE_URL".into()],
        vec![("DATABASE_URL".into(), url)],
    );
    let tunnel = Tunnel::open("a relay process", dial).unwrap();
    let mut local = ConnInfo::resolve_with(
        "host=db.example user=core_app dbname=core",
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap();
    local.password = None;
    let client = dbsnap_pg::connect(&tunnel.point(&local)).await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20000);

    // pg_dump through the same tunnel: several MB cross the relay's stdio.
    let out = tokio::process::Command::new(cluster.bin_dir().join("pg_dump"))
        .args(["-Fc", "-w", "-U", "core_app", "-d", "core", "-h"])
        .arg(tunnel.socket_dir())
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/dev/null")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.starts_with(b"PGDMP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_takes_a_password_variable_and_describes_without_it() {
    let cluster = cluster();
    let conninfo = format!(
        "host=127.0.0.1 port={} user=core_app dbname=core",
        cluster.port
    );
    let env = vec![("DB_PASSWORD".to_string(), PASSWORD.to_string())];
    let args = vec![
        "__relay".to_string(),
        "--conninfo".into(),
        conninfo.clone(),
        "--password-env".into(),
        "DB_PASSWORD".into(),
    ];
    let tunnel = Tunnel::open("a relay process", process_dial(args.clone(), env.clone())).unwrap();
    let local = ConnInfo::resolve_with(
        &conninfo,
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .unwrap();
    let client = dbsnap_pg::connect(&tunnel.point(&local)).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    let mut describe = args;
    describe.push("--describe".into());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbsnap"))
        .args(&describe)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("user=core_app") && text.contains("dbname=core"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // A missing variable is a clear error, not a hang.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbsnap"))
        .args(["__relay", "--url-env", "NOPE"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOPE is not set"));
}
