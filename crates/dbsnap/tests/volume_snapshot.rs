//! `volume-snapshot create --scale` against the fake Kubernetes API: pods
//! that are not gone within `--wait` are named, the app is scaled back,
//! nothing is snapshotted, and the hint names this command's `--wait`
//! (not create's and restore's `--scale-timeout`, which it does not take).

mod common;

use std::time::Duration;

use common::{run, Home};
use dbsnap_test_support::fake_kube::FakeKube;

const NS: &str = "poolside";

#[test]
fn pods_that_outlive_the_wait_name_this_commands_flag() {
    let kube = FakeKube::start();
    kube.seed_database(NS, "db", dbsnap_test_support::free_port());
    kube.seed_claim(NS, "data-db-0");
    assert!(
        kube.wait_for_pod(NS, "db-0", Duration::from_secs(30), |_| true)
            .is_some(),
        "the database's pod never appeared"
    );
    // A pod scaled away stays terminating longer than the test runs.
    kube.set_termination_delay(Duration::from_secs(3600));
    let home = Home::new();
    let kubeconfig = home.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let (code, _, err) = run(home
        .dbsnap()
        .args(["volume-snapshot", "create", "--pvc", "data-db-0"])
        .args([
            "--scale",
            "sts/db",
            "--wait",
            "1s",
            "-n",
            NS,
            "--kubeconfig",
        ])
        .arg(&kubeconfig));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("still running 1 s after scaling to 0: db-0"),
        "{err}"
    );
    assert!(err.contains("hint: raise --wait"), "{err}");
    assert!(!err.contains("--scale-timeout"), "{err}");
    let sts = kube.object("statefulsets", NS, "db").unwrap();
    assert_eq!(sts["spec"]["replicas"], 1, "scaled back: {sts}");
    assert!(kube.objects("volumesnapshots", Some(NS)).is_empty());
}
