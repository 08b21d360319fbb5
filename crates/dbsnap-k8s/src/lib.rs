//! Kubernetes for dbsnap: what `--k8s`, `--scale`, `jump-create`,
//! `k8s-objects` and `volume-snapshot` stand on.
//!
//! - [`discover`] reads a Deployment's or StatefulSet's pod template (and
//!   the ConfigMaps it names) and finds the application's databases, saying
//!   where each setting came from, without ever needing a Secret's value:
//!   passwords stay references that only a pod in the cluster resolves.
//! - [`cluster`] reaches the cluster (kubeconfig, context, namespace) with
//!   kube-rs and runs that discovery through the API, reading ConfigMaps but
//!   never a Secret.
//! - [`image`] chooses the jump pod's image (an explicit one, the newest
//!   dbsnap in a registry, or a fallback) and says why.
//! - [`jump`] builds the jump pod: the app's own `env`/`envFrom`, locked
//!   down and bounded.
//! - [`scale`] decides the scale-down and scale-up patches (the count kept
//!   in an annotation for `resume`) and finds autoscalers.
//! - [`pod`] runs a jump pod: started, waited for (with the reason when it
//!   does not start), exec sessions that end with the command, deleted, and
//!   leftovers of killed runs swept.
//! - [`route`] reaches the databases through a relay in the jump pod over
//!   local sockets; [`forward`] through a port-forward to PostgreSQL
//!   running in the cluster.
//! - [`objects`] exports a namespace's objects as YAML; [`volumes`] takes
//!   and lists VolumeSnapshots.
//!
//! See `docs/ARCHITECTURE.md` and `docs/KUBERNETES.md`.

pub mod cluster;
pub mod direct;
pub mod discover;
pub mod forward;
pub mod hint;
pub mod image;
pub mod jump;
pub mod objects;
pub mod pod;
pub mod route;
pub mod scale;
pub mod volumes;
