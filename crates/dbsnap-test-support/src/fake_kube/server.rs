//! Transport and routing: TLS, HTTP/1, authentication, and which handler a path goes to.

use super::*;

/// The CA and the server certificate made at start.
pub(super) struct TlsMaterial {
    pub(super) ca_pem: String,
    pub(super) server_der: rustls::pki_types::CertificateDer<'static>,
    pub(super) server_key_der: Vec<u8>,
}

impl TlsMaterial {
    pub(super) fn generate() -> TlsMaterial {
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

    pub(super) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
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

pub(super) fn run_server(
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

pub(super) async fn accept_loop(
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

pub(super) async fn serve_connection(
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
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
        }
    }
}

pub(super) async fn handle(
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

pub(super) fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub(super) fn is_authorized(req: &Request<Incoming>) -> bool {
    header(req, "authorization") == format!("Bearer {TOKEN}")
}

pub(super) fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body.to_string())));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn route(
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

pub(super) fn verb_of(method: &Method, target: &Target) -> &'static str {
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
pub(super) struct Target {
    pub(super) group: &'static str,
    pub(super) resource: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

pub(super) const CORE_RESOURCES: [&str; 5] =
    ["namespaces", "pods", "secrets", "configmaps", "services"];
pub(super) const APPS_RESOURCES: [&str; 2] = ["deployments", "statefulsets"];

impl Target {
    pub(super) fn parse(path: &str) -> Option<Target> {
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

    pub(super) fn from_segments(group: &'static str, rest: &[&str]) -> Option<Target> {
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
    pub(super) fn full_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// `deployments.apps` or `secrets`, as error messages name it.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    pub(super) fn is_namespace_object(&self) -> bool {
        self.resource == "namespaces"
    }

    pub(super) fn key(&self) -> (String, String, String) {
        (
            self.resource.clone(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    pub(super) fn kind(&self) -> &'static str {
        kind_of(&self.resource)
    }

    pub(super) fn api_version(&self) -> &'static str {
        if self.group.is_empty() {
            "v1"
        } else {
            "apps/v1"
        }
    }
}

pub(super) fn kind_of(resource: &str) -> &'static str {
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

pub(super) fn is_patchable(target: &Target) -> bool {
    target.group == "apps" && target.name.is_some()
}

pub(super) fn is_scalable(target: &Target) -> bool {
    target.group == "apps" && target.name.is_some()
}
