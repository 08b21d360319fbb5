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
//!   `configmaps`, `services` (core v1) and `deployments`, `statefulsets`
//!   (apps/v1); JSON merge (and strategic merge, treated as merge) patch of
//!   deployments and statefulsets;
//! - get, put and patch of the `deployments/{name}/scale` and
//!   `statefulsets/{name}/scale` subresources (autoscaling/v1 `Scale`),
//!   which update `spec.replicas` (and mirror it into `status`).
//!
//! Missing objects answer a `404` `Status` (`NotFound`), requests matching a
//! [`Deny`] rule a `403` `Status` (`Forbidden`) worded like the real one.
//! Every request is logged ([`FakeKube::requests`]) so a test can prove what
//! was, or was not, asked for. A get or list that asks for a `Table` (as
//! `kubectl get` does) gets one, with the usual columns of each kind.
//!
//! Not in this slice: exec, port-forward, watch, label selectors, OpenAPI
//! (so `kubectl create -f` needs `--validate=false`), server-side
//! apply, JSON patch and protobuf bodies (both `415`; kubectl's generators
//! such as `kubectl create configmap NAME` send protobuf, `kubectl create -f`
//! sends JSON).

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio_rustls::rustls;

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
    /// Status code answered.
    pub status: u16,
}

/// A rule of the deny-list: requests that match get `403 Forbidden`.
#[derive(Clone, Debug, Default)]
pub struct Deny {
    /// Kubernetes verb: `get`, `list`, `create`, `update`, `patch`, `delete`.
    pub verb: String,
    /// Resource, with the subresource after a slash (`deployments/scale`).
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

/// Everything the server keeps.
#[derive(Default)]
struct State {
    /// `(resource, namespace or "", name)` to object.
    objects: BTreeMap<(String, String, String), Value>,
    denies: Vec<Deny>,
    log: Vec<LoggedRequest>,
    resource_version: u64,
    address: String,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Starts the server on a free loopback port, on its own thread.
    pub fn start() -> FakeKube {
        let tls = TlsMaterial::generate();
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for fake kube");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("listener address").to_string();
        let state: Shared = Arc::new(Mutex::new(State {
            address: address.clone(),
            ..State::default()
        }));
        let acceptor = tls.acceptor();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || run_server(listener, acceptor, served, rx))
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

    /// The stored object, if any (`namespace` `""` for namespaces).
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&(resource.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Stores an object as a create would (namespace made if missing).
    pub fn insert(&self, resource: &str, namespace: &str, object: Value) {
        let mut state = lock(&self.state);
        if !namespace.is_empty() {
            ensure_namespace(&mut state, namespace);
        }
        store(&mut state, resource, namespace, object);
    }

    /// Seeds `namespace` with the app dbsnap will meet in a cluster: the
    /// Secret [`APP_SECRET`] holding the password of `postgres_url` (as
    /// written in the URL), a Deployment [`APP`] (1 replica) whose container
    /// env has plain `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_NAME`, `DB_PASSWORD`
    /// from a `secretKeyRef` and `DATABASE_URL` built from them with
    /// `$(VAR)` references, and one running Pod of it.
    pub fn seed_app(&self, namespace: &str, postgres_url: &str) {
        let parts = UrlParts::parse(postgres_url);
        self.insert("secrets", namespace, app_secret(namespace, &parts));
        let template = app_pod_template(&parts);
        self.insert(
            "deployments",
            namespace,
            app_deployment(namespace, &template),
        );
        self.insert("pods", namespace, app_pod(namespace, &template));
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

mod objects;
mod seed;
mod server;
mod tables;

use objects::*;
use seed::*;
use server::*;
use tables::*;

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
