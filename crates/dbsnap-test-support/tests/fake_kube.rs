//! The fake Kubernetes API server, checked with a client no one here
//! wrote: stock kubectl 1.33 gets, scales, patches and is refused through it.

use std::process::Command;

use dbsnap_test_support::fake_kube::FakeKube;
use dbsnap_test_support::kubectl_bin;

fn kubectl(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(config)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kubectl_gets_scales_and_is_refused_through_the_fake() {
    let kube = FakeKube::start();
    kube.seed_app("poolside", "db.poolside.svc", 5432, "core", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&config, "poolside");

    let (ok, out, err) = kubectl(&config, &["get", "deploy"]);
    assert!(ok, "{err}");
    assert!(out.contains("core-api"), "{out}");

    let (ok, out, err) = kubectl(&config, &["get", "deployment", "core-api", "-o", "json"]);
    assert!(ok, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
            ["name"],
        "core-db"
    );

    let (ok, out, err) = kubectl(&config, &["scale", "deploy/core-api", "--replicas=0"]);
    assert!(ok, "{err}");
    assert!(out.contains("scaled"), "{out}");
    let (ok, out, err) = kubectl(
        &config,
        &[
            "get",
            "deploy",
            "core-api",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "0");

    let (ok, out, err) = kubectl(
        &config,
        &[
            "patch",
            "deploy",
            "core-api",
            "--type=merge",
            "-p",
            r#"{"metadata":{"annotations":{"dbsnap.io/replicas-before":"2"}}}"#,
        ],
    );
    assert!(ok, "{err} {:#?}", kube.requests());
    assert!(out.contains("patched"), "{out}");

    let (ok, _, err) = kubectl(&config, &["get", "secret", "missing"]);
    assert!(!ok);
    assert!(
        err.contains("NotFound") && err.contains("\"missing\" not found"),
        "{err} {:#?}",
        kube.requests()
    );

    kube.forbid("list", "pods");
    let (ok, _, err) = kubectl(&config, &["get", "pods"]);
    assert!(!ok);
    assert!(
        err.contains("forbidden") && err.contains("cannot list resource \"pods\""),
        "{err}"
    );

    // The log shows what kubectl asked for: never the Secret core-db.
    let log = kube.requests();
    assert!(
        log.iter()
            .any(|l| l
                .starts_with("PATCH /apis/apps/v1/namespaces/poolside/deployments/core-api/scale")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("/secrets/core-db")),
        "{log:#?}"
    );
}
