//! Pods on the API side: admission (generated names, quota, the first
//! status), the statuses the kubelet writes, and deletion with a grace
//! period. The kubelet itself (processes, timing) is in `kubelet.rs`.

use super::*;
use std::path::PathBuf;
use tokio::sync::watch;

/// The fake's kubelet: its settings and the pods it looks after.
pub(super) struct Kubelet {
    /// How long a pod stays `ContainerCreating` before its container starts.
    pub(super) start_delay: Duration,
    /// Image substrings whose pulls fail.
    pub(super) failing_images: Vec<String>,
    /// How long a process-less pod takes to go once deleted.
    pub(super) termination_delay: Duration,
    /// The grace period of a delete that names none (nor does the pod).
    pub(super) default_grace: Duration,
    /// Most pods a namespace may hold (`ResourceQuota` `compute-resources`).
    pub(super) quotas: BTreeMap<String, usize>,
    /// Commands replaced by local binaries.
    pub(super) commands: BTreeMap<String, PathBuf>,
    /// `(namespace, pod)` to container port to local port.
    pub(super) port_maps: BTreeMap<(String, String), BTreeMap<u16, u16>>,
    /// `(namespace, pod)` to the kubelet's side of it.
    pub(super) runs: BTreeMap<(String, String), PodRun>,
    pub(super) groups: ProcessGroups,
}

impl Default for Kubelet {
    fn default() -> Self {
        Kubelet {
            start_delay: Duration::ZERO,
            failing_images: Vec::new(),
            termination_delay: Duration::from_millis(300),
            default_grace: Duration::from_secs(2),
            quotas: BTreeMap::new(),
            commands: BTreeMap::new(),
            port_maps: BTreeMap::new(),
            runs: BTreeMap::new(),
            groups: ProcessGroups::default(),
        }
    }
}

impl Kubelet {
    /// The local binary standing in for `program`, or `program` itself.
    pub(super) fn mapped_command(&self, program: &str) -> PathBuf {
        self.commands
            .get(program)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(program))
    }

    /// The run of this pod, if it is still the same pod.
    pub(super) fn run(&self, pod: &PodRef) -> Option<&PodRun> {
        self.runs
            .get(&(pod.namespace.clone(), pod.name.clone()))
            .filter(|run| run.uid == pod.uid)
    }

    pub(super) fn run_mut(&mut self, pod: &PodRef) -> Option<&mut PodRun> {
        self.runs
            .get_mut(&(pod.namespace.clone(), pod.name.clone()))
            .filter(|run| run.uid == pod.uid)
    }
}

/// One pod, by name and uid (a pod re-created under the same name is another pod).
#[derive(Clone, Debug)]
pub(super) struct PodRef {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: String,
}

impl PodRef {
    pub(super) fn of(pod: &Value) -> PodRef {
        PodRef {
            namespace: text(&pod["metadata"]["namespace"]),
            name: text(&pod["metadata"]["name"]),
            uid: text(&pod["metadata"]["uid"]),
        }
    }

    pub(super) fn key(&self) -> Key {
        ("pods".into(), self.namespace.clone(), self.name.clone())
    }
}

/// The kubelet's side of one pod.
pub(super) struct PodRun {
    pub(super) uid: String,
    /// The grace period once the pod is deleted; exec sessions watch it too.
    pub(super) stop: watch::Sender<Option<Duration>>,
    /// Whether a task still looks after the pod (false once it ended).
    pub(super) active: bool,
    /// Each container's environment, resolved when the pod started.
    pub(super) env: BTreeMap<String, Vec<(String, String)>>,
    /// The tail of the container's output (`pods/log`).
    pub(super) log: Vec<u8>,
}

/// The most of a pod's output kept for `pods/log`.
pub(super) const LOG_LIMIT: usize = 1 << 20;

/// Checks a new pod against the namespace's quota and gives it the status
/// a scheduled, not yet started pod has.
pub(super) fn admit_pod(state: &mut State, namespace: &str, pod: &mut Value) -> Result<(), Reply> {
    check_quota(state, namespace, &text(&pod["metadata"]["name"]))?;
    let ip = format!("10.244.0.{}", 10 + state.next_serial() % 240);
    pod["spec"]["nodeName"] = json!(NODE);
    pod["status"] = json!({
        "phase": "Pending",
        "conditions": [condition("PodScheduled", true, None)],
        "hostIP": "10.0.0.1",
        "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now_rfc3339(),
        "qosClass": "BestEffort",
    });
    set_waiting(pod, "ContainerCreating", None);
    pod["metadata"]["namespace"] = json!(namespace);
    if starts_at_once(state, pod) {
        set_running(pod, VIRTUAL_CONTAINER);
    }
    Ok(())
}

/// The container id of a virtual pod.
pub(super) const VIRTUAL_CONTAINER: &str = "fake://virtual";

/// Whether the pod runs nothing: no command, or made by a controller.
pub(super) fn is_virtual(pod: &Value) -> bool {
    first_container(pod)["command"].is_null()
        || !array(&pod["metadata"]["ownerReferences"]).is_empty()
}

/// A virtual pod with nothing to wait for is `Running` as it is created, so
/// a workload's status is right in the answer that changed it.
fn starts_at_once(state: &State, pod: &Value) -> bool {
    let image = text(&first_container(pod)["image"]);
    is_virtual(pod)
        && state.kubelet.start_delay.is_zero()
        && !state
            .kubelet
            .failing_images
            .iter()
            .any(|p| image.contains(p.as_str()))
        && container_env(state, pod, first_container(pod)).is_ok()
}

/// The node every pod is scheduled on.
pub(super) const NODE: &str = "fake-node";

fn check_quota(state: &State, namespace: &str, name: &str) -> Result<(), Reply> {
    let Some(&limit) = state.kubelet.quotas.get(namespace) else {
        return Ok(());
    };
    let used = state
        .objects
        .iter()
        .filter(|((resource, ns, _), pod)| {
            resource == "pods" && ns == namespace && !is_terminal(pod)
        })
        .count();
    if used < limit {
        return Ok(());
    }
    let message = format!(
        "pods \"{name}\" is forbidden: exceeded quota: compute-resources, requested: pods=1, used: pods={used}, limited: pods={limit}"
    );
    let target = Target::of("pods", namespace, name);
    Err(status_reply(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some((&target, name)),
    ))
}

/// Whether a pod has ended (`Succeeded` or `Failed`).
pub(super) fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// Registers a stored pod with the kubelet and queues its start.
pub(super) fn pod_created(state: &mut State, pod: &Value) {
    let pod = PodRef::of(pod);
    let run = PodRun {
        uid: pod.uid.clone(),
        stop: watch::channel(None).0,
        active: true,
        env: BTreeMap::new(),
        log: Vec::new(),
    };
    state
        .kubelet
        .runs
        .insert((pod.namespace.clone(), pod.name.clone()), run);
    state.effects.push(Effect::RunPod(pod));
}

/// After an object left the store: a pod's run is forgotten and its owner
/// (Deployment, StatefulSet) reconciled.
pub(super) fn on_removed(state: &mut State, object: &Value) {
    match object["kind"].as_str() {
        Some("Deployment") => return workload_removed(state, "deployments", object),
        Some("StatefulSet") => return workload_removed(state, "statefulsets", object),
        Some("Pod") => {}
        _ => return,
    }
    let pod = PodRef::of(object);
    if let Some(run) = state.kubelet.run(&pod) {
        run.stop.send_replace(Some(Duration::ZERO));
        state
            .kubelet
            .runs
            .remove(&(pod.namespace.clone(), pod.name.clone()));
    }
    owner_needs_reconcile(state, object);
}

/// `DELETE` of a pod: a running one gets its `deletionTimestamp` and is
/// removed by the kubelet once its processes are gone (after at most the
/// grace period); a pod whose container ended, or a delete with grace
/// period 0, is removed at once.
pub(super) fn delete_pod(state: &mut State, target: &Target, query: &str, body: &[u8]) -> Reply {
    let key = target.key();
    let Some(pod) = state.objects.get(&key).cloned() else {
        return not_found(target);
    };
    let grace = requested_grace(query, body)
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_u64())
        .map_or(state.kubelet.default_grace, Duration::from_secs);
    let run = PodRef::of(&pod);
    let active = state.kubelet.run(&run).is_some_and(|r| r.active);
    if !active || grace.is_zero() {
        let removed = state.take(&key).unwrap_or(pod);
        on_removed(state, &removed);
        return Reply::ok(removed);
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return Reply::ok(pod);
    }
    let mut pod = pod;
    let deadline = time::OffsetDateTime::now_utc() + grace;
    pod["metadata"]["deletionTimestamp"] = json!(rfc3339(deadline));
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace.as_secs());
    let stored = state.put(key, pod);
    if let Some(run) = state.kubelet.run(&run) {
        run.stop.send_replace(Some(grace));
    }
    Reply::ok(stored)
}

/// `GET pods/NAME/log`: the tail of what the container wrote (stdout and stderr).
pub(super) fn pod_log(state: &State, target: &Target) -> Reply {
    let Some(pod) = state.objects.get(&target.key()) else {
        return not_found(target);
    };
    let log = state
        .kubelet
        .run(&PodRef::of(pod))
        .map(|run| String::from_utf8_lossy(&run.log).into_owned())
        .unwrap_or_default();
    Reply::text(log)
}

/// `gracePeriodSeconds` of the query or of the `DeleteOptions` body.
fn requested_grace(query: &str, body: &[u8]) -> Option<u64> {
    let from_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|options| options["gracePeriodSeconds"].as_u64());
    from_body.or_else(|| query_param(query, "gracePeriodSeconds").and_then(|v| v.parse().ok()))
}

/// A pod condition.
fn condition(kind: &str, ok: bool, reason: Option<(&str, String)>) -> Value {
    let mut condition = json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now_rfc3339(),
    });
    if let Some((reason, message)) = reason {
        condition["reason"] = json!(reason);
        condition["message"] = json!(message);
    }
    condition
}

fn first_container(pod: &Value) -> &Value {
    &pod["spec"]["containers"][0]
}

fn container_status(pod: &Value, state: Value, ready: bool, container_id: Option<String>) -> Value {
    let container = first_container(pod);
    let mut status = json!({
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": ready,
        "started": state.get("running").is_some(),
        "restartCount": 0,
        "state": state,
    });
    if let Some(id) = container_id {
        status["containerID"] = json!(id);
        status["imageID"] = json!(format!("{}@sha256:fake", text(&container["image"])));
    }
    status
}

fn set_conditions(pod: &mut Value, ready: bool, reason: &str) {
    let name = text(&first_container(pod)["name"]);
    let why = (!ready).then(|| (reason, format!("containers with unready status: [{name}]")));
    pod["status"]["conditions"] = json!([
        condition("PodReadyToStartContainers", true, None),
        condition("Initialized", true, None),
        condition("Ready", ready, why.clone()),
        condition("ContainersReady", ready, why),
        condition("PodScheduled", true, None),
    ]);
}

/// The container waits (`ContainerCreating`, `ErrImagePull`, …); the pod is `Pending`.
pub(super) fn set_waiting(pod: &mut Value, reason: &str, message: Option<&str>) {
    let mut waiting = json!({"reason": reason});
    if let Some(message) = message {
        waiting["message"] = json!(message);
    }
    pod["status"]["phase"] = json!("Pending");
    pod["status"]["containerStatuses"] = json!([container_status(
        pod,
        json!({"waiting": waiting}),
        false,
        None
    )]);
    set_conditions(pod, false, "ContainersNotReady");
}

/// The container runs and is ready; the pod is `Running`.
pub(super) fn set_running(pod: &mut Value, container_id: &str) {
    let state = json!({"running": {"startedAt": now_rfc3339()}});
    pod["status"]["phase"] = json!("Running");
    pod["status"]["containerStatuses"] = json!([container_status(
        pod,
        state,
        true,
        Some(container_id.into())
    )]);
    set_conditions(pod, true, "");
}

/// How a container ended.
pub(super) struct Ending<'a> {
    pub(super) exit_code: i32,
    /// The container's reason (`Completed`, `Error`, `StartError`).
    pub(super) reason: &'a str,
    pub(super) message: Option<String>,
    /// The pod's own reason and message (`DeadlineExceeded`).
    pub(super) pod_reason: Option<(&'a str, &'a str)>,
}

/// The container ended; the pod is `Succeeded` or `Failed`.
pub(super) fn set_terminated(pod: &mut Value, ending: &Ending<'_>) {
    let old = &pod["status"]["containerStatuses"][0];
    let started = old["state"]["running"]["startedAt"].clone();
    let container_id = old["containerID"].as_str().map(str::to_string);
    let mut terminated = json!({
        "exitCode": ending.exit_code,
        "reason": ending.reason,
        "startedAt": started,
        "finishedAt": now_rfc3339(),
    });
    if let Some(message) = &ending.message {
        terminated["message"] = json!(message);
    }
    if let Some(id) = &container_id {
        terminated["containerID"] = json!(id);
    }
    let status = container_status(pod, json!({"terminated": terminated}), false, container_id);
    let failed = ending.exit_code != 0 || ending.pod_reason.is_some();
    pod["status"]["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
    pod["status"]["containerStatuses"] = json!([status]);
    if let Some((reason, message)) = ending.pod_reason {
        pod["status"]["reason"] = json!(reason);
        pod["status"]["message"] = json!(message);
    }
    set_conditions(pod, false, "PodCompleted");
}

/// The `Ready` column of `kubectl get pods` and its `Status`.
pub(super) fn pod_summary(pod: &Value) -> (String, String) {
    let statuses = array(&pod["status"]["containerStatuses"]);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let total = array(&pod["spec"]["containers"]).len().max(statuses.len());
    let state = &pod["status"]["containerStatuses"][0]["state"];
    let status = if pod["metadata"]["deletionTimestamp"].is_string() {
        "Terminating".to_string()
    } else if let Some(reason) = pod["status"]["reason"].as_str() {
        reason.to_string()
    } else if let Some(reason) = state["waiting"]["reason"].as_str() {
        reason.to_string()
    } else if let Some(reason) = state["terminated"]["reason"].as_str() {
        reason.to_string()
    } else {
        text(&pod["status"]["phase"])
    };
    (format!("{ready}/{total}"), status)
}

/// One parameter of a query string, percent-decoded.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query_params(query, name).into_iter().next()
}

/// Every value of a repeated query parameter, percent-decoded.
pub(super) fn query_params(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
        .collect()
}

/// `%XX` and `+` decoded.
pub(super) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
