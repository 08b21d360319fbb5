//! `jump-create` / `jump-delete`: a jump pod left running for a person,
//! with the exact kubectl lines that open psql in it.

use std::time::Duration;

use clap::Args;
use dbsnap_core::config::K8sTarget;
use dbsnap_core::hooks::shell_quote;
use dbsnap_core::k8s::{jump_image, k8s_error, run_id};
use dbsnap_core::CoreError;
use dbsnap_k8s::cluster;

use crate::cli::parse_duration;
use crate::k8s_cmd::{ClusterFlags, PodArgs};

/// The shortest life of a kept jump pod.
const MIN_TTL: Duration = Duration::from_secs(60);

/// `dbsnap jump-create`: a jump pod left running for a person.
#[derive(Debug, Args)]
pub struct JumpCreateArgs {
    #[command(flatten)]
    pub pod: PodArgs,
    /// Named target from the config (for its k8s settings).
    #[arg(short, long)]
    pub target: Option<String>,
    /// How long the pod may live before Kubernetes ends it (e.g. 1h, 30min).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// `dbsnap jump-delete`: removes pods left by jump-create.
#[derive(Debug, Args)]
pub struct JumpDeleteArgs {
    /// The pod (default: every pod jump-create left in the namespace).
    pub name: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Named target from the config (for its k8s settings).
    #[arg(short, long)]
    pub target: Option<String>,
}

/// A kept jump pod and how to use it.
#[derive(Debug, serde::Serialize)]
pub struct JumpCreated {
    pub pod: String,
    pub namespace: String,
    pub image: String,
    /// Why that image (`from --image`, `newest version tag of ...`, `fallback: ...`).
    pub image_reason: String,
    pub expires_in_seconds: u64,
    /// One `kubectl exec` line per database (no password in any of them).
    pub psql: Vec<String>,
    /// The command that deletes the pod now.
    pub jump_delete: String,
}

/// Starts a kept jump pod and returns the lines that open psql in it.
pub async fn jump_create(
    args: &JumpCreateArgs,
    target: Option<&K8sTarget>,
) -> Result<JumpCreated, CoreError> {
    if args.ttl < MIN_TTL {
        return Err(CoreError::Config {
            message: format!(
                "--ttl {}s: a kept jump pod lives at least 60s",
                args.ttl.as_secs()
            ),
            hint: "give a longer --ttl, e.g. 30min or 1h (jump-delete removes it sooner)".into(),
        });
    }
    let s = args
        .pod
        .with_jump_route()
        .settings(target)?
        .ok_or_else(|| CoreError::Config {
            message: "jump-create needs the app's workload".into(),
            hint: "pass --k8s deploy/NAME (or a target with k8s = { workload = ... })".into(),
        })?;
    let (client, namespace) = cluster::connect(&s.access).await.map_err(k8s_error)?;
    let discovery =
        cluster::discover_workload(&client, &namespace, &s.workload, s.container.as_deref())
            .await
            .map_err(k8s_error)?;
    let object = cluster::workload_json(&client, &namespace, &s.workload)
        .await
        .map_err(k8s_error)?;
    // jump-create prints the reason with its result.
    let image = jump_image(&s, &object, &discovery.container, &|_| {}).await?;
    let run = run_id();
    let mut pod = dbsnap_k8s::jump::pod(&dbsnap_k8s::jump::JumpPod {
        run: &run,
        workload: &object,
        container: &discovery.container,
        image: &image.image,
        deadline_secs: args.ttl.as_secs(),
    });
    pod["metadata"]["labels"][dbsnap_k8s::pod::ROLE_LABEL] =
        serde_json::Value::String(dbsnap_k8s::pod::ROLE_KEPT.into());
    let reaper = dbsnap_k8s::pod::Reaper::default();
    let started = dbsnap_k8s::pod::JumpPod::start(&client, &namespace, pod, s.pod_timeout, &reaper)
        .await
        .map_err(k8s_error)?
        .keep();
    // The same cluster as this run: its kubeconfig and context, if given.
    let mut access = String::new();
    if let Some(file) = &s.access.kubeconfig {
        access.push_str(&format!(
            " --kubeconfig {}",
            shell_quote(&file.display().to_string())
        ));
    }
    if let Some(context) = &s.access.context {
        access.push_str(&format!(" --context {}", shell_quote(context)));
    }
    let mut seen = Vec::new();
    let psql = discovery
        .databases
        .iter()
        .filter(|d| first_of_its_server(d, &mut seen))
        .map(|d| psql_line(&access, &namespace, &started.name, d))
        .collect();
    Ok(JumpCreated {
        pod: started.name.clone(),
        jump_delete: format!("dbsnap jump-delete{access} -n {namespace} {}", started.name),
        namespace,
        image: image.image,
        image_reason: image.reason,
        expires_in_seconds: args.ttl.as_secs(),
        psql,
    })
}

/// Whether `d` is the first database found on its server, role and
/// database name (an app often names one database twice: a URL and a
/// `DB_*` group). Settings kept in a Secret cannot be compared here.
fn first_of_its_server(d: &dbsnap_k8s::discover::Discovered, seen: &mut Vec<String>) -> bool {
    let Some(key) = dbsnap_k8s::discover::database_key(d) else {
        return true;
    };
    if seen.contains(&key) {
        return false;
    }
    seen.push(key);
    true
}

/// `kubectl exec -it ... -- sh -c '... psql ...'`, the password taken
/// from the pod's own environment.
fn psql_line(
    access: &str,
    namespace: &str,
    pod: &str,
    d: &dbsnap_k8s::discover::Discovered,
) -> String {
    let inner = match dbsnap_k8s::discover::password_variable(&d.source) {
        Some(var) => format!(
            "PGPASSWORD=\"${var}\" exec psql \"{}\"",
            d.connection.clone().unwrap_or_default()
        ),
        None => format!("exec psql \"${}\"", d.source),
    };
    format!("kubectl{access} exec -it -n {namespace} {pod} -- sh -c '{inner}'")
}

/// Deletes the named kept pod, or all of them; returns their names.
pub async fn jump_delete(
    args: &JumpDeleteArgs,
    target: Option<&K8sTarget>,
) -> Result<Vec<String>, CoreError> {
    let access = args.cluster.access(target);
    let (client, namespace) = cluster::connect(&access).await.map_err(k8s_error)?;
    dbsnap_k8s::pod::delete_kept(&client, &namespace, args.name.as_deref())
        .await
        .map_err(k8s_error)
}
