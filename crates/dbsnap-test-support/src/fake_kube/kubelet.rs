//! The kubelet: one task per pod that takes it from `Pending` to
//! `Running` (or to an image pull or config error), runs its first
//! container's command as a local process, and ends it: on exit, at
//! `activeDeadlineSeconds`, or on delete (SIGTERM, then SIGKILL after the
//! grace period). A pod without a command, or owned by a controller, is
//! *virtual*: it runs nothing and is simply `Running`.
//!
//! The kubelet reads Secrets and ConfigMaps straight from the store: its
//! reads are not the client's and never appear in the request log.

use super::*;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

/// What stopped the wait for a pod's next step.
enum Interrupt {
    /// The pod was deleted, with this grace period.
    Deleted(Duration),
    /// `activeDeadlineSeconds` passed.
    Deadline,
}

/// What the kubelet is waiting for.
struct Watch {
    stop: watch::Receiver<Option<Duration>>,
    deadline: Option<tokio::time::Instant>,
}

impl Watch {
    /// Waits for a delete or the deadline.
    async fn interrupted(&mut self) -> Interrupt {
        let deadline = self.deadline;
        let expired = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            grace = deleted(&mut self.stop) => Interrupt::Deleted(grace),
            () = expired => Interrupt::Deadline,
        }
    }

    /// Sleeps for `period` unless interrupted first.
    async fn pause(&mut self, period: Duration) -> Option<Interrupt> {
        tokio::select! {
            () = tokio::time::sleep(period) => None,
            interrupt = self.interrupted() => Some(interrupt),
        }
    }
}

/// Resolves once the pod is deleted, with the grace period.
pub(super) async fn deleted(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    match stop.wait_for(Option::is_some).await {
        Ok(grace) => grace.unwrap_or_default(),
        // The run was dropped: the pod is gone.
        Err(_) => Duration::ZERO,
    }
}

/// Looks after one pod from creation to removal.
pub(super) async fn run_pod(shared: Shared, pod: PodRef) {
    let Some((mut watch, object, start_delay, failing)) = prepare(&shared, &pod) else {
        return;
    };
    if object["status"]["phase"] == "Running" {
        return run_virtual(&shared, &pod, &mut watch).await;
    }
    if let Some(interrupt) = watch.pause(start_delay).await {
        return interrupted_before_start(&shared, &pod, interrupt);
    }
    let image = text(&object["spec"]["containers"][0]["image"]);
    if failing {
        let interrupt = failed_pull(&shared, &pod, &image, &mut watch).await;
        return interrupted_before_start(&shared, &pod, interrupt);
    }
    let env = match resolved_env(&shared, &pod, &mut watch).await {
        Ok(env) => env,
        Err(interrupt) => return interrupted_before_start(&shared, &pod, interrupt),
    };
    let container = &object["spec"]["containers"][0];
    let argv = command_line(container, &env);
    if is_virtual(&object) {
        return run_virtual(&shared, &pod, &mut watch).await;
    }
    run_process(&shared, &pod, &argv, &env, &mut watch).await;
}

/// The pod's watch, its object, and the kubelet's settings for it.
fn prepare(shared: &Shared, pod: &PodRef) -> Option<(Watch, Value, Duration, bool)> {
    let state = lock(shared);
    let run = state.kubelet.run(pod)?;
    let object = state.objects.get(&pod.key())?.clone();
    let deadline = object["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let watch = Watch {
        stop: run.stop.subscribe(),
        deadline,
    };
    let image = text(&object["spec"]["containers"][0]["image"]);
    let failing = state
        .kubelet
        .failing_images
        .iter()
        .any(|pattern| image.contains(pattern.as_str()));
    Some((watch, object, state.kubelet.start_delay, failing))
}

/// Writes a change to the pod's status; false when the pod is gone.
fn update(shared: &Shared, pod: &PodRef, change: impl FnOnce(&mut Value)) -> bool {
    let changed = lock(shared).modify(&pod.key(), &pod.uid, change);
    run_effects(shared);
    changed
}

fn is_running(shared: &Shared, pod: &PodRef) -> bool {
    lock(shared)
        .objects
        .get(&pod.key())
        .is_some_and(|o| o["status"]["phase"] == "Running")
}

/// The kubelet stops looking after the pod; deleting it now removes it at once.
fn retire(shared: &Shared, pod: &PodRef) {
    if let Some(run) = lock(shared).kubelet.run_mut(pod) {
        run.active = false;
    }
}

/// Removes the pod (if it is still this one) and lets its owner react.
fn remove(shared: &Shared, pod: &PodRef) {
    {
        let mut state = lock(shared);
        let same = state
            .objects
            .get(&pod.key())
            .is_some_and(|o| o["metadata"]["uid"] == pod.uid.as_str());
        if same {
            if let Some(object) = state.take(&pod.key()) {
                on_removed(&mut state, &object);
            }
        }
    }
    run_effects(shared);
}

/// Deleted or out of time before anything ran: nothing to kill.
fn interrupted_before_start(shared: &Shared, pod: &PodRef, interrupt: Interrupt) {
    match interrupt {
        Interrupt::Deleted(_) => remove(shared, pod),
        Interrupt::Deadline => {
            update(shared, pod, |object| set_deadline_exceeded(object, None));
            retire(shared, pod);
        }
    }
}

fn set_deadline_exceeded(object: &mut Value, exit_code: Option<i32>) {
    let ending = Ending {
        exit_code: exit_code.unwrap_or(137),
        reason: "Error",
        message: None,
        pod_reason: Some((
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        )),
    };
    set_terminated(object, &ending);
}

/// `ErrImagePull`, then `ImagePullBackOff`, until interrupted.
async fn failed_pull(shared: &Shared, pod: &PodRef, image: &str, watch: &mut Watch) -> Interrupt {
    let pull = format!(
        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
    );
    update(shared, pod, |o| set_waiting(o, "ErrImagePull", Some(&pull)));
    if let Some(interrupt) = watch.pause(Duration::from_millis(500)).await {
        return interrupt;
    }
    let back_off = format!("Back-off pulling image \"{image}\"");
    update(shared, pod, |o| {
        set_waiting(o, "ImagePullBackOff", Some(&back_off))
    });
    watch.interrupted().await
}

/// The first container's environment, retried (as the kubelet does) while
/// a Secret or ConfigMap it needs is missing; every container's is kept
/// for exec.
async fn resolved_env(
    shared: &Shared,
    pod: &PodRef,
    watch: &mut Watch,
) -> Result<Vec<(String, String)>, Interrupt> {
    let mut reported = String::new();
    loop {
        match resolve_pod_env(shared, pod) {
            Ok(env) => return Ok(env),
            Err(message) if message != reported => {
                update(shared, pod, |o| {
                    set_waiting(o, "CreateContainerConfigError", Some(&message))
                });
                reported = message;
            }
            Err(_) => {}
        }
        if let Some(interrupt) = watch.pause(Duration::from_millis(200)).await {
            return Err(interrupt);
        }
    }
}

fn resolve_pod_env(shared: &Shared, pod: &PodRef) -> Result<Vec<(String, String)>, String> {
    let mut state = lock(shared);
    let object = state
        .objects
        .get(&pod.key())
        .cloned()
        .ok_or_else(|| "pod is gone".to_string())?;
    let mut all = BTreeMap::new();
    for (i, container) in array(&object["spec"]["containers"]).iter().enumerate() {
        let env = container_env(&state, &object, container);
        match env {
            Ok(env) => {
                all.insert(text(&container["name"]), env);
            }
            Err(message) if i == 0 => return Err(message),
            Err(_) => {}
        }
    }
    let first = all
        .get(&text(&object["spec"]["containers"][0]["name"]))
        .cloned()
        .unwrap_or_default();
    if let Some(run) = state.kubelet.run_mut(pod) {
        run.env = all;
    }
    Ok(first)
}

/// A container's environment, with `HOSTNAME` as the kubelet sets it.
pub(super) fn container_env(
    state: &State,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let namespace = text(&pod["metadata"]["namespace"]);
    let lookup = |resource: &str, name: &str| {
        state
            .objects
            .get(&(resource.to_string(), namespace.clone(), name.to_string()))
            .cloned()
    };
    let mut env = vec![("HOSTNAME".to_string(), text(&pod["metadata"]["name"]))];
    env.extend(resolve_env(pod, container, &lookup)?);
    Ok(env)
}

/// A pod with nothing to run: `Running` until deleted, then gone after the
/// termination delay.
async fn run_virtual(shared: &Shared, pod: &PodRef, watch: &mut Watch) {
    if !is_running(shared, pod) {
        update(shared, pod, |o| set_running(o, VIRTUAL_CONTAINER));
    }
    match watch.interrupted().await {
        Interrupt::Deleted(grace) => {
            let delay = lock(shared).kubelet.termination_delay;
            tokio::time::sleep(delay.min(grace)).await;
            remove(shared, pod);
        }
        Interrupt::Deadline => {
            update(shared, pod, |o| set_deadline_exceeded(o, None));
            retire(shared, pod);
        }
    }
}

/// Runs the container's command until it exits, the deadline passes or
/// the pod is deleted.
async fn run_process(
    shared: &Shared,
    pod: &PodRef,
    argv: &[String],
    env: &[(String, String)],
    watch: &mut Watch,
) {
    let launch = Launch {
        argv,
        env,
        interactive: false,
    };
    let mut started = match start_process(shared, &launch) {
        Ok(started) => started,
        Err(e) => return start_failed(shared, pod, argv, &e),
    };
    let container_id = format!("fake://{}", started.pgid);
    update(shared, pod, |o| set_running(o, &container_id));
    collect_log(shared, pod, &mut started);
    let outcome = tokio::select! {
        status = started.child.wait() => Ok(status),
        interrupt = watch.interrupted() => Err(interrupt),
    };
    match outcome {
        Ok(status) => {
            let code = status.map_or(1, exit_code);
            update(shared, pod, |o| set_exited(o, code));
            retire(shared, pod);
        }
        Err(Interrupt::Deadline) => {
            signal_group(started.pgid, rustix::process::Signal::KILL);
            let code = started.child.wait().await.map_or(137, exit_code);
            update(shared, pod, |o| set_deadline_exceeded(o, Some(code)));
            retire(shared, pod);
        }
        Err(Interrupt::Deleted(grace)) => {
            terminate_group(started.pgid);
            let _ = tokio::time::timeout(grace, started.child.wait()).await;
            drop(started);
            remove(shared, pod);
        }
    }
}

fn set_exited(object: &mut Value, code: i32) {
    let ending = Ending {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" },
        message: None,
        pod_reason: None,
    };
    set_terminated(object, &ending);
}

/// The command could not start (not found, not executable): `StartError`.
fn start_failed(shared: &Shared, pod: &PodRef, argv: &[String], error: &std::io::Error) {
    let program = argv.first().map_or("", String::as_str);
    let ending = Ending {
        exit_code: 128,
        reason: "StartError",
        message: Some(format!(
            "failed to create containerd task: exec: \"{program}\": {error}"
        )),
        pod_reason: None,
    };
    update(shared, pod, |o| set_terminated(o, &ending));
    retire(shared, pod);
}

/// Copies the container's stdout and stderr into its log.
fn collect_log(shared: &Shared, pod: &PodRef, started: &mut Started) {
    let stdout = started.child.stdout.take();
    let stderr = started.child.stderr.take();
    for mut stream in [stdout.map(boxed_read), stderr.map(boxed_read)]
        .into_iter()
        .flatten()
    {
        let shared = shared.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                append_log(&shared, &pod, &buffer[..n]);
            }
        });
    }
}

/// A process's stdout or stderr.
pub(super) type BoxedRead = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

pub(super) fn boxed_read(read: impl tokio::io::AsyncRead + Send + Unpin + 'static) -> BoxedRead {
    Box::new(read)
}

fn append_log(shared: &Shared, pod: &PodRef, bytes: &[u8]) {
    if let Some(run) = lock(shared).kubelet.run_mut(pod) {
        run.log.extend_from_slice(bytes);
        let excess = run.log.len().saturating_sub(LOG_LIMIT);
        run.log.drain(..excess);
    }
}
