//! Transport and routing: TLS, HTTP/1, authentication, and which handler a path goes to.

use super::*;

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
        .with_upgrades()
        .await;
}

/// A response body: whole, or streamed (watch).
pub(super) type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the fake answers: a status code and a JSON body (or plain text).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
    /// `text/plain` with `body` as a string, instead of JSON.
    pub(super) plain: bool,
}

impl Reply {
    pub(super) fn new(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            body,
            plain: false,
        }
    }

    pub(super) fn ok(body: Value) -> Reply {
        Reply::new(StatusCode::OK, body)
    }

    pub(super) fn text(text: String) -> Reply {
        Reply {
            plain: true,
            ..Reply::ok(Value::String(text))
        }
    }
}

/// The parts of a request the routes read.
pub(super) struct Call {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: String,
}

impl Call {
    fn of(req: &Request<Incoming>) -> Call {
        Call {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or("").to_string(),
        }
    }
}

/// Records a request in the log.
pub(super) fn log_request(state: &Shared, call: &Call, status: StatusCode) {
    lock(state).log.push(LoggedRequest {
        method: call.method.to_string(),
        path: call.path.clone(),
        query: call.query.clone(),
        status: status.as_u16(),
    });
}

pub(super) async fn handle(
    state: Shared,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let call = Call::of(&req);
    if !is_authorized(&req) {
        let reply = status_reply(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
        log_request(&state, &call, reply.status);
        return Ok(to_response(reply));
    }
    if is_websocket(&req) {
        return Ok(websocket_route(&state, &call, req));
    }
    Ok(answer(&state, &call, req).await)
}

/// Exec and port-forward: checked under the lock, then upgraded to a
/// websocket whose session runs on its own task.
fn websocket_route(state: &Shared, call: &Call, req: Request<Incoming>) -> Response<Body> {
    let response = match upgrade_session(state, call, req) {
        Ok(response) => response,
        Err(reply) => to_response(reply),
    };
    log_request(state, call, response.status());
    response
}

fn upgrade_session(
    state: &Shared,
    call: &Call,
    req: Request<Incoming>,
) -> Result<Response<Body>, Reply> {
    let target = Target::parse(&call.path).ok_or_else(not_found_path)?;
    let guard = lock(state);
    let verb = verb_of(&call.method, &target);
    if guard.denies.iter().any(|d| d.matches(&target, verb)) {
        return Err(forbidden(&target, verb));
    }
    match (target.resource.as_str(), target.subresource.as_deref()) {
        ("pods", Some("exec")) => {
            let plan = plan_exec(&guard, &target, &call.query)?;
            drop(guard);
            let protocol = pick_protocol(&req, &CHANNEL_PROTOCOLS).ok_or_else(no_subprotocol)?;
            let shared = state.clone();
            Ok(upgrade(state, req, protocol, move |socket| {
                exec_session(shared, plan, protocol, socket)
            }))
        }
        ("pods", Some("portforward")) => {
            // kubectl tunnels SPDY through the websocket; kube-rs speaks
            // the channel protocol.
            if pick_protocol(&req, &[SPDY_TUNNEL_PROTOCOL]).is_some() {
                let plan = plan_portforward(&guard, &target, &call.query, true)?;
                drop(guard);
                return Ok(upgrade(state, req, SPDY_TUNNEL_PROTOCOL, move |socket| {
                    spdy_session(plan, socket)
                }));
            }
            let plan = plan_portforward(&guard, &target, &call.query, false)?;
            drop(guard);
            let protocol =
                pick_protocol(&req, &PORTFORWARD_PROTOCOLS).ok_or_else(no_subprotocol)?;
            Ok(upgrade(state, req, protocol, move |socket| {
                portforward_session(plan, socket)
            }))
        }
        _ => Err(bad_request(
            "the fake upgrades pods/exec and pods/portforward only",
        )),
    }
}

/// kubectl falls back to a plain SPDY upgrade when a websocket upgrade
/// fails; the fake serves websockets only (SPDY only tunneled in one).
fn no_spdy() -> Reply {
    bad_request(
        "the fake serves exec and port-forward over websockets only, not plain SPDY upgrades",
    )
}

fn no_subprotocol() -> Reply {
    bad_request("no websocket subprotocol the fake speaks was offered (v5.channel.k8s.io, v4.channel.k8s.io, …)")
}

/// A plain request: read the body, route it under the lock, then run what
/// it queued.
async fn answer(state: &Shared, call: &Call, req: Request<Incoming>) -> Response<Body> {
    let content_type = header(&req, "content-type");
    let wants_table = call.method == Method::GET && header(&req, "accept").contains("as=Table");
    if call.method == Method::GET && is_watch(&call.query) {
        let response = watch(state, call, wants_table).unwrap_or_else(to_response);
        log_request(state, call, response.status());
        return response;
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let reply = {
        let mut guard = lock(state);
        let plain = guard
            .plain_answers
            .iter()
            .find(|(path, _, _)| call.path.contains(path.as_str()))
            .map(|(_, status, body)| Reply {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                body: Value::String(body.clone()),
                plain: true,
            });
        let reply = match plain {
            Some(reply) => reply,
            None => route(&mut guard, call, &content_type, &body),
        };
        if wants_table {
            tabulate(reply)
        } else {
            reply
        }
    };
    run_effects(state);
    log_request(state, call, reply.status);
    to_response(reply)
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

pub(super) fn to_response(reply: Reply) -> Response<Body> {
    let (bytes, content_type) = match (&reply.body, reply.plain) {
        (Value::String(text), true) => (Bytes::from(text.clone()), "text/plain"),
        (body, _) => (Bytes::from(body.to_string()), "application/json"),
    };
    let mut response = Response::new(Full::new(bytes).boxed());
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

pub(super) fn route(state: &mut State, call: &Call, content_type: &str, body: &[u8]) -> Reply {
    if let Some(reply) = discovery(state, &call.method, &call.path) {
        return reply;
    }
    let Some(target) = Target::parse(&call.path) else {
        return not_found_path();
    };
    let verb = verb_of(&call.method, &target);
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
    let query = call.query.as_str();
    match (verb, target.subresource.as_deref()) {
        ("list", None) => list(state, &target, query),
        ("get", None) => get(state, &target),
        ("create", None) => create(state, &target, body),
        ("delete", None) => delete(state, &target, query, body),
        ("deletecollection", None) => delete_collection(state, &target, query, body),
        ("patch", None) if is_patchable(&target) => patch(state, &target, content_type, body),
        (_, Some("scale")) if is_scalable(&target) => {
            scale(state, &target, verb, content_type, body)
        }
        ("get", Some("log")) if target.resource == "pods" => pod_log(state, &target),
        (_, Some("exec")) => match plan_exec(state, &target, query) {
            Ok(_) => no_spdy(),
            Err(refusal) => refusal,
        },
        (_, Some("portforward")) => match plan_portforward(state, &target, query, false) {
            Ok(_) => no_spdy(),
            Err(refusal) => refusal,
        },
        (_, Some("attach")) => no_spdy(),
        _ => status_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({verb})"),
            None,
        ),
    }
}

pub(super) fn verb_of(method: &Method, target: &Target) -> &'static str {
    // RBAC checks `create` on streaming subresources, whatever the method.
    if matches!(
        target.subresource.as_deref(),
        Some("exec" | "portforward" | "attach")
    ) {
        return "create";
    }
    match *method {
        Method::GET if target.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if target.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// The resource a path names.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) resource: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

impl Target {
    pub(super) fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", "v1", rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (resource, namespace, name, subresource) = split_path(rest)?;
        let info = find_resource(group, version, resource)?;
        let owned = |s: Option<&str>| s.map(str::to_string);
        Some(Target {
            group: info.group,
            version: info.version,
            resource: resource.to_string(),
            namespace: owned(namespace),
            name: owned(name),
            subresource: owned(subresource),
        })
    }

    /// A target built in code (not from a path).
    pub(super) fn of(resource: &str, namespace: &str, name: &str) -> Target {
        let info = RESOURCES.iter().find(|r| r.name == resource);
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Target {
            group: info.map_or("", |r| r.group),
            version: info.map_or("v1", |r| r.version),
            resource: resource.to_string(),
            namespace: some(namespace),
            name: some(name),
            subresource: None,
        }
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

    pub(super) fn key(&self) -> Key {
        (
            self.resource.clone(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    pub(super) fn kind(&self) -> &'static str {
        kind_of(&self.resource)
    }

    pub(super) fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }
}

/// `(resource, namespace, name, subresource)` out of the segments after the group version.
type PathParts<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

fn split_path<'a>(rest: &[&'a str]) -> Option<PathParts<'a>> {
    Some(match *rest {
        ["namespaces", ns, resource] => (resource, Some(ns), None, None),
        ["namespaces", ns, resource, name] => (resource, Some(ns), Some(name), None),
        ["namespaces", ns, resource, name, sub] => (resource, Some(ns), Some(name), Some(sub)),
        [resource] => (resource, None, None, None),
        [resource, name] => (resource, None, Some(name), None),
        [resource, name, sub] => (resource, None, Some(name), Some(sub)),
        _ => return None,
    })
}

pub(super) fn is_patchable(target: &Target) -> bool {
    target.name.is_some()
}

pub(super) fn is_scalable(target: &Target) -> bool {
    is_workload(&target.resource) && target.name.is_some()
}
