//! `pods/{name}/portforward?ports=P[,Q…]` over a websocket, as kube-rs
//! speaks it: port `i` has data channel `2i` and error channel `2i+1`, the
//! first frame of each carries the port (u16, little-endian). Each port
//! connects to 127.0.0.1: the pod's processes run locally, so a process
//! pod's port is the same local port; a pod given a port map
//! ([`FakeKube::map_pod_port`], e.g. a virtual database pod) reaches the
//! mapped local port. A port that cannot be reached gets the kubelet's
//! error on its error channel. The session ends when the client closes,
//! every upstream connection has closed, or the pod is deleted.

use super::*;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// The subprotocols of port-forward websockets, best first.
pub(super) const PORTFORWARD_PROTOCOLS: [&str; 3] = [
    "v4.channel.k8s.io",
    "v5.channel.k8s.io",
    "portforward.k8s.io",
];

/// What a port-forward request asks for, checked against the pod.
pub(super) struct ForwardPlan {
    pub(super) pod: String,
    pub(super) uid: String,
    /// `(pod port, local port)`.
    ports: Vec<(u16, u16)>,
    /// The pod's port map (pod port to local port).
    pub(super) map: BTreeMap<u16, u16>,
    pub(super) stop: watch::Receiver<Option<Duration>>,
}

/// Checks a port-forward request: the pod exists and runs, ports are given
/// (in the query; a SPDY session names them in its streams instead).
pub(super) fn plan_portforward(
    state: &State,
    target: &Target,
    query: &str,
    spdy: bool,
) -> Result<ForwardPlan, Reply> {
    let Some(pod) = state.objects.get(&target.key()) else {
        return Err(not_found(target));
    };
    let ports: Vec<u16> = query_params(query, "ports")
        .iter()
        .flat_map(|p| {
            p.split(',')
                .map(|n| n.trim().parse::<u16>())
                .collect::<Vec<_>>()
        })
        .collect::<Result<_, _>>()
        .map_err(|_| bad_request("invalid port in \"ports\""))?;
    if ports.is_empty() && !spdy {
        return Err(bad_request("at least one port must be specified"));
    }
    let pod_ref = PodRef::of(pod);
    let run = state.kubelet.run(&pod_ref);
    let (Some(run), "Running") = (run, pod["status"]["phase"].as_str().unwrap_or("")) else {
        return Err(bad_request(&format!(
            "pod {} is not running (phase {})",
            pod_ref.name,
            text(&pod["status"]["phase"])
        )));
    };
    let map = state
        .kubelet
        .port_maps
        .get(&(pod_ref.namespace.clone(), pod_ref.name.clone()))
        .cloned()
        .unwrap_or_default();
    let ports = ports
        .into_iter()
        .map(|p| (p, map.get(&p).copied().unwrap_or(p)))
        .collect();
    Ok(ForwardPlan {
        pod: pod_ref.name,
        uid: pod_ref.uid,
        ports,
        map,
        stop: run.stop.subscribe(),
    })
}

/// Runs one port-forward session on its websocket.
pub(super) async fn portforward_session(mut plan: ForwardPlan, socket: Socket) {
    let (sink, source) = socket.split();
    let (frames, queue) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(write_frames(queue, sink));
    let mut upstreams = Vec::new();
    let mut pumps = Vec::new();
    for (i, &(port, local)) in plan.ports.iter().enumerate() {
        let data = (2 * i) as u8;
        for channel in [data, data + 1] {
            let mut first = vec![channel];
            first.extend_from_slice(&port.to_le_bytes());
            let _ = frames.send(Message::binary(first)).await;
        }
        match tokio::net::TcpStream::connect(("127.0.0.1", local)).await {
            Ok(stream) => {
                let (read, write) = stream.into_split();
                pumps.push(pump(Some(boxed_read(read)), data, true, &frames));
                upstreams.push(Some(write));
            }
            Err(e) => {
                let message = unreachable_port(&plan, port, local, &e);
                let _ = frames.send(frame(data + 1, message.as_bytes())).await;
                upstreams.push(None);
            }
        }
    }
    let all_closed = futures::future::join_all(pumps);
    tokio::select! {
        () = forward_client(source, &mut upstreams) => {}
        _ = all_closed => {}
        _ = deleted(&mut plan.stop) => {}
    }
    drop(upstreams);
    drop(frames);
    close(writer).await;
}

/// The kubelet's words for a port nothing listens on.
fn unreachable_port(plan: &ForwardPlan, port: u16, local: u16, error: &std::io::Error) -> String {
    format!(
        "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside the pod: dial tcp4 127.0.0.1:{local}: {error}",
        plan.pod, plan.uid
    )
}

/// Writes each data frame to its port's connection until the client closes.
async fn forward_client(mut source: Source, upstreams: &mut [Option<OwnedWriteHalf>]) {
    while let Some(Ok(message)) = source.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => return,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        let slot = upstreams.get_mut(usize::from(channel / 2));
        if let (0, Some(Some(upstream))) = (channel % 2, slot) {
            if upstream.write_all(payload).await.is_err() {
                return;
            }
        }
    }
}
