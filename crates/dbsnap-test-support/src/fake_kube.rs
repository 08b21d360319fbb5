//! A fake Kubernetes API server for tests, faithful at the protocol level:
//! HTTPS with its own CA, bearer-token authentication, legacy discovery
//! (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`), and the real API's JSON
//! for namespaced pods, secrets, configmaps, services, deployments and
//! statefulsets: get, list, create, delete, merge patch, and the `scale`
//! subresource. Missing objects answer a `Status` 404, requests on a
//! deny-list a `Status` 403 worded like the real one, and every request is
//! logged (method, path, query) so a test can prove what a client did —
//! or did not — ask for (e.g. never a GET of a Secret).
//!
//! Checked against stock kubectl 1.33 (`tests/fake_kube.rs`). Not in this
//! slice yet: watch, exec (`v5.channel.k8s.io`), port-forward, pods running
//! as local processes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value as Json};

/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-kube-token";

/// Objects by (group-version path, namespace, resource), then name.
type Store = BTreeMap<(String, String, String), BTreeMap<String, Json>>;

#[derive(Default)]
struct State {
    objects: Store,
    log: Vec<String>,
    /// (verb, resource) pairs answered 403.
    forbidden: Vec<(String, String)>,
    resource_version: u64,
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The resources served: (group-version path, resource, kind, short name).
const RESOURCES: [(&str, &str, &str, &str); 6] = [
    ("api/v1", "pods", "Pod", "po"),
    ("api/v1", "secrets", "Secret", ""),
    ("api/v1", "configmaps", "ConfigMap", "cm"),
    ("api/v1", "services", "Service", "svc"),
    ("apis/apps/v1", "deployments", "Deployment", "deploy"),
    ("apis/apps/v1", "statefulsets", "StatefulSet", "sts"),
];

impl FakeKube {
    /// Starts the server on a free loopback port.
    pub fn start() -> FakeKube {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake-kube runtime");
        let (ca_pem, tls) = tls_config();
        // Bound here (not on the runtime) so that tests already inside a
        // runtime can start it.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake-kube");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr: SocketAddr = std_listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let serving = state.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                return;
            };
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeKube {
            url: format!("https://{addr}"),
            ca_pem,
            state,
            runtime: Some(runtime),
        }
    }

    /// Writes a kubeconfig for this server (context `fake`, namespace
    /// `namespace`), with the CA beside it.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) {
        let ca = path.with_extension("ca.pem");
        std::fs::write(&ca, &self.ca_pem).expect("write the CA");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: fake\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\n",
            self.url,
            ca.display()
        );
        std::fs::write(path, config).expect("write the kubeconfig");
    }

    /// Stores `object` (its `kind`, `metadata.namespace` and `metadata.name` say where).
    pub fn put(&self, object: Json) {
        let kind = object["kind"].as_str().unwrap_or_default();
        let (gv, resource, _, _) = RESOURCES
            .iter()
            .find(|r| r.2 == kind)
            .unwrap_or_else(|| panic!("fake-kube does not serve {kind}"));
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut state = self.state.lock().unwrap();
        let stored = finish(&mut state, object, gv);
        state
            .objects
            .entry((gv.to_string(), ns, resource.to_string()))
            .or_default()
            .insert(name, stored);
    }

    /// Seeds namespace `namespace` with an app: a Deployment `core-api`
    /// (2 replicas) whose `DATABASE_URL` is built from plain env and a
    /// password in the Secret `core-db` (key `password`).
    pub fn seed_app(&self, namespace: &str, host: &str, port: u16, database: &str, password: &str) {
        self.put(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "core-db", "namespace": namespace},
            "type": "Opaque",
            "stringData": {"password": password}
        }));
        self.put(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "core-api", "namespace": namespace, "labels": {"app": "core-api"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "core-api"}},
                "template": {
                    "metadata": {"labels": {"app": "core-api"}},
                    "spec": {"containers": [{
                        "name": "api",
                        "image": "core-api:1",
                        "env": [
                            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "core-db", "key": "password"}}},
                            {"name": "DATABASE_URL", "value": format!("postgres://app:$(DB_PASSWORD)@{host}:{port}/{database}")}
                        ]
                    }]}
                }
            },
            "status": {"replicas": 2, "readyReplicas": 2}
        }));
    }

    /// Answers 403 to `verb` (`get`, `list`, `patch`, ...) on `resource`.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.state
            .lock()
            .unwrap()
            .forbidden
            .push((verb.to_string(), resource.to_string()));
    }

    /// Every request so far: `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A CA and a server certificate for 127.0.0.1/localhost signed by it.
fn tls_config() -> (String, tokio_rustls::rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake-kube CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("TLS config");
    (ca.pem(), config)
}

/// Fills what the API server adds: metadata (uid, resourceVersion,
/// creationTimestamp), apiVersion, and a Secret's `stringData` as `data`.
fn finish(state: &mut State, mut object: Json, gv: &str) -> Json {
    state.resource_version += 1;
    let api_version = gv.trim_start_matches("apis/").trim_start_matches("api/");
    object["apiVersion"] = json!(api_version);
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(state.resource_version.to_string());
    if meta["uid"].is_null() {
        meta["uid"] = json!(format!(
            "00000000-0000-0000-0000-{:012}",
            state.resource_version
        ));
        meta["creationTimestamp"] = json!("2026-11-23T00:00:00Z");
    }
    if let Some(data) = object.get("stringData").and_then(Json::as_object).cloned() {
        let encoded: serde_json::Map<String, Json> = data
            .into_iter()
            .map(|(k, v)| (k, json!(base64(v.as_str().unwrap_or_default().as_bytes()))))
            .collect();
        object["data"] = Json::Object(encoded);
        if let Some(o) = object.as_object_mut() {
            o.remove("stringData");
        }
    }
    object
}

/// Standard base64 (Secrets' `data`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn respond(status: StatusCode, body: Json) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

/// A `Status` failure as the API server words it.
fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    respond(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    if let Ok(mut s) = state.lock() {
        s.log.push(format!(
            "{method} {}{}",
            uri.path(),
            uri.query().map(|q| format!("?{q}")).unwrap_or_default()
        ));
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let path: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match path.as_slice() {
        ["api"] => respond(
            StatusCode::OK,
            json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ["apis"] => respond(
            StatusCode::OK,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]}),
        ),
        ["api", "v1"] => respond(StatusCode::OK, resource_list("v1", "api/v1")),
        ["apis", "apps", "v1"] => respond(StatusCode::OK, resource_list("apps/v1", "apis/apps/v1")),
        ["api", "v1", "namespaces"] => respond(StatusCode::OK, namespace_list(state)),
        ["api", "v1", "namespaces", ns] => namespace(state, ns),
        ["api", "v1", "namespaces", ns, rest @ ..] => {
            object_request(state, &method, "api/v1", ns, rest, body)
        }
        ["apis", "apps", "v1", "namespaces", ns, rest @ ..] => {
            object_request(state, &method, "apis/apps/v1", ns, rest, body)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        ),
    }
}

/// The namespaces holding objects.
fn namespaces(state: &Mutex<State>) -> Vec<String> {
    let s = state.lock().expect("fake-kube state");
    let mut names: Vec<String> = s.objects.keys().map(|(_, ns, _)| ns.clone()).collect();
    names.dedup();
    names
}

fn namespace_object(name: &str) -> Json {
    json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}, "status": {"phase": "Active"}})
}

fn namespace_list(state: &Mutex<State>) -> Json {
    let items: Vec<Json> = namespaces(state)
        .iter()
        .map(|n| namespace_object(n))
        .collect();
    json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items})
}

fn namespace(state: &Mutex<State>, name: &str) -> Response<Full<Bytes>> {
    if namespaces(state).iter().any(|n| n == name) {
        respond(StatusCode::OK, namespace_object(name))
    } else {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{name}\" not found"),
        )
    }
}

/// Legacy discovery: the resources of one group-version.
fn resource_list(group_version: &str, gv_path: &str) -> Json {
    let verbs = json!(["create", "delete", "get", "list", "patch", "update"]);
    let mut resources = Vec::new();
    for (gv, name, kind, short) in RESOURCES.iter().filter(|r| r.0 == gv_path) {
        let _ = gv;
        let mut r = json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": true,
                           "kind": kind, "verbs": verbs});
        if !short.is_empty() {
            r["shortNames"] = json!([short]);
        }
        resources.push(r);
        if matches!(*name, "deployments" | "statefulsets") {
            resources.push(json!({"name": format!("{name}/scale"), "singularName": "", "namespaced": true,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    if gv_path == "api/v1" {
        resources.push(
            json!({"name": "namespaces", "singularName": "namespace", "namespaced": false,
            "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]}),
        );
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// `namespaces/{ns}/{resource}[/{name}[/scale]]`.
fn object_request(
    state: &Mutex<State>,
    method: &Method,
    gv: &str,
    ns: &str,
    rest: &[&str],
    body: Json,
) -> Response<Full<Bytes>> {
    let Some(&resource) = rest.first() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no resource".into());
    };
    let Some(&(_, _, kind, _)) = RESOURCES.iter().find(|r| r.0 == gv && r.1 == resource) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server doesn't have a resource type \"{resource}\""),
        );
    };
    let group = if gv == "apis/apps/v1" { "apps" } else { "" };
    let verb = match (method.as_str(), rest.len()) {
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("DELETE", _) => "delete",
        ("PATCH", _) => "patch",
        _ => "update",
    };
    let mut s = state.lock().expect("fake-kube state");
    if s.forbidden.iter().any(|(v, r)| v == verb && r == resource) {
        let what = rest.get(1).map(|n| format!(" \"{n}\"")).unwrap_or_default();
        let dotted = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{dotted}{what} is forbidden: User \"fake\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{ns}\""
            ),
        );
    }
    let key = (gv.to_string(), ns.to_string(), resource.to_string());
    let not_found = |name: &str| {
        let dotted = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{dotted} \"{name}\" not found"),
        )
    };
    match (verb, rest) {
        ("list", _) => {
            let items: Vec<Json> = s
                .objects
                .get(&key)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let api_version = gv.trim_start_matches("apis/").trim_start_matches("api/");
            respond(
                StatusCode::OK,
                json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                "metadata": {"resourceVersion": s.resource_version.to_string()}, "items": items}),
            )
        }
        ("create", _) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if s.objects.get(&key).is_some_and(|m| m.contains_key(&name)) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{resource} \"{name}\" already exists"),
                );
            }
            let mut object = body;
            object["metadata"]["namespace"] = json!(ns);
            let stored = finish(&mut s, object, gv);
            s.objects
                .entry(key)
                .or_default()
                .insert(name, stored.clone());
            respond(StatusCode::CREATED, stored)
        }
        (_, [_, name, tail @ ..]) => {
            let Some(current) = s.objects.get(&key).and_then(|m| m.get(*name)).cloned() else {
                return not_found(name);
            };
            let scale = tail == ["scale"];
            match verb {
                "get" if scale => respond(StatusCode::OK, scale_of(&current)),
                "get" => respond(StatusCode::OK, current),
                "delete" => {
                    if let Some(m) = s.objects.get_mut(&key) {
                        m.remove(*name);
                    }
                    respond(
                        StatusCode::OK,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                    )
                }
                "patch" | "update" => {
                    let mut object = current;
                    if scale {
                        object["spec"]["replicas"] = body["spec"]["replicas"].clone();
                    } else {
                        merge(&mut object, &body);
                    }
                    let stored = finish(&mut s, object, gv);
                    s.objects
                        .entry(key)
                        .or_default()
                        .insert((*name).to_string(), stored.clone());
                    respond(
                        StatusCode::OK,
                        if scale { scale_of(&stored) } else { stored },
                    )
                }
                _ => status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    verb.to_string(),
                ),
            }
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        ),
    }
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(object: &Json) -> Json {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
                        "resourceVersion": object["metadata"]["resourceVersion"]},
           "spec": {"replicas": object["spec"]["replicas"]},
           "status": {"replicas": object["spec"]["replicas"]}})
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Json, patch: &Json) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Json::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}
