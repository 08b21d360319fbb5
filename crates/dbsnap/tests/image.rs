//! dbsnap's image, built by `scripts/image.sh` without a container engine:
//! what `skopeo inspect` shows is what the image promises (uid/gid 70,
//! entrypoint `dbsnap`, version and source labels); its own file system,
//! with nothing from the host, runs `dbsnap --version`, `pg_dump --version`
//! and a real `dbsnap create`; pushed to a real registry with its version
//! tag, it is the image the jump pod's lookup picks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Home;
use dbsnap_k8s::image::{self, Given, ImageRequest};
use dbsnap_test_support::registry::Registry;
use dbsnap_test_support::{workspace_root, Cluster};
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Runs `args` inside the image's file system as the image's user, in a
/// private mount namespace: its own /proc and /tmp, a /dev with only the
/// usual device nodes and links, the image's environment, and of the host's files
/// only `volume`, at /snapshots (as a container's volume).
fn in_image(rootfs: &Path, env: &[String], volume: &Path, args: &[&str]) -> Command {
    let script = r#"set -e
r="$1"; v="$2"; shift 2
mkdir -p "$r/snapshots"
mount --bind "$v" "$r/snapshots"
mount -t proc proc "$r/proc"
mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
for d in null zero full random urandom tty; do
  touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"
done
# As every container runtime links them (dbsnap hands pg_dump its password
# file as /dev/fd/N).
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
exec chroot --userspec=70:70 "$r" "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--fork", "--", "sh", "-c", script, "sh"])
        .arg(rootfs)
        .arg(volume)
        .args(["/usr/bin/env", "-i"])
        .args(env)
        .args(args);
    cmd
}

#[test]
fn the_image_is_built_runs_on_its_own_and_is_the_one_the_jump_pod_lookup_picks() {
    let out = tempfile::tempdir().unwrap();
    let built = run(Command::new("bash")
        .arg(workspace_root().join("scripts/image.sh"))
        .env("DBSNAP_IMAGE_OUT", out.path()));
    let archive = PathBuf::from(built.lines().last().expect("the archive's path"));
    assert_eq!(
        archive,
        out.path().join(format!("dbsnap-{VERSION}.oci.tar")),
        "{built}"
    );
    let reference = format!("oci-archive:{}", archive.display());

    // What the image promises, as skopeo reads it.
    let config = json(&run(
        Command::new("skopeo").args(["inspect", "--config", &reference])
    ));
    let c = &config["config"];
    assert_eq!(c["User"], "70:70", "{config}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["dbsnap"]), "{config}");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{labels}"
    );
    let env: Vec<String> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    eprintln!(
        "image size: {} MiB (archive, compressed layers)",
        std::fs::metadata(&archive).unwrap().len() >> 20
    );

    // Its own file system, unpacked as a runtime would.
    let unpacked = tempfile::tempdir().unwrap();
    let layout = unpacked.path().join("oci");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &reference,
        &format!("oci:{}:{VERSION}", layout.display()),
    ]));
    let bundle = unpacked.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{VERSION}", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert!(
        !rootfs.join("usr/lib/postgresql/15").exists(),
        "the host's PostgreSQL is not in the image"
    );
    let volume = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(volume.path(), Some(70), Some(70)).unwrap();
    let ok = |args: &[&str]| run(&mut in_image(&rootfs, &env, volume.path(), args));
    assert_eq!(
        ok(&["dbsnap", "--version"]).trim(),
        format!("dbsnap {VERSION}")
    );
    assert!(
        ok(&["pg_dump", "--version"]).starts_with("pg_dump (PostgreSQL) 18."),
        "the image's pg_dump is PostgreSQL 18's"
    );
    assert_eq!(ok(&["id", "-u"]).trim(), "70");

    // A real snapshot, taken from inside the image; the host's dbsnap
    // restores it exactly.
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 5000) g",
    );
    let url = cluster.url("app");
    let created = ok(&[
        "sh",
        "-c",
        &format!("DBSNAP_HOME=/tmp/home dbsnap create --json --dir /snapshots -d '{url}'"),
    ]);
    let doc = json(&created);
    assert_eq!(doc["ok"], true, "{doc}");
    let pg_dump = doc["result"]["databases"][0]["pg_dump"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(pg_dump, "/usr/local/bin/pg_dump", "{doc}");
    let name = Path::new(doc["result"]["file"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_owned();
    let file = volume.path().join(name);
    let home = Home::new();
    let (code, v, err) = common::run_json(home.dbsnap().arg("verify").arg("--file").arg(&file));
    assert_eq!(code, 0, "{err}\n{v}");
    let (code, v, err) = common::run_json(
        home.dbsnap()
            .args([
                "restore",
                "--yes",
                "--create",
                "--map",
                "app=app_from_image",
            ])
            .arg("--file")
            .arg(&file)
            .arg("--pg-bin")
            .arg(dbsnap_test_support::bin_dir(18))
            .arg("-d")
            .arg(cluster.url("postgres")),
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        cluster.table_checksums("app_from_image"),
        cluster.table_checksums("app")
    );

    // Pushed with its version tag beside an older one, it is the image the
    // jump pod's lookup picks.
    let registry = Registry::builder().tags("dbsnap", &["0.0.1"]).start();
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(registry.ca_file(), certs.path().join("ca.crt")).unwrap();
    let pushed = format!("{}/dbsnap:{VERSION}", registry.host());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-cert-dir"])
        .arg(certs.path())
        .arg(&reference)
        .arg(format!("docker://{pushed}")));
    let ca = registry.ca_file().to_path_buf();
    let request = ImageRequest {
        image: None,
        registry: Some(Given {
            value: registry.host().to_string(),
            from: "--registry".into(),
        }),
        image_name: "dbsnap".into(),
        repository_env: None,
        options: image::registry::RegistryOptions {
            env: std::sync::Arc::new(move |name| {
                (name == "SSL_CERT_FILE").then(|| ca.display().to_string())
            }),
            ..Default::default()
        },
    };
    let workload = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example/app:1"}
    ]}}}});
    let resolved = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(image::resolve(&request, &workload, "app"))
        .expect("the lookup finds the image");
    assert_eq!(resolved.image, pushed, "{}", resolved.reason);
}
