//! The resources the fake serves: one table that routing, discovery and error messages all read.

use super::*;

/// One served resource, as discovery describes it.
pub(super) struct ResourceInfo {
    /// Plural name, as in paths (`deployments`).
    pub(super) name: &'static str,
    /// API group (`""` for core).
    pub(super) group: &'static str,
    /// Version within the group.
    pub(super) version: &'static str,
    /// Kind of one object.
    pub(super) kind: &'static str,
    /// Whether objects live in a namespace.
    pub(super) namespaced: bool,
    /// kubectl's short names.
    pub(super) short: &'static [&'static str],
    /// Subresources listed in discovery, with their verbs.
    pub(super) subresources: &'static [(&'static str, &'static [&'static str])],
}

const SCALE: (&str, &[&str]) = ("scale", &["get", "patch", "update"]);

const fn resource(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
) -> ResourceInfo {
    ResourceInfo {
        name,
        group,
        version,
        kind,
        namespaced: true,
        short,
        subresources: &[],
    }
}

/// Everything served, grouped by API group.
pub(super) const RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        namespaced: false,
        ..resource("namespaces", "", "v1", "Namespace", &["ns"])
    },
    ResourceInfo {
        subresources: &[
            ("exec", &["create", "get"]),
            ("portforward", &["create", "get"]),
            ("log", &["get"]),
        ],
        ..resource("pods", "", "v1", "Pod", &["po"])
    },
    resource("secrets", "", "v1", "Secret", &[]),
    resource("configmaps", "", "v1", "ConfigMap", &["cm"]),
    resource("services", "", "v1", "Service", &["svc"]),
    resource(
        "persistentvolumeclaims",
        "",
        "v1",
        "PersistentVolumeClaim",
        &["pvc"],
    ),
    ResourceInfo {
        subresources: &[SCALE],
        ..resource("deployments", "apps", "v1", "Deployment", &["deploy"])
    },
    ResourceInfo {
        subresources: &[SCALE],
        ..resource("statefulsets", "apps", "v1", "StatefulSet", &["sts"])
    },
    resource("ingresses", "networking.k8s.io", "v1", "Ingress", &["ing"]),
    resource("cronjobs", "batch", "v1", "CronJob", &["cj"]),
    resource(
        "horizontalpodautoscalers",
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        &["hpa"],
    ),
    resource(
        "volumesnapshots",
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        &["vs"],
    ),
    ResourceInfo {
        namespaced: false,
        ..resource(
            "volumesnapshotclasses",
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotClass",
            &["vsclass", "vsclasses"],
        )
    },
];

/// The resource named `name` in `group`.
pub(super) fn find_resource(
    group: &str,
    version: &str,
    name: &str,
) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

/// The kind of a resource (`Unknown` for one not served).
pub(super) fn kind_of(resource: &str) -> &'static str {
    RESOURCES
        .iter()
        .find(|r| r.name == resource)
        .map_or("Unknown", |r| r.kind)
}

/// Whether objects of a resource live in a namespace.
pub(super) fn is_namespaced(resource: &str) -> bool {
    RESOURCES.iter().any(|r| r.name == resource && r.namespaced)
}

/// `apps/v1`, or `v1` for the core group.
pub(super) fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The named API groups, each once, in table order.
pub(super) fn api_groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

pub(super) const OBJECT_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The `APIResourceList` of one group version.
pub(super) fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.name,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": OBJECT_VERBS,
            "shortNames": r.short,
        }));
        for (sub, verbs) in r.subresources {
            resources.push(subresource_entry(r, sub, verbs));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    })
}

fn subresource_entry(parent: &ResourceInfo, sub: &str, verbs: &[&str]) -> Value {
    let mut entry = json!({
        "name": format!("{}/{sub}", parent.name),
        "singularName": "",
        "namespaced": parent.namespaced,
        "kind": parent.kind,
        "verbs": verbs,
    });
    match sub {
        "scale" => {
            entry["group"] = json!("autoscaling");
            entry["version"] = json!("v1");
            entry["kind"] = json!("Scale");
        }
        "exec" => entry["kind"] = json!("PodExecOptions"),
        "portforward" => entry["kind"] = json!("PodPortForwardOptions"),
        "log" => entry["kind"] = json!("Pod"),
        _ => {}
    }
    entry
}
