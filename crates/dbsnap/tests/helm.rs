//! The Helm chart in deploy/helm/dbsnap, with real helm (from the kubectl
//! wheel scripts/setup.sh unpacks): it lints; every object it renders from
//! the default values and from each example validates strictly against
//! the Kubernetes 1.33 schemas (kubernetes-validate); the dbsnap.toml it
//! renders is one dbsnap reads, and every CronJob's command line is one
//! dbsnap accepts; its Role grants exactly what the enabled features need;
//! no secret is ever a value.

use std::path::{Path, PathBuf};
use std::process::Command;

use dbsnap_test_support::workspace_root;
use serde_json::{json, Value};

fn chart() -> PathBuf {
    workspace_root().join("deploy/helm/dbsnap")
}

fn helm() -> Command {
    let helm = workspace_root().join(".cache/kubectl/helm");
    assert!(
        helm.is_file(),
        "{} is missing: run scripts/setup.sh",
        helm.display()
    );
    Command::new(helm)
}

fn kv_bin(name: &str) -> PathBuf {
    let bin = workspace_root()
        .join(".cache/kubernetes-validate/bin")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup.sh",
        bin.display()
    );
    bin
}

/// The example values files, and the default values (None).
fn value_sets() -> Vec<Option<PathBuf>> {
    let mut sets = vec![None];
    for e in std::fs::read_dir(chart().join("examples")).unwrap() {
        sets.push(Some(e.unwrap().path()));
    }
    assert!(sets.len() >= 3, "two examples at least: {sets:?}");
    sets
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `helm template` with `values` (and `--set`s) into `dir`.
fn template_into(dir: &Path, values: Option<&Path>, sets: &[&str]) -> (bool, String) {
    let mut c = helm();
    c.args(["template", "backups"]).arg(chart());
    c.args(["--namespace", "backups", "--output-dir"]).arg(dir);
    if let Some(v) = values {
        c.arg("-f").arg(v);
    }
    for s in sets {
        c.args(["--set", s]);
    }
    output(&mut c)
}

/// Every object rendered, as JSON (through PyYAML in kubernetes-validate's
/// virtualenv).
fn render(values: Option<&Path>, sets: &[&str]) -> Vec<Value> {
    let mut c = helm();
    c.args(["template", "backups"])
        .arg(chart())
        .args(["--namespace", "backups"]);
    if let Some(v) = values {
        c.arg("-f").arg(v);
    }
    for s in sets {
        c.args(["--set", s]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut py = Command::new(kv_bin("python"))
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let done = py.wait_with_output().unwrap();
    assert!(done.status.success());
    serde_json::from_slice(&done.stdout).unwrap()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn validate(dir: &Path) -> (bool, String) {
    let files: Vec<PathBuf> = walk(dir);
    assert!(!files.is_empty(), "nothing rendered in {}", dir.display());
    output(
        Command::new(kv_bin("kubernetes-validate"))
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .args(&files),
    )
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_chart_lints_and_every_object_validates_strictly_against_kubernetes_1_33() {
    for values in value_sets() {
        let what = format!("{values:?}");
        let mut lint = helm();
        lint.args(["lint", "--strict"]).arg(chart());
        if let Some(v) = &values {
            lint.arg("-f").arg(v);
        }
        let (ok, said) = output(&mut lint);
        assert!(ok && said.contains("0 chart(s) failed"), "{what}: {said}");

        let dir = tempfile::tempdir().unwrap();
        let (ok, said) = template_into(dir.path(), values.as_deref(), &[]);
        assert!(ok, "{what}: {said}");
        let (ok, said) = validate(dir.path());
        assert!(ok && !said.contains("ERROR"), "{what}: {said}");
        assert_eq!(
            said.matches(" passed for resource ").count(),
            walk(dir.path())
                .iter()
                .map(|f| std::fs::read_to_string(f)
                    .unwrap()
                    .matches("\nkind: ")
                    .count())
                .sum::<usize>(),
            "{what}: every object was validated: {said}"
        );
        let objects = render(values.as_deref(), &[]);
        let cronjobs = of_kind(&objects, "CronJob");
        assert!(!cronjobs.is_empty(), "{what}");
        for cj in cronjobs {
            let spec = &cj["spec"];
            let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
            assert_eq!(spec["concurrencyPolicy"], "Forbid", "{what}");
            assert!(
                spec["jobTemplate"]["spec"]["backoffLimit"].is_u64(),
                "{what}"
            );
            assert!(
                spec["jobTemplate"]["spec"]["activeDeadlineSeconds"].is_u64(),
                "{what}"
            );
            assert_eq!(pod["securityContext"]["runAsUser"], 70, "{what}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            let c = &pod["containers"][0];
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"], true,
                "{what}"
            );
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{what}"
            );
            assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
        }
    }

    // The validator is strict: a field Kubernetes does not have fails.
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = template_into(dir.path(), None, &["podSecurityContext.runAsWho=70"]);
    assert!(ok, "{said}");
    let (ok, said) = validate(dir.path());
    assert!(!ok && said.contains("runAsWho"), "{said}");
}

#[test]
fn the_rendered_config_and_command_lines_are_ones_dbsnap_takes() {
    for values in value_sets() {
        let what = format!("{values:?}");
        let objects = render(values.as_deref(), &[]);
        let [config] = &of_kind(&objects, "ConfigMap")[..] else {
            panic!("{what}: one ConfigMap")
        };
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("dbsnap.toml");
        std::fs::write(&toml, config["data"]["dbsnap.toml"].as_str().unwrap()).unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let dbsnap = || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_dbsnap"));
            c.env("DBSNAP_HOME", dir.path().join("home"));
            c
        };
        let (ok, said) = output(
            dbsnap()
                .arg("--config")
                .arg(&toml)
                .arg("list")
                .arg("--dir")
                .arg(&repo),
        );
        assert!(
            ok,
            "{what}: dbsnap does not read the rendered config: {said}\n{}",
            config["data"]["dbsnap.toml"]
        );
        for cj in of_kind(&objects, "CronJob") {
            let c = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
            let args: Vec<String> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    a.as_str()
                        .unwrap()
                        .replace("/etc/dbsnap/dbsnap.toml", &toml.display().to_string())
                })
                .collect();
            // clap refuses a flag it does not know before it prints help.
            let (ok, said) = output(dbsnap().args(&args).arg("--help"));
            assert!(ok, "{what}: {args:?}: {said}");
            let mounts = c["volumeMounts"].to_string();
            assert!(
                mounts.contains("/etc/dbsnap/dbsnap.toml"),
                "{what}: {mounts}"
            );
        }
    }
}

/// The Role's rules, each as (apiGroup, resource, verb), sorted.
fn grants(objects: &[Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for role in of_kind(objects, "Role") {
        for rule in role["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        out.push((
                            g.as_str().unwrap().to_string(),
                            r.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn the_role_grants_exactly_what_the_enabled_features_need() {
    // External databases: no cluster access at all.
    let external = workspace_root().join("deploy/helm/dbsnap/examples/external-two-databases.yaml");
    let objects = render(Some(&external), &[]);
    assert!(of_kind(&objects, "Role").is_empty() && of_kind(&objects, "RoleBinding").is_empty());
    assert_eq!(
        of_kind(&objects, "ServiceAccount")[0]["automountServiceAccountToken"],
        false
    );
    for cj in of_kind(&objects, "CronJob") {
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["automountServiceAccountToken"],
            false
        );
    }

    // In the cluster the jobs reach the databases directly: discovery only.
    let base = [
        ("apps", "deployments", "get"),
        ("apps", "statefulsets", "get"),
        ("", "configmaps", "get"),
    ];
    let app = ["app.workload=deploy/core-api", "app.namespace=poolside"];
    let objects = render(None, &app);
    assert_eq!(grants(&objects), triples(&base));
    // Through a jump pod: creating it, exec for its relay, sweeping leftovers.
    let mut jump = app.to_vec();
    jump.push("app.via=jump");
    let mut want = base.to_vec();
    want.extend([
        ("", "pods", "create"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("", "pods/exec", "create"),
    ]);
    assert_eq!(grants(&render(None, &jump)), triples(&want));
    let (ok, said) = output(helm().args(["template", "x"]).arg(chart()).args([
        "--set",
        "app.workload=deploy/core-api",
        "--set",
        "app.via=tunnel",
    ]));
    assert!(!ok && said.contains("direct or jump"), "{said}");
    let role = of_kind(&objects, "Role")[0];
    assert_eq!(
        role["metadata"]["namespace"], "poolside",
        "the Role is in the app's namespace"
    );
    let binding = of_kind(&objects, "RoleBinding")[0];
    assert_eq!(binding["subjects"][0]["namespace"], "backups");
    assert_eq!(
        binding["subjects"][0]["name"],
        of_kind(&objects, "ServiceAccount")[0]["metadata"]["name"]
    );

    // --scale adds patching the workloads; --k8s-objects adds listing them; Secrets only when asked.
    let mut sets = app.to_vec();
    sets.push("create.scale[0]=deploy/core-api");
    let mut want = base.to_vec();
    want.extend([
        ("apps", "deployments", "patch"),
        ("apps", "statefulsets", "patch"),
        ("", "pods", "list"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
    ]);
    assert_eq!(grants(&render(None, &sets)), triples(&want));
    let mut sets = app.to_vec();
    sets.push("create.objects=true");
    let objects_rules = [
        ("apps", "deployments", "list"),
        ("apps", "statefulsets", "list"),
        ("", "configmaps", "list"),
        ("", "services", "list"),
        ("", "persistentvolumeclaims", "list"),
        ("networking.k8s.io", "ingresses", "list"),
        ("batch", "cronjobs", "list"),
    ];
    let mut want = base.to_vec();
    want.extend(objects_rules);
    assert_eq!(grants(&render(None, &sets)), triples(&want));
    sets.push("create.includeSecrets=true");
    want.push(("", "secrets", "list"));
    assert_eq!(grants(&render(None, &sets)), triples(&want));
}

#[test]
fn secrets_are_references_and_contradictions_are_refused() {
    let external = workspace_root().join("deploy/helm/dbsnap/examples/external-two-databases.yaml");
    let objects = render(Some(&external), &[]);
    for cj in of_kind(&objects, "CronJob") {
        let name = cj["metadata"]["name"].as_str().unwrap();
        let c = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let env = c["env"].as_array().unwrap();
        let pw = env
            .iter()
            .find(|e| e["name"] == "PGPASSWORD")
            .unwrap_or_else(|| panic!("{name}: {env:?}"));
        assert_eq!(
            pw["valueFrom"],
            json!({"secretKeyRef": {"name": "platform-db-backup", "key": "password"}}),
            "{name}"
        );
        assert!(pw.get("value").is_none(), "{name}");
        assert_eq!(
            c["envFrom"],
            json!([{"secretRef": {"name": "dbsnap-s3"}}]),
            "{name}"
        );
        // The age identity goes to the drill alone.
        let has_identity = env.iter().any(|e| e["name"] == "DBSNAP_IDENTITY");
        assert_eq!(has_identity, name.ends_with("-drill"), "{name}");
    }
    // In the cluster, the app's variables by reference, for the jobs that
    // reach the databases; `--via direct` said on their command lines.
    let core = workspace_root().join("deploy/helm/dbsnap/examples/core-api.yaml");
    for cj in of_kind(&render(Some(&core), &[]), "CronJob") {
        let name = cj["metadata"]["name"].as_str().unwrap();
        let c = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let url = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "DATABASE_URL");
        let args = c["args"].to_string();
        if name.ends_with("-prune") {
            assert!(url.is_none() && !args.contains("--via"), "{name}: {c}");
        } else {
            assert_eq!(
                url.unwrap()["valueFrom"]["secretKeyRef"],
                json!({"name": "core-api-db", "key": "url"}),
                "{name}"
            );
            assert!(args.contains(r#""--via","direct""#), "{name}: {args}");
        }
    }

    // Nothing in any example looks like a password, a key or a token.
    for values in value_sets().into_iter().flatten() {
        let text = std::fs::read_to_string(&values).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !line.contains("AGE-SECRET-KEY")
                    && !line.contains("password=")
                    && !line.contains(":pw@"),
                "{}: {line}",
                values.display()
            );
        }
    }

    let (ok, said) = output(helm().args(["template", "x"]).arg(chart()).args([
        "--set",
        "app.workload=deploy/core-api",
        "--set",
        "databases[0]=postgres://db/app",
    ]));
    assert!(!ok && said.contains("not both"), "{said}");
}
