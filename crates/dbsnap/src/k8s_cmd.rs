//! `--k8s` and `--scale`: their flags, settled over the target's
//! `k8s = {...}` into the typed settings of `dbsnap_core::k8s` (which opens
//! the route, chooses the jump pod's image and makes the scale hooks), and
//! the hidden `k8s-scale` command the scale hooks run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dbsnap_core::config::K8sTarget;
use dbsnap_core::consistency::QuiesceHooks;
use dbsnap_core::k8s::{k8s_error, K8sSettings, ScaleSettings, Via};
use dbsnap_core::CoreError;
use dbsnap_k8s::cluster::{self, ClusterAccess};
use dbsnap_k8s::image::registry::RegistryOptions;
use dbsnap_k8s::image::{self, Given, ImageRequest};
use dbsnap_k8s::scale::{parse_workloads, Workload};

use crate::cli::parse_duration;

/// Flags that reach the databases through a cluster: the app and its jump
/// pod, and the route (jump pod or port-forward).
#[derive(Debug, Clone, Args, Default)]
pub struct K8sArgs {
    #[command(flatten)]
    pub pod: PodArgs,
    /// How to reach the databases: `jump` (a relay in a jump pod; the password never leaves the cluster), `port-forward` (to PostgreSQL running in the cluster; the password must be known here) or `direct` (dbsnap runs in the cluster: straight to the servers, each database's URL or password from dbsnap's own environment under the app's variable name) [default: direct in a pod of the cluster, else jump].
    #[arg(long, value_enum)]
    pub via: Option<ViaArg>,
    /// With --via port-forward: read the password (or URL) from the app's Secret.
    #[arg(long)]
    pub read_secret: bool,
}

/// The app's workload, its cluster, and the jump pod started beside it.
#[derive(Debug, Clone, Args, Default)]
pub struct PodArgs {
    /// Find the databases in this workload's pod template (deploy/NAME or sts/NAME) and reach them through the cluster, from a jump pod.
    #[arg(long, value_name = "WORKLOAD")]
    pub k8s: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// The app's container whose environment names the databases (default: the first).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Jump pod image: any with PostgreSQL client tools and a shell (default: the newest dbsnap in --registry or in the app's own registry, else postgres:18-bookworm).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Take the jump pod image from this registry: the newest version tag of HOST[:PORT][/PATH]/dbsnap (see --image-name); failing to find it is an error.
    #[arg(long, value_name = "HOST[/PATH]", conflicts_with = "image")]
    pub registry: Option<String>,
    /// Name of dbsnap's image in a registry (default: dbsnap).
    #[arg(long, value_name = "NAME")]
    pub image_name: Option<String>,
    /// The global `--force-insecure` (set by `cli::run`): for the registry,
    /// accept an unverified TLS certificate or plain HTTP; the Kubernetes
    /// API is always verified.
    #[arg(skip)]
    pub force_insecure: bool,
    /// How long the jump pod may take to start (e.g. 120s, 5min).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub pod_timeout: Duration,
}

impl PodArgs {
    /// As the route flags of a command that always uses a jump pod.
    pub fn with_jump_route(&self) -> K8sArgs {
        K8sArgs {
            pod: self.clone(),
            via: Some(ViaArg::Jump),
            read_secret: false,
        }
    }
}

/// Which cluster and namespace: flags shared by every Kubernetes command.
#[derive(Debug, Clone, Args, Default)]
pub struct ClusterFlags {
    /// Kubernetes namespace (default: the target's if any, the context's, then `default`).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Kubeconfig context (default: the current one).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config; in a pod, its service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

impl ClusterFlags {
    /// The flags over the target's settings.
    pub fn access(&self, target: Option<&K8sTarget>) -> ClusterAccess {
        let t = target.cloned().unwrap_or_default();
        ClusterAccess {
            kubeconfig: self.kubeconfig.clone().or(t.kubeconfig),
            context: self.context.clone().or(t.context),
            namespace: self.namespace.clone().or(t.namespace),
        }
    }
}

/// `--via`: the route through the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ViaArg {
    /// A relay in a jump pod authenticates for dbsnap.
    #[default]
    Jump,
    /// Port-forward to the PostgreSQL pod behind the app's database Service.
    PortForward,
    /// Straight to the servers, from inside the cluster.
    Direct,
}

impl K8sArgs {
    /// The settings, if the flags or the target name a workload.
    pub fn settings(&self, target: Option<&K8sTarget>) -> Result<Option<K8sSettings>, CoreError> {
        let t = target.cloned().unwrap_or_default();
        let Some(text) = self.pod.k8s.clone().or(target.map(|t| t.workload.clone())) else {
            return Ok(None);
        };
        let workload = single_workload(&text)?;
        let via = match self.via {
            Some(ViaArg::PortForward) => Via::PortForward {
                read_secret: self.read_secret,
            },
            _ if self.read_secret => {
                return Err(CoreError::Config {
                    message: "--read-secret applies only with --via port-forward".into(),
                    hint: "the jump pod never needs the password here; drop --read-secret".into(),
                })
            }
            Some(ViaArg::Jump) => Via::Jump,
            Some(ViaArg::Direct) => Via::Direct,
            None => Via::Auto,
        };
        let image = self.image_request(&t)?;
        Ok(Some(K8sSettings {
            workload,
            access: self.pod.cluster.access(target),
            container: self.pod.container.clone().or(t.container),
            image,
            pod_timeout: self.pod.pod_timeout,
            via,
        }))
    }
}

impl K8sArgs {
    /// The image settings: flags over the target's. An image and a
    /// registry together are refused, in the target as on the command line.
    fn image_request(&self, t: &K8sTarget) -> Result<ImageRequest, CoreError> {
        if let (Some(image), Some(registry)) = (&t.image, &t.registry) {
            return Err(CoreError::Config {
                message: format!(
                    "the target's k8s settings name both image = \"{image}\" and registry = \"{registry}\": only one can choose the jump pod's image"
                ),
                hint: "keep one of them in dbsnap.toml".into(),
            });
        }
        let given = |value: &Option<String>, from: &str| {
            value.clone().map(|value| Given {
                value,
                from: from.into(),
            })
        };
        let (image, registry) = match (
            given(&self.pod.image, "--image"),
            given(&self.pod.registry, "--registry"),
        ) {
            (None, None) => (
                given(&t.image, "the target's image"),
                given(&t.registry, "the target's registry"),
            ),
            flags => flags,
        };
        if let Some(r) = &registry {
            image::reference::Registry::parse(&r.value).map_err(|e| CoreError::Config {
                message: format!("{} {}: {e}", r.from, r.value),
                hint: "give HOST[:PORT][/PATH], e.g. --registry registry.example.com:5000/team; plain HTTP is allowed by --force-insecure"
                    .into(),
            })?;
        }
        Ok(ImageRequest {
            image,
            registry,
            image_name: self
                .pod
                .image_name
                .clone()
                .or(t.image_name.clone())
                .unwrap_or_else(|| image::DEFAULT_IMAGE_NAME.into()),
            repository_env: t.image_repository_env.clone(),
            options: RegistryOptions {
                force_insecure: self.pod.force_insecure || t.force_insecure.unwrap_or(false),
                ..RegistryOptions::default()
            },
        })
    }
}

impl K8sArgs {
    /// Refuses cluster flags that nothing would use (no `--k8s`, no
    /// `--scale`, nothing in the target).
    pub fn check_used(
        &self,
        scale: &ScaleArgs,
        target: Option<&K8sTarget>,
    ) -> Result<(), CoreError> {
        let used = self.pod.k8s.is_some() || scale.scale.is_some() || target.is_some();
        let given: Vec<&str> = [
            self.pod.cluster.namespace.as_ref().map(|_| "--namespace"),
            self.pod.cluster.context.as_ref().map(|_| "--context"),
            self.pod.cluster.kubeconfig.as_ref().map(|_| "--kubeconfig"),
            self.pod.image.as_ref().map(|_| "--image"),
            self.pod.registry.as_ref().map(|_| "--registry"),
            self.pod.image_name.as_ref().map(|_| "--image-name"),
            self.pod.container.as_ref().map(|_| "--container"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if used || given.is_empty() {
            return Ok(());
        }
        Err(CoreError::Config {
            message: format!("{} apply only with --k8s or --scale", given.join(", ")),
            hint: "add --k8s deploy/NAME (or k8s = { workload = ... } in the target), or drop them"
                .into(),
        })
    }
}

fn single_workload(text: &str) -> Result<Workload, CoreError> {
    let mut list = parse_workloads(text).map_err(|e| CoreError::Config {
        message: format!("--k8s {e}"),
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

/// Where the library's lines for a person go: stderr, unless `quiet`
/// (`--json`).
pub fn say(quiet: bool) -> impl Fn(&str) + Sync {
    move |line: &str| {
        if !quiet {
            eprintln!("{line}");
        }
    }
}

/// `--scale`: stop the app by scaling its workloads to 0 (and back after).
#[derive(Debug, Clone, Args, Default)]
pub struct ScaleArgs {
    /// Scale these workloads to 0 before changing anything and back afterwards, also after a crash via `dbsnap resume` (e.g. deploy/core-api,sts/worker).
    #[arg(long, value_name = "WORKLOADS")]
    pub scale: Option<String>,
    /// How long to wait for the app's pods to be gone after scaling to 0.
    #[arg(long, value_name = "DURATION", default_value = "300s", value_parser = parse_duration)]
    pub scale_timeout: Duration,
}

impl ScaleArgs {
    /// What `--scale` (the target's `k8s.scale` otherwise) scales, with the
    /// cluster flags over the target's; `None` when nothing is to be
    /// scaled. The hooks run dbsnap itself (`dbsnap k8s-scale`).
    pub fn settings(
        &self,
        k8s: &K8sArgs,
        target: Option<&K8sTarget>,
    ) -> Result<Option<ScaleSettings>, CoreError> {
        let listed = self.scale.clone().or_else(|| {
            target
                .filter(|t| !t.scale.is_empty())
                .map(|t| t.scale.join(","))
        });
        let Some(text) = listed else {
            return Ok(None);
        };
        let workloads = parse_workloads(&text).map_err(|e| CoreError::Config {
            message: format!("--scale {text}: {e}"),
            hint: "e.g. --scale deploy/core-api,sts/worker".into(),
        })?;
        let program = std::env::current_exe().map_err(|e| {
            CoreError::Internal(format!("cannot find dbsnap's own executable: {e}"))
        })?;
        Ok(Some(ScaleSettings {
            workloads,
            access: k8s.pod.cluster.access(target),
            timeout: self.scale_timeout,
            program,
        }))
    }

    /// The stop/start hooks `--scale` asks for (checked against the
    /// cluster), if any.
    pub async fn hooks(
        &self,
        k8s: &K8sArgs,
        target: Option<&K8sTarget>,
    ) -> Result<Option<QuiesceHooks>, CoreError> {
        match self.settings(k8s, target)? {
            Some(s) => Ok(Some(dbsnap_core::k8s::scale_hooks(&s).await?)),
            None => Ok(None),
        }
    }
}

/// The hidden `k8s-scale` command the scale hooks run.
#[derive(Debug, Args)]
pub struct K8sScaleArgs {
    /// `down` (to 0, recording the replicas) or `up` (back to the recorded replicas).
    #[arg(value_parser = ["down", "up"])]
    pub direction: String,
    /// deploy/NAME,sts/NAME,...
    pub workloads: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub context: Option<String>,
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for the pods to be gone (down).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// Runs `k8s-scale`; says on stderr what it did.
pub async fn k8s_scale(args: &K8sScaleArgs) -> Result<(), CoreError> {
    let workloads = parse_workloads(&args.workloads).map_err(|e| CoreError::Config {
        message: e,
        hint: "e.g. deploy/core-api,sts/worker".into(),
    })?;
    let access = ClusterAccess {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        namespace: args.namespace.clone(),
    };
    let (client, namespace) = cluster::connect(&access).await.map_err(k8s_error)?;
    if args.direction == "down" {
        // Run by the hooks of create's and restore's --scale, whose
        // --scale-timeout is this --wait.
        let done = dbsnap_k8s::scale::scale_down(
            &client,
            &namespace,
            &workloads,
            args.wait,
            "--scale-timeout",
        )
        .await
        .map_err(k8s_error)?;
        for (w, before) in done {
            eprintln!(
                "k8s: scaled {} to 0 (had {before}); its pods are gone",
                w.display()
            );
        }
    } else {
        let done = dbsnap_k8s::scale::scale_up(&client, &namespace, &workloads)
            .await
            .map_err(k8s_error)?;
        for (w, before) in done {
            eprintln!("k8s: scaled {} back to {before}", w.display());
        }
    }
    Ok(())
}
