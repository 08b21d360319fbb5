//! `--k8s`: reaching an app's databases through its Kubernetes cluster
//! (flags over the target's `k8s = {...}`), the route it opens, the jump
//! pod's image and `--scale`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dbsnap_archive::snapshot::KubernetesOrigin;
use dbsnap_core::config::K8sTarget;
use dbsnap_core::CoreError;
use dbsnap_k8s::cluster::{self, ClusterAccess, K8sError};
use dbsnap_k8s::discover::Discovery;
use dbsnap_k8s::forward::ForwardRoute;
use dbsnap_k8s::image::registry::RegistryOptions;
use dbsnap_k8s::image::{self, Given, ImageError, ImageRequest, Resolved};
use dbsnap_k8s::route::{ClusterRoute, Database, RouteOptions};
use dbsnap_k8s::scale::{parse_workloads, Workload};

use crate::cli::parse_duration;

/// Flags that reach the databases through a cluster: the app and its jump
/// pod, and the route (jump pod or port-forward).
#[derive(Debug, Clone, Args, Default)]
pub struct K8sArgs {
    #[command(flatten)]
    pub pod: PodArgs,
    /// How to reach the databases: `jump` (a relay in a jump pod; the password never leaves the cluster) or `port-forward` (to PostgreSQL running in the cluster; the password must be known here).
    #[arg(long, value_enum, default_value = "jump")]
    pub via: Via,
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
            via: Via::Jump,
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

/// The route through the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// A relay in a jump pod authenticates for dbsnap.
    #[default]
    Jump,
    /// Port-forward to the PostgreSQL pod behind the app's database Service.
    PortForward,
}

/// The settings in force: flags over the target's.
#[derive(Debug, Clone)]
pub struct K8sSettings {
    pub workload: Workload,
    pub access: ClusterAccess,
    pub container: Option<String>,
    /// What the jump pod's image is chosen from (at `open`, with the workload).
    pub image: ImageRequest,
    pub pod_timeout: Duration,
    pub via: Via,
    pub read_secret: bool,
}

impl K8sArgs {
    /// The settings, if the flags or the target name a workload.
    pub fn settings(&self, target: Option<&K8sTarget>) -> Result<Option<K8sSettings>, CoreError> {
        let t = target.cloned().unwrap_or_default();
        let Some(text) = self.pod.k8s.clone().or(target.map(|t| t.workload.clone())) else {
            return Ok(None);
        };
        let workload = single_workload(&text)?;
        if self.read_secret && self.via != Via::PortForward {
            return Err(CoreError::Config {
                message: "--read-secret applies only with --via port-forward".into(),
                hint: "the jump pod never needs the password here; drop --read-secret".into(),
            });
        }
        let image = self.image_request(&t)?;
        Ok(Some(K8sSettings {
            workload,
            access: self.pod.cluster.access(target),
            container: self.pod.container.clone().or(t.container),
            image,
            pod_timeout: self.pod.pod_timeout,
            via: self.via,
            read_secret: self.read_secret,
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
                hint: "give HOST[:PORT][/PATH], e.g. --registry registry.example.com:5000/team"
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

/// A Kubernetes failure as dbsnap reports it.
pub fn k8s_error(e: K8sError) -> CoreError {
    CoreError::Kubernetes {
        message: e.message,
        hint: e.hint,
    }
}

/// An open route and what it found.
pub struct Opened {
    pub route: Route,
    pub databases: Vec<Database>,
    /// The workload and namespace, as a snapshot records them.
    pub origin: KubernetesOrigin,
}

/// The route in use.
pub enum Route {
    Jump(Arc<ClusterRoute>),
    Forward(Arc<ForwardRoute>),
}

impl Route {
    /// The route as core code uses it.
    pub fn resolver(&self) -> Arc<dyn dbsnap_core::Resolver> {
        match self {
            Route::Jump(r) => r.clone(),
            Route::Forward(r) => r.clone(),
        }
    }

    /// After a failure: if the jump pod is gone (deleted by someone, or
    /// its deadline), says so, since the error itself only tells of lost
    /// connections.
    pub async fn explain(&self, e: CoreError) -> CoreError {
        let Route::Jump(r) = self else {
            return e;
        };
        if matches!(e, CoreError::Interrupted(_)) || r.pod().is_running().await {
            return e;
        }
        CoreError::Kubernetes {
            message: format!(
                "{e}\nthe jump pod {} (namespace {}) stopped during the run, which broke its connections",
                r.pod().name,
                r.pod().namespace
            ),
            hint: "nothing was published or committed half-way; run the command again (and check who deletes pods in the namespace)".into(),
        }
    }

    /// Deletes the jump pod (tunnels close when the route is dropped).
    pub async fn close(&self) {
        if let Route::Jump(r) = self {
            r.close().await;
        }
    }
}

/// Connects to the cluster, discovers the app's databases (never reading
/// a Secret), starts the jump pod and the tunnels.
pub async fn open(
    s: &K8sSettings,
    run: &str,
    quiet: bool,
    reaper: &dbsnap_k8s::pod::Reaper,
) -> Result<Opened, CoreError> {
    let (client, namespace) = cluster::connect(&s.access).await.map_err(k8s_error)?;
    let discovery =
        cluster::discover_workload(&client, &namespace, &s.workload, s.container.as_deref())
            .await
            .map_err(k8s_error)?;
    if discovery.databases.is_empty() {
        return Err(no_databases(&s.workload, &namespace, &discovery));
    }
    let origin = KubernetesOrigin {
        namespace: namespace.clone(),
        workload: s.workload.display(),
    };
    if s.via == Via::PortForward {
        let label = format!("k8s-port-forward:{namespace}/{}", s.workload.display());
        let (route, databases) =
            ForwardRoute::open(&client, &namespace, &discovery, &label, s.read_secret)
                .await
                .map_err(k8s_error)?;
        print_found(&databases, quiet);
        return Ok(Opened {
            route: Route::Forward(Arc::new(route)),
            databases,
            origin,
        });
    }
    let object = workload_object(&client, &namespace, &s.workload).await?;
    let image = jump_image(s, &object, &discovery.container, quiet).await?;
    let pod = dbsnap_k8s::jump::pod(&dbsnap_k8s::jump::JumpPod {
        run,
        workload: &object,
        container: &discovery.container,
        image: &image.image,
        deadline_secs: 6 * 3600,
    });
    let label = format!("k8s:{namespace}/{}", s.workload.display());
    if !quiet {
        eprintln!(
            "k8s: {} in namespace {namespace}: starting a jump pod (image {})",
            s.workload.display(),
            image.image
        );
    }
    let options = RouteOptions {
        label,
        ready_within: s.pod_timeout,
        reaper: reaper.clone(),
    };
    let (route, databases) = ClusterRoute::open(&client, &namespace, &discovery, pod, &options)
        .await
        .map_err(k8s_error)?;
    print_found(&databases, quiet);
    Ok(Opened {
        route: Route::Jump(Arc::new(route)),
        databases,
        origin,
    })
}

/// The jump pod's image for the app's workload, and why (said on stderr
/// unless quiet, and logged).
pub(crate) async fn jump_image(
    s: &K8sSettings,
    workload: &serde_json::Value,
    container: &str,
    quiet: bool,
) -> Result<Resolved, CoreError> {
    let resolved = image::resolve(&s.image, workload, container)
        .await
        .map_err(|e| match e {
            ImageError::Setting { message, hint } => CoreError::Config { message, hint },
            ImageError::Registry { message, hint } => CoreError::Kubernetes { message, hint },
        })?;
    tracing::info!(image = %resolved.image, reason = %resolved.reason, "jump pod image");
    if !quiet {
        eprintln!("k8s: {}", resolved.line());
    }
    Ok(resolved)
}

fn print_found(databases: &[Database], quiet: bool) {
    if !quiet {
        for d in databases {
            eprintln!("k8s: database {} ({})", d.name, d.origins.join(", "));
        }
    }
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

pub(crate) async fn workload_object(
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

/// The stop and start commands that scale `--scale`'s workloads (the
/// target's `k8s.scale` otherwise): dbsnap itself, with the cluster access
/// written out, so the journal can run the start command again in
/// `dbsnap resume`. `None` when nothing is to be scaled.
pub async fn scale_hooks(
    scale: &ScaleArgs,
    k8s: &K8sArgs,
    target: Option<&K8sTarget>,
) -> Result<Option<ScaleHooks>, CoreError> {
    let listed = scale.scale.clone().or_else(|| {
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
    let access = k8s.pod.cluster.access(target);
    // Resolve the namespace now: the commands must not depend on a
    // context that could change before `resume`.
    let (client, namespace) = cluster::connect(&access).await.map_err(k8s_error)?;
    dbsnap_k8s::scale::preflight(&client, &namespace, &workloads)
        .await
        .map_err(k8s_error)?;
    let exe = std::env::current_exe()
        .map_err(|e| CoreError::Internal(format!("cannot find dbsnap's own executable: {e}")))?;
    let list = workloads
        .iter()
        .map(Workload::display)
        .collect::<Vec<_>>()
        .join(",");
    let mut base = vec![
        exe.display().to_string(),
        "k8s-scale".into(),
        "--namespace".into(),
        namespace.clone(),
    ];
    if let Some(c) = &access.context {
        base.extend(["--context".into(), c.clone()]);
    }
    if let Some(f) = &access.kubeconfig {
        let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        base.extend(["--kubeconfig".into(), f.display().to_string()]);
    }
    let command = |direction: &str, extra: &[String]| {
        let mut words = base.clone();
        words.push(direction.into());
        words.extend(extra.iter().cloned());
        words.push(list.clone());
        words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let wait = format!("{}ms", scale.scale_timeout.as_millis());
    Ok(Some(ScaleHooks {
        down: command("down", &["--wait".into(), wait]),
        up: command("up", &[]),
        described: format!(
            "the app is stopped first (scale {list} in namespace {namespace} to 0, waiting up to {} for its pods to be gone) and scaled back after",
            crate::cli::human_duration(scale.scale_timeout)
        ),
    }))
}

/// The commands `--scale` stops and starts the app with, and what they do.
pub struct ScaleHooks {
    pub down: String,
    pub up: String,
    pub described: String,
}

/// A word for a POSIX shell: as is when plain, else single-quoted.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// Where the scale hooks go: `--scale` is the stop/start command, so it
/// cannot be combined with `--stop-cmd`/`--start-cmd`.
pub fn merge_scale_hooks(
    hooks: &mut dbsnap_core::consistency::QuiesceHooks,
    scale: Option<ScaleHooks>,
    explicit: bool,
) -> Result<(), CoreError> {
    let Some(scale) = scale else {
        return Ok(());
    };
    if explicit {
        return Err(CoreError::Config {
            message: "--scale and --stop-cmd/--start-cmd both stop the app".into(),
            hint: "use one of them".into(),
        });
    }
    hooks.stop_cmd = Some(scale.down);
    hooks.start_cmd = Some(scale.up);
    hooks.described = Some(scale.described);
    Ok(())
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
