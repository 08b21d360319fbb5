//! `pods/{name}/exec` over a websocket (`v5`/`v4.channel.k8s.io`, and the
//! older `channel.k8s.io` versions): the command runs as a local process
//! with the container's environment, in its own process group. Binary
//! frames whose first byte is the channel carry stdin (0), stdout (1),
//! stderr (2), the final status (3) and terminal resizes (4, ignored); v5's
//! `[255, 0]` closes stdin. Output streams as it comes, with backpressure
//! both ways: a process that does not read its stdin stops reading the
//! socket, a client that does not read stops the process's output.
//!
//! The process is killed (its whole group) when the client goes away or the
//! pod is deleted; stragglers left by a command that exited are killed once
//! its output is sent.

use super::*;
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// What an exec request asks for, checked against the pod.
pub(super) struct ExecPlan {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    stop: watch::Receiver<Option<Duration>>,
}

/// Checks an exec request as the API server and kubelet would: the pod
/// exists, the container is one of its own and running, a command is given.
pub(super) fn plan_exec(state: &State, target: &Target, query: &str) -> Result<ExecPlan, Reply> {
    let Some(pod) = state.objects.get(&target.key()) else {
        return Err(not_found(target));
    };
    let container = pick_container(pod, query_param(query, "container"))?;
    let argv = query_params(query, "command");
    if argv.is_empty() {
        return Err(bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let run = state.kubelet.run(&PodRef::of(pod));
    let running = pod["status"]["containerStatuses"][0]["state"]["running"].is_object();
    let (Some(run), true) = (run, running && !is_terminal(pod)) else {
        return Err(bad_request(&format!(
            "container not found (\"{}\")",
            text(&container["name"])
        )));
    };
    let env = match run.env.get(&text(&container["name"])) {
        Some(env) => env.clone(),
        None => container_env(state, pod, container).map_err(|m| bad_request(&m))?,
    };
    let flag = |name: &str| query_param(query, name).is_some_and(|v| v == "true" || v == "1");
    Ok(ExecPlan {
        argv,
        env,
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        stop: run.stop.subscribe(),
    })
}

/// The container named by the request, or the only one.
fn pick_container(pod: &Value, wanted: Option<String>) -> Result<&Value, Reply> {
    let containers = array(&pod["spec"]["containers"]);
    let pod_name = text(&pod["metadata"]["name"]);
    match wanted.filter(|w| !w.is_empty()) {
        Some(name) => containers
            .iter()
            .find(|c| c["name"] == name.as_str())
            .ok_or_else(|| {
                bad_request(&format!("container {name} is not valid for pod {pod_name}"))
            }),
        None if containers.len() == 1 => Ok(&containers[0]),
        None => {
            let names: Vec<String> = containers.iter().map(|c| text(&c["name"])).collect();
            Err(bad_request(&format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    }
}

pub(super) fn bad_request(message: &str) -> Reply {
    status_reply(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// Runs one exec session on its websocket.
pub(super) async fn exec_session(
    shared: Shared,
    mut plan: ExecPlan,
    protocol: &'static str,
    socket: Socket,
) {
    let (sink, source) = socket.split();
    let (frames, queue) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(write_frames(queue, sink));
    let launch = Launch {
        argv: &plan.argv,
        env: &plan.env,
        interactive: true,
    };
    let mut started = match start_process(&shared, &launch) {
        Ok(started) => started,
        Err(e) => {
            let _ = frames
                .send(status_frame(protocol, &start_failure(&plan.argv, &e)))
                .await;
            drop(frames);
            return close(writer).await;
        }
    };
    let stdin = started.child.stdin.take().filter(|_| plan.stdin);
    let pumps = [
        pump(
            started.child.stdout.take().map(boxed_read),
            1,
            plan.stdout,
            &frames,
        ),
        pump(
            started.child.stderr.take().map(boxed_read),
            2,
            plan.stderr,
            &frames,
        ),
    ];
    let mut reader = tokio::spawn(read_client(source, stdin));
    let exited = tokio::select! {
        status = started.child.wait() => status.ok(),
        _ = &mut reader => None,
        _ = deleted(&mut plan.stop) => {
            signal_group(started.pgid, rustix::process::Signal::KILL);
            started.child.wait().await.ok()
        }
    };
    let Some(status) = exited else {
        // The client went away: the process goes with it.
        writer.abort();
        return;
    };
    drain(pumps, &started).await;
    reader.abort();
    let outcome = exec_outcome(&plan.argv, exit_code(status));
    let _ = frames.send(status_frame(protocol, &outcome)).await;
    drop(frames);
    close(writer).await;
}

/// Waits for the output to be sent; stragglers still holding it open after
/// a second are killed.
async fn drain(pumps: [tokio::task::JoinHandle<()>; 2], started: &Started) {
    let [out, err] = pumps;
    let both = async {
        let _ = out.await;
        let _ = err.await;
    };
    tokio::pin!(both);
    if tokio::time::timeout(Duration::from_secs(1), &mut both)
        .await
        .is_err()
    {
        signal_group(started.pgid, rustix::process::Signal::KILL);
        both.await;
    }
}

/// Feeds stdin frames to the process until the client closes or goes.
async fn read_client(mut source: Source, mut stdin: Option<tokio::process::ChildStdin>) {
    while let Some(Ok(message)) = source.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => return,
            _ => continue,
        };
        match (data.first(), data.get(1)) {
            (Some(0), _) => {
                if let Some(writer) = stdin.as_mut() {
                    if writer.write_all(&data[1..]).await.is_err() {
                        stdin = None;
                    }
                }
            }
            (Some(255), Some(0)) => stdin = None,
            _ => {}
        }
    }
}

/// The `Status` the API sends on channel 3 when the command ends.
fn exec_outcome(argv: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            argv.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `Status` of a command the runtime could not start.
fn start_failure(argv: &[String], error: &std::io::Error) -> Value {
    let program = argv.first().map_or("", String::as_str);
    let message = format!(
        "Internal error occurred: error executing command in container: failed to exec in container: \
         failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: \
         exec: \"{program}\": {error}: unknown"
    );
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// The status frame: JSON from v4 on, the bare message (nothing on
/// success) before.
fn status_frame(protocol: &str, status: &Value) -> Message {
    let structured = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    let body = if structured {
        status.to_string()
    } else {
        text(&status["message"])
    };
    frame(3, body.as_bytes())
}
