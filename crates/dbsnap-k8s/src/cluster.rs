//! Reaching the cluster and reading an app's workload: kubeconfig
//! (`--kubeconfig` or `KUBECONFIG`, `--context`), the namespace (the flag,
//! else the context's, else `default`), and discovery through the API —
//! the workload and the ConfigMaps it names are read; Secrets never are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value as Json;

use crate::discover::{discover, Discovery};
use crate::hint;
use crate::hint::{Hint, Setting};
use crate::scale::Workload;

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterAccess {
    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`; in a
    /// pod without one, its service account).
    pub kubeconfig: Option<PathBuf>,
    /// Context (default: the kubeconfig's current one).
    pub context: Option<String>,
    /// Namespace (default: the context's, then `default`).
    pub namespace: Option<String>,
}

/// A Kubernetes failure, in words and with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sError {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Hint,
}

impl K8sError {
    /// A failure and what to do about it.
    pub fn new(message: impl Into<String>, hint: impl Into<Hint>) -> K8sError {
        K8sError {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// The message, then the hint in plain words.
impl std::fmt::Display for K8sError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nhint: {}", self.message, self.hint)
    }
}

impl std::error::Error for K8sError {}

/// Whether dbsnap runs in a pod and is to use its own cluster, as
/// `Config::infer` then does: no kubeconfig or context named, none in
/// `KUBECONFIG` or `~/.kube/config`, and the pod's service account token
/// and `KUBERNETES_SERVICE_HOST` present.
pub fn in_cluster(access: &ClusterAccess) -> bool {
    let home_config = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .is_some_and(|p| p.exists());
    access.kubeconfig.is_none()
        && access.context.is_none()
        && std::env::var_os("KUBECONFIG").is_none_or(|k| k.is_empty())
        && !home_config
        && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new(crate::direct::TOKEN_PATH).is_file()
}

/// A client for the cluster and the namespace to work in.
pub async fn connect(access: &ClusterAccess) -> Result<(Client, String), K8sError> {
    let options = KubeConfigOptions {
        context: access.context.clone(),
        ..Default::default()
    };
    let config = match &access.kubeconfig {
        Some(path) => {
            if !path.exists() {
                return Err(K8sError::new(
                    format!("the kubeconfig {} does not exist", path.display()),
                    hint!["check the path given with ", Setting::Kubeconfig],
                ));
            }
            let file = Kubeconfig::read_from(path).map_err(|e| {
                K8sError::new(
                    format!("cannot read kubeconfig {}: {e}", path.display()),
                    "check that it is a kubeconfig (kubectl --kubeconfig FILE config view)",
                )
            })?;
            check_context(
                &file,
                access.context.as_deref(),
                &path.display().to_string(),
            )?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| e.to_string())
        }
        None if access.context.is_some() => {
            if let Ok(file) = Kubeconfig::read() {
                check_context(&file, access.context.as_deref(), "the kubeconfig")?;
            }
            Config::from_kubeconfig(&options)
                .await
                .map_err(|e| e.to_string())
        }
        None => Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| {
        K8sError::new(
            format!("no usable Kubernetes configuration: {e}"),
            hint![
                "check ",
                Setting::Kubeconfig,
                " / KUBECONFIG and ",
                Setting::Context,
                " (kubectl config get-contexts lists them)"
            ],
        )
    })?;
    let namespace = access
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| {
        K8sError::new(
            format!("cannot set up the Kubernetes client: {e}"),
            "check the kubeconfig's server and certificates",
        )
    })?;
    Ok((client, namespace))
}

/// A `--context` the kubeconfig does not have is named, with those it has.
fn check_context(file: &Kubeconfig, context: Option<&str>, source: &str) -> Result<(), K8sError> {
    let Some(wanted) = context else {
        return Ok(());
    };
    let names: Vec<&str> = file.contexts.iter().map(|c| c.name.as_str()).collect();
    if names.contains(&wanted) {
        return Ok(());
    }
    Err(K8sError::new(
        format!(
            "context {wanted} is not in {source} (it has: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ),
        hint![
            "pick one of them with ",
            Setting::Context,
            " (kubectl config get-contexts)"
        ],
    ))
}

/// An API error in words: not found, RBAC (naming verb and resource), or other.
fn api_error(e: kube::Error, verb: &str, what: &str, namespace: &str) -> K8sError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => K8sError::new(
            format!("{what} not found in namespace {namespace}"),
            hint!["check the name and ", Setting::Namespace, " (kubectl get deploy,sts -n NAMESPACE)"],
        ),
        kube::Error::Api(s) if s.code == 403 => K8sError::new(
            format!("RBAC denied: cannot {verb} {what} in namespace {namespace}: {}", s.message),
            format!("ask for a Role that allows {verb} on it (kubectl auth can-i {verb} ... -n {namespace})"),
        ),
        _ => match dbsnap_pg::connect::tls_problem(&e) {
            Some(tls) => K8sError::new(
                format!("cannot {verb} {what} in namespace {namespace}: the Kubernetes API server is not trusted: {tls}"),
                "the kubeconfig's certificate-authority (or -data) for this cluster must be the CA that signed the API server's certificate: check the cluster entry (kubectl config view --raw --minify)",
            ),
            None => K8sError::new(
                format!("cannot {verb} {what} in namespace {namespace}: {}", describe(&e)),
                "check that the cluster is reachable (kubectl cluster-info)",
            ),
        },
    }
}

/// A kube-rs error in one sentence: the API's own message and code, the
/// TLS or connection failure under a transport error, never a dump.
pub fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(s) = e {
        let message = if s.message.is_empty() {
            &s.reason
        } else {
            &s.message
        };
        return format!("the API server answered {} {message}", s.code);
    }
    if let Some(tls) = dbsnap_pg::connect::tls_problem(e) {
        return format!("the API server is not trusted: {tls}");
    }
    // The deepest cause says most (`client error (Connect)` says nothing).
    let mut deepest: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    if std::ptr::addr_eq(deepest, e as &(dyn std::error::Error + 'static)) {
        return e.to_string();
    }
    format!("{e}: {deepest}")
}

/// The cluster, the namespace to work in, the app's databases and its
/// workload as read (once).
pub async fn reach(
    access: &ClusterAccess,
    workload: &Workload,
    container: Option<&str>,
) -> Result<(Client, String, Discovery, Json), K8sError> {
    let (client, namespace) = connect(access).await?;
    let (discovery, object) = discover_workload(&client, &namespace, workload, container).await?;
    Ok((client, namespace, discovery, object))
}

/// Reads `workload` and the ConfigMaps its pod template names, and finds
/// its databases; also returns the workload as read (JSON), so callers
/// need not read it again. No Secret is read.
pub async fn discover_workload(
    client: &Client,
    namespace: &str,
    workload: &Workload,
    container: Option<&str>,
) -> Result<(Discovery, Json), K8sError> {
    let object = workload_json(client, namespace, workload).await?;
    let config_maps = read_config_maps(client, namespace, &object).await?;
    let found =
        discover(&object, container, &|name| config_maps.get(name).cloned()).map_err(|e| {
            K8sError::new(
                format!("{}: {e}", workload.display()),
                hint![
                    "name the container with ",
                    Setting::Container,
                    ", or map the database in the target"
                ],
            )
        })?;
    Ok((found, object))
}

/// The workload as the API returns it (JSON).
pub async fn workload_json(
    client: &Client,
    namespace: &str,
    workload: &Workload,
) -> Result<Json, K8sError> {
    let what = workload.display();
    Ok(if workload.resource == "statefulsets" {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        to_json(
            api.get(&workload.name)
                .await
                .map_err(|e| api_error(e, "get", &what, namespace))?,
        )
    } else {
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        to_json(
            api.get(&workload.name)
                .await
                .map_err(|e| api_error(e, "get", &what, namespace))?,
        )
    })
}

fn to_json<T: serde::Serialize>(object: T) -> Json {
    serde_json::to_value(object).unwrap_or(Json::Null)
}

/// The data of every ConfigMap the pod template names (missing ones left out).
async fn read_config_maps(
    client: &Client,
    namespace: &str,
    workload: &Json,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, K8sError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut out = BTreeMap::new();
    for name in config_map_names(workload) {
        match api.get_opt(&name).await {
            Ok(Some(cm)) => {
                out.insert(name, cm.data.unwrap_or_default());
            }
            Ok(None) => {}
            Err(e) => return Err(api_error(e, "get", &format!("configmap/{name}"), namespace)),
        }
    }
    Ok(out)
}

/// ConfigMaps named by `envFrom` or `configMapKeyRef` in any container.
fn config_map_names(workload: &Json) -> Vec<String> {
    let mut names = Vec::new();
    let containers = workload
        .pointer("/spec/template/spec/containers")
        .and_then(Json::as_array);
    for c in containers.into_iter().flatten() {
        for from in c["envFrom"].as_array().into_iter().flatten() {
            names.extend(
                from.pointer("/configMapRef/name")
                    .and_then(Json::as_str)
                    .map(String::from),
            );
        }
        for var in c["env"].as_array().into_iter().flatten() {
            names.extend(
                var.pointer("/valueFrom/configMapKeyRef/name")
                    .and_then(Json::as_str)
                    .map(String::from),
            );
        }
    }
    names.sort();
    names.dedup();
    names
}
