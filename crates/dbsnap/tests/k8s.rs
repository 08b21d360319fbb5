//! `--k8s` end to end: a real PostgreSQL, the fake Kubernetes API server
//! (pods run as local processes, exec over WebSocket), the unmodified
//! kube-rs client inside dbsnap. The databases are found in the app's
//! Deployment, reached through a relay in a jump pod, and the Secret
//! holding the password is never read by dbsnap.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fingerprint, run, run_json, Home};
use dbsnap_test_support::fake_kube::{Deny, FakeKube, APP_SECRET};
use dbsnap_test_support::Cluster;

const NS: &str = "poolside";

/// A cluster with the app's database, a fake API server whose namespace
/// holds the app (password in a Secret), and a kubeconfig for it.
struct Setup {
    home: Home,
    cluster: Cluster,
    kube: FakeKube,
    kubeconfig: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Self::with_image_dbsnap(true)
    }

    /// `image_has_dbsnap`: whether the jump pod's image has `dbsnap` on
    /// its PATH (the binary under test); without it dbsnap copies itself in.
    fn with_image_dbsnap(image_has_dbsnap: bool) -> Setup {
        let cluster = Cluster::start(18);
        cluster.create_db("core");
        cluster.psql(
            "core",
            "CREATE ROLE core_app LOGIN CREATEDB PASSWORD 'Pw-in-a-Secret-7';
             ALTER DATABASE core OWNER TO core_app;
             SET ROLE core_app;
             CREATE TABLE jobs (id bigserial PRIMARY KEY, name text NOT NULL, payload jsonb);
             INSERT INTO jobs (name, payload) SELECT 'job ' || g, jsonb_build_object('n', g) FROM generate_series(1, 5000) g;
             CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
             INSERT INTO schema_migrations VALUES (20261101, false);",
        );
        let kube = FakeKube::start();
        // The image's `dbsnap` is the binary under test (one test copies it
        // in instead, see `the_relay_is_copied_into_an_image_without_dbsnap`).
        if image_has_dbsnap {
            kube.map_command("dbsnap", std::path::Path::new(env!("CARGO_BIN_EXE_dbsnap")));
        }
        kube.seed_app(
            NS,
            &cluster.url_as("core_app", Some("Pw-in-a-Secret-7"), "core"),
        );
        let home = Home::new();
        let kubeconfig = home.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig).unwrap();
        Setup {
            home,
            cluster,
            kube,
            kubeconfig,
        }
    }

    /// `dbsnap ARGS --k8s deploy/core-api -n poolside --kubeconfig F`, with
    /// the cluster's client tools and no password anywhere in its
    /// environment.
    fn dbsnap(&self, args: &[&str]) -> Command {
        let mut c = self.home.dbsnap();
        c.args(args)
            .args(["--k8s", "deploy/core-api", "-n", NS, "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--pg-bin")
            .arg(self.cluster.bin_dir())
            .env_remove("KUBECONFIG");
        c
    }

    fn secret_reads(&self) -> Vec<String> {
        self.kube
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/secrets"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn pods_left(&self) -> Vec<String> {
        self.kube
            .objects("pods", Some(NS))
            .into_iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .filter(|n| n.starts_with("dbsnap-"))
            .collect()
    }

    /// An app session holding `mode` (`ACCESS EXCLUSIVE`, `ACCESS SHARE`)
    /// on `jobs` in an open transaction; returns once the lock is granted.
    /// Kill the child to let go.
    fn app_locks_jobs(&self, mode: &str) -> std::process::Child {
        use std::io::Write;
        use std::process::Stdio;
        let mut app = Command::new(self.cluster.bin_dir().join("psql"))
            .args(["-X", "-q"])
            .arg(self.cluster.url("core"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = app.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; LOCK TABLE jobs IN {mode} MODE; SELECT 1;").unwrap();
        stdin.flush().unwrap();
        // `ACCESS SHARE` is `AccessShareLock` in pg_locks.
        let lock: String = mode
            .split_whitespace()
            .map(|w| w[..1].to_string() + &w[1..].to_lowercase())
            .collect();
        wait_until(
            &self.cluster,
            "core",
            &format!("SELECT count(*) FROM pg_locks WHERE relation = 'jobs'::regclass AND granted AND mode = '{lock}Lock'"),
            "the app's lock",
        );
        app
    }

    /// Someone deletes the run's jump pod, with stock kubectl.
    fn delete_jump_pod_with_kubectl(&self) {
        let pod = self.pods_left().pop().expect("the jump pod");
        let out = Command::new(dbsnap_test_support::kubectl_bin())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "pod", &pod, "-n", NS, "--wait=false"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits (bounded) until no dbsnap pod is left and their processes
    /// are gone (a killed process takes a moment to die).
    fn assert_no_pods_left(&self) {
        let started = Instant::now();
        while (!self.pods_left().is_empty() || self.kube.live_processes() > 0)
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            self.pods_left(),
            Vec::<String>::new(),
            "jump pods outlived the run"
        );
        assert_eq!(
            self.kube.live_processes(),
            0,
            "pod processes outlived the run"
        );
    }
}

fn snapshot_file(home: &Home) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(home.snapshots())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    files.sort();
    files.pop().expect("a snapshot file")
}

#[test]
fn create_and_restore_through_a_jump_pod_without_reading_the_secret() {
    let s = Setup::new();
    let before = fingerprint(&s.cluster, "core");

    let (code, out, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "create failed\nstdout: {out}\nstderr: {err}");
    assert!(
        err.contains("DATABASE_URL"),
        "the plan names where the database came from: {err}"
    );
    assert!(!err.contains("Pw-in-a-Secret-7") && !out.contains("Pw-in-a-Secret-7"));
    let file = snapshot_file(&s.home);
    let (code, _, err) = run(s.home.dbsnap().arg("verify").arg(&file));
    assert_eq!(code, 0, "{err}");
    s.assert_no_pods_left();

    // The app changes the data; the restore brings the snapshot back.
    s.cluster.psql(
        "core",
        "DELETE FROM jobs WHERE id % 3 = 0; UPDATE jobs SET name = 'changed' WHERE id < 10;",
    );
    assert_ne!(fingerprint(&s.cluster, "core"), before);
    let (code, out, err) = run(s
        .dbsnap(&["restore", "--yes", "--no-progress", "--no-safety-snapshot"])
        .arg("--file")
        .arg(&file));
    assert_eq!(code, 0, "restore failed\nstdout: {out}\nstderr: {err}");
    assert_eq!(fingerprint(&s.cluster, "core"), before);
    s.assert_no_pods_left();

    // A drill through the same route: scratch databases on the app's
    // server, made and dropped by the app's role, the live one untouched.
    let (code, out, err) = run(s
        .dbsnap(&["drill", "--no-progress"])
        .arg("--file")
        .arg(&file));
    assert_eq!(code, 0, "drill failed\nstdout: {out}\nstderr: {err}");
    assert!(out.contains("drill passed:"), "{out}");
    assert_eq!(fingerprint(&s.cluster, "core"), before);
    assert_eq!(
        s.cluster
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname LIKE '\\_\\_dbsnap%'"
            )
            .trim(),
        "0"
    );
    s.assert_no_pods_left();

    assert_eq!(
        s.secret_reads(),
        Vec::<String>::new(),
        "dbsnap read {APP_SECRET} or another Secret"
    );
}

#[test]
fn kubernetes_failures_are_named_with_what_to_do() {
    let s = Setup::new();

    // The workload does not exist.
    let mut c = s.home.dbsnap();
    c.args(["create", "--k8s", "deploy/nope", "-n", NS, "--kubeconfig"])
        .arg(&s.kubeconfig);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("deploy/nope not found in namespace poolside"),
        "{err}"
    );

    // No kubeconfig at all.
    let mut c = s.home.dbsnap();
    c.args(["create", "--k8s", "deploy/core-api", "--kubeconfig"])
        .arg(s.home.path().join("missing-kubeconfig"));
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("missing-kubeconfig does not exist") && err.contains("--kubeconfig"),
        "{err}"
    );

    // A context the kubeconfig does not have: named, with those it has.
    let mut c = s.home.dbsnap();
    c.args([
        "create",
        "--k8s",
        "deploy/core-api",
        "--context",
        "prod",
        "--kubeconfig",
    ])
    .arg(&s.kubeconfig);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("context prod is not in") && err.contains("(it has: fake)"),
        "{err}"
    );

    // RBAC: no right to create pods.
    s.kube.deny(Deny::new("create", "pods"));
    let (code, _, err) = run(&mut s.dbsnap(&["create"]));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("RBAC denied: cannot create pods in namespace poolside"),
        "{err}"
    );
    assert_eq!(s.home.snapshot_dir_entries(), Vec::<String>::new());
    s.assert_no_pods_left();
}

#[test]
fn an_image_that_cannot_be_pulled_says_to_pass_image() {
    let s = Setup::new();
    s.kube.fail_image_pulls("no-such-image");
    let (code, _, err) = run(s
        .dbsnap(&["create"])
        .args(["--image", "registry.example/no-such-image:1"]));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("ImagePullBackOff") || err.contains("ErrImagePull"),
        "{err}"
    );
    assert!(err.contains("--image"), "{err}");
    s.assert_no_pods_left();
}

#[test]
fn jump_create_prints_a_psql_line_without_the_password_and_jump_delete_removes_it() {
    let s = Setup::new();
    let mut c = s.home.dbsnap();
    c.args([
        "--json",
        "jump-create",
        "--k8s",
        "deploy/core-api",
        "-n",
        NS,
        "--kubeconfig",
    ])
    .arg(&s.kubeconfig);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{err}");
    let pod = v["pod"].as_str().unwrap().to_string();
    let line = v["psql"][0].as_str().unwrap();
    assert!(
        line.starts_with(&format!(
            "kubectl --kubeconfig {} exec -it -n {NS} {pod} -- ",
            s.kubeconfig.display()
        )),
        "{line}"
    );
    assert!(!line.contains("Pw-in-a-Secret-7"), "{line}");
    assert!(s.pods_left().contains(&pod), "the pod is left running");

    let mut c = s.home.dbsnap();
    c.args(["jump-delete", "-n", NS, "--kubeconfig"])
        .arg(&s.kubeconfig);
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&pod), "{out}");
    s.assert_no_pods_left();
}

/// The app's Deployment as the fake holds it.
fn deployment(s: &Setup) -> serde_json::Value {
    s.kube
        .object("deployments", NS, "core-api")
        .expect("the app's Deployment")
}

#[test]
fn a_crash_while_the_app_is_scaled_down_is_recovered_by_resume() {
    let s = Setup::new();
    let before = fingerprint(&s.cluster, "core");
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "{err}");
    let file = snapshot_file(&s.home);
    s.cluster.psql(
        "core",
        "INSERT INTO jobs (name) VALUES ('after the snapshot')",
    );
    let changed = fingerprint(&s.cluster, "core");
    assert_ne!(changed, before);

    // Killed (like kill -9) once the copy is loaded, before the swap: the
    // app is at 0 replicas, the jump pod is orphaned.
    let out = s
        .dbsnap(&[
            "restore",
            "--yes",
            "--drop",
            "--no-progress",
            "--no-safety-snapshot",
        ])
        .args(["--scale", "deploy/core-api", "--file"])
        .arg(&file)
        .env("DBSNAP_FAILPOINT", "restore-copy-ready")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("failpoint"), "{err}");
    let d = deployment(&s);
    assert_eq!(d["spec"]["replicas"], 0, "{d}");
    assert_eq!(
        d["metadata"]["annotations"]["dbsnap.io/replicas-before"],
        "1"
    );
    assert_eq!(
        fingerprint(&s.cluster, "core"),
        changed,
        "the live database was touched"
    );

    // resume: through a new jump pod, removes the half-made copy and
    // scales the app back; the orphaned pod is swept.
    let mut c = s.home.dbsnap();
    c.args([
        "resume",
        "--k8s",
        "deploy/core-api",
        "-n",
        NS,
        "--kubeconfig",
    ])
    .arg(&s.kubeconfig);
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "resume failed\nstdout: {out}\nstderr: {err}");
    let d = deployment(&s);
    assert_eq!(d["spec"]["replicas"], 1, "{d}");
    assert!(
        d["metadata"]["annotations"]["dbsnap.io/replicas-before"].is_null(),
        "{d}"
    );
    assert_eq!(fingerprint(&s.cluster, "core"), changed);
    let copies = s.cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname <> 'core' AND datname LIKE 'core%'",
    );
    assert_eq!(copies.trim(), "0", "a half-loaded copy was left");
    s.assert_no_pods_left();
    assert_eq!(s.secret_reads(), Vec::<String>::new());
}

#[test]
fn scale_down_and_back_around_a_replacing_restore() {
    let s = Setup::new();
    let before = fingerprint(&s.cluster, "core");
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "{err}");
    let file = snapshot_file(&s.home);
    s.cluster.psql("core", "TRUNCATE jobs");
    let (code, out, err) = run(s
        .dbsnap(&["restore", "--yes", "--drop", "--no-progress"])
        .args(["--scale", "deploy/core-api", "--file"])
        .arg(&file));
    assert_eq!(code, 0, "restore failed\nstdout: {out}\nstderr: {err}");
    // The plan says what happens to the app in words, not dbsnap's own commands.
    assert!(
        err.contains("the app is stopped first (scale deploy/core-api in namespace poolside to 0, waiting up to 5 min for its pods to be gone) and scaled back after")
            && !err.contains("k8s-scale"),
        "{err}"
    );
    // Two patches of the app: to 0 (and its pods gone), then back.
    let patches = s
        .kube
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/core-api"))
        .count();
    assert_eq!(patches, 2, "{err}");
    assert_eq!(fingerprint(&s.cluster, "core"), before);
    let d = deployment(&s);
    assert_eq!(d["spec"]["replicas"], 1);
    s.assert_no_pods_left();
}

/// Waits (bounded) for `sql` (a count) on `db` to be non-zero.
fn wait_until(cluster: &Cluster, db: &str, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.psql(db, sql).trim() == "0" {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_during_a_create_through_the_cluster_leaves_no_pod_and_no_session() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::process::Stdio;

    let s = Setup::new();
    // The app holds a lock, so pg_dump waits behind it (through the relay).
    let mut app = s.app_locks_jobs("ACCESS EXCLUSIVE");
    let mut child = s
        .dbsnap(&["create", "--no-progress", "--max-wait", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        &s.cluster,
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%' AND wait_event_type = 'Lock'",
        "dbsnap waiting for the lock through the relay",
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "dbsnap did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(130));
    s.assert_no_pods_left();
    // The waiting session was cancelled, not left queued behind the app.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = s.cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%'",
        );
        if left.trim() == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "dbsnap sessions left: {left}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.home.snapshot_dir_entries(), Vec::<String>::new());
    let _ = app.kill();
    let _ = app.wait();
}

#[test]
fn a_jump_pod_deleted_midway_fails_the_run_and_publishes_nothing() {
    use std::process::Stdio;

    let s = Setup::new();
    let mut app = s.app_locks_jobs("ACCESS EXCLUSIVE");
    let child = s
        .dbsnap(&["create", "--no-progress", "--max-wait", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        &s.cluster,
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%' AND wait_event_type = 'Lock'",
        "dbsnap waiting for the lock through the relay",
    );
    s.delete_jump_pod_with_kubectl();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(18), "{err}");
    assert!(err.contains("stopped during the run"), "{err}");
    assert_eq!(s.home.snapshot_dir_entries(), Vec::<String>::new());
    s.assert_no_pods_left();
    let _ = app.kill();
    let _ = app.wait();
}

#[test]
fn the_relay_is_copied_into_an_image_without_dbsnap_and_removed_after() {
    let s = Setup::with_image_dbsnap(false);
    let child = s
        .dbsnap(&["create", "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    s.assert_no_pods_left();
    // The copy lived in the pod's /tmp (here the machine's): gone.
    let left: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dbsnap-") && n.ends_with(&format!("-{pid}")))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(s.secret_reads(), Vec::<String>::new());
}

/// The app's database runs in the cluster (a chart's StatefulSet and
/// Service `db`), which port-forwards reach; the app names it by its
/// Service name.
fn in_cluster_database() -> Setup {
    let s = Setup::new();
    let url = "postgresql://core_app:Pw-in-a-Secret-7@db.charts.svc:5432/core";
    s.kube.seed_app("charts", url);
    s.kube.seed_database("charts", "db", s.cluster.port);
    s
}

fn port_forward(s: &Setup, args: &[&str]) -> Command {
    let mut c = s.home.dbsnap();
    c.args(args)
        .args([
            "--k8s",
            "deploy/core-api",
            "-n",
            "charts",
            "--via",
            "port-forward",
        ])
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--pg-bin")
        .arg(s.cluster.bin_dir());
    c
}

#[test]
fn port_forward_reaches_postgresql_in_the_cluster_with_a_local_password() {
    let s = in_cluster_database();
    let before = fingerprint(&s.cluster, "core");

    // Without a password here, the server refuses, and dbsnap says so.
    let (code, _, err) = run(&mut port_forward(&s, &["create", "--no-progress"]));
    assert_eq!(code, 4, "{err}");

    // With the password from the environment: a snapshot, no Secret read.
    let (code, _, err) =
        run(port_forward(&s, &["create", "--no-progress"]).env("PGPASSWORD", "Pw-in-a-Secret-7"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.secret_reads(), Vec::<String>::new());
    let file = snapshot_file(&s.home);
    s.cluster.psql("core", "DELETE FROM jobs WHERE id > 100");
    let file = file.to_string_lossy().into_owned();
    let (code, out, err) = run(port_forward(
        &s,
        &[
            "restore",
            "--yes",
            "--no-progress",
            "--no-safety-snapshot",
            "--file",
            &file,
        ],
    )
    .env("PGPASSWORD", "Pw-in-a-Secret-7"));
    assert_eq!(code, 0, "restore failed\nstdout: {out}\nstderr: {err}");
    assert_eq!(fingerprint(&s.cluster, "core"), before);
    assert_eq!(s.kube.live_processes(), 0);
}

#[test]
fn port_forward_reads_the_secret_only_when_allowed() {
    let s = in_cluster_database();
    let (code, _, err) = run(&mut port_forward(
        &s,
        &["create", "--no-progress", "--read-secret"],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        s.secret_reads(),
        vec![format!(
            "GET /api/v1/namespaces/charts/secrets/{APP_SECRET}"
        )]
    );
    // --read-secret means nothing to the jump pod route.
    let (code, _, err) = run(&mut s.dbsnap(&["create", "--read-secret"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--read-secret applies only with --via port-forward"),
        "{err}"
    );
}

/// An app whose database is outside the cluster (an address here) has no
/// Service to port-forward to: said so, with the jump pod as the way.
#[test]
fn port_forward_to_a_database_outside_the_cluster_names_the_jump_pod() {
    let s = Setup::new();
    let (code, _, err) = run(&mut s.dbsnap(&["create", "--no-progress", "--via", "port-forward"]));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("the database host 127.0.0.1 is not a Service in namespace")
            && err.contains("drop --via port-forward"),
        "{err}"
    );
    assert_eq!(s.home.snapshot_dir_entries(), Vec::<String>::new());
    s.assert_no_pods_left();
}

#[test]
fn objects_are_stored_cleaned_and_written_out_for_kubectl() {
    let s = Setup::new();
    let (code, _, err) = run(&mut s.dbsnap(&["create", "--no-progress", "--k8s-objects"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        s.secret_reads(),
        Vec::<String>::new(),
        "objects without --include-secrets read no Secret"
    );
    let file = snapshot_file(&s.home);
    let (code, _, err) = run(s.home.dbsnap().arg("verify").arg(&file));
    assert_eq!(code, 0, "{err}");

    let out_dir = s.home.path().join("objects");
    let (code, out, err) = run(s
        .home
        .dbsnap()
        .args(["k8s-objects", "--out"])
        .arg(&out_dir)
        .arg(&file));
    assert_eq!(code, 0, "{err}");
    let deployment = out_dir.join(NS).join("deployment-core-api.yaml");
    assert!(out.contains("deployment-core-api.yaml"), "{out}");
    let text = std::fs::read_to_string(&deployment).unwrap();
    assert!(text.contains("kind: \"Deployment\""), "{text}");
    for owned in ["resourceVersion", "uid:", "managedFields", "status:"] {
        assert!(!text.contains(owned), "{owned} left in {text}");
    }
    assert!(!out_dir
        .join(NS)
        .join(format!("secret-{APP_SECRET}.yaml"))
        .exists());
    // Stock kubectl reads every file back.
    let parsed = Command::new(dbsnap_test_support::kubectl_bin())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args([
            "create",
            "--dry-run=client",
            "--validate=false",
            "-o",
            "name",
            "-R",
            "-f",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&parsed.stdout);
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert!(names.contains("deployment.apps/core-api"), "{names}");

    // Writing again into the same place overwrites nothing.
    let (code, _, err) = run(s
        .home
        .dbsnap()
        .args(["k8s-objects", "--out"])
        .arg(&out_dir)
        .arg(&file));
    assert_eq!(code, 2, "{err}");

    // With --include-secrets: a warning, and the Secret is in the snapshot.
    let (code, _, err) = run(&mut s.dbsnap(&[
        "create",
        "--no-progress",
        "--k8s-objects",
        "--include-secrets",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: --include-secrets"), "{err}");
}

#[test]
fn volume_snapshots_are_taken_together_and_listed() {
    let s = Setup::new();
    s.kube.seed_database(NS, "db", s.cluster.port);
    for pvc in ["data-db-0", "wal-db-0"] {
        s.kube.seed_claim(NS, pvc);
    }
    let mut c = s.home.dbsnap();
    c.args([
        "--json",
        "volume-snapshot",
        "create",
        "--pvc",
        "data-db-0",
        "--pvc",
        "wal-db-0",
    ])
    .args(["--scale", "sts/db", "-n", NS, "--kubeconfig"])
    .arg(&s.kubeconfig);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{err}");
    let taken = v["volume_snapshots"].as_array().unwrap();
    assert_eq!(taken.len(), 2, "{v}");
    assert!(taken.iter().all(|t| t["ready"] == true), "{v}");
    let sts = s.kube.object("statefulsets", NS, "db").unwrap();
    assert_eq!(
        sts["spec"]["replicas"], 1,
        "the database is scaled back: {sts}"
    );

    // A claim that does not exist: refused before the app is touched.
    let mut c = s.home.dbsnap();
    c.args(["volume-snapshot", "create", "--pvc", "data-db-9"])
        .args(["--scale", "sts/db", "-n", NS, "--kubeconfig"])
        .arg(&s.kubeconfig);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("persistentvolumeclaim data-db-9 not found in namespace"),
        "{err}"
    );
    let sts = s.kube.object("statefulsets", NS, "db").unwrap();
    assert_eq!(sts["spec"]["replicas"], 1, "{sts}");
    assert!(
        sts["metadata"]["annotations"]["dbsnap.io/replicas-before"].is_null(),
        "{sts}"
    );

    let mut c = s.home.dbsnap();
    c.args(["volume-snapshot", "list", "-n", NS, "--kubeconfig"])
        .arg(&s.kubeconfig);
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("data-db-0") && out.contains("wal-db-0") && out.contains("yes"),
        "{out}"
    );
}

#[test]
fn every_way_a_jump_pod_cannot_start_is_named() {
    // Quota: no room for one more pod.
    let s = Setup::new();
    let pods_now = s.kube.objects("pods", Some(NS)).len();
    s.kube.set_pod_quota(NS, pods_now);
    let (code, _, err) = run(&mut s.dbsnap(&["create"]));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("no room for the jump pod") && err.contains("exceeded quota"),
        "{err}"
    );
    s.assert_no_pods_left();

    // A pod that does not start in time: the reason, the flag, and no pod left.
    let s = Setup::new();
    s.kube.set_pod_start_delay(Duration::from_secs(30));
    let (code, _, err) = run(s.dbsnap(&["create"]).args(["--pod-timeout", "2s"]));
    assert_eq!(code, 18, "{err}");
    assert!(err.contains("was not ready within 2 s"), "{err}");
    assert!(err.contains("--pod-timeout"), "{err}");
    s.assert_no_pods_left();

    // exec not allowed.
    let s = Setup::new();
    s.kube.deny(Deny::new("create", "pods/exec"));
    let (code, _, err) = run(&mut s.dbsnap(&["create"]));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("RBAC denied: cannot create pods/exec"),
        "{err}"
    );
    s.assert_no_pods_left();
}

#[test]
fn an_app_without_database_settings_and_an_autoscaled_app_are_refused() {
    let s = Setup::new();
    s.kube.insert(
        "deployments",
        NS,
        serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "frontend"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "frontend"}},
                "template": {"metadata": {"labels": {"app": "frontend"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1",
                        "env": [{"name": "LOG_LEVEL", "value": "info"}]}]}}}}),
    );
    let mut c = s.home.dbsnap();
    c.args([
        "create",
        "--k8s",
        "deploy/frontend",
        "-n",
        NS,
        "--kubeconfig",
    ])
    .arg(&s.kubeconfig);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("no database settings found in deploy/frontend"),
        "{err}"
    );
    assert!(err.contains("DATABASE_URL"), "{err}");

    // An autoscaler would start the app again mid-restore: refused, nothing changed.
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "{err}");
    let file = snapshot_file(&s.home);
    s.kube.insert(
        "horizontalpodautoscalers",
        NS,
        serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "core-api-hpa"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "core-api"},
                "minReplicas": 1, "maxReplicas": 4}}),
    );
    let before = fingerprint(&s.cluster, "core");
    let (code, _, err) = run(s
        .dbsnap(&["restore", "--yes", "--drop", "--no-progress"])
        .args(["--scale", "deploy/core-api", "--file"])
        .arg(&file));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("HorizontalPodAutoscaler core-api-hpa"),
        "{err}"
    );
    assert!(
        !err.contains("restore plan"),
        "refused before the plan: {err}"
    );
    assert_eq!(fingerprint(&s.cluster, "core"), before);
    assert_eq!(deployment(&s)["spec"]["replicas"], 1);
    s.assert_no_pods_left();
}

#[test]
fn the_psql_line_of_jump_create_works_through_stock_kubectl() {
    let s = Setup::new();
    let mut c = s.home.dbsnap();
    c.args([
        "--json",
        "jump-create",
        "--k8s",
        "deploy/core-api",
        "-n",
        NS,
        "--kubeconfig",
    ])
    .arg(&s.kubeconfig);
    let (code, v, err) = run_json(&mut c);
    assert_eq!(code, 0, "{err}");
    let lines = v["psql"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "one database, one line: {lines:?}");
    let line = lines[0].as_str().unwrap().to_string();
    // The line as printed (its --kubeconfig included), without a terminal
    // and with a query to run.
    let (kubectl, inner) = line.split_once(" -- sh -c '").unwrap();
    let inner = inner.trim_end_matches('\'');
    let words: Vec<&str> = kubectl.split_whitespace().collect();
    assert_eq!(
        words[..3],
        [
            "kubectl",
            "--kubeconfig",
            &s.kubeconfig.display().to_string()
        ]
    );
    let out = Command::new(dbsnap_test_support::kubectl_bin())
        .args(words[1..].iter().filter(|w| **w != "-it"))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "{inner} -XAtc 'SELECT current_user, count(*) FROM jobs'"
        ))
        .env_remove("PGPASSWORD")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "core_app|5000");
    // The delete line as printed.
    let delete = v["jump_delete"].as_str().unwrap();
    let words: Vec<&str> = delete.split_whitespace().collect();
    assert_eq!(words[0], "dbsnap");
    let mut c = s.home.dbsnap();
    c.args(&words[1..]);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 0, "{err}");
    s.assert_no_pods_left();
}

#[test]
fn a_jump_pod_deleted_during_a_data_only_restore_leaves_the_database_as_it_was() {
    use std::process::Stdio;

    let s = Setup::new();
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "{err}");
    let file = snapshot_file(&s.home);
    s.cluster.psql("core", "DELETE FROM jobs WHERE id > 10");
    let before = fingerprint(&s.cluster, "core");
    // The app holds a lock: the restore's transaction waits behind it.
    let mut app = s.app_locks_jobs("ACCESS SHARE");
    let child = s
        .dbsnap(&[
            "restore",
            "--yes",
            "--no-progress",
            "--no-safety-snapshot",
            "--lock-timeout",
            "60s",
        ])
        .arg("--file")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        &s.cluster,
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%' AND wait_event_type = 'Lock'",
        "the restore waiting for the lock through the relay",
    );
    s.delete_jump_pod_with_kubectl();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(18), "{err}");
    assert!(err.contains("stopped during the run"), "{err}");
    let _ = app.kill();
    let _ = app.wait();
    assert_eq!(
        fingerprint(&s.cluster, "core"),
        before,
        "half a restore was committed"
    );
    s.assert_no_pods_left();
}

/// The jump pod's image: from a real registry (Debian's
/// `docker-registry`), the app's or one named with `--registry`.
#[path = "k8s/image.rs"]
mod image;

#[test]
fn a_snapshot_of_another_namespaces_app_is_refused_naming_both() {
    let s = Setup::new();
    // The same app in another namespace, on the same server: only the
    // workload's namespace tells them apart.
    s.kube.seed_app(
        "staging",
        &s.cluster
            .url_as("core_app", Some("Pw-in-a-Secret-7"), "core"),
    );
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "{err}");
    let file = snapshot_file(&s.home);
    let meta = common::metadata(&file);
    assert_eq!(
        meta["kubernetes"],
        serde_json::json!({"namespace": NS, "workload": "deploy/core-api"})
    );
    s.cluster.psql("core", "DELETE FROM jobs WHERE id > 10");
    let before = fingerprint(&s.cluster, "core");
    let mut cmd = s.home.dbsnap();
    cmd.args([
        "restore",
        "--yes",
        "--no-progress",
        "--no-safety-snapshot",
        "--file",
    ])
    .arg(&file)
    .args(["--k8s", "deploy/core-api", "-n", "staging", "--kubeconfig"])
    .arg(&s.kubeconfig)
    .arg("--pg-bin")
    .arg(s.cluster.bin_dir())
    .env_remove("KUBECONFIG");
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 19, "{err}");
    assert!(
        err.contains("taken for deploy/core-api in namespace poolside, the restore goes to deploy/core-api in namespace staging"),
        "{err}"
    );
    assert_eq!(fingerprint(&s.cluster, "core"), before);
    s.assert_no_pods_left();
    // Its own namespace restores as before.
    let (code, _, err) = run(s
        .dbsnap(&["restore", "--yes", "--no-progress", "--no-safety-snapshot"])
        .arg("--file")
        .arg(&file));
    assert_eq!(code, 0, "{err}");
}

fn pods_created(s: &Setup) -> usize {
    s.kube
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pods"))
        .count()
}

#[test]
fn what_needs_no_jump_pod_is_checked_before_one_starts() {
    let s = Setup::new();
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 0, "{err}");
    let file = snapshot_file(&s.home);
    s.assert_no_pods_left();
    let before = pods_created(&s);
    // No snapshot named and no terminal to pick one on.
    let (code, _, err) = run(&mut s.dbsnap(&["restore", "--yes"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no snapshot given"), "{err}");
    // A --scale typo.
    let file = file.to_str().unwrap();
    let (code, _, err) = run(&mut s.dbsnap(&[
        "restore",
        "--yes",
        "--scale",
        "deploy/Core_API",
        "--file",
        file,
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a Kubernetes name"), "{err}");
    // A workload reference that is not KIND/NAME never reaches the API.
    let mut c = s.home.dbsnap();
    c.args(["create", "--k8s", "deploy/a/b", "-n", NS, "--kubeconfig"])
        .arg(&s.kubeconfig);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"a/b\" is not a Kubernetes name") && !err.contains("405"),
        "{err}"
    );
    assert!(!s.kube.requests().iter().any(|r| r.path.contains("/a/b")));
    // Nothing to roll back, resume or clean up.
    let recovery = |args: &[&str]| {
        let mut c = s.home.dbsnap();
        c.args(args)
            .args(["--k8s", "deploy/core-api", "-n", NS, "--kubeconfig"])
            .arg(&s.kubeconfig);
        run(&mut c)
    };
    let (code, _, err) = recovery(&["rollback", "--yes"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no restore replaced a database"), "{err}");
    let (code, out, err) = recovery(&["resume"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no interrupted restore"), "{out}");
    let (code, _, err) = recovery(&["cleanup", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pods_created(&s),
        before,
        "a jump pod was started for nothing"
    );
}

#[test]
fn an_answer_that_is_not_the_kubernetes_api_is_one_sentence() {
    let s = Setup::new();
    // A proxy in front of the API server answers with its own page.
    s.kube.answer_plain(
        "/deployments/core-api",
        502,
        "<html><body>Bad Gateway</body></html>",
    );
    let (code, _, err) = run(s.dbsnap(&["create"]).arg("--no-progress"));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains(
            "cannot get deploy/core-api in namespace poolside: the API server answered 502"
        ),
        "{err}"
    );
    // kube-rs's own line about the body it could not parse is not shown,
    // nor written to the log.
    assert!(
        !err.contains("warning:") && !err.contains("Failed to parse"),
        "{err}"
    );
    assert!(
        !s.home.logs().contains("Failed to parse"),
        "{}",
        s.home.logs()
    );
    assert_eq!(pods_created(&s), 0);
}
