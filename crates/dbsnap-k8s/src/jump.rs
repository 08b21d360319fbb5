//! The jump pod: an ephemeral pod next to the app that sees the app's
//! database settings exactly as the app does — its `env` and `envFrom`
//! copied verbatim, so Secret values are resolved by the kubelet and never
//! by dbsnap — from which dbsnap reaches the databases.
//!
//! It is locked down (non-root, no privilege escalation, every capability
//! dropped, RuntimeDefault seccomp, a writable `/tmp` only), bounded
//! (`activeDeadlineSeconds`, resource requests and limits), labelled so
//! that leftovers of a killed run are found and removed, and scheduled like
//! the app (its image pull secrets, node selector and tolerations).

use serde_json::{json, Value as Json};

/// Labels every dbsnap pod carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "dbsnap");
/// Label holding the run that made the pod.
pub const RUN_LABEL: &str = "dbsnap.io/run";

/// What a jump pod is made from.
#[derive(Debug, Clone)]
pub struct JumpPod<'a> {
    /// The run id (also in the pod's name and labels).
    pub run: &'a str,
    /// The app's workload (Deployment or StatefulSet JSON).
    pub workload: &'a Json,
    /// The container whose environment the pod takes.
    pub container: &'a str,
    /// Image with PostgreSQL client tools and a shell.
    pub image: &'a str,
    /// The pod ends after this many seconds whatever happens.
    pub deadline_secs: u64,
}

/// The pod's name for a run: `dbsnap-jump-<run>` (lower case, at most 63).
pub fn pod_name(run: &str) -> String {
    let mut name: String = format!("dbsnap-jump-{run}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// The Pod object to create.
pub fn pod(spec: &JumpPod<'_>) -> Json {
    let template = spec
        .workload
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(json!({}));
    let app = app_container(spec.workload, spec.container);
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "activeDeadlineSeconds": spec.deadline_secs,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 70,
            "runAsGroup": 70,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "containers": [{
            "name": "jump",
            "image": spec.image,
            "command": ["sleep", spec.deadline_secs.to_string()],
            "env": with_home(app["env"].clone()),
            "envFrom": app["envFrom"].clone(),
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}
            },
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "1Gi"}
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}]
    });
    for key in ["imagePullSecrets", "nodeSelector", "tolerations"] {
        if let Some(v) = template.get(key).filter(|v| !v.is_null()) {
            pod_spec[key] = v.clone();
        }
    }
    if app["envFrom"].is_null() {
        if let Some(c) = pod_spec["containers"][0].as_object_mut() {
            c.remove("envFrom");
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(spec.run),
            "labels": {MANAGED_BY.0: MANAGED_BY.1, RUN_LABEL: spec.run, "dbsnap.io/role": "jump"}
        },
        "spec": pod_spec
    })
}

/// The app's container `name` in the workload's pod template (`{}` if
/// there is none).
pub fn app_container(workload: &Json, name: &str) -> Json {
    workload
        .pointer("/spec/template/spec/containers")
        .and_then(Json::as_array)
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or(json!({}))
}

/// The app's env plus `HOME=/tmp` (psql writes its history there).
fn with_home(env: Json) -> Json {
    let mut vars = env.as_array().cloned().unwrap_or_default();
    vars.retain(|v| v["name"] != "HOME");
    vars.push(json!({"name": "HOME", "value": "/tmp"}));
    Json::Array(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Json {
        json!({"spec": {"template": {"spec": {
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"pool": "db"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "containers": [{
                "name": "api",
                "image": "core-api:1",
                "env": [
                    {"name": "PGHOST", "value": "db"},
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ],
                "envFrom": [{"secretRef": {"name": "extra"}}]
            }]
        }}}})
    }

    #[test]
    fn the_pod_sees_what_the_app_sees_and_nothing_more() {
        let workload = app();
        let p = pod(&JumpPod {
            run: "20261123T021500Z",
            workload: &workload,
            container: "api",
            image: "postgres:18",
            deadline_secs: 3600,
        });
        assert_eq!(p["metadata"]["name"], "dbsnap-jump-20261123t021500z");
        assert_eq!(
            p["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "dbsnap"
        );
        assert_eq!(p["metadata"]["labels"]["dbsnap.io/run"], "20261123T021500Z");
        let spec = &p["spec"];
        assert_eq!(spec["activeDeadlineSeconds"], 3600);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["imagePullSecrets"][0]["name"], "regcred");
        assert_eq!(spec["nodeSelector"]["pool"], "db");
        assert_eq!(spec["tolerations"][0]["key"], "dedicated");
        let c = &spec["containers"][0];
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        // The password stays a reference the kubelet resolves.
        assert_eq!(c["env"][1]["valueFrom"]["secretKeyRef"]["name"], "db");
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "extra");
        assert_eq!(c["env"][2], json!({"name": "HOME", "value": "/tmp"}));
        assert!(!p.to_string().contains("password\":\""), "{p}");
    }

    #[test]
    fn names_are_valid_kubernetes_names() {
        assert_eq!(pod_name("Run_1"), "dbsnap-jump-run-1");
        assert!(pod_name(&"x".repeat(100)).len() <= 63);
    }
}
