//! Kubernetes as an application layer over `dbsnap-k8s`: what `--k8s`,
//! `--scale` and `--k8s-objects` do to a run of create, restore and the
//! recovery commands, and `volume-snapshot`.
//!
//! - [`route`]: the route to the app's databases through its cluster (a
//!   jump pod or a port-forward), opened, used and always closed in one
//!   place ([`with_route`], [`with_route_if`]).
//! - [`scale`]: `--scale` as the stop/start [`QuiesceHooks`](crate::consistency::QuiesceHooks).
//! - [`jump`]: a jump pod kept for a person (`jump-create`).
//! - [`objects`]: the namespace's objects as snapshot members.
//! - [`volumes`]: VolumeSnapshots of the namespace's claims, with the app
//!   scaled down meanwhile.
//!
//! The mechanics (kube-rs, pods, tunnels, patches) stay in `dbsnap-k8s`;
//! the settings come typed from the caller, which merges its flags over the
//! target's `k8s = {...}`. Nothing here writes to the terminal: what a
//! person should see while a route opens goes through a [`Say`] callback.

pub mod jump;
pub mod objects;
pub mod route;
pub mod scale;
pub mod volumes;

use std::time::Duration;

use dbsnap_k8s::cluster::{ClusterAccess, K8sError};
use dbsnap_k8s::image::ImageRequest;
use dbsnap_k8s::scale::Workload;

use crate::CoreError;

pub use dbsnap_k8s::pod::Reaper;
pub use objects::export_objects;
pub use route::{jump_image, run_id, with_route, with_route_if, Opened, Route};
pub use scale::{merge_scale_hooks, scale_hooks, ScaleSettings};

/// Where lines for a person go (one line per call, without its newline);
/// the caller decides whether and where they are shown.
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

/// How a run reaches an app's databases through its cluster, settled from
/// the caller's flags over the target's settings.
#[derive(Debug, Clone)]
pub struct K8sSettings {
    /// The app's workload, whose pod template names the databases.
    pub workload: Workload,
    /// Which cluster and namespace.
    pub access: ClusterAccess,
    /// The app's container whose environment names the databases (none:
    /// the first).
    pub container: Option<String>,
    /// What the jump pod's image is chosen from (when the route opens,
    /// with the workload).
    pub image: ImageRequest,
    /// How long the jump pod may take to start.
    pub pod_timeout: Duration,
    /// The route.
    pub via: Via,
}

/// The route through the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Via {
    /// Unless named: [`Via::Direct`] when dbsnap runs in a pod of the
    /// cluster it uses, else [`Via::Jump`].
    #[default]
    Auto,
    /// A relay in a jump pod authenticates for dbsnap; the password never
    /// leaves the cluster.
    Jump,
    /// Straight to the app's servers (dbsnap runs in the cluster), each
    /// database's secret from dbsnap's own environment under the app's
    /// variable name (see `dbsnap_k8s::direct`).
    Direct,
    /// Port-forward to the PostgreSQL pod behind the app's database
    /// Service; the password must be known here.
    PortForward {
        /// Read the password (or URL) from the app's Secret.
        read_secret: bool,
    },
}

/// A Kubernetes failure as dbsnap reports it.
pub fn k8s_error(e: K8sError) -> CoreError {
    CoreError::Kubernetes {
        message: e.message,
        hint: e.hint,
        code: crate::error::exit::KUBERNETES,
    }
}
