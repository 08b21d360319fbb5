//! What the server keeps, and the one way objects change: every write takes a
//! new `resourceVersion`.
//!
//! Code that holds the lock never blocks or spawns: work that must happen
//! afterwards (start a pod, reconcile a Deployment) is queued as an
//! [`Effect`] and run by [`run_effects`] once the lock is released.

use super::*;

/// `(resource, namespace or "", name)`.
pub(super) type Key = (String, String, String);

/// Work queued under the lock, run on the server's runtime after it.
pub(super) enum Effect {
    /// Be the kubelet of a new pod.
    RunPod(PodRef),
    /// Bring a Deployment's or StatefulSet's pods in line with its spec.
    Reconcile(Key),
    /// Change an object after a delay, if its uid is still `uid`.
    Later {
        key: Key,
        uid: String,
        delay: Duration,
        change: Box<dyn FnOnce(&mut Value) + Send>,
    },
}

/// A change for watchers: `ADDED`, `MODIFIED` or `DELETED`, and the object
/// as it then was.
pub(super) struct Event {
    pub(super) version: u64,
    pub(super) kind: &'static str,
    pub(super) key: Key,
    pub(super) object: Value,
}

/// Everything the server keeps.
pub(super) struct State {
    pub(super) objects: BTreeMap<Key, Value>,
    /// Every change, oldest first (resource versions increase).
    pub(super) events: Vec<Event>,
    /// The newest resource version, for watchers to wait on.
    pub(super) changed: tokio::sync::watch::Sender<u64>,
    pub(super) denies: Vec<Deny>,
    /// Paths (substrings) answered with a status and a plain-text body, as
    /// a proxy in front of an API server does.
    pub(super) plain_answers: Vec<(String, u16, String)>,
    pub(super) log: Vec<LoggedRequest>,
    pub(super) resource_version: u64,
    pub(super) address: String,
    pub(super) kubelet: Kubelet,
    pub(super) effects: Vec<Effect>,
    pub(super) runtime: tokio::runtime::Handle,
    /// A counter for generated names and pod IPs.
    pub(super) serial: u64,
}

pub(super) type Shared = Arc<Mutex<State>>;

pub(super) fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub(super) fn new(address: String, runtime: tokio::runtime::Handle) -> State {
        State {
            objects: BTreeMap::new(),
            events: Vec::new(),
            changed: tokio::sync::watch::Sender::new(0),
            denies: Vec::new(),
            plain_answers: Vec::new(),
            log: Vec::new(),
            resource_version: 0,
            address,
            kubelet: Kubelet::default(),
            effects: Vec::new(),
            runtime,
            serial: 0,
        }
    }

    /// Stores `object` under `key` with a new `resourceVersion`; returns
    /// what was stored.
    pub(super) fn put(&mut self, key: Key, mut object: Value) -> Value {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let before = self.objects.insert(key.clone(), object.clone());
        let kind = if before.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(kind, &key, &object);
        if key.0 == "pods" {
            owner_needs_reconcile(self, &object);
        }
        object
    }

    fn record(&mut self, kind: &'static str, key: &Key, object: &Value) {
        self.events.push(Event {
            version: self.resource_version,
            kind,
            key: key.clone(),
            object: object.clone(),
        });
        self.changed.send_replace(self.resource_version);
    }

    /// Removes the object under `key`.
    pub(super) fn take(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.record("DELETED", key, &object);
        Some(object)
    }

    /// Changes the object under `key` in place, if it is still the one with
    /// `uid`; returns whether it was.
    pub(super) fn modify(&mut self, key: &Key, uid: &str, change: impl FnOnce(&mut Value)) -> bool {
        let Some(object) = self.objects.get(key) else {
            return false;
        };
        if object["metadata"]["uid"] != uid {
            return false;
        }
        let mut object = object.clone();
        change(&mut object);
        self.put(key.clone(), object);
        true
    }

    /// A fresh number, for generated names and addresses.
    pub(super) fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }
}

/// Runs the effects queued so far on the server's runtime.
pub(super) fn run_effects(shared: &Shared) {
    loop {
        let (effects, runtime) = {
            let mut state = lock(shared);
            (std::mem::take(&mut state.effects), state.runtime.clone())
        };
        if effects.is_empty() {
            return;
        }
        for effect in effects {
            match effect {
                Effect::RunPod(pod) => {
                    runtime.spawn(run_pod(shared.clone(), pod));
                }
                Effect::Reconcile(key) => reconcile(&mut lock(shared), &key),
                Effect::Later {
                    key,
                    uid,
                    delay,
                    change,
                } => {
                    let shared = shared.clone();
                    runtime.spawn(async move {
                        tokio::time::sleep(delay).await;
                        lock(&shared).modify(&key, &uid, change);
                    });
                }
            }
        }
    }
}
