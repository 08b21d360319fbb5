//! dbsnap running in a pod of the cluster (as the Helm chart's CronJobs
//! run it): no kubeconfig, the service account's token, CA and namespace
//! at the standard paths (a private mount namespace per run, nothing from
//! the host there), `KUBERNETES_SERVICE_HOST`; the fake API server with
//! the unmodified kube-rs client. dbsnap reaches the app's database
//! directly (no jump pod), its password from its own environment under
//! the app's variable name, and never reads a Secret; a variable it lacks,
//! and a right its service account lacks, are said as such.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fingerprint, run, Home};
use dbsnap_test_support::fake_kube::{Deny, FakeKube, TOKEN};
use dbsnap_test_support::Cluster;

const NS: &str = "poolside";
const PASSWORD: &str = "Pw-in-a-Secret-7";

struct Pod {
    home: Home,
    cluster: Cluster,
    kube: FakeKube,
}

impl Pod {
    fn new() -> Pod {
        let cluster = Cluster::start(15);
        cluster.create_db("core");
        cluster.psql(
            "core",
            &format!(
                "CREATE ROLE core_app LOGIN CREATEDB PASSWORD '{PASSWORD}';
                 ALTER DATABASE core OWNER TO core_app;
                 SET ROLE core_app;
                 CREATE TABLE jobs (id bigserial PRIMARY KEY, name text NOT NULL);
                 INSERT INTO jobs (name) SELECT 'job ' || g FROM generate_series(1, 3000) g;
                 CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
                 INSERT INTO schema_migrations VALUES (20261101, false);"
            ),
        );
        let kube = FakeKube::start();
        kube.seed_app(NS, &cluster.url_as("core_app", Some(PASSWORD), "core"));
        let home = Home::new();
        let sa = home.path().join("serviceaccount");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), TOKEN).unwrap();
        std::fs::write(sa.join("ca.crt"), kube.ca_pem()).unwrap();
        std::fs::write(sa.join("namespace"), NS).unwrap();
        Pod {
            home,
            cluster,
            kube,
        }
    }

    /// `dbsnap ARGS --k8s deploy/core-api -n poolside` as a pod runs it:
    /// in its own mount namespace with a fresh /run holding only the
    /// service account's files, the API server's address in the
    /// environment, no kubeconfig, and `env` (the job's variables).
    fn dbsnap(&self, args: &[&str], env: &[(&str, String)]) -> Command {
        let (host, port) = self
            .kube
            .url()
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .unwrap();
        let mut c = self.home.dbsnap();
        c.env_remove("KUBECONFIG")
            .env("HOME", self.home.path())
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_PORT", port)
            .env("SA", self.home.path().join("serviceaccount"))
            .env("DBSNAP_PG_BIN", self.cluster.bin_dir());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut unshare = Command::new("unshare");
        unshare.args(["--mount", "--propagation", "private", "--", "sh", "-c"]);
        unshare.arg(
            "set -e; mount -t tmpfs none /run; d=/run/secrets/kubernetes.io/serviceaccount; \
             mkdir -p $d; cp \"$SA\"/token \"$SA\"/ca.crt \"$SA\"/namespace $d/; exec \"$@\"",
        );
        unshare.arg("sh").arg(c.get_program());
        unshare.args(c.get_args());
        unshare
            .args(args)
            .args(["--k8s", "deploy/core-api", "-n", NS]);
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => unshare.env(k, v),
                None => unshare.env_remove(k),
            };
        }
        unshare
            .current_dir(self.home.path())
            .stdin(std::process::Stdio::null());
        unshare
    }

    fn database_url(&self) -> (&'static str, String) {
        (
            "DATABASE_URL",
            self.cluster.url_as("core_app", Some(PASSWORD), "core"),
        )
    }

    /// Requests that created a pod or read a Secret.
    fn pods_or_secrets(&self) -> Vec<String> {
        self.kube
            .requests()
            .into_iter()
            .filter(|r| {
                r.path.contains("/secrets") || (r.method == "POST" && r.path.contains("/pods"))
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

fn newest_snapshot(home: &Home) -> std::path::PathBuf {
    let dir = home.path().join("snapshots");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    files.sort();
    files.pop().expect("a snapshot")
}

#[test]
fn in_a_pod_dbsnap_reaches_the_database_directly_with_its_own_environment() {
    let p = Pod::new();
    let before = fingerprint(&p.cluster, "core");
    let env = [p.database_url()];
    let (code, out, err) = run(&mut p.dbsnap(&["create", "--no-progress"], &env));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("reaching its databases directly from this pod"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD) && !out.contains(PASSWORD));
    let file = newest_snapshot(&p.home);
    assert_eq!(
        common::metadata(&file)["kubernetes"]["workload"],
        "deploy/core-api"
    );

    // A restore (the app scaled down and back) and a drill the same way.
    p.cluster.psql("core", "DELETE FROM jobs WHERE id % 2 = 0");
    let file_arg = file.display().to_string();
    let (code, out, err) = run(&mut p.dbsnap(
        &[
            "restore",
            "--yes",
            "--no-progress",
            "--no-safety-snapshot",
            "--file",
            &file_arg,
            "--scale",
            "deploy/core-api",
        ],
        &env,
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(fingerprint(&p.cluster, "core"), before);
    // --scale: down and back, with the service account's rights.
    let patches = p
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/deployments/core-api"))
        .count();
    assert!(
        patches >= 2,
        "the app was not scaled down and up: {patches} patches"
    );
    assert_eq!(
        p.kube.object("deployments", NS, "core-api").unwrap()["spec"]["replicas"],
        1,
        "scaled back"
    );
    let (code, out, err) =
        run(&mut p.dbsnap(&["drill", "--no-progress", "--file", &file_arg], &env));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("drill passed:"), "{out}");

    assert_eq!(
        p.pods_or_secrets(),
        Vec::<String>::new(),
        "a pod was started or a Secret read"
    );
    // The requests came with the service account's token, from its file.
    assert!(p.kube.requested(
        "GET",
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/core-api")
    ));
}

#[test]
fn a_missing_variable_and_a_missing_right_are_said() {
    let p = Pod::new();
    let (code, _, err) = run(&mut p.dbsnap(&["create", "--no-progress"], &[]));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("DATABASE_URL is not in its environment") && err.contains("core-api-db"),
        "{err}"
    );
    assert!(
        err.contains("app.env") && err.contains("--via jump"),
        "{err}"
    );
    assert!(
        !Path::new(&p.home.path().join("snapshots")).exists()
            || newest_snapshot_count(&p.home) == 0
    );

    p.kube.deny(Deny::new("get", "deployments"));
    let (code, _, err) = run(&mut p.dbsnap(&["create", "--no-progress"], &[p.database_url()]));
    assert_eq!(code, 18, "{err}");
    assert!(err.contains("RBAC denied"), "{err}");
    assert_eq!(p.pods_or_secrets(), Vec::<String>::new());
}

fn newest_snapshot_count(home: &Home) -> usize {
    std::fs::read_dir(home.path().join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "tar"))
                .count()
        })
        .unwrap_or(0)
}

/// Outside a pod (a kubeconfig, no service account), `--k8s` still goes
/// through a jump pod: the direct route is only the default in the cluster.
#[test]
fn outside_the_cluster_the_jump_pod_stays_the_default() {
    let p = Pod::new();
    let kubeconfig = p.home.path().join("kubeconfig");
    p.kube.write_kubeconfig(&kubeconfig).unwrap();
    p.kube
        .map_command("dbsnap", Path::new(env!("CARGO_BIN_EXE_dbsnap")));
    let mut c = p.home.dbsnap();
    c.args([
        "create",
        "--no-progress",
        "--k8s",
        "deploy/core-api",
        "-n",
        NS,
        "--kubeconfig",
    ])
    .arg(&kubeconfig)
    .env("DBSNAP_PG_BIN", p.cluster.bin_dir())
    .env("KUBERNETES_SERVICE_HOST", "127.0.0.1");
    let (code, out, err) = run(&mut c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("starting a jump pod"), "{err}");
}
