//! `jump-create` / `jump-delete`: a jump pod left running for a person
//! (started by `dbsnap_core::k8s::jump`), with the exact kubectl lines
//! that open psql in it.

use std::time::Duration;

use clap::Args;
use dbsnap_core::config::K8sTarget;
use dbsnap_core::k8s::{k8s_error, run_id};
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
    let kept = dbsnap_core::k8s::jump::start_kept(&s, args.ttl, &run_id()).await?;
    Ok(JumpCreated {
        jump_delete: format!(
            "dbsnap jump-delete{} -n {} {}",
            kept.access_flags, kept.namespace, kept.pod
        ),
        pod: kept.pod,
        namespace: kept.namespace,
        image: kept.image.image,
        image_reason: kept.image.reason,
        expires_in_seconds: args.ttl.as_secs(),
        psql: kept.psql,
    })
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
