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

/// The CA and the server certificate made at start.
struct TlsMaterial {
    ca_pem: String,
    server_der: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl TlsMaterial {
    fn generate() -> TlsMaterial {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fake-kube-ca");
        let ca = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "fake-kube");
        let server = params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        TlsMaterial {
            ca_pem: ca.pem(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.server_der.clone()], key)
            .expect("server TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

fn run_server(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Shared,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("fake kube runtime");
    runtime.block_on(accept_loop(listener, acceptor, state, shutdown));
}

async fn accept_loop(
    listener: std::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Shared,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(stream, acceptor.clone(), state.clone()));
                }
            }
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Shared,
) {
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await;
}

/// What the fake answers: a status code and a JSON body.
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
        }
    }
}

async fn handle(
    state: Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let authorized = is_authorized(&req);
    let content_type = header(&req, "content-type");
    let wants_table = method == Method::GET && header(&req, "accept").contains("as=Table");
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let reply = if authorized {
        let mut guard = lock(&state);
        let reply = route(&mut guard, &method, &path, &query, &content_type, &body);
        if wants_table {
            tabulate(reply)
        } else {
            reply
        }
    } else {
        status_reply(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        )
    };
    lock(&state).log.push(LoggedRequest {
        method: method.to_string(),
        path,
        query,
        status: reply.status.as_u16(),
    });
    Ok(to_response(reply))
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn is_authorized(req: &Request<Incoming>) -> bool {
    header(req, "authorization") == format!("Bearer {TOKEN}")
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body.to_string())));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn route(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &str,
    content_type: &str,
    body: &[u8],
) -> Reply {
    if let Some(reply) = discovery(state, method, path) {
        return reply;
    }
    let Some(target) = Target::parse(path) else {
        return not_found_path();
    };
    let verb = verb_of(method, &target);
    if state.denies.iter().any(|d| d.matches(&target, verb)) {
        return forbidden(&target, verb);
    }
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return status_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the fake API server reads JSON bodies only, not protobuf",
            None,
        );
    }
    match (verb, target.subresource.as_deref()) {
        ("list", None) => list(state, &target, query),
        ("get", None) => get(state, &target),
        ("create", None) => create(state, &target, body),
        ("delete", None) => delete(state, &target),
        ("patch", None) if is_patchable(&target) => patch(state, &target, content_type, body),
        (_, Some("scale")) if is_scalable(&target) => {
            scale(state, &target, verb, content_type, body)
        }
        _ => status_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({verb})"),
            None,
        ),
    }
}

fn verb_of(method: &Method, target: &Target) -> &'static str {
    match *method {
        Method::GET if target.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// The resource a path names.
#[derive(Debug)]
struct Target {
    group: &'static str,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

const CORE_RESOURCES: [&str; 5] = ["namespaces", "pods", "secrets", "configmaps", "services"];
const APPS_RESOURCES: [&str; 2] = ["deployments", "statefulsets"];

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", "apps", "v1", rest @ ..] => ("apps", rest),
            _ => return None,
        };
        let target = Target::from_segments(group, rest)?;
        let known: &[&str] = if group.is_empty() {
            &CORE_RESOURCES
        } else {
            &APPS_RESOURCES
        };
        known.contains(&target.resource.as_str()).then_some(target)
    }

    fn from_segments(group: &'static str, rest: &[&str]) -> Option<Target> {
        let owned = |s: &&str| s.to_string();
        let (resource, namespace, name, subresource) = match rest {
            ["namespaces"] => ("namespaces", None, None, None),
            ["namespaces", ns] if group.is_empty() => ("namespaces", None, Some(*ns), None),
            ["namespaces", ns, resource] => (*resource, Some(*ns), None, None),
            ["namespaces", ns, resource, name] => (*resource, Some(*ns), Some(*name), None),
            ["namespaces", ns, resource, name, sub] => {
                (*resource, Some(*ns), Some(*name), Some(*sub))
            }
            [resource] => (*resource, None, None, None),
            _ => return None,
        };
        Some(Target {
            group,
            resource: resource.to_string(),
            namespace: namespace.as_ref().map(owned),
            name: name.as_ref().map(owned),
            subresource: subresource.as_ref().map(owned),
        })
    }

    /// `deployments` or `deployments/scale`, as RBAC names it.
    fn full_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// `deployments.apps` or `secrets`, as error messages name it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn is_namespace_object(&self) -> bool {
        self.resource == "namespaces"
    }

    fn key(&self) -> (String, String, String) {
        (
            self.resource.clone(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    fn kind(&self) -> &'static str {
        kind_of(&self.resource)
    }

    fn api_version(&self) -> &'static str {
        if self.group.is_empty() {
            "v1"
        } else {
            "apps/v1"
        }
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "namespaces" => "Namespace",
        "pods" => "Pod",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "services" => "Service",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        _ => "Unknown",
    }
}

fn is_patchable(target: &Target) -> bool {
    target.group == "apps" && target.name.is_some()
}

fn is_scalable(target: &Target) -> bool {
    target.group == "apps" && target.name.is_some()
}

fn discovery(state: &State, method: &Method, path: &str) -> Option<Reply> {
    if method != Method::GET {
        return None;
    }
    let body = match path.trim_end_matches('/') {
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": state.address}
            ],
        }),
        "/apis" => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{
                "name": "apps",
                "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
            }],
        }),
        "/api/v1" => resource_list("v1", &core_resources()),
        "/apis/apps/v1" => resource_list("apps/v1", &apps_resources()),
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
            "platform": "linux/amd64",
        }),
        _ => return None,
    };
    Some(Reply::ok(body))
}

fn resource_list(group_version: &str, resources: &[Value]) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

const OBJECT_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn api_resource(name: &str, namespaced: bool, short: &[&str]) -> Value {
    json!({
        "name": name,
        "singularName": kind_of(name).to_lowercase(),
        "namespaced": namespaced,
        "kind": kind_of(name),
        "verbs": OBJECT_VERBS,
        "shortNames": short,
    })
}

fn scale_resource(parent: &str) -> Value {
    json!({
        "name": format!("{parent}/scale"),
        "singularName": "",
        "namespaced": true,
        "group": "autoscaling",
        "version": "v1",
        "kind": "Scale",
        "verbs": ["get", "patch", "update"],
    })
}

fn core_resources() -> Vec<Value> {
    vec![
        api_resource("namespaces", false, &["ns"]),
        api_resource("pods", true, &["po"]),
        api_resource("secrets", true, &[]),
        api_resource("configmaps", true, &["cm"]),
        api_resource("services", true, &["svc"]),
    ]
}

fn apps_resources() -> Vec<Value> {
    vec![
        api_resource("deployments", true, &["deploy"]),
        scale_resource("deployments"),
        api_resource("statefulsets", true, &["sts"]),
        scale_resource("statefulsets"),
    ]
}

fn list(state: &State, target: &Target, query: &str) -> Reply {
    let wanted_name = field_selector_name(query);
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|((resource, namespace, name), _)| {
            *resource == target.resource
                && target.namespace.as_ref().is_none_or(|ns| ns == namespace)
                && wanted_name.as_ref().is_none_or(|n| n == name)
        })
        .map(|(_, object)| object.clone())
        .collect();
    Reply::ok(json!({
        "kind": format!("{}List", target.kind()),
        "apiVersion": target.api_version(),
        "metadata": {"resourceVersion": state.resource_version.to_string()},
        "items": items,
    }))
}

/// `metadata.name=X` out of a `fieldSelector` (the only field selector kept).
fn field_selector_name(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("fieldSelector="))
        .map(|v| v.replace("%3D", "=").replace("%3d", "="))
        .find_map(|v| v.strip_prefix("metadata.name=").map(str::to_string))
}

fn get(state: &State, target: &Target) -> Reply {
    match state.objects.get(&target.key()) {
        Some(object) => Reply::ok(object.clone()),
        None => not_found(target),
    }
}

fn create(state: &mut State, target: &Target, body: &[u8]) -> Reply {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status_reply(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
            None,
        );
    };
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return status_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "{} \"\" is invalid: metadata.name: Required value",
                target.kind()
            ),
            None,
        );
    }
    let namespace = target.namespace.clone().unwrap_or_default();
    if !target.is_namespace_object() && !state.objects.contains_key(&namespace_key(&namespace)) {
        return namespace_not_found(&namespace);
    }
    let key = (target.resource.clone(), namespace.clone(), name.clone());
    if state.objects.contains_key(&key) {
        let message = format!("{} \"{name}\" already exists", target.qualified());
        return status_reply(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &message,
            Some((target, &name)),
        );
    }
    object["kind"] = json!(target.kind());
    object["apiVersion"] = json!(target.api_version());
    let stored = store(state, &target.resource, &namespace, object);
    Reply {
        status: StatusCode::CREATED,
        body: stored,
    }
}

fn delete(state: &mut State, target: &Target) -> Reply {
    match state.objects.remove(&target.key()) {
        Some(object) => Reply::ok(object),
        None => not_found(target),
    }
}

fn patch(state: &mut State, target: &Target, content_type: &str, body: &[u8]) -> Reply {
    let patch = match parse_merge_patch(content_type, body) {
        Ok(patch) => patch,
        Err(reply) => return reply,
    };
    let Some(object) = state.objects.get_mut(&target.key()) else {
        return not_found(target);
    };
    merge_patch(object, &patch);
    mirror_replicas(object);
    let object = object.clone();
    bump(state, target, object)
}

fn parse_merge_patch(content_type: &str, body: &[u8]) -> Result<Value, Reply> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/merge-patch+json" && media != "application/strategic-merge-patch+json"
    {
        return Err(status_reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake supports merge patches only, not {media:?}"),
            None,
        ));
    }
    serde_json::from_slice(body).map_err(|_| {
        status_reply(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the patch is not JSON",
            None,
        )
    })
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in fields {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn scale(state: &mut State, target: &Target, verb: &str, content_type: &str, body: &[u8]) -> Reply {
    let Some(object) = state.objects.get(&target.key()) else {
        return not_found(target);
    };
    let mut scale = scale_of(object);
    match verb {
        "get" => return Reply::ok(scale),
        "update" => match serde_json::from_slice::<Value>(body) {
            Ok(new) => scale = new,
            Err(_) => return status_reply(StatusCode::BAD_REQUEST, "BadRequest", "not JSON", None),
        },
        "patch" => match parse_merge_patch(content_type, body) {
            Ok(patch) => merge_patch(&mut scale, &patch),
            Err(reply) => return reply,
        },
        _ => {
            return status_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{verb} is not supported on scale"),
                None,
            )
        }
    }
    let mut object = object.clone();
    object["spec"]["replicas"] = json!(scale["spec"]["replicas"].as_i64().unwrap_or(0));
    mirror_replicas(&mut object);
    let stored = bump(state, target, object);
    Reply::ok(scale_of(&stored.body))
}

/// The autoscaling/v1 Scale of a deployment or statefulset.
fn scale_of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "selector": selector},
    })
}

/// Pretends the controller caught up at once: status follows spec.replicas.
fn mirror_replicas(object: &mut Value) {
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = json!({
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
        "observedGeneration": object["metadata"]["generation"],
    });
    object["status"] = status;
}

/// Stores a changed object under a new resourceVersion.
fn bump(state: &mut State, target: &Target, mut object: Value) -> Reply {
    state.resource_version += 1;
    object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    object["metadata"]["generation"] = json!(generation);
    state.objects.insert(target.key(), object.clone());
    Reply::ok(object)
}

fn namespace_key(namespace: &str) -> (String, String, String) {
    ("namespaces".into(), String::new(), namespace.into())
}

fn ensure_namespace(state: &mut State, namespace: &str) {
    if !state.objects.contains_key(&namespace_key(namespace)) {
        let object = json!({
            "kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": namespace},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        store(state, "namespaces", "", object);
    }
}

/// Fills in server-set metadata and stores the object; returns it.
fn store(state: &mut State, resource: &str, namespace: &str, mut object: Value) -> Value {
    state.resource_version += 1;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let metadata = &mut object["metadata"];
    if !namespace.is_empty() {
        metadata["namespace"] = json!(namespace);
    }
    metadata["uid"] = json!(fake_uid(state.resource_version));
    metadata["resourceVersion"] = json!(state.resource_version.to_string());
    metadata["creationTimestamp"] = json!(now_rfc3339());
    if kind_of(resource) == "Deployment" || kind_of(resource) == "StatefulSet" {
        metadata["generation"] = json!(1);
        mirror_replicas(&mut object);
    }
    state
        .objects
        .insert((resource.into(), namespace.into(), name), object.clone());
    object
}

fn fake_uid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn status_reply(
    status: StatusCode,
    reason: &str,
    message: &str,
    details: Option<(&Target, &str)>,
) -> Reply {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    });
    if let Some((target, name)) = details {
        let mut detail = json!({"kind": target.resource});
        if !name.is_empty() {
            detail["name"] = json!(name);
        }
        if !target.group.is_empty() {
            detail["group"] = json!(target.group);
        }
        body["details"] = detail;
    }
    Reply { status, body }
}

fn not_found(target: &Target) -> Reply {
    let name = target.name.clone().unwrap_or_default();
    let message = format!("{} \"{name}\" not found", target.qualified());
    status_reply(
        StatusCode::NOT_FOUND,
        "NotFound",
        &message,
        Some((target, &name)),
    )
}

fn namespace_not_found(namespace: &str) -> Reply {
    let target = Target {
        group: "",
        resource: "namespaces".into(),
        namespace: None,
        name: Some(namespace.into()),
        subresource: None,
    };
    not_found(&target)
}

fn not_found_path() -> Reply {
    status_reply(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        None,
    )
}

/// `403` worded like the API server's RBAC denial.
fn forbidden(target: &Target, verb: &str) -> Reply {
    let name = target.name.clone().unwrap_or_default();
    let subject = if name.is_empty() {
        target.qualified()
    } else {
        format!("{} \"{name}\"", target.qualified())
    };
    let scope = match &target.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}",
        target.full_resource(),
        target.group,
    );
    status_reply(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some((target, &name)),
    )
}

const OBJECT_KINDS: [&str; 7] = [
    "Namespace",
    "Pod",
    "Secret",
    "ConfigMap",
    "Service",
    "Deployment",
    "StatefulSet",
];

/// Turns a successful get or list into a meta.k8s.io/v1 `Table`.
fn tabulate(reply: Reply) -> Reply {
    if reply.status != StatusCode::OK {
        return reply;
    }
    let kind = reply.body["kind"].as_str().unwrap_or("");
    let (kind, objects) = match kind.strip_suffix("List") {
        Some(item_kind) => (
            item_kind,
            reply.body["items"].as_array().cloned().unwrap_or_default(),
        ),
        None => (kind, vec![reply.body.clone()]),
    };
    if !OBJECT_KINDS.contains(&kind) {
        return reply;
    }
    let columns: Vec<Value> = table_columns(kind)
        .iter()
        .map(|(name, kind)| json!({"name": name, "type": kind, "format": "", "description": "", "priority": 0}))
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| table_row(kind, o)).collect();
    Reply::ok(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": reply.body["metadata"]["resourceVersion"]},
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

fn table_columns(kind: &str) -> Vec<(&'static str, &'static str)> {
    let mut columns = vec![("Name", "string")];
    columns.extend(match kind {
        "Namespace" => vec![("Status", "string")],
        "Pod" => vec![
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
        ],
        "Secret" => vec![("Type", "string"), ("Data", "string")],
        "ConfigMap" => vec![("Data", "string")],
        "Service" => vec![("Type", "string"), ("Cluster-IP", "string")],
        "Deployment" => vec![
            ("Ready", "string"),
            ("Up-to-date", "string"),
            ("Available", "string"),
        ],
        "StatefulSet" => vec![("Ready", "string")],
        _ => vec![],
    });
    columns.push(("Age", "string"));
    columns
}

fn table_row(kind: &str, object: &Value) -> Value {
    let count = |v: &Value| v.as_object().map_or(0, Map::len).to_string();
    let replicas = |field: &str| object["status"][field].as_i64().unwrap_or(0);
    let ready = format!("{}/{}", replicas("readyReplicas"), replicas("replicas"));
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut cells = vec![object["metadata"]["name"].clone()];
    cells.extend(
        match kind {
            "Namespace" => vec![text(&object["status"]["phase"])],
            "Pod" => vec!["1/1".into(), text(&object["status"]["phase"]), "0".into()],
            "Secret" => vec![text(&object["type"]), count(&object["data"])],
            "ConfigMap" => vec![count(&object["data"])],
            "Service" => vec![
                text(&object["spec"]["type"]),
                text(&object["spec"]["clusterIP"]),
            ],
            "Deployment" => vec![
                ready,
                replicas("updatedReplicas").to_string(),
                replicas("availableReplicas").to_string(),
            ],
            "StatefulSet" => vec![ready],
            _ => vec![],
        }
        .into_iter()
        .map(Value::from),
    );
    cells.push(json!(age(&object["metadata"]["creationTimestamp"])));
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        },
    })
}

/// `42s`, `5m`, `3h`, `2d`, as kubectl shows ages.
fn age(created: &Value) -> String {
    let format = time::format_description::well_known::Rfc3339;
    let Some(created) = created
        .as_str()
        .and_then(|t| time::OffsetDateTime::parse(t, &format).ok())
    else {
        return "<unknown>".into();
    };
    let seconds = (time::OffsetDateTime::now_utc() - created)
        .whole_seconds()
        .max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The pieces of a `postgresql://user:password@host:port/db` URL.
struct UrlParts {
    user: String,
    password: String,
    host: String,
    port: String,
    database: String,
}

impl UrlParts {
    fn parse(url: &str) -> UrlParts {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.split('?').next().unwrap_or(rest);
        let (authority, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .unwrap_or(("postgres", authority));
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        UrlParts {
            user: user.into(),
            password: password.into(),
            host: host.into(),
            port: port.into(),
            database: database.into(),
        }
    }
}

fn app_labels() -> Value {
    json!({"app": APP})
}

fn app_secret(namespace: &str, parts: &UrlParts) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(&parts.password);
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": APP_SECRET, "namespace": namespace, "labels": app_labels()},
        "type": "Opaque",
        "data": {"password": encoded},
    })
}

fn app_pod_template(parts: &UrlParts) -> Value {
    let plain = |name: &str, value: &str| json!({"name": name, "value": value});
    json!({
        "metadata": {"labels": app_labels()},
        "spec": {"containers": [{
            "name": APP,
            "image": "registry.example/core-api:1.0",
            "env": [
                plain("DB_HOST", &parts.host),
                plain("DB_PORT", &parts.port),
                plain("DB_USER", &parts.user),
                plain("DB_NAME", &parts.database),
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": APP_SECRET, "key": "password"}}},
                plain(
                    "DATABASE_URL",
                    "postgresql://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):$(DB_PORT)/$(DB_NAME)",
                ),
                plain("LOG_LEVEL", "info"),
            ],
        }]},
    })
}

fn app_deployment(namespace: &str, template: &Value) -> Value {
    json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": APP, "namespace": namespace, "labels": app_labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": app_labels()},
            "template": template,
        },
    })
}

fn app_pod(namespace: &str, template: &Value) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": format!("{APP}-5d8f7c9b6d-x2k4q"),
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
        "status": {"phase": "Running", "podIP": "10.244.0.12"},
    })
}

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
