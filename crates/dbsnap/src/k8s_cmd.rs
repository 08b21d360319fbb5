//! `--k8s`: reaching an app's databases through its Kubernetes cluster
//! (flags over the target's `k8s = {...}`), and `jump-create` /
//! `jump-delete`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dbsnap_core::config::K8sTarget;
use dbsnap_core::CoreError;
use dbsnap_k8s::cluster::{self, ClusterAccess, K8sError};
use dbsnap_k8s::discover::Discovery;
use dbsnap_k8s::route::{ClusterRoute, Database, RouteOptions};
use dbsnap_k8s::scale::{parse_workloads, Workload};

use crate::cli::parse_duration;

/// The image a jump pod uses when none is given: Debian-based (glibc, so a
/// copy of dbsnap runs in it) with PostgreSQL 18's client tools and a shell.
pub const DEFAULT_IMAGE: &str = "postgres:18-bookworm";

/// Flags that reach the databases through a cluster.
#[derive(Debug, Clone, Args, Default)]
pub struct K8sArgs {
    /// Find the databases in this workload's pod template (deploy/NAME or sts/NAME) and reach them through the cluster, from a jump pod.
    #[arg(long, value_name = "WORKLOAD")]
    pub k8s: Option<String>,
    /// Kubernetes namespace (default: the target's, the context's, then `default`).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config; in a pod, its service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The app's container whose environment names the databases (default: the first).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Jump pod image: any with PostgreSQL client tools and a shell.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// How long the jump pod may take to start (e.g. 120s, 5min).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub pod_timeout: Duration,
}

/// The settings in force: flags over the target's.
#[derive(Debug, Clone)]
pub struct K8sSettings {
    pub workload: Workload,
    pub access: ClusterAccess,
    pub container: Option<String>,
    pub image: String,
    pub pod_timeout: Duration,
}

impl K8sArgs {
    /// The settings, if the flags or the target name a workload.
    pub fn settings(&self, target: Option<&K8sTarget>) -> Result<Option<K8sSettings>, CoreError> {
        let t = target.cloned().unwrap_or_default();
        let Some(text) = self.k8s.clone().or(target.map(|t| t.workload.clone())) else {
            if self.namespace.is_some() || self.context.is_some() {
                return Err(CoreError::Config {
                    message: "--namespace and --context apply only with --k8s".into(),
                    hint: "add --k8s deploy/NAME (or k8s = { workload = ... } in the target)"
                        .into(),
                });
            }
            return Ok(None);
        };
        let workload = single_workload(&text)?;
        Ok(Some(K8sSettings {
            workload,
            access: ClusterAccess {
                kubeconfig: self.kubeconfig.clone().or(t.kubeconfig),
                context: self.context.clone().or(t.context),
                namespace: self.namespace.clone().or(t.namespace),
            },
            container: self.container.clone().or(t.container),
            image: self
                .image
                .clone()
                .or(t.image)
                .unwrap_or_else(|| DEFAULT_IMAGE.into()),
            pod_timeout: self.pod_timeout,
        }))
    }
}

fn single_workload(text: &str) -> Result<Workload, CoreError> {
    let mut list = parse_workloads(text).map_err(|e| CoreError::Config {
        message: format!("--k8s {text}: {e}"),
        hint: "name one workload: deploy/NAME or sts/NAME".into(),
    })?;
    if list.len() != 1 {
        return Err(CoreError::Config {
            message: format!("--k8s {text}: name exactly one workload"),
            hint: "e.g. --k8s deploy/core-api".into(),
        });
    }
    Ok(list.remove(0))
}

/// A Kubernetes failure as dbsnap reports it.
pub fn k8s_error(e: K8sError) -> CoreError {
    CoreError::Kubernetes {
        message: e.message,
        hint: e.hint,
    }
}

/// An open route and what it found.
pub struct Opened {
    pub route: Arc<ClusterRoute>,
    pub databases: Vec<Database>,
}

/// Connects to the cluster, discovers the app's databases (never reading
/// a Secret), starts the jump pod and the tunnels.
pub async fn open(s: &K8sSettings, run: &str, quiet: bool) -> Result<Opened, CoreError> {
    let (client, namespace) = cluster::connect(&s.access).await.map_err(k8s_error)?;
    let discovery =
        cluster::discover_workload(&client, &namespace, &s.workload, s.container.as_deref())
            .await
            .map_err(k8s_error)?;
    if discovery.databases.is_empty() {
        return Err(no_databases(&s.workload, &namespace, &discovery));
    }
    let object = workload_object(&client, &namespace, &s.workload).await?;
    let pod = dbsnap_k8s::jump::pod(&dbsnap_k8s::jump::JumpPod {
        run,
        workload: &object,
        container: &discovery.container,
        image: &s.image,
        deadline_secs: 6 * 3600,
    });
    let label = format!("k8s:{namespace}/{}", s.workload.display());
    if !quiet {
        eprintln!(
            "k8s: {} in namespace {namespace}: starting a jump pod (image {})",
            s.workload.display(),
            s.image
        );
    }
    let options = RouteOptions {
        label,
        ready_within: s.pod_timeout,
    };
    let (route, databases) = ClusterRoute::open(&client, &namespace, &discovery, pod, &options)
        .await
        .map_err(k8s_error)?;
    if !quiet {
        for d in &databases {
            eprintln!("k8s: database {} ({})", d.name, d.origins.join(", "));
        }
    }
    Ok(Opened {
        route: Arc::new(route),
        databases,
    })
}

fn no_databases(workload: &Workload, namespace: &str, d: &Discovery) -> CoreError {
    let mut message = format!(
        "no database settings found in {} (namespace {namespace}, container {})",
        workload.display(),
        d.container
    );
    for n in &d.notes {
        message.push_str(&format!("\n  note: {n}"));
    }
    CoreError::Kubernetes {
        message,
        hint: "dbsnap looks for DATABASE_URL-style URLs and POSTGRES_*, PG*, DB_* variables; pass --container if the app has several, or give the databases with -d".into(),
    }
}

async fn workload_object(
    client: &kube::Client,
    namespace: &str,
    workload: &Workload,
) -> Result<serde_json::Value, CoreError> {
    cluster::workload_json(client, namespace, workload)
        .await
        .map_err(k8s_error)
}

/// The route's run id: UTC time plus this process, unique enough for a
/// pod name.
pub fn run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}t{:02}{:02}{:02}-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        std::process::id()
    )
}
