//! Finding an application's PostgreSQL databases in its pod template.
//!
//! Sources, in the order Kubernetes applies them: `envFrom` (ConfigMaps
//! are read; a Secret's keys are unknown without reading it, so it is only
//! named), then `env` (literal values with `$(VAR)` references expanded,
//! `configMapKeyRef`, `secretKeyRef`). Databases are found from
//! `DATABASE_URL`-style URLs (several per app: `*_DATABASE_URL`,
//! `*_DB_URL`, `POSTGRES_URL`...) and from `POSTGRES_*`, `PG*` and `DB_*`
//! groups (host, port, database, user, password). A value held in a Secret
//! stays a [`Value::Secret`] reference.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value as Json;

/// Where a setting's value is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// Known here (a literal, or from a ConfigMap).
    Known(String),
    /// Written in the workload's own spec (variable named): readable by
    /// anyone who can read the workload, never copied by dbsnap.
    InSpec(String),
    /// In a Secret: only a pod that references it sees the value.
    Secret {
        /// Secret name.
        name: String,
        /// Key.
        key: String,
    },
}

/// One environment variable of the app's container, with its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value, or where it is.
    pub value: Value,
    /// Where it was found (`env`, `configMap app-config`, ...).
    pub origin: String,
}

/// A database the app uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovered {
    /// What found it (`DATABASE_URL`, `POSTGRES_*`, ...).
    pub source: String,
    /// The connection string without password, when everything but the
    /// password is known here; `None` when the URL itself is in a Secret.
    pub connection: Option<String>,
    /// Where the password is, if anywhere.
    pub password: Option<Value>,
    /// Where each setting came from, for the plan (never a password).
    pub origins: Vec<String>,
    /// Set when the whole URL is in a Secret (resolved in the cluster).
    pub secret_url: Option<Value>,
}

/// Server, port, role and database of a discovered database, to tell two
/// names of the same one apart; `None` when its settings are in a Secret.
pub fn database_key(d: &Discovered) -> Option<String> {
    let connection = d.connection.as_deref().filter(|_| d.secret_url.is_none())?;
    let info = dbsnap_pg::ConnInfo::resolve_with(
        connection,
        &std::collections::BTreeMap::<String, String>::new(),
    )
    .ok()?;
    Some(connection_key(&info))
}

/// Server, port, role and database of connection settings (see
/// [`database_key`]).
pub fn connection_key(info: &dbsnap_pg::ConnInfo) -> String {
    let ports: Vec<u16> = (0..info.hosts.len().max(1)).map(|i| info.port(i)).collect();
    format!(
        "{:?} {ports:?} {:?} {:?}",
        info.hosts, info.user, info.dbname
    )
}

/// What [`discover`] found, and why anything was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// The container whose environment was read.
    pub container: String,
    /// The databases, in the order their variables appear.
    pub databases: Vec<Discovered>,
    /// Things the local side could not see (a Secret's keys in `envFrom`).
    pub notes: Vec<String>,
}

/// Why discovery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryError(pub String);

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DiscoveryError {}

/// Finds the databases of `workload` (a Deployment or StatefulSet as the
/// API returns it). `container` picks a container (default: the first);
/// `config_map` returns a ConfigMap's data by name (None: missing).
pub fn discover(
    workload: &Json,
    container: Option<&str>,
    config_map: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
) -> Result<Discovery, DiscoveryError> {
    let containers = workload
        .pointer("/spec/template/spec/containers")
        .and_then(Json::as_array)
        .ok_or_else(|| DiscoveryError("the workload has no pod template with containers".into()))?;
    let chosen = match container {
        Some(name) => containers
            .iter()
            .find(|c| c["name"] == name)
            .ok_or_else(|| DiscoveryError(format!("the workload has no container \"{name}\"")))?,
        None => containers
            .first()
            .ok_or_else(|| DiscoveryError("the workload's pod template has no container".into()))?,
    };
    let mut notes = Vec::new();
    let env = container_env(chosen, config_map, &mut notes)?;
    let mut databases = urls(&env);
    databases.extend(groups(&env));
    Ok(Discovery {
        container: chosen["name"].as_str().unwrap_or_default().to_string(),
        databases,
        notes,
    })
}

/// The container's environment as Kubernetes builds it: `envFrom` first,
/// then `env` (later definitions win).
fn container_env(
    container: &Json,
    config_map: &dyn Fn(&str) -> Option<BTreeMap<String, String>>,
    notes: &mut Vec<String>,
) -> Result<Vec<EnvVar>, DiscoveryError> {
    let mut env: Vec<EnvVar> = Vec::new();
    let mut set = |var: EnvVar| {
        env.retain(|v| v.name != var.name);
        env.push(var);
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        if let Some(name) = from.pointer("/configMapRef/name").and_then(Json::as_str) {
            let optional = from.pointer("/configMapRef/optional") == Some(&Json::Bool(true));
            match config_map(name) {
                Some(data) => {
                    for (k, v) in data {
                        set(EnvVar {
                            name: format!("{prefix}{k}"),
                            value: Value::Known(v),
                            origin: format!("configMap {name}"),
                        });
                    }
                }
                None if optional => {}
                None => {
                    return Err(DiscoveryError(format!(
                        "ConfigMap \"{name}\" (envFrom) not found"
                    )))
                }
            }
        }
        if let Some(name) = from.pointer("/secretRef/name").and_then(Json::as_str) {
            notes.push(format!(
                "envFrom Secret \"{name}\": its keys are not read here; the jump pod gets them as the app does"
            ));
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let value = if let Some(v) = var["value"].as_str() {
            Some((Value::Known(v.to_string()), "env".to_string()))
        } else if let Some(r) = var.pointer("/valueFrom/secretKeyRef") {
            Some((
                Value::Secret {
                    name: r["name"].as_str().unwrap_or_default().to_string(),
                    key: r["key"].as_str().unwrap_or_default().to_string(),
                },
                format!("secret {}", r["name"].as_str().unwrap_or_default()),
            ))
        } else if let Some(r) = var.pointer("/valueFrom/configMapKeyRef") {
            let cm = r["name"].as_str().unwrap_or_default();
            let key = r["key"].as_str().unwrap_or_default();
            config_map(cm)
                .and_then(|d| d.get(key).cloned())
                .map(|v| (Value::Known(v), format!("configMap {cm}")))
        } else {
            None
        };
        if let Some((value, origin)) = value {
            set(EnvVar {
                name: name.to_string(),
                value,
                origin,
            });
        }
    }
    expand_references(&mut env);
    Ok(env)
}

/// Expands `$(VAR)` in known values from variables defined before them,
/// as Kubernetes does (`$$(VAR)` escapes; unknown references stay).
fn expand_references(env: &mut [EnvVar]) {
    for i in 0..env.len() {
        let Value::Known(text) = &env[i].value else {
            continue;
        };
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("$(") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at - 1]);
                out.push_str("$(");
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let Some(end) = rest[at..].find(')') else {
                out.push_str(&rest[at..]);
                rest = "";
                break;
            };
            let name = &rest[at + 2..at + end];
            match env[..i]
                .iter()
                .rev()
                .find(|v| v.name == name)
                .map(|v| &v.value)
            {
                Some(Value::Known(v)) => out.push_str(v),
                _ => out.push_str(&rest[at..at + end + 1]),
            }
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        env[i].value = Value::Known(out);
    }
}

/// Whether `name` holds a database URL.
fn is_url_variable(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n == "DATABASE_URL"
        || n.ends_with("_DATABASE_URL")
        || n.ends_with("_DB_URL")
        || n == "DB_URL"
        || n.ends_with("POSTGRES_URL")
        || n.ends_with("POSTGRESQL_URL")
        || n.ends_with("PG_URL")
}

/// Databases from URL variables.
fn urls(env: &[EnvVar]) -> Vec<Discovered> {
    let mut out = Vec::new();
    for var in env.iter().filter(|v| is_url_variable(&v.name)) {
        match &var.value {
            Value::Known(url)
                if url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                let Ok(info) = resolve(url) else { continue };
                out.push(Discovered {
                    source: var.name.clone(),
                    connection: Some(info.to_libpq_string_without_password()),
                    password: info
                        .password
                        .as_deref()
                        .map(|p| url_password(p, env, &var.name)),
                    origins: vec![format!("{} from {}", var.name, var.origin)],
                    secret_url: None,
                });
            }
            Value::Known(_) | Value::InSpec(_) => {}
            secret @ Value::Secret { .. } => out.push(Discovered {
                source: var.name.clone(),
                connection: None,
                password: None,
                origins: vec![format!(
                    "{} from {} (resolved in the cluster)",
                    var.name, var.origin
                )],
                secret_url: Some(secret.clone()),
            }),
        }
    }
    out
}

/// Where a URL's password is: a `$(VAR)` reference the expansion left
/// (the variable is a Secret's), else the URL variable itself.
fn url_password(password: &str, env: &[EnvVar], url_var: &str) -> Value {
    let referenced = password
        .strip_prefix("$(")
        .and_then(|p| p.strip_suffix(')'))
        .and_then(|name| env.iter().find(|v| v.name == name));
    match referenced {
        Some(var) => var.value.clone(),
        None => Value::InSpec(url_var.to_string()),
    }
}

/// The variable groups a database's settings come in: (label, prefix,
/// host, port, database, user, password) variable names.
const GROUPS: [(&str, [&str; 5]); 3] = [
    (
        "POSTGRES_*",
        [
            "POSTGRES_HOST",
            "POSTGRES_PORT",
            "POSTGRES_DB",
            "POSTGRES_USER",
            "POSTGRES_PASSWORD",
        ],
    ),
    (
        "PG*",
        ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"],
    ),
    (
        "DB_*",
        ["DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"],
    ),
];

/// The variable that holds the password of a group-found database
/// (`POSTGRES_*` → `POSTGRES_PASSWORD`); `None` for a URL variable.
pub fn password_variable(source: &str) -> Option<&'static str> {
    GROUPS
        .iter()
        .find(|(label, _)| *label == source)
        .map(|(_, names)| names[4])
}

/// Databases from host/port/database/user/password groups.
fn groups(env: &[EnvVar]) -> Vec<Discovered> {
    let get = |name: &str| env.iter().find(|v| v.name == name);
    let mut out = Vec::new();
    for (label, [host, port, db, user, password]) in GROUPS {
        let Some(h) = get(host) else { continue };
        let Value::Known(h_value) = &h.value else {
            continue;
        };
        let mut parts = vec![format!("host={}", quote(h_value))];
        let mut origins = vec![format!("{host} from {}", h.origin)];
        for (var, key) in [(port, "port"), (db, "dbname"), (user, "user")] {
            if let Some(v) = get(var) {
                if let Value::Known(text) = &v.value {
                    parts.push(format!("{key}={}", quote(text)));
                    origins.push(format!("{var} from {}", v.origin));
                }
            }
        }
        let password = get(password).map(|v| {
            origins.push(format!("{password} from {}", v.origin));
            match &v.value {
                Value::Known(_) => Value::InSpec(v.name.clone()),
                other => other.clone(),
            }
        });
        out.push(Discovered {
            source: label.to_string(),
            connection: resolve(&parts.join(" "))
                .ok()
                .map(|i| i.to_libpq_string_without_password()),
            password,
            origins,
            secret_url: None,
        });
    }
    out
}

/// A libpq `key=value` value, quoted when needed.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Parses a connection string as written, without this machine's libpq
/// environment (it describes the app's connection, not ours).
fn resolve(s: &str) -> Result<dbsnap_pg::ConnInfo, dbsnap_pg::conninfo::ConnInfoError> {
    dbsnap_pg::ConnInfo::resolve_with(s, &BTreeMap::<String, String>::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(env: Json, env_from: Json) -> Json {
        json!({
            "kind": "Deployment",
            "metadata": {"name": "core-api", "namespace": "poolside"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "api", "image": "core-api:1", "env": env, "envFrom": env_from},
                {"name": "sidecar", "image": "proxy:1"}
            ]}}}
        })
    }

    fn config_maps(name: &str) -> Option<BTreeMap<String, String>> {
        match name {
            "db-config" => Some(BTreeMap::from([
                ("PGHOST".into(), "pg.poolside.svc".into()),
                ("PGDATABASE".into(), "backend".into()),
            ])),
            _ => None,
        }
    }

    #[test]
    fn urls_groups_and_where_each_setting_came_from() {
        let d = deployment(
            json!([
                {"name": "DB_HOST_NAME", "value": "core-db.poolside.svc"},
                {"name": "DATABASE_URL", "value": "postgres://core@$(DB_HOST_NAME):5432/core?sslmode=require"},
                {"name": "ANALYTICS_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "analytics", "key": "url"}}},
                {"name": "PGUSER", "value": "backend"},
                {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "backend-db", "key": "password"}}},
                {"name": "PGPORT", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "port"}}}
            ]),
            json!([{"configMapRef": {"name": "db-config"}}, {"secretRef": {"name": "extra"}}]),
        );
        let found = discover(&d, None, &config_maps).unwrap();
        assert_eq!(found.container, "api");
        let url = &found.databases[0];
        assert_eq!(url.source, "DATABASE_URL");
        let conn = url.connection.as_deref().unwrap();
        assert!(
            conn.contains("host=core-db.poolside.svc") && conn.contains("dbname=core"),
            "{conn}"
        );
        assert!(
            conn.contains("sslmode=require") && !conn.contains("password"),
            "{conn}"
        );
        let secret = &found.databases[1];
        assert_eq!(secret.connection, None);
        assert_eq!(
            secret.secret_url,
            Some(Value::Secret {
                name: "analytics".into(),
                key: "url".into()
            })
        );
        let pg = &found.databases[2];
        assert_eq!(pg.source, "PG*");
        let conn = pg.connection.as_deref().unwrap();
        assert!(
            conn.contains("host=pg.poolside.svc")
                && conn.contains("dbname=backend")
                && conn.contains("user=backend"),
            "{conn}"
        );
        assert_eq!(
            pg.password,
            Some(Value::Secret {
                name: "backend-db".into(),
                key: "password".into()
            })
        );
        assert!(
            pg.origins
                .contains(&"PGHOST from configMap db-config".to_string()),
            "{:?}",
            pg.origins
        );
        assert!(
            found.notes[0].contains("envFrom Secret \"extra\""),
            "{:?}",
            found.notes
        );
    }

    #[test]
    fn a_password_written_in_the_spec_is_named_never_copied() {
        let d = deployment(
            json!([
                {"name": "DATABASE_URL", "value": "postgres://app:hunter2@db/app"},
                {"name": "POSTGRES_HOST", "value": "db"},
                {"name": "POSTGRES_PASSWORD", "value": "hunter3"}
            ]),
            json!([]),
        );
        let found = discover(&d, None, &config_maps).unwrap();
        let text = serde_json::to_string(&found).unwrap();
        assert!(!text.contains("hunter"), "{text}");
        assert_eq!(
            found.databases[0].password,
            Some(Value::InSpec("DATABASE_URL".into()))
        );
        assert_eq!(
            found.databases[1].password,
            Some(Value::InSpec("POSTGRES_PASSWORD".into()))
        );
    }

    #[test]
    fn a_chosen_container_and_clear_errors() {
        let d = deployment(json!([]), json!([]));
        assert!(discover(&d, Some("sidecar"), &config_maps)
            .unwrap()
            .databases
            .is_empty());
        let e = discover(&d, Some("nope"), &config_maps).unwrap_err();
        assert!(e.0.contains("no container \"nope\""), "{e}");
        let d = deployment(json!([]), json!([{"configMapRef": {"name": "gone"}}]));
        let e = discover(&d, None, &config_maps).unwrap_err();
        assert!(e.0.contains("ConfigMap \"gone\""), "{e}");
        let e = discover(&json!({"kind": "Deployment"}), None, &config_maps).unwrap_err();
        assert!(e.0.contains("no pod template"), "{e}");
    }

    #[test]
    fn references_expand_as_kubernetes_expands_them() {
        let mut env = vec![
            EnvVar {
                name: "A".into(),
                value: Value::Known("x".into()),
                origin: "env".into(),
            },
            EnvVar {
                name: "B".into(),
                value: Value::Known("$(A)-$$(A)-$(C)".into()),
                origin: "env".into(),
            },
        ];
        expand_references(&mut env);
        assert_eq!(env[1].value, Value::Known("x-$(A)-$(C)".into()));
    }

    #[test]
    fn a_url_built_from_a_secret_variable_names_the_secret_as_its_password() {
        let d = deployment(
            json!([
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "DATABASE_URL", "value": "postgresql://app:$(DB_PASSWORD)@db:5432/app"}
            ]),
            json!([]),
        );
        let found = discover(&d, None, &config_maps).unwrap();
        assert_eq!(
            found.databases[0].password,
            Some(Value::Secret {
                name: "db".into(),
                key: "password".into()
            })
        );
        assert!(!found.databases[0]
            .connection
            .as_deref()
            .unwrap()
            .contains("DB_PASSWORD"));
    }
}
