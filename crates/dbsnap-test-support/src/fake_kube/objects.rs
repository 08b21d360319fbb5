//! The API's answers: discovery, objects (list, get, create, delete, patch, scale), `Status` failures.

use super::*;

pub(super) fn discovery(state: &State, method: &Method, path: &str) -> Option<Reply> {
    if method != Method::GET {
        return None;
    }
    let path = path.trim_end_matches('/');
    let body = match path {
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": state.address}
            ],
        }),
        "/apis" => api_group_list(),
        "/api/v1" => resource_list("", "v1"),
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
            "platform": "linux/amd64",
        }),
        _ => {
            let (group, version) = path.strip_prefix("/apis/")?.split_once('/')?;
            api_groups().contains(&(group, version)).then_some(())?;
            resource_list(group, version)
        }
    };
    Some(Reply::ok(body))
}

fn api_group_list() -> Value {
    let groups: Vec<Value> = api_groups()
        .iter()
        .map(|(group, version)| {
            let preferred =
                json!({"groupVersion": group_version(group, version), "version": version});
            json!({"name": group, "versions": [preferred], "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(super) fn list(state: &State, target: &Target, query: &str) -> Reply {
    let items = match selected(state, target, query) {
        Ok(items) => items,
        Err(reply) => return reply,
    };
    Reply::ok(list_of(state, target, items))
}

/// A `…List` of the target's kind.
fn list_of(state: &State, target: &Target, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{}List", target.kind()),
        "apiVersion": target.api_version(),
        "metadata": {"resourceVersion": state.resource_version.to_string()},
        "items": items,
    })
}

/// The objects of the target's resource (and namespace, if any) that the
/// query's selectors keep.
pub(super) fn selected(state: &State, target: &Target, query: &str) -> Result<Vec<Value>, Reply> {
    let selection = Selection::from_query(query).map_err(|m| bad_request(&m))?;
    Ok(state
        .objects
        .iter()
        .filter(|((resource, namespace, _), object)| {
            *resource == target.resource
                && target.namespace.as_ref().is_none_or(|ns| ns == namespace)
                && selection.matches(object)
        })
        .map(|(_, object)| object.clone())
        .collect())
}

/// `DELETE` of a collection: each selected object is deleted as by its own
/// `DELETE` (pods terminate gracefully); answers the list of them.
pub(super) fn delete_collection(
    state: &mut State,
    target: &Target,
    query: &str,
    body: &[u8],
) -> Reply {
    let items = match selected(state, target, query) {
        Ok(items) => items,
        Err(reply) => return reply,
    };
    let deleted: Vec<Value> = items
        .iter()
        .map(|item| {
            let one = Target::of(
                &target.resource,
                &text(&item["metadata"]["namespace"]),
                &text(&item["metadata"]["name"]),
            );
            delete(state, &one, query, body).body
        })
        .collect();
    Reply::ok(list_of(state, target, deleted))
}

pub(super) fn get(state: &State, target: &Target) -> Reply {
    match state.objects.get(&target.key()) {
        Some(object) => Reply::ok(object.clone()),
        None => not_found(target),
    }
}

pub(super) fn create(state: &mut State, target: &Target, body: &[u8]) -> Reply {
    let Ok(object) = serde_json::from_slice::<Value>(body) else {
        return status_reply(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
            None,
        );
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    match create_object(state, &target.resource, &namespace, object) {
        Ok(stored) => Reply::new(StatusCode::CREATED, stored),
        Err(reply) => reply,
    }
}

/// Creates an object as the API server does: a name (or one generated from
/// `generateName`), the namespace must exist and the name be free,
/// admission (pods), then the store and whatever follows (a pod starts, a
/// Deployment gets its pods).
pub(super) fn create_object(
    state: &mut State,
    resource: &str,
    namespace: &str,
    mut object: Value,
) -> Result<Value, Reply> {
    let target = Target::of(resource, namespace, "");
    let name = object_name(state, &mut object);
    if name.is_empty() {
        let message = format!(
            "{} \"\" is invalid: metadata.name: Required value",
            target.kind()
        );
        return Err(status_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &message,
            None,
        ));
    }
    if is_namespaced(resource) && !state.objects.contains_key(&namespace_key(namespace)) {
        return Err(namespace_not_found(namespace));
    }
    if state
        .objects
        .contains_key(&(resource.into(), namespace.into(), name.clone()))
    {
        let message = format!("{} \"{name}\" already exists", target.qualified());
        return Err(status_reply(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &message,
            Some((&target, &name)),
        ));
    }
    object["kind"] = json!(target.kind());
    object["apiVersion"] = json!(target.api_version());
    match resource {
        "pods" => admit_pod(state, namespace, &mut object)?,
        "persistentvolumeclaims" => bind_claim(&mut object),
        _ => {}
    }
    let stored = store(state, resource, namespace, object);
    after_create(state, resource, &stored);
    Ok(stored)
}

/// `metadata.name`, or one made from `generateName` and five random characters.
fn object_name(state: &mut State, object: &mut Value) -> String {
    if let Some(name) = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        return name.to_string();
    }
    let Some(prefix) = object["metadata"]["generateName"].as_str() else {
        return String::new();
    };
    let name = format!("{prefix}{}", random_suffix(state.next_serial()));
    object["metadata"]["name"] = json!(name);
    name
}

/// Five characters as Kubernetes appends them to generated names.
pub(super) fn random_suffix(seed: u64) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(seed);
    let mut bits = hasher.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize];
            bits /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// What follows a create: a pod starts, a workload gets its pods, a
/// VolumeSnapshot becomes ready.
fn after_create(state: &mut State, resource: &str, stored: &Value) {
    match resource {
        "pods" => pod_created(state, stored),
        "deployments" | "statefulsets" => {
            state
                .effects
                .push(Effect::Reconcile(key_of(resource, stored)));
        }
        "volumesnapshots" => snapshot_created(state, stored),
        _ => {}
    }
}

/// The store key of a stored object.
pub(super) fn key_of(resource: &str, object: &Value) -> Key {
    (
        resource.to_string(),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

pub(super) fn delete(state: &mut State, target: &Target, query: &str, body: &[u8]) -> Reply {
    if target.resource == "pods" {
        return delete_pod(state, target, query, body);
    }
    match state.take(&target.key()) {
        Some(object) => {
            on_removed(state, &object);
            Reply::ok(object)
        }
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

/// Stores a changed spec under a new resourceVersion and generation; a
/// workload's controller catches up.
pub(super) fn bump(state: &mut State, target: &Target, mut object: Value) -> Reply {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    object["metadata"]["generation"] = json!(generation);
    let stored = state.put(target.key(), object);
    if is_workload(&target.resource) {
        state.effects.push(Effect::Reconcile(target.key()));
    }
    Reply::ok(stored)
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
    let name = text(&object["metadata"]["name"]);
    let serial = state.next_serial();
    let metadata = &mut object["metadata"];
    if !namespace.is_empty() {
        metadata["namespace"] = json!(namespace);
    }
    metadata["uid"] = json!(fake_uid(serial));
    metadata["creationTimestamp"] = json!(now_rfc3339());
    if is_workload(resource) {
        metadata["generation"] = json!(1);
    }
    if resource == "secrets" {
        fold_string_data(&mut object);
    }
    state.put((resource.into(), namespace.into(), name), object)
}

/// A Secret's `stringData` moves into `data`, base64-encoded, as on a real write.
fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(plain)) = secret.as_object_mut().and_then(|s| s.remove("stringData"))
    else {
        return;
    };
    for (key, value) in plain {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text(&value));
        secret["data"][key] = json!(encoded);
    }
}

pub(super) fn fake_uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

pub(super) fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// A timestamp as the API writes them (seconds, `Z`).
pub(super) fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
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
    Reply::new(status, body)
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
    not_found(&Target::of("namespaces", "", namespace))
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
