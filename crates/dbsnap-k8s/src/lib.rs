//! Kubernetes for dbsnap. This first part is pure: [`discover`] reads a
//! Deployment's or StatefulSet's pod template (and the ConfigMaps it
//! names) and finds the application's databases, saying where each
//! setting came from, without ever needing a Secret's value — passwords
//! stay references that only a pod in the cluster resolves.
//!
//! Cluster access (kube-rs), jump pods, port-forwards and scaling build on
//! it; see `docs/ARCHITECTURE.md`.

pub mod discover;
