//! `?watch=true` on a list (or, the old way, on one object): a chunked
//! stream of JSON lines `{"type": "ADDED"|"MODIFIED"|"DELETED", "object":
//! …}`, as `kubectl get -w`, `kubectl wait` and kube-rs' watcher read it.
//!
//! From `resourceVersion` N the stream replays every change after N, then
//! follows new ones; without one (or with `0`) it starts with an `ADDED`
//! for each object that exists. Selectors filter as for lists; a request
//! asking for a `Table` gets each object as a one-row table. The stream
//! ends after `timeoutSeconds` (default 30 minutes) or when the client goes.

use super::*;
use tokio::sync::mpsc;

/// Whether the query asks for a watch.
pub(super) fn is_watch(query: &str) -> bool {
    query_params(query, "watch")
        .iter()
        .any(|v| v == "true" || v == "1")
}

/// What one watch follows.
struct Watch {
    target: Target,
    selection: Selection,
    table: bool,
}

impl Watch {
    fn wants(&self, key: &Key, object: &Value) -> bool {
        let (resource, namespace, name) = key;
        *resource == self.target.resource
            && self
                .target
                .namespace
                .as_ref()
                .is_none_or(|ns| ns == namespace)
            && self.target.name.as_ref().is_none_or(|n| n == name)
            && self.selection.matches(object)
    }

    fn line(&self, kind: &str, object: &Value) -> Bytes {
        let object = if self.table {
            tabulate(Reply::ok(object.clone())).body
        } else {
            object.clone()
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        Bytes::from(line)
    }
}

/// Starts a watch: checks it under the lock, then streams on its own task.
pub(super) fn watch(state: &Shared, call: &Call, table: bool) -> Result<Response<Body>, Reply> {
    let target = Target::parse(&call.path).ok_or_else(not_found_path)?;
    let query = call.query.as_str();
    let selection = Selection::from_query(query).map_err(|m| bad_request(&m))?;
    let timeout = query_params(query, "timeoutSeconds")
        .first()
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = query_params(query, "resourceVersion")
        .first()
        .cloned()
        .unwrap_or_default();
    let watch = Watch {
        target,
        selection,
        table,
    };
    let guard = lock(state);
    if guard
        .denies
        .iter()
        .any(|d| d.matches(&watch.target, "watch"))
    {
        return Err(forbidden(&watch.target, "watch"));
    }
    let (initial, cursor) = match from.as_str() {
        "" | "0" => {
            let lines: Vec<Bytes> = guard
                .objects
                .iter()
                .filter(|(key, object)| watch.wants(key, object))
                .map(|(_, object)| watch.line("ADDED", object))
                .collect();
            (lines, guard.resource_version)
        }
        version => (
            Vec::new(),
            version
                .parse()
                .map_err(|_| bad_request(&format!("invalid resourceVersion {version:?}")))?,
        ),
    };
    let changes = guard.changed.subscribe();
    let runtime = guard.runtime.clone();
    drop(guard);
    let (lines, queue) = mpsc::channel::<Bytes>(64);
    runtime.spawn(follow(
        state.clone(),
        watch,
        initial,
        cursor,
        changes,
        timeout,
        lines,
    ));
    let stream = futures::stream::unfold(queue, |mut queue| async move {
        let line = queue.recv().await?;
        Some((Ok::<_, Infallible>(hyper::body::Frame::data(line)), queue))
    });
    let mut response = Response::new(http_body_util::StreamBody::new(stream).boxed());
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn follow(
    state: Shared,
    watch: Watch,
    initial: Vec<Bytes>,
    mut cursor: u64,
    mut changes: tokio::sync::watch::Receiver<u64>,
    timeout: Duration,
    lines: mpsc::Sender<Bytes>,
) {
    for line in initial {
        if lines.send(line).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let news: Vec<Bytes> = {
            let guard = lock(&state);
            let start = guard.events.partition_point(|e| e.version <= cursor);
            if let Some(last) = guard.events.last() {
                cursor = cursor.max(last.version);
            }
            guard.events[start..]
                .iter()
                .filter(|e| watch.wants(&e.key, &e.object))
                .map(|e| watch.line(e.kind, &e.object))
                .collect()
        };
        for line in news {
            if lines.send(line).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(deadline) => return,
            () = lines.closed() => return,
        }
    }
}
