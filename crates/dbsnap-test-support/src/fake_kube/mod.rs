//! A fake Kubernetes API server for tests, good enough for real `kubectl`.
//!
//! [`FakeKube::start`] serves HTTPS on a free loopback port, with a
//! self-signed CA made at start (`rcgen`) and a bearer token; requests
//! without the token get `401`. Objects live in memory as JSON, per
//! namespace, under the real API's paths and shapes:
//!
//! - discovery: `/api`, `/apis`, `/api/v1`, `/apis/apps/v1`, `/version`
//!   (plain `APIVersions`/`APIGroupList`/`APIResourceList`; kubectl falls
//!   back to them from aggregated discovery);
//! - get, list, create and delete of `namespaces`, `pods`, `secrets`,
//!   `configmaps`, `services`, `persistentvolumeclaims` (core v1),
//!   `deployments`, `statefulsets` (apps/v1), `ingresses`
//!   (networking.k8s.io/v1), `cronjobs` (batch/v1),
//!   `horizontalpodautoscalers` (autoscaling/v2), `volumesnapshots` and
//!   `volumesnapshotclasses` (snapshot.storage.k8s.io/v1), all listed in
//!   discovery and tabulated for `kubectl get`; a claim is `Bound` as it is
//!   created, a snapshot `readyToUse` 200 ms later (with
//!   `boundVolumeSnapshotContentName`, `creationTime` and its claim's size
//!   as `restoreSize`); JSON merge (and strategic merge, treated as merge) patch of
//!   any object; `generateName`; a Secret's `stringData` folded into `data`;
//! - get, put and patch of the `deployments/{name}/scale` and
//!   `statefulsets/{name}/scale` subresources (autoscaling/v1 `Scale`),
//!   which update `spec.replicas`.
//!
//! ## Controllers
//!
//! A Deployment or StatefulSet keeps `spec.replicas` virtual pods of its
//! template (`NAME-HASH-XXXXX` owned by a ReplicaSet `NAME-HASH` that is
//! not served, with `pod-template-hash`; `NAME-0`, `NAME-1`, … owned by the
//! StatefulSet), and its `status` counts them (`replicas`,
//! `readyReplicas`, `availableReplicas`, `updatedReplicas`). Scaling down
//! deletes the newest pods: they carry a `deletionTimestamp` for the
//! termination delay ([`FakeKube::set_termination_delay`], 300 ms), then
//! go. A StatefulSet re-creates a name only once its old pod is gone.
//! Deleting a workload deletes its pods. Controllers act within the request
//! that changed the workload, so its answer and the next list agree.
//!
//! Lists (and collection deletes, `DELETE` without a name, verb
//! `deletecollection`) take a `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`,
//! `!a`, `a in (x,y)`, `a notin (x)`, comma separated) and a
//! `fieldSelector` of dotted paths (`metadata.name=x`,
//! `status.phase!=Running`); a bad one is `400`.
//!
//! Missing objects answer a `404` `Status` (`NotFound`), requests matching a
//! [`Deny`] rule a `403` `Status` (`Forbidden`) worded like the real one.
//! Every request is logged ([`FakeKube::requests`]) so a test can prove what
//! was, or was not, asked for. A get or list that asks for a `Table` (as
//! `kubectl get` does) gets one, with the usual columns of each kind.
//!
//! ## Pods run as local processes
//!
//! The fake is also scheduler and kubelet. A created pod is `Pending` with
//! a `podIP` and `startTime`; then its first container's `command` and
//! `args` (with `$(VAR)` expanded) run as a local process in its own
//! process group, with the environment the spec resolves (`env` with
//! `$(VAR)` expansion, `secretKeyRef`, `configMapKeyRef`, `fieldRef`,
//! `envFrom` with `prefix`, `optional` honoured) over only the fake's
//! `PATH` and `HOME`: nothing else of the test's environment leaks in. The
//! kubelet reads Secrets from the store directly, so its reads are not in
//! the request log. The pod is then `Running` and ready; when the process
//! exits, `Succeeded` or `Failed` with the exit code (containers are never
//! restarted, whatever `restartPolicy` says). `activeDeadlineSeconds` kills
//! it (`Failed`, `DeadlineExceeded`). A missing Secret, ConfigMap or key
//! holds the container in `CreateContainerConfigError` until it appears.
//! [`FakeKube::fail_image_pulls`] makes pulls fail (`ErrImagePull`, then
//! `ImagePullBackOff`), [`FakeKube::set_pod_start_delay`] slows starts,
//! [`FakeKube::set_pod_quota`] limits pods per namespace (the quota's `403`).
//! A command that cannot start fails the pod (`StartError`). Output is kept
//! for `pods/{name}/log`.
//!
//! Deleting a running pod sets its `deletionTimestamp`, sends SIGTERM to
//! its process group and SIGKILL after the grace period (the request's
//! `gracePeriodSeconds`, else the pod's `terminationGracePeriodSeconds`,
//! else [`FakeKube::set_default_grace_period`], 2 s); the pod is removed
//! once its processes are gone. An ended pod, or a delete with grace 0, is
//! removed at once. A pod whose first container has no `command` is
//! *virtual*: nothing runs, it is simply `Running`, and once deleted it
//! lingers for the termination delay (300 ms). Every process group still
//! alive is killed when the fake drops; [`FakeKube::live_processes`] counts
//! what is left.
//!
//! ## Exec
//!
//! `pods/{name}/exec` (GET or POST) upgrades to a websocket with the best
//! of `v5.channel.k8s.io`, `v4.channel.k8s.io` (and the older
//! `channel.k8s.io` versions) the client offers: the command runs as a
//! local process with the container's resolved environment, streaming
//! stdin, stdout and stderr as binary frames (channel byte first; v5's
//! `[255, 0]` closes stdin) with backpressure both ways, then the final
//! `Status` on channel 3 (`Success`, or `NonZeroExitCode` with the exit
//! code as kubectl reads it) and a normal close. Sessions are independent
//! and concurrent; a session's process group dies with its websocket or
//! its pod. A missing pod is `404`; a container not named in the pod, or
//! not running, `400` (`container not found ("NAME")`); RBAC is `create` on
//! `pods/exec` whatever the method. kubectl's SPDY fallback is answered
//! with the same checks, then `400` (SPDY is not spoken).
//!
//! ## Port-forward
//!
//! `pods/{name}/portforward?ports=P` upgrades to a websocket
//! (`v4.channel.k8s.io` or `v5`, as kube-rs asks) with kube-rs' framing:
//! port `i` on data channel `2i` and error channel `2i+1`, each opened by a
//! frame holding the port (u16 little-endian). Each port connects to
//! 127.0.0.1: a process pod's port is the same local port, a pod with a
//! port map ([`FakeKube::map_pod_port`], [`FakeKube::seed_database`]) the
//! mapped one; a port nothing listens on gets the kubelet's error on its
//! error channel. RBAC is `create` on `pods/portforward`. kubectl's
//! port-forward tunnels SPDY/3.1 in the websocket
//! (`SPDY/3.1+portforward.k8s.io`): the fake speaks that too (an error and
//! a data stream per connection, ports named in the stream headers, see
//! `spdy.rs`). A plain SPDY upgrade (kubectl's fallback) gets a `400`.
//!
//! ## Watch
//!
//! `?watch=true` on a list (or an object) streams `ADDED`/`MODIFIED`/
//! `DELETED` events as JSON lines, from the given `resourceVersion` (or
//! the current objects first), filtered by the list's selectors, as tables
//! when asked; `kubectl get -w`, `kubectl wait` and kube-rs' watcher work.
//!
//! Not in this slice: bookmarks and `410 Gone` (every change is kept),
//! `pods/attach`, plain SPDY upgrades (kubectl's fallbacks get a `400`), `tty`
//! (ignored: no terminal), other containers than the first (they do not
//! run; exec into them runs with their env), container restarts,
//! `resourceFieldRef`, ReplicaSets and Jobs as objects, OpenAPI (so
//! `kubectl create -f` needs `--validate=false`), server-side apply, JSON
//! patch and protobuf bodies (both `415`; kubectl's generators such as
//! `kubectl create configmap NAME` send protobuf, `kubectl create -f` sends
//! JSON).

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The bearer token written into the kubeconfig and required on requests.
pub const TOKEN: &str = "fake-kube-token";
/// The user name the fake gives the token's holder (in `Forbidden` messages).
pub const USER: &str = "dbsnap-tester";
/// The name of the Deployment [`FakeKube::seed_app`] creates.
pub const APP: &str = "core-api";
/// The name of the Secret [`FakeKube::seed_app`] creates (key `password`).
pub const APP_SECRET: &str = "core-api-db";

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path, e.g. `/api/v1/namespaces/poolside/secrets/core-api-db`.
    pub path: String,
    /// Query string without `?` (empty when none).
    pub query: String,
    /// Status code answered (`101` for an upgrade to a websocket).
    pub status: u16,
}

/// A rule of the deny-list: requests that match get `403 Forbidden`.
#[derive(Clone, Debug, Default)]
pub struct Deny {
    /// Kubernetes verb: `get`, `list`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// Resource, with the subresource after a slash (`deployments/scale`,
    /// `pods/exec`: exec and port-forward are `create` whatever the method).
    pub resource: String,
    /// Only in this namespace (any when `None`).
    pub namespace: Option<String>,
    /// Only this object (any when `None`).
    pub name: Option<String>,
}

impl Deny {
    /// Denies `verb` on `resource` everywhere.
    pub fn new(verb: &str, resource: &str) -> Self {
        Deny {
            verb: verb.into(),
            resource: resource.into(),
            ..Deny::default()
        }
    }

    /// Narrows the rule to one namespace.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Narrows the rule to one object name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    fn matches(&self, target: &Target, verb: &str) -> bool {
        self.verb == verb
            && self.resource == target.full_resource()
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| target.namespace.as_ref() == Some(n))
            && self
                .name
                .as_ref()
                .is_none_or(|n| target.name.as_ref() == Some(n))
    }
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    state: Shared,
    url: String,
    ca_pem: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts the server on a free loopback port, on its own thread and runtime.
    pub fn start() -> FakeKube {
        let tls = crate::tls::TlsMaterial::generate("fake-kube");
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for fake kube");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("listener address").to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-kube-worker")
            .enable_all()
            .build()
            .expect("fake kube runtime");
        let state: Shared = Arc::new(Mutex::new(State::new(
            address.clone(),
            runtime.handle().clone(),
        )));
        let acceptor = tls.acceptor();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || runtime.block_on(accept_loop(listener, acceptor, served, rx)))
            .expect("spawn the fake kube thread");
        FakeKube {
            state,
            url: format!("https://{address}"),
            ca_pem: tls.ca_pem,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The server's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes a kubeconfig (JSON, which kubectl reads like YAML): cluster,
    /// user and context `fake`, the CA inline, the bearer [`TOKEN`] and the
    /// namespace `default`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {
                "server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {
                "cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
            "preferences": {},
        });
        std::fs::write(path, format!("{config:#}\n"))
    }

    /// Answers every request whose path contains `path` with `status` and
    /// a plain-text `body` (not a Kubernetes Status), as a proxy or load
    /// balancer in front of an API server does.
    pub fn answer_plain(&self, path: &str, status: u16, body: &str) {
        lock(&self.state)
            .plain_answers
            .push((path.into(), status, body.into()));
    }

    /// Adds a rule to the deny-list.
    pub fn deny(&self, rule: Deny) {
        lock(&self.state).denies.push(rule);
    }

    /// The requests served so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.state).log.clone()
    }

    /// Whether a request with this method and path was served.
    pub fn requested(&self, method: &str, path: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| r.method == method && r.path == path)
    }

    /// The stored object, if any (`namespace` `""` for cluster-scoped ones).
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&(resource.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// The stored objects of a resource in a namespace (all namespaces when
    /// `namespace` is `None`), in name order.
    pub fn objects(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        lock(&self.state)
            .objects
            .iter()
            .filter(|((r, ns, _), _)| r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Creates an object as a client's create would (the namespace made if
    /// missing; `generateName` honoured; a pod starts, a workload gets its
    /// pods). Returns the stored object. Panics if the API would refuse it
    /// (name taken, quota).
    pub fn insert(&self, resource: &str, namespace: &str, object: Value) -> Value {
        let created = {
            let mut state = lock(&self.state);
            if !namespace.is_empty() {
                ensure_namespace(&mut state, namespace);
            }
            create_object(&mut state, resource, namespace, object)
        };
        run_effects(&self.state);
        created.unwrap_or_else(|refusal| panic!("fake kube refused a {resource}: {}", refusal.body))
    }

    /// Changes a stored object in place, as an update that runs no
    /// controller would (e.g. the image or env of a workload's template).
    /// Panics if there is no such object.
    pub fn update(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) {
        let mut state = lock(&self.state);
        let key: Key = (resource.into(), namespace.into(), name.into());
        let mut object = state
            .objects
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("fake kube has no {resource} {namespace}/{name}"));
        change(&mut object);
        // A new resourceVersion and a MODIFIED event for watchers.
        state.put(key, object);
    }

    /// Seeds `namespace` with the app dbsnap will meet in a cluster: the
    /// Secret [`APP_SECRET`] holding the password of `postgres_url` (as
    /// written in the URL), a Deployment [`APP`] (1 replica) whose container
    /// env has plain `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_NAME`, `DB_PASSWORD`
    /// from a `secretKeyRef` and `DATABASE_URL` built from them with
    /// `$(VAR)` references, and (through the Deployment's controller) one
    /// running, virtual Pod of it, `core-api-HASH-XXXXX`.
    pub fn seed_app(&self, namespace: &str, postgres_url: &str) {
        let parts = UrlParts::parse(postgres_url);
        self.insert("secrets", namespace, app_secret(namespace, &parts));
        let template = app_pod_template(&parts);
        self.insert(
            "deployments",
            namespace,
            app_deployment(namespace, &template),
        );
    }

    /// Seeds `namespace` with an in-cluster PostgreSQL as a chart makes
    /// it: a StatefulSet `name` (1 replica, labels `app=NAME`,
    /// `app.kubernetes.io/name=postgresql`) whose virtual pod `NAME-0` has
    /// container port 5432, and a Service `name` selecting it. Port-forwards
    /// to that pod's 5432 reach `local_port` on 127.0.0.1 (e.g. the test's
    /// real PostgreSQL).
    pub fn seed_database(&self, namespace: &str, name: &str, local_port: u16) {
        self.map_pod_port(namespace, &format!("{name}-0"), DATABASE_PORT, local_port);
        self.insert("statefulsets", namespace, database_statefulset(name));
        self.insert("services", namespace, database_service(name));
    }

    /// Seeds `namespace` with a PersistentVolumeClaim `name` (1 GiB) to
    /// take VolumeSnapshots of.
    pub fn seed_claim(&self, namespace: &str, name: &str) {
        self.insert(
            "persistentvolumeclaims",
            namespace,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        );
    }

    /// Pods start this much later (they stay `Pending`, `ContainerCreating`).
    pub fn set_pod_start_delay(&self, delay: Duration) {
        lock(&self.state).kubelet.start_delay = delay;
    }

    /// Pods whose first image contains `pattern` never start: their
    /// container waits with `ErrImagePull`, then `ImagePullBackOff`.
    pub fn fail_image_pulls(&self, pattern: &str) {
        lock(&self.state)
            .kubelet
            .failing_images
            .push(pattern.to_string());
    }

    /// At most `max` pods (not ended) in `namespace`; creating one more is
    /// `403 Forbidden` with the quota's message.
    pub fn set_pod_quota(&self, namespace: &str, max: usize) {
        lock(&self.state)
            .kubelet
            .quotas
            .insert(namespace.to_string(), max);
    }

    /// How long a deleted pod without a process (virtual, or scaled down)
    /// lingers with its `deletionTimestamp` (default 300 ms).
    pub fn set_termination_delay(&self, delay: Duration) {
        lock(&self.state).kubelet.termination_delay = delay;
    }

    /// The grace period of pod deletes that name none, when the pod's spec
    /// names none either (default 2 s).
    pub fn set_default_grace_period(&self, grace: Duration) {
        lock(&self.state).kubelet.default_grace = grace;
    }

    /// Containers and execs whose command is `program` run `local` instead
    /// (e.g. the `dbsnap` binary under test for an image's `dbsnap`).
    pub fn map_command(&self, program: &str, local: &Path) {
        lock(&self.state)
            .kubelet
            .commands
            .insert(program.to_string(), local.to_path_buf());
    }

    /// Port-forwards to `container_port` of the pod reach `local_port` on
    /// 127.0.0.1 (without a map, the same port number is used).
    pub fn map_pod_port(&self, namespace: &str, pod: &str, container_port: u16, local_port: u16) {
        lock(&self.state)
            .kubelet
            .port_maps
            .entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .insert(container_port, local_port);
    }

    /// How many processes the fake started (pod containers, exec sessions
    /// and their children) are still alive; `0` once every pod and session
    /// is gone.
    pub fn live_processes(&self) -> usize {
        let started = lock(&self.state).kubelet.groups.started.clone();
        count_live(&started)
    }

    /// Polls (every 20 ms, for at most `timeout`) until the pod exists and
    /// `check` accepts it; returns it, or `None` on timeout.
    pub fn wait_for_pod(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(pod) = self.object("pods", namespace, name).filter(&check) {
                return Some(pod);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls (every 20 ms, for at most `timeout`) until the pod is gone;
    /// returns whether it is.
    pub fn wait_for_pod_gone(&self, namespace: &str, name: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.object("pods", namespace, name).is_some() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        lock(&self.state).kubelet.groups.kill_all();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

mod controllers;
mod env;
mod exec;
mod kubelet;
mod objects;
mod pods;
mod portforward;
mod process;
mod resources;
mod seed;
mod selectors;
mod server;
mod spdy;
mod storage;
mod store;
mod tables;
mod watch;
mod websocket;

use controllers::*;
use env::*;
use exec::*;
use kubelet::*;
use objects::*;
use pods::*;
use portforward::*;
use process::*;
use resources::*;
use seed::*;
use selectors::*;
use server::*;
use spdy::*;
use storage::*;
use store::*;
use tables::*;
use watch::*;
use websocket::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut doc = json!({"spec": {"replicas": 3, "paused": true}});
        merge_patch(&mut doc, &json!({"spec": {"replicas": 0, "paused": null}}));
        assert_eq!(doc, json!({"spec": {"replicas": 0}}));
    }

    #[test]
    fn paths_parse() {
        let t = Target::parse("/apis/apps/v1/namespaces/p/deployments/core-api/scale").unwrap();
        assert_eq!(t.full_resource(), "deployments/scale");
        assert_eq!(t.qualified(), "deployments.apps");
        assert!(Target::parse("/api/v1/namespaces/p/widgets").is_none());
        let ns = Target::parse("/api/v1/namespaces/p").unwrap();
        assert_eq!(ns.key(), namespace_key("p"));
    }

    #[test]
    fn url_parts() {
        let p = UrlParts::parse("postgresql://app:pw@127.0.0.1:5433/shop?sslmode=disable");
        assert_eq!(
            (
                p.user.as_str(),
                p.password.as_str(),
                p.host.as_str(),
                p.port.as_str(),
                p.database.as_str()
            ),
            ("app", "pw", "127.0.0.1", "5433", "shop")
        );
    }
}
