//! A container's environment as the kubelet resolves it: `envFrom`, then
//! `env` in order with `$(VAR)` expansion, values from Secrets, ConfigMaps
//! and the pod's own fields. Pure: objects are looked up through a closure,
//! so the kubelet's reads never pass through the API (nor its request log).

use super::*;

/// Finds a stored object: `(resource, name)` in the pod's namespace.
pub(super) type Lookup<'a> = dyn Fn(&str, &str) -> Option<Value> + 'a;

/// The variables a container sees (besides the fake's basics), in the
/// order the kubelet sets them; a later one of the same name replaces an
/// earlier one. `Err` carries the kubelet's message for
/// `CreateContainerConfigError`.
pub(super) fn resolve_env(
    pod: &Value,
    container: &Value,
    lookup: &Lookup<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for source in array(&container["envFrom"]) {
        for (name, value) in env_from(source, lookup)? {
            set(&mut env, name, value);
        }
    }
    for var in array(&container["env"]) {
        let name = text(&var["name"]);
        let value = match var.get("value") {
            Some(value) => expand(&text(value), |n| get(&env, n)),
            None => match value_from(pod, &var["valueFrom"], lookup)? {
                Some(value) => value,
                None => continue,
            },
        };
        set(&mut env, name, value);
    }
    Ok(env)
}

/// `command` then `args`, with `$(VAR)` expanded from `env` as Kubernetes does.
pub(super) fn command_line(container: &Value, env: &[(String, String)]) -> Vec<String> {
    array(&container["command"])
        .iter()
        .chain(array(&container["args"]).iter())
        .map(|part| expand(&text(part), |n| get(env, n)))
        .collect()
}

/// Kubernetes' `$(VAR)` expansion: a known `$(VAR)` becomes its value, an
/// unknown one stays as written, `$$` is a literal `$`.
pub(super) fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
        {
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn env_from(source: &Value, lookup: &Lookup<'_>) -> Result<Vec<(String, String)>, String> {
    let prefix = text(&source["prefix"]);
    let (resource, reference) = if source["secretRef"].is_object() {
        ("secrets", &source["secretRef"])
    } else {
        ("configmaps", &source["configMapRef"])
    };
    let name = text(&reference["name"]);
    let Some(object) = lookup(resource, &name) else {
        if reference["optional"] == true {
            return Ok(Vec::new());
        }
        return Err(missing_object(resource, &name));
    };
    Ok(data_of(resource, &object)
        .into_iter()
        .map(|(key, value)| (format!("{prefix}{key}"), value))
        .filter(|(name, _)| is_env_name(name))
        .collect())
}

fn value_from(pod: &Value, from: &Value, lookup: &Lookup<'_>) -> Result<Option<String>, String> {
    if let Some(field) = from["fieldRef"]["fieldPath"].as_str() {
        return Ok(Some(pod_field(pod, field)));
    }
    let (resource, reference) = if from["secretKeyRef"].is_object() {
        ("secrets", &from["secretKeyRef"])
    } else if from["configMapKeyRef"].is_object() {
        ("configmaps", &from["configMapKeyRef"])
    } else {
        return Ok(None);
    };
    let name = text(&reference["name"]);
    let key = text(&reference["key"]);
    let optional = reference["optional"] == true;
    let Some(object) = lookup(resource, &name) else {
        return if optional {
            Ok(None)
        } else {
            Err(missing_object(resource, &name))
        };
    };
    match data_of(resource, &object).remove(&key) {
        Some(value) => Ok(Some(value)),
        None if optional => Ok(None),
        None => Err(format!(
            "couldn't find key {key} in {} {}/{name}",
            kind_of(resource),
            text(&pod["metadata"]["namespace"]),
        )),
    }
}

fn missing_object(resource: &str, name: &str) -> String {
    let singular = if resource == "secrets" {
        "secret"
    } else {
        "configmap"
    };
    format!("{singular} \"{name}\" not found")
}

/// A Secret's decoded `data` (and `stringData`), or a ConfigMap's `data`.
pub(super) fn data_of(resource: &str, object: &Value) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let value = if resource == "secrets" {
            decode(value)
        } else {
            text(value)
        };
        data.insert(key.clone(), value);
    }
    for (key, value) in object["stringData"].as_object().into_iter().flatten() {
        data.insert(key.clone(), text(value));
    }
    data
}

/// The value of a `fieldRef` (`metadata.name`, `status.podIP`, …).
fn pod_field(pod: &Value, path: &str) -> String {
    if let Some(label) = bracketed(path, "metadata.labels") {
        return text(&pod["metadata"]["labels"][label]);
    }
    if let Some(annotation) = bracketed(path, "metadata.annotations") {
        return text(&pod["metadata"]["annotations"][annotation]);
    }
    let value = match path {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "metadata.uid" => &pod["metadata"]["uid"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        "status.podIP" => &pod["status"]["podIP"],
        "status.hostIP" => &pod["status"]["hostIP"],
        _ => &Value::Null,
    };
    text(value)
}

/// `x` out of `prefix['x']`.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// Kubernetes' rule for variable names taken from `envFrom`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

fn get(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

pub(super) fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

pub(super) fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(resource: &str, name: &str) -> Option<Value> {
        match (resource, name) {
            ("secrets", "db") => Some(json!({"data": {"password": "cHctMTIz", "user": "YXBw"}})),
            ("configmaps", "settings") => Some(json!({"data": {"MODE": "fast", "bad key": "x"}})),
            _ => None,
        }
    }

    fn pod_with(env: Value, env_from: Value) -> (Value, Value) {
        let container = json!({"name": "c", "env": env, "envFrom": env_from});
        let pod = json!({
            "metadata": {"name": "jump-1", "namespace": "shop", "labels": {"app": "x"}},
            "spec": {"containers": [container.clone()]},
            "status": {"podIP": "10.244.0.7"},
        });
        (pod, container)
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand("x$(A)y", vars), "x1y");
        assert_eq!(expand("$(B)", vars), "$(B)");
        assert_eq!(expand("$$(A)", vars), "$(A)");
        assert_eq!(expand("a$b$", vars), "a$b$");
        assert_eq!(expand("$(A", vars), "$(A");
    }

    #[test]
    fn env_resolves_references_in_order() {
        let (pod, container) = pod_with(
            json!([
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "URL", "value": "postgresql://$(DB_user):$(PW)@h/$(LATER)"},
                {"name": "LATER", "value": "d"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            ]),
            json!([
                {"secretRef": {"name": "db"}, "prefix": "DB_"},
                {"configMapRef": {"name": "settings"}},
            ]),
        );
        let env = resolve_env(&pod, &container, &lookup).unwrap();
        let get = |n: &str| get(&env, n);
        assert_eq!(
            get("URL").as_deref(),
            Some("postgresql://app:pw-123@h/$(LATER)")
        );
        assert_eq!(get("DB_password").as_deref(), Some("pw-123"));
        assert_eq!(get("MODE").as_deref(), Some("fast"));
        assert_eq!(get("bad key"), None);
        assert_eq!(get("POD").as_deref(), Some("jump-1"));
        assert_eq!(get("IP").as_deref(), Some("10.244.0.7"));
        assert_eq!(get("APP").as_deref(), Some("x"));
        assert_eq!(get("OPT"), None);
    }

    #[test]
    fn missing_references_are_named_like_the_kubelet() {
        let key =
            json!([{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nokey"}}}]);
        let (pod, container) = pod_with(key, json!([]));
        assert_eq!(
            resolve_env(&pod, &container, &lookup).unwrap_err(),
            "couldn't find key nokey in Secret shop/db"
        );
        let (pod, container) = pod_with(json!([]), json!([{"configMapRef": {"name": "gone"}}]));
        assert_eq!(
            resolve_env(&pod, &container, &lookup).unwrap_err(),
            "configmap \"gone\" not found"
        );
    }

    #[test]
    fn command_and_args_expand() {
        let container = json!({"command": ["sh", "-c"], "args": ["echo $(X) $$(X)"]});
        let env = vec![("X".to_string(), "1".to_string())];
        assert_eq!(command_line(&container, &env), ["sh", "-c", "echo 1 $(X)"]);
    }
}
