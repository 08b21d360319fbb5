//! Websocket upgrades for exec and port-forward: which requests get one,
//! the subprotocol chosen from the client's offer, and the upgraded stream.

use super::*;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// The websocket of an exec or port-forward session.
pub(super) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The stream subprotocols, best first, as the API server knows them.
pub(super) const CHANNEL_PROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Whether the request asks to become a websocket.
pub(super) fn is_websocket(req: &Request<Incoming>) -> bool {
    header(req, "upgrade").eq_ignore_ascii_case("websocket")
}

/// The best of `supported` among what the client offers
/// (`Sec-WebSocket-Protocol`, comma separated, possibly in several headers).
pub(super) fn pick_protocol(
    req: &Request<Incoming>,
    supported: &[&'static str],
) -> Option<&'static str> {
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    supported
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied()
}

/// Answers `101 Switching Protocols` with `protocol`, and runs `session` on
/// the websocket once hyper hands the connection over.
pub(super) fn upgrade<F, Fut>(
    state: &Shared,
    req: Request<Incoming>,
    protocol: &'static str,
    session: F,
) -> Response<Body>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let accept = derive_accept_key(header(&req, "sec-websocket-key").as_bytes());
    let runtime = lock(state).runtime.clone();
    runtime.spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(socket).await;
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = hyper::header::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("upgrade", "websocket");
    set("connection", "Upgrade");
    set("sec-websocket-accept", &accept);
    set("sec-websocket-protocol", protocol);
    response
}
