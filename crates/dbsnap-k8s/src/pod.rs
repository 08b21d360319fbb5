//! A jump pod's life: created, waited for (with the reason when it does not
//! start: an image that cannot be pulled, a missing Secret key, a quota),
//! used through exec sessions, and deleted. Pods of a run that was killed
//! are found by their labels and removed by the next run.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, AttachedProcess, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::Value as Json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, SimplexStream, WriteHalf};

use crate::cluster::K8sError;
use crate::hint;
use crate::hint::Setting;
use crate::jump::{MANAGED_BY, RUN_LABEL};

/// Label saying what a dbsnap pod is for.
pub const ROLE_LABEL: &str = "dbsnap.io/role";
/// Role of a pod that lives as long as its run.
pub const ROLE_RUN: &str = "jump";
/// Role of a pod left running on purpose (`jump-create`).
pub const ROLE_KEPT: &str = "jump-kept";
/// Annotation naming the host and process that made a pod.
pub const OWNER_ANNOTATION: &str = "dbsnap.io/owner";

/// The deletions of a run's jump pods whose guards were dropped (the work
/// through them was stopped: Ctrl-C, SIGTERM): [`Reaper::reap`] waits for
/// them, so the run ends only once its pods are gone. Owned by the run.
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    pending: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Guards not dropped yet: a route shared with tasks that are still
    /// ending (a tunnel's, a dump's) drops its guard only when the last
    /// of them lets go.
    live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    dropped: std::sync::Arc<tokio::sync::Notify>,
}

/// How long [`Reaper::reap`] waits for guards the ending tasks still hold.
const REAP_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

impl Reaper {
    /// Waits until every guard of the run is dropped (up to 30 s: tasks
    /// stopped by the signal let go of the route) and every deletion a
    /// dropped guard started is done.
    pub async fn reap(&self) {
        let deadline = tokio::time::Instant::now() + REAP_WITHIN;
        loop {
            // Registered before the check, so a drop in between is not missed.
            let dropped = self.dropped.notified();
            let pending: Vec<_> = self
                .pending
                .lock()
                .map(|mut p| std::mem::take(&mut *p))
                .unwrap_or_default();
            for deletion in pending {
                let _ = deletion.await;
            }
            if self.live.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                let left = self.pending.lock().map(|p| p.len()).unwrap_or(0);
                if left == 0 {
                    return;
                }
                continue;
            }
            if tokio::time::timeout_at(deadline, dropped).await.is_err() {
                tracing::warn!(
                    "jump pods still in use after {REAP_WITHIN:?}: left to their deadline"
                );
                return;
            }
        }
    }
}

/// Owns a started jump pod: [`PodGuard::delete`] deletes it; dropped
/// without that (or [`PodGuard::keep`]), it deletes the pod in a task its
/// [`Reaper`] waits for.
pub struct PodGuard {
    pod: JumpPod,
    reaper: Reaper,
    armed: std::sync::atomic::AtomicBool,
}

impl PodGuard {
    /// Deletes the pod now (once; later calls do nothing).
    pub async fn delete(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.pod.delete().await;
        }
    }

    /// Leaves the pod running past this process (`jump-create`).
    pub fn keep(self) -> JumpPod {
        self.armed.store(false, std::sync::atomic::Ordering::SeqCst);
        self.pod.clone()
    }
}

impl std::fmt::Debug for PodGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pod.fmt(f)
    }
}

impl std::ops::Deref for PodGuard {
    type Target = JumpPod;
    fn deref(&self) -> &JumpPod {
        &self.pod
    }
}

impl Drop for PodGuard {
    fn drop(&mut self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let pod = self.pod.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let deletion = rt.spawn(async move { pod.delete().await });
                    if let Ok(mut p) = self.reaper.pending.lock() {
                        p.push(deletion);
                    }
                }
                // No runtime to delete it from: its deadline ends it.
                Err(_) => tracing::warn!("{pod:?} is left to its deadline"),
            }
        }
        self.reaper
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.reaper.dropped.notify_waiters();
    }
}

/// Deletes the kept pod `name` (it must be one of dbsnap's), or every kept
/// pod in the namespace; returns the names deleted.
pub async fn delete_kept(
    client: &Client,
    namespace: &str,
    name: Option<&str>,
) -> Result<Vec<String>, K8sError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={},{ROLE_LABEL}={ROLE_KEPT}", MANAGED_BY.0, MANAGED_BY.1);
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| list_error(e, namespace))?;
    let mut names: Vec<String> = pods
        .items
        .into_iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            labels.get(ROLE_LABEL).map(String::as_str) == Some(ROLE_KEPT)
                && labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    if let Some(wanted) = name {
        if !names.iter().any(|n| n == wanted) {
            return Err(K8sError::new(
                format!("no jump pod {wanted} made by dbsnap jump-create in namespace {namespace}"),
                "list them with: kubectl get pods -l dbsnap.io/role=jump-kept -n NAMESPACE",
            ));
        }
        names.retain(|n| n == wanted);
    }
    for n in &names {
        JumpPod::existing(client, namespace, n).delete().await;
    }
    Ok(names)
}

fn list_error(e: kube::Error, namespace: &str) -> K8sError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => K8sError::new(
            format!("RBAC denied: cannot list pods in namespace {namespace}: {}", s.message),
            format!("ask for a Role that allows list and delete on pods (kubectl auth can-i list pods -n {namespace})"),
        ),
        _ => K8sError::new(
            format!("cannot list pods in namespace {namespace}: {}", crate::cluster::describe(&e)),
            "check that the cluster is reachable (kubectl cluster-info)",
        ),
    }
}

/// How long the API server may take to open an exec session.
const EXEC_OPEN_LIMIT: Duration = Duration::from_secs(60);

/// Buffer between the exec session and its reader or writer.
const EXEC_BUF: usize = 256 * 1024;

/// A running jump pod.
#[derive(Clone)]
pub struct JumpPod {
    api: Api<Pod>,
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl std::fmt::Debug for JumpPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod/{} -n {}", self.name, self.namespace)
    }
}

/// `host:pid` of this process, for the owner annotation.
pub fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

impl JumpPod {
    /// Creates `pod` (the object from [`crate::jump::pod`]) and waits up to
    /// `ready_within` for it to run. On any failure the pod is deleted.
    pub async fn start(
        client: &Client,
        namespace: &str,
        mut pod: Json,
        ready_within: Duration,
        reaper: &Reaper,
    ) -> Result<PodGuard, K8sError> {
        pod["metadata"]["annotations"][OWNER_ANNOTATION] = Json::String(owner());
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let object: Pod = serde_json::from_value(pod)
            .map_err(|e| K8sError::new(format!("internal: bad pod object: {e}"), "report this"))?;
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| create_error(e, namespace))?;
        let jump = JumpPod {
            api,
            name: created.metadata.name.unwrap_or_default(),
            namespace: namespace.to_string(),
        };
        reaper
            .live
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = PodGuard {
            pod: jump,
            reaper: reaper.clone(),
            armed: std::sync::atomic::AtomicBool::new(true),
        };
        match guard.wait_running(ready_within).await {
            Ok(()) => Ok(guard),
            Err(e) => {
                guard.delete().await;
                Err(e)
            }
        }
    }

    /// A pod that already exists (made by `jump-create`).
    pub fn existing(client: &Client, namespace: &str, name: &str) -> JumpPod {
        JumpPod {
            api: Api::namespaced(client.clone(), namespace),
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// Polls until the container runs and is ready; names what holds it.
    async fn wait_running(&self, within: Duration) -> Result<(), K8sError> {
        let started = Instant::now();
        loop {
            let pod = self.api.get(&self.name).await.map_err(|e| {
                K8sError::new(
                    format!(
                        "cannot read pod/{} in namespace {}: {}",
                        self.name,
                        self.namespace,
                        crate::cluster::describe(&e)
                    ),
                    "check that the cluster is reachable and that you may get pods",
                )
            })?;
            let status = serde_json::to_value(&pod.status).unwrap_or(Json::Null);
            let last = match pod_state(&status) {
                State::Running => return Ok(()),
                State::Failed(why) => return Err(self.failed(&why)),
                State::Waiting(why) => why,
            };
            if started.elapsed() >= within {
                return Err(K8sError::new(
                    format!(
                        "jump pod {} in namespace {} was not ready within {} s ({last})",
                        self.name,
                        self.namespace,
                        within.as_secs()
                    ),
                    hint![
                        "raise ",
                        Setting::PodTimeout,
                        ", or check the namespace's events (kubectl get events -n NAMESPACE)"
                    ],
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn failed(&self, why: &str) -> K8sError {
        let pull = why.contains("ErrImagePull") || why.contains("ImagePullBackOff");
        let hint = if pull {
            hint![
                "name an image with ",
                Setting::Image,
                " (any image with PostgreSQL client tools and a shell) or a registry with ",
                Setting::Registry,
                ", and check the pull secret"
            ]
        } else if why.contains("CreateContainerConfigError") {
            "the app's pod template names a Secret or ConfigMap key that does not exist; fix the app's configuration".into()
        } else {
            "check the pod's events (kubectl describe pod NAME -n NAMESPACE)".into()
        };
        K8sError::new(
            format!(
                "jump pod {} in namespace {} cannot start: {why}",
                self.name, self.namespace
            ),
            hint,
        )
    }

    /// Whether the pod is still there and running (false when it was
    /// deleted, ended, or cannot be read).
    pub async fn is_running(&self) -> bool {
        match self.api.get_opt(&self.name).await {
            Ok(Some(p)) => {
                let status = serde_json::to_value(&p.status).unwrap_or(Json::Null);
                p.metadata.deletion_timestamp.is_none() && status["phase"] == "Running"
            }
            _ => false,
        }
    }

    /// Deletes the pod now (no grace: nothing in it needs to finish).
    /// Failures are logged: the pod's deadline ends it anyway.
    pub async fn delete(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => tracing::debug!("deleted pod/{}", self.name),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(
                "could not delete jump pod {} in namespace {}: {} (it ends by its deadline)",
                self.name,
                self.namespace,
                crate::cluster::describe(&e)
            ),
        }
    }

    /// Runs `command` in the pod; its stdin and stdout become one stream.
    pub async fn exec(&self, command: Vec<String>) -> io::Result<ExecStream> {
        self.exec_with(command, true).await
    }

    /// Runs `command` in the pod, with or without a stdin channel. A
    /// command that reads nothing gets none: kube-rs closes stdin with one
    /// more message, which races with the server closing the session when
    /// the command ends first.
    async fn exec_with(&self, command: Vec<String>, stdin: bool) -> io::Result<ExecStream> {
        let params = AttachParams {
            container: Some("jump".into()),
            stdin,
            stdout: true,
            stderr: true,
            tty: false,
            max_stdin_buf_size: Some(EXEC_BUF),
            max_stdout_buf_size: Some(EXEC_BUF),
            max_stderr_buf_size: Some(64 * 1024),
        };
        tracing::debug!("pod/{}: exec {:?}", self.name, command.first());
        let opening = self.api.exec(&self.name, command, &params);
        let mut process = tokio::time::timeout(EXEC_OPEN_LIMIT, opening)
            .await
            .map_err(|_| {
                io::Error::other(format!(
                    "the API server did not open an exec session into pod/{} within {} s",
                    self.name,
                    EXEC_OPEN_LIMIT.as_secs()
                ))
            })?
            .map_err(|e| io::Error::other(exec_error(e, &self.name)))?;
        let Some(stdout) = process.stdout() else {
            return Err(io::Error::other("the exec session has no stdout"));
        };
        let stdin = process.stdin();
        if stdin.is_none() && params.stdin {
            return Err(io::Error::other("the exec session has no stdin"));
        }
        let status = process.take_status().map(|s| Box::pin(s) as StatusFuture);
        if let Some(mut stderr) = process.stderr() {
            let pod = self.name.clone();
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
                for line in text.lines() {
                    tracing::warn!("pod/{pod}: {line}");
                }
            });
        }
        Ok(ExecStream {
            pod: self.name.clone(),
            stdin,
            stdout,
            status,
            ended: None,
            _process: process,
        })
    }

    /// Runs `command` with `input` on stdin and returns its stdout; gives
    /// up after two minutes plus a second per MB of input.
    pub async fn run(&self, command: Vec<String>, input: &[u8]) -> io::Result<Vec<u8>> {
        let limit = Duration::from_secs(120 + (input.len() >> 20) as u64);
        let what = command.first().cloned().unwrap_or_default();
        tokio::time::timeout(limit, self.run_unbounded(command, input))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{what} in pod/{} did not finish within {} s",
                        self.name,
                        limit.as_secs()
                    ),
                )
            })?
    }

    async fn run_unbounded(&self, command: Vec<String>, input: &[u8]) -> io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let what = command.first().cloned().unwrap_or_default();
        let mut stream = self.exec_with(command, !input.is_empty()).await?;
        let mut output = Vec::new();
        {
            let (mut out, mut inp) = tokio::io::split(&mut stream);
            let write = async {
                if input.is_empty() {
                    return Ok(());
                }
                inp.write_all(input).await?;
                inp.shutdown().await
            };
            let read = out.read_to_end(&mut output);
            let (w, r) = tokio::join!(write, read);
            r?;
            w?;
        }
        match stream.exit().await {
            Some(Exit { success: true, .. }) => Ok(output),
            Some(Exit { message, .. }) => Err(io::Error::other(format!(
                "{what} in pod/{} failed: {message}",
                self.name
            ))),
            None => Err(stream.dropped()),
        }
    }
}

/// Why exec failed, in words.
fn exec_error(e: kube::Error, pod: &str) -> String {
    match &e {
        kube::Error::Api(s) if s.code == 403 => {
            format!(
                "RBAC denied: cannot create pods/exec on pod/{pod}: {}",
                s.message
            )
        }
        _ => format!(
            "cannot exec into pod/{pod}: {}",
            crate::cluster::describe(&e)
        ),
    }
}

/// Pod creation failures: RBAC, quota, or other.
fn create_error(e: kube::Error, namespace: &str) -> K8sError {
    match &e {
        kube::Error::Api(s) if s.code == 403 && s.message.contains("exceeded quota") => K8sError::new(
            format!("the namespace {namespace} has no room for the jump pod: {}", s.message),
            "free room in the ResourceQuota (or raise it), or run where a quota allows one more pod",
        ),
        kube::Error::Api(s) if s.code == 403 => K8sError::new(
            format!("RBAC denied: cannot create pods in namespace {namespace}: {}", s.message),
            format!("ask for a Role that allows create, get and delete on pods and create on pods/exec (kubectl auth can-i create pods -n {namespace})"),
        ),
        _ => K8sError::new(
            format!("cannot create the jump pod in namespace {namespace}: {}", crate::cluster::describe(&e)),
            "check that the cluster is reachable (kubectl cluster-info)",
        ),
    }
}

/// A pod's state as far as starting it goes.
#[derive(Debug, PartialEq, Eq)]
enum State {
    Running,
    Waiting(String),
    Failed(String),
}

/// Reads a pod's `status`.
fn pod_state(status: &Json) -> State {
    let phase = status["phase"].as_str().unwrap_or("Pending");
    let container = &status["containerStatuses"][0];
    let waiting = &container["state"]["waiting"];
    let reason = waiting["reason"].as_str().unwrap_or_default();
    let message = waiting["message"].as_str().unwrap_or_default();
    let described = if message.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {message}")
    };
    match phase {
        "Running" if container["ready"].as_bool().unwrap_or(false) => State::Running,
        "Failed" | "Succeeded" => State::Failed(format!(
            "the pod ended ({phase}{})",
            status["reason"]
                .as_str()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        )),
        _ if matches!(
            reason,
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "CreateContainerConfigError"
        ) =>
        {
            State::Failed(described)
        }
        _ if !reason.is_empty() => State::Waiting(described),
        _ => State::Waiting(format!("phase {phase}")),
    }
}

/// Deletes jump pods of runs that are over: made on this host by a process
/// that is gone, or past their deadline. Kept pods (`jump-create`) stay.
/// Returns the names removed.
pub async fn sweep(client: &Client, namespace: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={},{ROLE_LABEL}={ROLE_RUN}", MANAGED_BY.0, MANAGED_BY.1);
    let Ok(pods) = api.list(&ListParams::default().labels(&selector)).await else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for pod in pods.items {
        let json = serde_json::to_value(&pod).unwrap_or(Json::Null);
        if json["metadata"]["labels"][ROLE_LABEL] != ROLE_RUN || !is_leftover(&json) {
            continue;
        }
        let name = pod.metadata.name.unwrap_or_default();
        JumpPod::existing(client, namespace, &name).delete().await;
        removed.push(name);
    }
    removed
}

/// Whether a run pod is over: ended, or made on this host by a process
/// that is gone.
fn is_leftover(pod: &Json) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase == "Failed" || phase == "Succeeded" {
        return true;
    }
    let Some(made_by) = pod["metadata"]["annotations"][OWNER_ANNOTATION].as_str() else {
        return false;
    };
    let (host, pid) = made_by.rsplit_once(':').unwrap_or_default();
    let me = owner();
    let this_host = me.rsplit_once(':').map_or("", |(h, _)| h);
    host == this_host && !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists()
}

/// The run a pod belongs to.
pub fn run_of(pod: &Json) -> Option<&str> {
    pod["metadata"]["labels"][RUN_LABEL].as_str()
}

type StatusFuture = Pin<Box<dyn std::future::Future<Output = Option<Status>> + Send>>;

/// How a command run through exec ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub success: bool,
    /// The server's words (`command terminated with non-zero exit code: ...`).
    pub message: String,
}

/// An exec session's stdout and stdin as one stream; the session ends
/// when it is dropped.
///
/// The end of stdout is also read from the session's end: kube-rs closes
/// stdout only when its message loop ends cleanly, so a session whose
/// connection failed (the exit status never came) would otherwise leave
/// a reader waiting forever. Such a session reads as an error.
pub struct ExecStream {
    pod: String,
    stdin: Option<WriteHalf<SimplexStream>>,
    stdout: ReadHalf<SimplexStream>,
    /// Resolves when the session's message loop has ended: with the exit
    /// status, or `None` when the session broke first.
    status: Option<StatusFuture>,
    ended: Option<Option<Exit>>,
    _process: AttachedProcess,
}

impl ExecStream {
    /// How the command ended (waits for the end of the session); `None`
    /// when the session broke before the exit status came.
    pub async fn exit(&mut self) -> Option<Exit> {
        if self.ended.is_none() {
            let status = match self.status.as_mut() {
                Some(s) => s.await,
                None => None,
            };
            self.ended = Some(status.map(exit_of));
        }
        self.ended.clone().flatten()
    }

    fn dropped(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!(
                "the exec session into pod/{} ended without the command's exit status (the connection to the API server dropped)",
                self.pod
            ),
        )
    }
}

fn exit_of(status: Status) -> Exit {
    Exit {
        success: status.status.as_deref() == Some("Success"),
        message: status.message.unwrap_or_default(),
    }
}

impl AsyncRead for ExecStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(r) = Pin::new(&mut self.stdout).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        if self.ended.is_none() {
            let Some(status) = self.status.as_mut() else {
                return Poll::Pending;
            };
            let Poll::Ready(status) = status.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            self.ended = Some(status.map(exit_of));
        }
        // The session has ended, so whatever it wrote is in stdout by now.
        if let Poll::Ready(r) = Pin::new(&mut self.stdout).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        match &self.ended {
            Some(Some(_)) => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(self.dropped())),
        }
    }
}

impl ExecStream {
    fn stdin(&mut self) -> io::Result<Pin<&mut WriteHalf<SimplexStream>>> {
        match self.stdin.as_mut() {
            Some(w) => Ok(Pin::new(w)),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "this exec session has no stdin",
            )),
        }
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stdin() {
            Ok(w) => w.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stdin() {
            Ok(w) => w.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stdin() {
            Ok(w) => w.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_name_what_holds_the_pod() {
        assert_eq!(
            pod_state(&json!({"phase": "Running", "containerStatuses": [{"ready": true}]})),
            State::Running
        );
        let pull = pod_state(
            &json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {
            "reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope:1\""}}}]}),
        );
        assert!(
            matches!(&pull, State::Failed(w) if w.contains("nope:1")),
            "{pull:?}"
        );
        assert_eq!(
            pod_state(&json!({"phase": "Pending"})),
            State::Waiting("phase Pending".into())
        );
        assert!(matches!(
            pod_state(&json!({"phase": "Failed", "reason": "DeadlineExceeded"})),
            State::Failed(w) if w.contains("DeadlineExceeded")
        ));
    }
}
