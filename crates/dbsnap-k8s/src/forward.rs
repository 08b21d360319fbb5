//! The port-forward route (`--via port-forward`): for charts that run
//! PostgreSQL in the cluster. Each database host the app names is read as
//! a Service (`db`, `db.ns`, `db.ns.svc[.cluster.local]`) or a pod of a
//! headless one (`db-0.db.ns.svc`); dbsnap port-forwards to a ready pod
//! behind it, through a private local socket ([`Tunnel`]), and the client
//! programs run here.
//!
//! Unlike the jump pod, the password must be known here: from the usual
//! libpq sources (PGPASSWORD, ~/.pgpass, a prompt), or — only with
//! `--read-secret` — read from the app's Secret by this process.

use std::collections::BTreeMap;
use std::sync::Arc;

use dbsnap_pg::endpoint::Connecting;
use dbsnap_pg::process::Tool;
use dbsnap_pg::tunnel::{Dial, Duplex, Tunnel};
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind, Resolver};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::Value as Json;

use crate::cluster::K8sError;
use crate::discover::{Discovery, Value};
use crate::hint;
use crate::hint::Setting;
use crate::route::Database;

/// Servers are told apart by address: one tunnel each.
type ServerKey = (Vec<String>, Vec<u16>);

fn key(info: &ConnInfo) -> ServerKey {
    let ports = (0..info.hosts.len().max(1)).map(|i| info.port(i)).collect();
    (info.hosts.clone(), ports)
}

/// A route by port-forward to in-cluster PostgreSQL pods.
pub struct ForwardRoute {
    label: String,
    tunnels: Vec<(ServerKey, Tunnel)>,
    /// Passwords read from Secrets (`--read-secret`), by server.
    passwords: BTreeMap<ServerKey, String>,
}

impl std::fmt::Debug for ForwardRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by port-forward", self.label)
    }
}

impl ForwardRoute {
    /// Finds the pod behind each database host and opens a tunnel to it.
    pub async fn open(
        client: &Client,
        namespace: &str,
        discovery: &Discovery,
        label: &str,
        read_secret: bool,
    ) -> Result<(ForwardRoute, Vec<Database>), K8sError> {
        let mut route = ForwardRoute {
            label: label.to_string(),
            tunnels: Vec::new(),
            passwords: BTreeMap::new(),
        };
        let mut found: Vec<Database> = Vec::new();
        for d in &discovery.databases {
            let (name, password) = match (&d.connection, &d.secret_url) {
                (Some(c), None) => (c.clone(), None),
                (_, Some(Value::Secret { name, key })) if read_secret => {
                    let url = read_secret_key(client, namespace, name, key).await?;
                    let info = resolve_here(&url).map_err(|e| {
                        K8sError::new(format!("the URL in Secret {name} (key {key}) is not a connection string: {e}"), "check the Secret")
                    })?;
                    (info.to_libpq_string_without_password(), info.password)
                }
                _ => {
                    return Err(K8sError::new(
                        format!("{}: the whole connection URL is in a Secret, which the port-forward route reads only when allowed", d.source),
                        hint!["add ", Setting::ReadSecret, " (dbsnap then reads that Secret), or use the jump pod (drop ", Setting::PortForward, ")"],
                    ))
                }
            };
            let info = resolve_here(&name).map_err(|e| {
                K8sError::new(
                    format!("{}: {e}", d.source),
                    "map the database in the target",
                )
            })?;
            if found
                .iter()
                .any(|f| resolve_here(&f.name).ok().as_ref() == Some(&info))
            {
                continue;
            }
            let password = match (password, &d.password) {
                (Some(p), _) => Some(p),
                (None, Some(Value::Secret { name, key })) if read_secret => {
                    Some(read_secret_key(client, namespace, name, key).await?)
                }
                _ => None,
            };
            let k = key(&info);
            if let Some(p) = password {
                route.passwords.insert(k.clone(), p);
            }
            if !route.tunnels.iter().any(|(t, _)| *t == k) {
                let (pod, port) = target_pod(client, namespace, &info).await?;
                let tunnel_label =
                    format!("port-forward to pod/{pod}:{port} (namespace {namespace})");
                let dial = forward_dial(client, namespace, &pod, port);
                let tunnel = Tunnel::open(&tunnel_label, dial).map_err(|e| {
                    K8sError::new(
                        format!("cannot open a local socket for the tunnel: {e}"),
                        "check that TMPDIR is writable",
                    )
                })?;
                route.tunnels.push((k, tunnel));
            }
            found.push(Database {
                name,
                source: d.source.clone(),
                origins: d.origins.clone(),
            });
        }
        Ok((route, found))
    }

    fn tunnel_for(&self, info: &ConnInfo) -> Result<&Tunnel, PgError> {
        let k = key(info);
        self.tunnels
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                PgError::new(
                    PgErrorKind::Config,
                    format!("{} does not reach {}", self.label, info.display()),
                )
                .hint("through a cluster, dbsnap reaches the servers the app's configuration names")
            })
    }

    /// `info` pointed at its tunnel, with the password it needs.
    fn pointed(&self, info: &ConnInfo) -> Result<ConnInfo, PgError> {
        let mut pointed = self.tunnel_for(info)?.point(info);
        pointed.password = info.password.clone();
        Ok(pointed)
    }
}

impl Resolver for ForwardRoute {
    fn route(&self) -> &str {
        &self.label
    }

    /// Settings as libpq would make them here (PGPASSWORD, ~/.pgpass), with
    /// the Secret's password when `--read-secret` read one.
    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError> {
        let mut info = ConnInfo::resolve(named).map_err(PgError::from)?;
        self.tunnel_for(&info)?;
        if let Some(p) = self.passwords.get(&key(&info)) {
            info.password = Some(p.clone());
        }
        Ok(info)
    }

    fn connect<'a>(&'a self, info: &'a ConnInfo) -> Connecting<'a> {
        Box::pin(async move {
            let pointed = self.pointed(info)?;
            dbsnap_pg::connect(&pointed).await.map_err(|mut e| {
                e.target = Some(info.display());
                e
            })
        })
    }

    fn prepare_tool(&self, tool: &mut Tool, info: &ConnInfo, tag: &str) -> Result<(), PgError> {
        let pointed = self.pointed(info)?;
        tool.connect(&pointed, tag).map(|_| ())
    }
}

/// One port-forward session per connection.
fn forward_dial(client: &Client, namespace: &str, pod: &str, port: u16) -> Dial {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pod.to_string();
    Arc::new(move || {
        let (api, pod) = (api.clone(), pod.clone());
        Box::pin(async move {
            let mut forwarder = api.portforward(&pod, &[port]).await.map_err(|e| {
                std::io::Error::other(match &e {
                    kube::Error::Api(s) if s.code == 403 => {
                        format!(
                            "RBAC denied: cannot create pods/portforward on pod/{pod}: {}",
                            s.message
                        )
                    }
                    _ => format!(
                        "cannot port-forward to pod/{pod}: {}",
                        crate::cluster::describe(&e)
                    ),
                })
            })?;
            let stream = forwarder
                .take_stream(port)
                .ok_or_else(|| std::io::Error::other("the port-forward has no stream"))?;
            if let Some(errors) = forwarder.take_error(port) {
                let pod = pod.clone();
                tokio::spawn(async move {
                    if let Some(e) = errors.await {
                        tracing::warn!("port-forward to pod/{pod}:{port}: {e}");
                    }
                });
            }
            tokio::spawn(async move {
                let _ = forwarder.join().await;
            });
            Ok(Box::new(stream) as Box<dyn Duplex>)
        })
    })
}

fn not_a_service(host: &str, namespace: &str) -> K8sError {
    K8sError::new(
        format!("the database host {host} is not a Service in namespace {namespace}"),
        hint!["the port-forward route reaches PostgreSQL running in the cluster; for a database outside it, drop ", Setting::PortForward, " (the jump pod reaches it)"],
    )
}

/// The ready pod behind `info`'s host and the container port to use.
async fn target_pod(
    client: &Client,
    namespace: &str,
    info: &ConnInfo,
) -> Result<(String, u16), K8sError> {
    let host = info.hosts.first().cloned().unwrap_or_default();
    let port = info.port(0);
    let labels: Vec<&str> = host.split('.').collect();
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let in_namespace = |i: usize| {
        labels
            .get(i)
            .is_none_or(|ns| *ns == namespace || *ns == "svc")
    };
    // db-0.db.ns.svc: a pod of a headless Service.
    if labels.len() >= 2 && in_namespace(2) {
        if let Ok(Some(pod)) = pods.get_opt(labels[0]).await {
            if let Ok(Some(_)) = services.get_opt(labels[1]).await {
                let name = pod.metadata.name.clone().unwrap_or_default();
                return Ok((name, port));
            }
        }
    }
    let service_name = labels.first().copied().unwrap_or_default();
    // An address or a name outside the cluster (`db.example.com`) is no
    // Service; `NAME.NS` and `NAME.NS.svc[...]` name one in NS.
    let cluster_name = labels.len() <= 2 || labels.get(2) == Some(&"svc");
    if host.parse::<std::net::IpAddr>().is_ok() || !cluster_name {
        return Err(not_a_service(&host, namespace));
    }
    if !in_namespace(1) {
        return Err(K8sError::new(
            format!("{host} is in another namespace than {namespace}"),
            hint![
                "name the database Service's namespace with ",
                Setting::Namespace
            ],
        ));
    }
    let service = services
        .get_opt(service_name)
        .await
        .map_err(|e| {
            K8sError::new(
                format!(
                    "cannot read service/{service_name} in namespace {namespace}: {}",
                    crate::cluster::describe(&e)
                ),
                "check RBAC: get on services",
            )
        })?
        .ok_or_else(|| not_a_service(&host, namespace))?;
    let svc = serde_json::to_value(&service).unwrap_or(Json::Null);
    let selector = svc["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if selector.is_empty() {
        return Err(K8sError::new(
            format!("service/{service_name} selects no pods (it has no selector)"),
            hint![
                "port-forward needs a Service backed by pods; use the jump pod instead (drop ",
                Setting::PortForward,
                ")"
            ],
        ));
    }
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            K8sError::new(
                format!(
                    "cannot list pods in namespace {namespace}: {}",
                    crate::cluster::describe(&e)
                ),
                "check RBAC: list on pods",
            )
        })?;
    let ready = list.items.iter().find(|p| {
        let s = serde_json::to_value(&p.status).unwrap_or(Json::Null);
        s["phase"] == "Running"
            && s["conditions"].as_array().is_none_or(|c| {
                !c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "False")
            })
    });
    let pod = ready.ok_or_else(|| {
        K8sError::new(
            format!("no running pod behind service/{service_name} (selector {selector})"),
            "check that the database is up (kubectl get pods -l SELECTOR -n NAMESPACE)",
        )
    })?;
    let pod_json = serde_json::to_value(pod).unwrap_or(Json::Null);
    let target = target_port(&svc, &pod_json, port);
    Ok((pod.metadata.name.clone().unwrap_or_default(), target))
}

/// The container port a Service port leads to (a number, or a named port
/// looked up in the pod).
fn target_port(service: &Json, pod: &Json, port: u16) -> u16 {
    let ports = service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(entry) = ports.iter().find(|p| p["port"] == port) else {
        return port;
    };
    match &entry["targetPort"] {
        Json::Number(n) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(port),
        Json::String(name) => pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(port),
        _ => port,
    }
}

/// Reads one key of a Secret (`--read-secret` only).
async fn read_secret_key(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, K8sError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get(name).await.map_err(|e| match &e {
        kube::Error::Api(s) if s.code == 403 => K8sError::new(
            format!(
                "RBAC denied: cannot get secret/{name} in namespace {namespace}: {}",
                s.message
            ),
            "ask for get on that Secret, or give the password with PGPASSWORD / ~/.pgpass",
        ),
        _ => K8sError::new(
            format!(
                "cannot read secret/{name} in namespace {namespace}: {}",
                crate::cluster::describe(&e)
            ),
            "check the Secret's name",
        ),
    })?;
    let bytes = secret
        .data
        .and_then(|d| d.get(key).cloned())
        .ok_or_else(|| {
            K8sError::new(
                format!("secret/{name} has no key {key}"),
                "check the app's secretKeyRef",
            )
        })?;
    String::from_utf8(bytes.0).map_err(|_| {
        K8sError::new(
            format!("secret/{name} key {key} is not text"),
            "check the Secret",
        )
    })
}

fn resolve_here(named: &str) -> Result<ConnInfo, dbsnap_pg::conninfo::ConnInfoError> {
    ConnInfo::resolve_with(named, &BTreeMap::<String, String>::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_target_ports_are_looked_up_in_the_pod() {
        let svc = json!({"spec": {"ports": [{"port": 5432, "targetPort": "postgresql"}]}});
        let pod = json!({"spec": {"containers": [{"ports": [{"name": "postgresql", "containerPort": 15432}]}]}});
        assert_eq!(target_port(&svc, &pod, 5432), 15432);
        let numbered = json!({"spec": {"ports": [{"port": 5432, "targetPort": 6432}]}});
        assert_eq!(target_port(&numbered, &pod, 5432), 6432);
        assert_eq!(target_port(&json!({}), &pod, 5432), 5432);
    }
}
