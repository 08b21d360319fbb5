//! The route through the cluster and its life: opened (connect, discover
//! the app's databases without reading a Secret, choose the jump pod's
//! image, start the jump pod or the port-forward), used by the run,
//! explained when the run fails because the jump pod went away, and closed
//! whatever the run's outcome.
//!
//! Commands use [`with_route`] (or [`with_route_if`]), never `open` and
//! `close` by hand, so that no path forgets to delete the jump pod. A run
//! stopped by a signal drops the work instead: the jump pod's guard deletes
//! it then, and the run's [`Reaper`] waits for that.

use std::sync::Arc;

use dbsnap_archive::snapshot::KubernetesOrigin;
use dbsnap_k8s::cluster;
use dbsnap_k8s::direct::DirectRoute;
use dbsnap_k8s::discover::Discovery;
use dbsnap_k8s::forward::ForwardRoute;
use dbsnap_k8s::hint;
use dbsnap_k8s::hint::Setting;
use dbsnap_k8s::image::{self, ImageError, Resolved};
use dbsnap_k8s::pod::Reaper;
use dbsnap_k8s::route::{ClusterRoute, Database, RouteOptions};
use dbsnap_k8s::scale::Workload;

use super::{k8s_error, K8sSettings, Say, Via};
use crate::error::exit;
use crate::CoreError;

/// An open route and what it found.
pub struct Opened {
    /// The route itself.
    pub route: Route,
    /// The app's databases, as the route names them.
    pub databases: Vec<Database>,
    /// The workload and namespace, as a snapshot records them.
    pub origin: KubernetesOrigin,
}

impl Opened {
    /// The names of the app's databases, as the route resolves them.
    pub fn database_names(&self) -> Vec<String> {
        self.databases.iter().map(|d| d.name.clone()).collect()
    }
}

/// The route in use.
pub enum Route {
    /// Through a relay in a jump pod.
    Jump(Arc<ClusterRoute>),
    /// Through a port-forward to PostgreSQL in the cluster.
    Forward(Arc<ForwardRoute>),
    /// Straight to the servers, from a pod of the cluster.
    Direct(Arc<DirectRoute>),
}

impl Route {
    /// The route as core code uses it.
    pub fn resolver(&self) -> Arc<dyn crate::Resolver> {
        match self {
            Route::Jump(r) => r.clone(),
            Route::Forward(r) => r.clone(),
            Route::Direct(r) => r.clone(),
        }
    }

    /// After a failure: if the jump pod is gone (deleted by someone, or
    /// its deadline), says so, since the error itself only tells of lost
    /// connections.
    async fn explain(&self, e: CoreError) -> CoreError {
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
            code: exit::KUBERNETES,
        }
    }

    /// Deletes the jump pod (tunnels close when the route is dropped).
    async fn close(&self) {
        if let Route::Jump(r) = self {
            r.close().await;
        }
    }
}

/// Opens the route, runs `work` through it, and closes it whatever `work`
/// returned. A failure of `work` is explained by the route's state: when
/// the jump pod stopped during the run, the error says so (nothing a run
/// of create or restore publishes or commits is left half-way then).
///
/// `run` names the jump pod (see [`run_id`]); `say` gets the lines that
/// tell what the route found and which image the jump pod runs.
pub async fn with_route<T>(
    settings: &K8sSettings,
    run: &str,
    say: Say<'_>,
    reaper: &Reaper,
    work: impl AsyncFnOnce(&Opened) -> Result<T, CoreError>,
) -> Result<T, CoreError> {
    let opened = open(settings, run, say, reaper).await?;
    let result = match work(&opened).await {
        Err(e) => Err(opened.route.explain(e).await),
        ok => ok,
    };
    opened.route.close().await;
    result
}

/// For rollback, resume and cleanup: the route opened again (a new jump
/// pod) when there are `settings` and `needed` says something needs it
/// (a route is never opened for nothing), `work` run with it or without,
/// and the route closed whatever `work` returned. A failure is returned as
/// is: these commands may have changed something before it.
pub async fn with_route_if<T>(
    settings: Option<&K8sSettings>,
    needed: bool,
    run: &str,
    say: Say<'_>,
    reaper: &Reaper,
    work: impl AsyncFnOnce(Option<&Opened>) -> Result<T, CoreError>,
) -> Result<T, CoreError> {
    let opened = match settings {
        Some(s) if needed => Some(open(s, run, say, reaper).await?),
        _ => None,
    };
    let result = work(opened.as_ref()).await;
    if let Some(o) = &opened {
        o.route.close().await;
    }
    result
}

/// Connects to the cluster, discovers the app's databases (never reading
/// a Secret), starts the jump pod and the tunnels (or the port-forward).
/// Private: only [`with_route`] and [`with_route_if`] open a route, and
/// they close it.
async fn open(
    s: &K8sSettings,
    run: &str,
    say: Say<'_>,
    reaper: &Reaper,
) -> Result<Opened, CoreError> {
    let (client, namespace, discovery, object) =
        cluster::reach(&s.access, &s.workload, s.container.as_deref())
            .await
            .map_err(k8s_error)?;
    if discovery.databases.is_empty() {
        return Err(no_databases(&s.workload, &namespace, &discovery));
    }
    let origin = KubernetesOrigin {
        namespace: namespace.clone(),
        workload: s.workload.display(),
    };
    let direct = match s.via {
        Via::Direct => true,
        Via::Auto => cluster::in_cluster(&s.access),
        _ => false,
    };
    if direct {
        let label = format!("k8s-direct:{namespace}/{}", s.workload.display());
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (route, databases) = DirectRoute::open(&discovery, &label, &env).map_err(k8s_error)?;
        say(&format!(
            "k8s: {} in namespace {namespace}: reaching its databases directly from this pod",
            s.workload.display()
        ));
        say_found(&databases, say);
        return Ok(Opened {
            route: Route::Direct(Arc::new(route)),
            databases,
            origin,
        });
    }
    if let Via::PortForward { read_secret } = s.via {
        let label = format!("k8s-port-forward:{namespace}/{}", s.workload.display());
        let (route, databases) =
            ForwardRoute::open(&client, &namespace, &discovery, &label, read_secret)
                .await
                .map_err(k8s_error)?;
        say_found(&databases, say);
        return Ok(Opened {
            route: Route::Forward(Arc::new(route)),
            databases,
            origin,
        });
    }
    let image = jump_image(s, &object, &discovery.container, say).await?;
    let pod = dbsnap_k8s::jump::pod(&dbsnap_k8s::jump::JumpPod {
        run,
        workload: &object,
        container: &discovery.container,
        image: &image.image,
        deadline_secs: 6 * 3600,
    });
    let label = format!("k8s:{namespace}/{}", s.workload.display());
    say(&format!(
        "k8s: {} in namespace {namespace}: starting a jump pod (image {})",
        s.workload.display(),
        image.image
    ));
    let options = RouteOptions {
        label,
        ready_within: s.pod_timeout,
        reaper: reaper.clone(),
    };
    let (route, databases) = ClusterRoute::open(&client, &namespace, &discovery, pod, &options)
        .await
        .map_err(k8s_error)?;
    say_found(&databases, say);
    Ok(Opened {
        route: Route::Jump(Arc::new(route)),
        databases,
        origin,
    })
}

/// The jump pod's image for the app's workload (its JSON object), and why
/// (said through `say`, and logged).
pub async fn jump_image(
    s: &K8sSettings,
    workload: &serde_json::Value,
    container: &str,
    say: Say<'_>,
) -> Result<Resolved, CoreError> {
    let resolved = image::resolve(&s.image, workload, container)
        .await
        .map_err(|e| match e {
            ImageError::Setting { message, hint } => CoreError::Kubernetes {
                message,
                hint,
                code: exit::USAGE,
            },
            ImageError::Registry { message, hint } => CoreError::Kubernetes {
                message,
                hint,
                code: exit::KUBERNETES,
            },
        })?;
    tracing::info!(image = %resolved.image, reason = %resolved.reason, "jump pod image");
    say(&format!("k8s: {}", resolved.line()));
    Ok(resolved)
}

fn say_found(databases: &[Database], say: Say<'_>) {
    for d in databases {
        say(&format!(
            "k8s: database {} ({})",
            d.name,
            d.origins.join(", ")
        ));
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
        hint: hint![
            "dbsnap looks for DATABASE_URL-style URLs and POSTGRES_*, PG*, DB_* variables; name the container with ",
            Setting::Container,
            " if the app has several, or give the databases with ",
            Setting::Databases
        ],
        code: exit::KUBERNETES,
    }
}

/// A run's id: UTC time plus this process, unique enough for a pod name.
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
