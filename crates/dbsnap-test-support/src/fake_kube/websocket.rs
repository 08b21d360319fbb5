//! Websocket upgrades for exec and port-forward: which requests get one,
//! the subprotocol chosen from the client's offer, and the upgraded stream.

use super::*;
use futures::SinkExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
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

pub(super) type Sink = futures::stream::SplitSink<Socket, Message>;
pub(super) type Source = futures::stream::SplitStream<Socket>;

/// Sends queued frames until the queue closes; hands the sink back.
pub(super) async fn write_frames(mut queue: mpsc::Receiver<Message>, mut sink: Sink) -> Sink {
    while let Some(frame) = queue.recv().await {
        if sink.send(frame).await.is_err() {
            break;
        }
    }
    sink
}

/// Closes the websocket normally once every frame is sent.
pub(super) async fn close(writer: tokio::task::JoinHandle<Sink>) {
    if let Ok(mut sink) = writer.await {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    }
}

/// Copies a process's output into frames of `channel` (or drops it when
/// the client did not ask for it).
pub(super) fn pump(
    stream: Option<BoxedRead>,
    channel: u8,
    forward: bool,
    frames: &mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    let frames = frames.clone();
    tokio::spawn(async move {
        let Some(mut stream) = stream else {
            return;
        };
        let mut buffer = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            if forward && frames.send(frame(channel, &buffer[..n])).await.is_err() {
                return;
            }
        }
    })
}

pub(super) fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::binary(bytes)
}
