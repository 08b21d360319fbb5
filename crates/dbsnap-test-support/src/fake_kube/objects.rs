//! The API's answers: discovery, objects (list, get, create, delete, patch, scale), `Status` failures.

use super::*;

pub(super) fn discovery(state: &State, method: &Method, path: &str) -> Option<Reply> {
    if method != Method::GET {
        return None;
    }
    let body = match path.trim_end_matches('/') {
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": state.address}
            ],
        }),
        "/apis" => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{
                "name": "apps",
                "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
            }],
        }),
        "/api/v1" => resource_list("v1", &core_resources()),
        "/apis/apps/v1" => resource_list("apps/v1", &apps_resources()),
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
            "platform": "linux/amd64",
        }),
        _ => return None,
    };
    Some(Reply::ok(body))
}

pub(super) fn resource_list(group_version: &str, resources: &[Value]) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
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

pub(super) fn api_resource(name: &str, namespaced: bool, short: &[&str]) -> Value {
    json!({
        "name": name,
        "singularName": kind_of(name).to_lowercase(),
        "namespaced": namespaced,
        "kind": kind_of(name),
        "verbs": OBJECT_VERBS,
        "shortNames": short,
    })
}

pub(super) fn scale_resource(parent: &str) -> Value {
    json!({
        "name": format!("{parent}/scale"),
        "singularName": "",
        "namespaced": true,
        "group": "autoscaling",
        "version": "v1",
        "kind": "Scale",
        "verbs": ["get", "patch", "update"],
    })
}

pub(super) fn core_resources() -> Vec<Value> {
    vec![
        api_resource("namespaces", false, &["ns"]),
        api_resource("pods", true, &["po"]),
        api_resource("secrets", true, &[]),
        api_resource("configmaps", true, &["cm"]),
        api_resource("services", true, &["svc"]),
    ]
}

pub(super) fn apps_resources() -> Vec<Value> {
    vec![
        api_resource("deployments", true, &["deploy"]),
        scale_resource("deployments"),
        api_resource("statefulsets", true, &["sts"]),
        scale_resource("statefulsets"),
    ]
}

pub(super) fn list(state: &State, target: &Target, query: &str) -> Reply {
    let wanted_name = field_selector_name(query);
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((resource, namespace, name), _)| {
            *resource == target.resource
                && target.namespace.as_ref().is_none_or(|ns| ns == namespace)
                && wanted_name.as_ref().is_none_or(|n| n == name)
        })
        .map(|(_, object)| object.clone())
        .collect();
    Reply::ok(json!({
        "kind": format!("{}List", target.kind()),
        "apiVersion": target.api_version(),
        "metadata": {"resourceVersion": state.resource_version.to_string()},
        "items": items,
    }))
}

/// `metadata.name=X` out of a `fieldSelector` (the only field selector kept).
pub(super) fn field_selector_name(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("fieldSelector="))
        .map(|v| v.replace("%3D", "=").replace("%3d", "="))
        .find_map(|v| v.strip_prefix("metadata.name=").map(str::to_string))
}

pub(super) fn get(state: &State, target: &Target) -> Reply {
    match state.objects.get(&target.key()) {
        Some(object) => Reply::ok(object.clone()),
        None => not_found(target),
    }
}

pub(super) fn create(state: &mut State, target: &Target, body: &[u8]) -> Reply {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status_reply(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
            None,
        );
    };
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return status_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "{} \"\" is invalid: metadata.name: Required value",
                target.kind()
            ),
            None,
        );
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    if !target.is_namespace_object() && !state.objects.contains_key(&namespace_key(&namespace)) {
        return namespace_not_found(&namespace);
    }
    let key = (target.resource.clone(), namespace.clone(), name.clone());
    if state.objects.contains_key(&key) {
        let message = format!("{} \"{name}\" already exists", target.qualified());
        return status_reply(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &message,
            Some((target, &name)),
        );
    }
    object["kind"] = json!(target.kind());
    object["apiVersion"] = json!(target.api_version());
    let stored = store(state, &target.resource, &namespace, object);
    Reply {
        status: StatusCode::CREATED,
        body: stored,
    }
}

pub(super) fn delete(state: &mut State, target: &Target) -> Reply {
    match state.objects.remove(&target.key()) {
        Some(object) => Reply::ok(object),
        None => not_found(target),
    }
}

pub(super) fn patch(state: &mut State, target: &Target, content_type: &str, body: &[u8]) -> Reply {
    let patch = match parse_merge_patch(content_type, body) {
        Ok(patch) => patch,
        Err(reply) => return reply,
    };
    let Some(object) = state.objects.get_mut(&target.key()) else {
        return not_found(target);
    };
    merge_patch(object, &patch);
    mirror_replicas(object);
    let object = object.clone();
    bump(state, target, object)
}

pub(super) fn parse_merge_patch(content_type: &str, body: &[u8]) -> Result<Value, Reply> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/merge-patch+json" && media != "application/strategic-merge-patch+json"
    {
        return Err(status_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake supports merge patches only, not {media:?}"),
            None,
        ));
    }
    serde_json::from_slice(body).map_err(|_| {
        status_reply(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the patch is not JSON",
            None,
        )
    })
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in fields {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

pub(super) fn scale(
    state: &mut State,
    target: &Target,
    verb: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    let Some(object) = state.objects.get(&target.key()) else {
        return not_found(target);
    };
    let mut scale = scale_of(object);
    match verb {
        "get" => return Reply::ok(scale),
        "update" => match serde_json::from_slice::<Value>(body) {
            Ok(new) => scale = new,
            Err(_) => return status_reply(StatusCode::BAD_REQUEST, "BadRequest", "not JSON", None),
        },
        "patch" => match parse_merge_patch(content_type, body) {
            Ok(patch) => merge_patch(&mut scale, &patch),
            Err(reply) => return reply,
        },
        _ => {
            return status_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{verb} is not supported on scale"),
                None,
            )
        }
    }
    let mut object = object.clone();
    object["spec"]["replicas"] = json!(scale["spec"]["replicas"].as_i64().unwrap_or(0));
    mirror_replicas(&mut object);
    let stored = bump(state, target, object);
    Reply::ok(scale_of(&stored.body))
}

/// The autoscaling/v1 Scale of a deployment or statefulset.
pub(super) fn scale_of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": selector},
    })
}

/// Pretends the controller caught up at once: status follows spec.replicas.
pub(super) fn mirror_replicas(object: &mut Value) {
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = json!({
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "observedGeneration": object["metadata"]["generation"],
    });
    object["status"] = status;
}

/// Stores a changed object under a new resourceVersion.
pub(super) fn bump(state: &mut State, target: &Target, mut object: Value) -> Reply {
    state.resource_version += 1;
    object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    object["metadata"]["generation"] = json!(generation);
    state.objects.insert(target.key(), object.clone());
    Reply::ok(object)
}

pub(super) fn namespace_key(namespace: &str) -> (String, String, String) {
    ("namespaces".into(), String::new(), namespace.into())
}

pub(super) fn ensure_namespace(state: &mut State, namespace: &str) {
    if !state.objects.contains_key(&namespace_key(namespace)) {
        let object = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": namespace},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        store(state, "namespaces", "", object);
    }
}

/// Fills in server-set metadata and stores the object; returns it.
pub(super) fn store(
    state: &mut State,
    resource: &str,
    namespace: &str,
    mut object: Value,
) -> Value {
    state.resource_version += 1;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let metadata = &mut object["metadata"];
    if !namespace.is_empty() {
        metadata["namespace"] = json!(namespace);
    }
    metadata["uid"] = json!(fake_uid(state.resource_version));
    metadata["resourceVersion"] = json!(state.resource_version.to_string());
    metadata["creationTimestamp"] = json!(now_rfc3339());
    if kind_of(resource) == "Deployment" || kind_of(resource) == "StatefulSet" {
        metadata["generation"] = json!(1);
        mirror_replicas(&mut object);
    }
    state
        .objects
        .insert((resource.into(), namespace.into(), name), object.clone());
    object
}

pub(super) fn fake_uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

pub(super) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

pub(super) fn status_reply(
    status: StatusCode,
    reason: &str,
    message: &str,
    details: Option<(&Target, &str)>,
) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    });
    if let Some((target, name)) = details {
        let mut detail = json!({"kind": target.resource});
        if !name.is_empty() {
            detail["name"] = json!(name);
        }
        if !target.group.is_empty() {
            detail["group"] = json!(target.group);
        }
        body["details"] = detail;
    }
    Reply { status, body }
}

pub(super) fn not_found(target: &Target) -> Reply {
    let name = target.name.clone().unwrap_or_default();
    let message = format!("{} \"{name}\" not found", target.qualified());
    status_reply(
        StatusCode::NOT_FOUND,
        "NotFound",
        &message,
        Some((target, &name)),
    )
}

pub(super) fn namespace_not_found(namespace: &str) -> Reply {
    let target = Target {
        group: "",
        resource: "namespaces".into(),
        namespace: None,
        name: Some(namespace.into()),
        subresource: None,
    };
    not_found(&target)
}

pub(super) fn not_found_path() -> Reply {
    status_reply(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        None,
    )
}

/// `403` worded like the API server's RBAC denial.
pub(super) fn forbidden(target: &Target, verb: &str) -> Reply {
    let name = target.name.clone().unwrap_or_default();
    let subject = if name.is_empty() {
        target.qualified()
    } else {
        format!("{} \"{name}\"", target.qualified())
    };
    let scope = match &target.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
        target.full_resource(),
        target.group,
    );
    status_reply(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some((target, &name)),
    )
}
