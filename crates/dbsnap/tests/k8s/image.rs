//! The jump pod's image through `--k8s`: from the app's registry, an
//! environment variable, or `--registry`, against a real docker-registry.

use super::*;
use dbsnap_test_support::registry::{Auth, Registry, PASSWORD, USER};

/// Sets the app container's image (and env, if given).
fn set_app(s: &Setup, image: &str, env: Option<(&str, &str)>) {
    s.kube.update("deployments", NS, "core-api", |d| {
        let c = &mut d["spec"]["template"]["spec"]["containers"][0];
        c["image"] = image.into();
        if let Some((name, value)) = env {
            c["env"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": name, "value": value}));
        }
    });
}

/// `setup.dbsnap(args)` with only these registry settings in its
/// environment: its own HOME, `DOCKER_CONFIG` in it (a login there if
/// the test wrote one) and the CA if given.
fn dbsnap(s: &Setup, args: &[&str], ca: Option<&std::path::Path>) -> Command {
    let mut c = s.dbsnap(args);
    for var in [
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
    ] {
        c.env_remove(var);
    }
    c.env("HOME", s.home.path())
        .env("DOCKER_CONFIG", s.home.path().join("docker"));
    if let Some(ca) = ca {
        c.env("SSL_CERT_FILE", ca);
    }
    c
}

fn jump_pod_images(s: &Setup) -> Vec<String> {
    s.kube
        .objects("pods", Some(NS))
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("dbsnap-"))
        })
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn the_newest_dbsnap_in_the_apps_registry_is_used_and_an_unreachable_one_falls_back() {
    let s = Setup::new();
    let registry = Registry::builder()
        .auth(Auth::Basic)
        .tags(
            "forge/dbsnap",
            &["1.2.0", "1.10.0", "1.9.3", "latest", "v1.10.1-rc1"],
        )
        .start();
    let host = registry.host().to_string();
    registry.write_docker_config(&s.home.path().join("docker"), USER, PASSWORD);
    set_app(&s, &format!("{host}/forge/core-api:2.1"), None);

    let (code, out, err) = run(&mut dbsnap(
        &s,
        &["create", "--no-progress"],
        Some(registry.ca_file()),
    ));
    assert_eq!(code, 0, "create failed\nstdout: {out}\nstderr: {err}");
    let chosen = format!("{host}/forge/dbsnap:1.10.0");
    assert!(
        err.contains(&format!(
            "k8s: jump pod image {chosen} (newest version tag of {host}/forge/dbsnap, in the app's registry {host}/forge, from its image {host}/forge/core-api:2.1)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("starting a jump pod (image {chosen})")),
        "{err}"
    );
    assert!(!err.contains(PASSWORD) && !s.home.logs().contains(PASSWORD));
    assert!(
        s.home.logs().contains("jump pod image"),
        "the choice is logged"
    );
    s.assert_no_pods_left();

    // The app's registry is gone: the fallback, and why.
    let closed = format!("127.0.0.1:{}", dbsnap_test_support::free_port());
    set_app(&s, &format!("{closed}/forge/core-api:2.1"), None);
    let (code, _, err) = run(&mut dbsnap(
        &s,
        &["create", "--no-progress"],
        Some(registry.ca_file()),
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "k8s: jump pod image postgres:18-bookworm (fallback: {closed}/forge/dbsnap: cannot reach the registry: {closed}: "
        )),
        "{err}"
    );
    s.assert_no_pods_left();
}

#[test]
fn the_repository_env_names_the_registry_and_force_insecure_allows_plain_http() {
    let s = Setup::new();
    let registry = Registry::builder()
        .tls(false)
        .tags("forge/tools/dbsnap", &["2.0.0", "2.0.1", "nightly"])
        .start();
    let host = registry.host().to_string();
    // The container's own image is a mirror; the variable names the
    // real repository.
    let repository = format!("{host}/forge/tools/api");
    set_app(
        &s,
        "mirror.invalid/core-api:2",
        Some(("FORGE_API_IMAGE_REPOSITORY", &repository)),
    );
    let config = s.home.path().join("dbsnap.toml");
    std::fs::write(
        &config,
        format!(
            "[targets.core]\ndatabases = []\n[targets.core.k8s]\nworkload = \"deploy/core-api\"\nnamespace = \"{NS}\"\nkubeconfig = \"{}\"\nimage_repository_env = \"FORGE_API_IMAGE_REPOSITORY\"\n",
            s.kubeconfig.display()
        ),
    )
    .unwrap();
    let jump_create = |extra: &[&str]| {
        let mut c = s.home.dbsnap();
        c.args(["--json", "jump-create", "-t", "core"])
            .args(extra)
            .env("HOME", s.home.path());
        run_json(&mut c)
    };

    // Without --force-insecure the plain registry is not used.
    let (code, v, err) = jump_create(&[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["image"], "postgres:18-bookworm");
    assert_eq!(
        v["image_reason"],
        format!("fallback: {host}/forge/tools/dbsnap: {host} does not speak TLS (a plain HTTP registry?)")
    );

    let (code, v, err) = jump_create(&["--force-insecure"]);
    assert_eq!(code, 0, "{err}");
    let chosen = format!("{host}/forge/tools/dbsnap:2.0.1");
    assert_eq!(v["image"], chosen.as_str());
    assert_eq!(
        v["image_reason"],
        format!("newest version tag of {host}/forge/tools/dbsnap, in the app's registry {host}/forge/tools, from $FORGE_API_IMAGE_REPOSITORY = {repository}")
    );
    let images = jump_pod_images(&s);
    assert!(images.contains(&chosen), "{images:?}");
    assert!(
        images.contains(&"postgres:18-bookworm".to_string()),
        "{images:?}"
    );
    let mut c = s.home.dbsnap();
    c.args(["jump-delete", "-t", "core"]);
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 0, "{err}");
    s.assert_no_pods_left();
}

#[test]
fn a_named_registry_that_fails_is_an_error_and_force_insecure_leaves_the_api_verified() {
    let s = Setup::new();
    let registry = Registry::builder().tags("dbsnap", &["1.0.0"]).start();
    let host = registry.host().to_string();

    // Unreachable: an error, no pod.
    let closed = format!("127.0.0.1:{}", dbsnap_test_support::free_port());
    let (code, _, err) = run(&mut dbsnap(&s, &["create", "--registry", &closed], None));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains(&format!("cannot choose the jump pod image from --registry: {closed}/dbsnap: cannot reach the registry")),
        "{err}"
    );
    assert!(err.contains("--image"), "{err}");

    // Untrusted certificate: the error names --force-insecure.
    let (code, _, err) = run(&mut dbsnap(&s, &["create", "--registry", &host], None));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("TLS certificate is not accepted: its certificate is not signed by a trusted certificate authority"),
        "{err}"
    );
    assert!(err.contains("--force-insecure"), "{err}");
    assert!(!s
        .kube
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path.ends_with("/pods")));
    assert_eq!(s.pods_left(), Vec::<String>::new());

    // --force-insecure is for the registry only: a kubeconfig with the
    // wrong CA still fails.
    let wrong = s.home.path().join("kubeconfig-wrong-ca");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.kubeconfig).unwrap()).unwrap();
    let cluster = config["clusters"][0]["cluster"].as_object_mut().unwrap();
    cluster.remove("certificate-authority-data");
    cluster.insert(
        "certificate-authority".into(),
        registry.ca_file().display().to_string().into(),
    );
    std::fs::write(&wrong, config.to_string()).unwrap();
    let mut c = s.home.dbsnap();
    c.args([
        "create",
        "--k8s",
        "deploy/core-api",
        "-n",
        NS,
        "--kubeconfig",
    ])
    .arg(&wrong)
    .args(["--registry", &host, "--force-insecure"])
    .env("HOME", s.home.path());
    let (code, _, err) = run(&mut c);
    assert_eq!(code, 18, "{err}");
    // Said in words, not as kube-rs's "client error (Connect)".
    assert!(
        err.contains("cannot get deploy/core-api in namespace poolside: the Kubernetes API server is not trusted: its certificate is not signed by a trusted certificate authority")
            && err.contains("certificate-authority")
            && !err.contains("client error"),
        "{err}"
    );
    assert_eq!(s.pods_left(), Vec::<String>::new());

    // With the right kubeconfig it works, the certificate unverified.
    let (code, _, err) = run(&mut dbsnap(
        &s,
        &[
            "create",
            "--no-progress",
            "--registry",
            &host,
            "--force-insecure",
        ],
        None,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("k8s: jump pod image {host}/dbsnap:1.0.0 (newest version tag of {host}/dbsnap, from --registry)")),
        "{err}"
    );
    s.assert_no_pods_left();

    // A malformed --registry is a configuration error, before the cluster.
    let (code, _, err) = run(&mut dbsnap(
        &s,
        &["create", "--registry", "https://x.example"],
        None,
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force-insecure"), "{err}");
}

#[test]
fn a_registry_certificate_for_another_name_says_which_names_it_holds() {
    let s = Setup::new();
    let registry = Registry::builder()
        .tls_names(&["registry.internal"])
        .tags("dbsnap", &["1.0.0"])
        .start();
    let host = registry.host().to_string();
    let (code, _, err) = run(&mut dbsnap(
        &s,
        &["create", "--registry", &host],
        Some(registry.ca_file()),
    ));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains(&format!(
            "{host}'s TLS certificate is for registry.internal, not for 127.0.0.1"
        )) && err.contains("127.0.0.1 in its subjectAltName")
            && !err.contains("NotValidForName"),
        "{err}"
    );
    assert_eq!(s.pods_left(), Vec::<String>::new());
}
