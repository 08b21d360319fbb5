//! What a namespace holds besides its databases: its objects as YAML
//! written out of a snapshot (`k8s-objects --out`; `create --k8s-objects`
//! stores them through `dbsnap_core::k8s::export_objects`) and the flags
//! of `volume-snapshot create|list` (taken by `dbsnap_core::k8s::volumes`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dbsnap_core::k8s::{run_id, volumes};
use dbsnap_core::CoreError;
use dbsnap_k8s::scale::parse_workloads;

use crate::cli::parse_duration;
use crate::k8s_cmd::ClusterFlags;

/// `dbsnap k8s-objects`.
#[derive(Debug, Args)]
pub struct K8sObjectsArgs {
    #[command(flatten)]
    pub file: crate::cli::FileArgs,
    /// Directory to write the objects into (made if missing; existing files are not overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Writes the `k8s/` members of a snapshot under `--out`, each checked
/// against the manifest first; returns the files written.
pub fn write_objects(
    args: &K8sObjectsArgs,
    g: &crate::cli::GlobalArgs,
    config: &dbsnap_core::config::Config,
) -> Result<Vec<PathBuf>, CoreError> {
    let path = crate::cli::resolve_file(&args.file, g, config)?;
    let objects =
        dbsnap_core::inspect::read_members(&path, dbsnap_k8s::objects::MEMBER_PREFIX, &g.crypto)?;
    if objects.is_empty() {
        return Err(CoreError::Config {
            message: format!("{} holds no Kubernetes objects", path.display()),
            hint: "snapshots keep them only when made with create --k8s-objects".into(),
        });
    }
    let mut written = Vec::new();
    for (name, bytes) in objects {
        let relative = name
            .strip_prefix(dbsnap_k8s::objects::MEMBER_PREFIX)
            .unwrap_or(&name);
        if relative
            .split('/')
            .any(|part| part == ".." || part.is_empty())
        {
            return Err(CoreError::NotSnapshot {
                file: path.display().to_string(),
                what: format!("member \"{name}\" has an unsafe path"),
            });
        }
        let file = args.out.join(relative);
        if file.exists() {
            return Err(CoreError::Config {
                message: format!("{} exists already", file.display()),
                hint: "write into an empty directory (--out)".into(),
            });
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CoreError::write_io(dir, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| CoreError::write_io(&file, e))?;
        written.push(file);
    }
    Ok(written)
}

/// `dbsnap volume-snapshot create|list`.
#[derive(Debug, Args)]
pub struct VolumeSnapshotArgs {
    #[command(subcommand)]
    pub action: VolumeSnapshotAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum VolumeSnapshotAction {
    /// Snapshot PVCs together (optionally with the app scaled to 0) and wait until they are ready.
    Create(VolumeSnapshotCreateArgs),
    /// List the namespace's VolumeSnapshots with their readiness.
    List(ClusterFlags),
}

#[derive(Debug, Args)]
pub struct VolumeSnapshotCreateArgs {
    /// A PersistentVolumeClaim to snapshot (repeatable: all are taken together).
    #[arg(long, value_name = "PVC", required = true)]
    pub pvc: Vec<String>,
    /// VolumeSnapshotClass (default: the cluster's default class).
    #[arg(long, value_name = "NAME")]
    pub class: Option<String>,
    /// Scale these workloads to 0 while the snapshots are taken (e.g. sts/db,deploy/core-api), and back after.
    #[arg(long, value_name = "WORKLOADS")]
    pub scale: Option<String>,
    /// How long to wait for the pods to go and the snapshots to be ready.
    #[arg(long, value_name = "DURATION", default_value = "10min", value_parser = parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub cluster: ClusterFlags,
}

/// Runs `volume-snapshot`; returns the snapshots to print.
pub async fn volume_snapshot(
    args: &VolumeSnapshotArgs,
) -> Result<Vec<dbsnap_k8s::volumes::VolumeSnapshot>, CoreError> {
    match &args.action {
        VolumeSnapshotAction::List(flags) => volumes::list(&flags.access(None)).await,
        VolumeSnapshotAction::Create(c) => {
            let scale = match &c.scale {
                Some(text) => parse_workloads(text).map_err(|e| CoreError::Config {
                    message: format!("--scale {text}: {e}"),
                    hint: "e.g. --scale sts/db,deploy/core-api".into(),
                })?,
                None => Vec::new(),
            };
            let request = volumes::TakeRequest {
                access: c.cluster.access(None),
                claims: c.pvc.clone(),
                class: c.class.clone(),
                scale,
                wait: c.wait,
                wait_setting: "--wait".into(),
            };
            volumes::take(&request, &run_id()).await
        }
    }
}
