//! The namespace's objects, kept in a snapshot beside its databases:
//! Deployments, StatefulSets, ConfigMaps, Services, Ingresses, PVCs and
//! CronJobs (Secrets only when asked), cleaned of what the cluster owns
//! (status, managedFields, uid, resourceVersion, ...) so that `kubectl
//! apply -f` takes them back, written as YAML.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::{Map, Value as Json};

use crate::cluster::K8sError;
use crate::hint;
use crate::hint::Setting;

/// Where the objects go in a snapshot: `k8s/<namespace>/<kind>-<name>.yaml`.
pub const MEMBER_PREFIX: &str = "k8s/";

/// The kinds exported: (group, version, kind, plural).
const KINDS: [(&str, &str, &str, &str); 7] = [
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Service", "services"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("batch", "v1", "CronJob", "cronjobs"),
];

const SECRETS: (&str, &str, &str, &str) = ("", "v1", "Secret", "secrets");

/// One exported object: its member name and YAML text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// `k8s/<namespace>/<kind>-<name>.yaml`.
    pub member: String,
    /// The object, cleaned, as YAML.
    pub yaml: String,
}

/// Lists and cleans the namespace's objects. A kind the cluster does not
/// serve is skipped; a kind the user may not list is an error naming it.
pub async fn export(
    client: &Client,
    namespace: &str,
    include_secrets: bool,
) -> Result<Vec<Exported>, K8sError> {
    let mut kinds = KINDS.to_vec();
    if include_secrets {
        kinds.push(SECRETS);
    }
    let mut out = Vec::new();
    for (group, version, kind, plural) in kinds {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(K8sError::new(
                    format!(
                        "RBAC denied: cannot list {plural} in namespace {namespace}: {}",
                        s.message
                    ),
                    hint![
                        format!("ask for a Role that allows list on {plural}, or drop "),
                        Setting::ExportObjects
                    ],
                ))
            }
            Err(e) => {
                return Err(K8sError::new(
                    format!(
                        "cannot list {plural} in namespace {namespace}: {}",
                        crate::cluster::describe(&e)
                    ),
                    "check that the cluster is reachable (kubectl cluster-info)",
                ))
            }
        };
        for item in list.items {
            let mut json = serde_json::to_value(&item).unwrap_or(Json::Null);
            json["apiVersion"] = Json::String(resource.api_version.clone());
            json["kind"] = Json::String(kind.to_string());
            let name = json["metadata"]["name"]
                .as_str()
                .unwrap_or("unnamed")
                .to_string();
            clean(&mut json);
            out.push(Exported {
                member: format!(
                    "{MEMBER_PREFIX}{namespace}/{}-{name}.yaml",
                    kind.to_ascii_lowercase()
                ),
                yaml: to_yaml(&json),
            });
        }
    }
    Ok(out)
}

/// Removes what the cluster owns or assigns, so the object applies again
/// (in this cluster or another).
pub fn clean(object: &mut Json) {
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Json::as_object_mut) {
        for key in [
            "managedFields",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "selfLink",
            "ownerReferences",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(key);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Json::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("deployment.kubernetes.io/revision");
            a.remove(crate::scale::REPLICAS_BEFORE);
        }
        if meta
            .get("annotations")
            .and_then(Json::as_object)
            .is_some_and(Map::is_empty)
        {
            meta.remove("annotations");
        }
    }
    if object["kind"] == "Service" {
        if let Some(spec) = object.get_mut("spec").and_then(Json::as_object_mut) {
            // Assigned by the cluster; a copy must get its own.
            for key in ["clusterIP", "clusterIPs"] {
                spec.remove(key);
            }
        }
    }
}

/// YAML for a JSON value: block style, strings double-quoted with JSON's
/// escapes (valid YAML), keys plain where YAML allows it.
pub fn to_yaml(value: &Json) -> String {
    let mut out = String::new();
    match value {
        Json::Object(m) if !m.is_empty() => write_map(m, 0, &mut out),
        Json::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn write_map(map: &Map<String, Json>, indent: usize, out: &mut String) {
    for (k, v) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key(k));
        out.push(':');
        write_value(v, indent, out);
    }
}

fn write_seq(items: &[Json], indent: usize, out: &mut String) {
    for v in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Json::Object(m) if !m.is_empty() => {
                // The first key on the dash's line, the rest aligned with it.
                let mut inner = String::new();
                write_map(m, indent + 2, &mut inner);
                out.push(' ');
                out.push_str(inner.trim_start());
            }
            _ => write_value(v, indent, out),
        }
    }
}

/// After `key:` or `-`: a scalar on the same line, a collection below.
fn write_value(v: &Json, indent: usize, out: &mut String) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(m, indent + 2, out);
        }
        Json::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(a, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(v: &Json) -> String {
    match v {
        Json::Object(_) => "{}".into(),
        Json::Array(_) => "[]".into(),
        Json::String(s) => Json::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

/// A key as written: plain when it is safe in YAML, quoted otherwise.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        k.to_string()
    } else {
        Json::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_owned_fields_are_removed() {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "uid": "u", "resourceVersion": "7", "managedFields": [],
                         "creationTimestamp": "t", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 5432}]},
            "status": {"loadBalancer": {}}
        });
        clean(&mut svc);
        assert_eq!(
            svc,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                   "spec": {"ports": [{"port": 5432}]}})
        );
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let v = json!({
            "apiVersion": "apps/v1",
            "metadata": {"name": "core-api", "labels": {"app.kubernetes.io/name": "core", "on": "yes"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "api", "args": ["--port", "8080"], "env": [], "resources": {}}
            ]}}},
            "data": {"config.yaml": "a: 1\nb: \"two\"\n"}
        });
        let y = to_yaml(&v);
        let expected = "apiVersion: \"apps/v1\"
data:
  config.yaml: \"a: 1\\nb: \\\"two\\\"\\n\"
metadata:
  labels:
    app.kubernetes.io/name: \"core\"
    \"on\": \"yes\"
  name: \"core-api\"
spec:
  replicas: 2
  template:
    spec:
      containers:
        - args:
            - \"--port\"
            - \"8080\"
          env: []
          name: \"api\"
          resources: {}
";
        assert_eq!(y, expected);
    }
}
