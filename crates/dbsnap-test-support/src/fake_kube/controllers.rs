//! Controllers: a Deployment or StatefulSet keeps `spec.replicas` pods of
//! its template, virtual (nothing runs), and its `status` counts them.
//!
//! Deployment pods are named `NAME-HASH-XXXXX` and owned by a ReplicaSet
//! `NAME-HASH` (not served); StatefulSet pods are `NAME-0`, `NAME-1`, …,
//! owned by the StatefulSet. Scaling down deletes the newest pods (highest
//! ordinals) as a client's delete would: they get a `deletionTimestamp`
//! and go after the termination delay. A StatefulSet re-creates a name only
//! once its old pod is gone. Deleting a workload deletes its pods.
//! Reconciles run under the lock, right after the change that asked for
//! them, so a client sees their outcome in its next request.

use super::*;

/// Whether a resource is a workload with replicas.
pub(super) fn is_workload(resource: &str) -> bool {
    resource == "deployments" || resource == "statefulsets"
}

/// The workload behind a pod's controller reference, if any.
fn owner_key(pod: &Value) -> Option<Key> {
    let owner = &pod["metadata"]["ownerReferences"][0];
    let namespace = text(&pod["metadata"]["namespace"]);
    let name = text(&owner["name"]);
    match owner["kind"].as_str()? {
        "StatefulSet" => Some(("statefulsets".into(), namespace, name)),
        "ReplicaSet" => {
            let (deployment, _hash) = name.rsplit_once('-')?;
            Some(("deployments".into(), namespace, deployment.to_string()))
        }
        _ => None,
    }
}

/// Queues a reconcile of the workload owning `pod`, if any.
pub(super) fn owner_needs_reconcile(state: &mut State, pod: &Value) {
    if let Some(key) = owner_key(pod) {
        state.effects.push(Effect::Reconcile(key));
    }
}

/// The uid a workload's pods name as their owner's.
fn owner_uid(resource: &str, workload: &Value) -> String {
    let uid = text(&workload["metadata"]["uid"]);
    if resource == "deployments" {
        // The ReplicaSet's, derived from the Deployment's.
        uid.replacen("-8000-", "-9000-", 1)
    } else {
        uid
    }
}

/// The pods a workload owns, in name order.
fn owned_pods(state: &State, resource: &str, workload: &Value) -> Vec<Value> {
    let uid = owner_uid(resource, workload);
    let namespace = text(&workload["metadata"]["namespace"]);
    state
        .objects
        .iter()
        .filter(|((r, ns, _), pod)| {
            r == "pods"
                && *ns == namespace
                && pod["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
        })
        .map(|(_, pod)| pod.clone())
        .collect()
}

/// Brings a workload's pods in line with its spec and writes its status.
pub(super) fn reconcile(state: &mut State, key: &Key) {
    let Some(workload) = state.objects.get(key).cloned() else {
        return;
    };
    let resource = key.0.as_str();
    let desired = workload["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    let pods = owned_pods(state, resource, &workload);
    let live: Vec<&Value> = pods
        .iter()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_string())
        .collect();
    if live.len() < desired {
        add_pods(state, resource, &workload, &pods, desired);
    } else if live.len() > desired {
        remove_pods(state, resource, &live, live.len() - desired);
    }
    write_status(state, key, resource);
}

/// Creates the missing pods: a StatefulSet's free ordinals below
/// `desired` (one held by a terminating pod waits for it to go), a
/// Deployment's count under new names.
fn add_pods(state: &mut State, resource: &str, workload: &Value, pods: &[Value], desired: usize) {
    let taken: Vec<String> = pods.iter().map(|p| text(&p["metadata"]["name"])).collect();
    let name = text(&workload["metadata"]["name"]);
    let names: Vec<String> = if resource == "statefulsets" {
        (0..desired)
            .map(|i| format!("{name}-{i}"))
            .filter(|n| !taken.contains(n))
            .collect()
    } else {
        let live = pods
            .iter()
            .filter(|p| !p["metadata"]["deletionTimestamp"].is_string())
            .count();
        let hash = template_hash(workload);
        (live..desired)
            .map(|_| format!("{name}-{hash}-{}", random_suffix(state.next_serial())))
            .collect()
    };
    let namespace = text(&workload["metadata"]["namespace"]);
    for pod_name in names {
        let pod = pod_of(resource, workload, &pod_name);
        // Refused only by a quota: the next reconcile tries again.
        let _ = create_object(state, "pods", &namespace, pod);
    }
}

/// The newest pods (highest ordinals) go first.
fn remove_pods(state: &mut State, resource: &str, live: &[&Value], count: usize) {
    let mut names: Vec<String> = live.iter().map(|p| text(&p["metadata"]["name"])).collect();
    if resource == "statefulsets" {
        names.sort_by_key(|n| ordinal(n));
    } else {
        names.sort_by_key(|n| {
            live.iter()
                .find(|p| p["metadata"]["name"] == n.as_str())
                .map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string())
        });
    }
    let namespace = text(&live[0]["metadata"]["namespace"]);
    for name in names.iter().rev().take(count) {
        delete_pod(state, &Target::of("pods", &namespace, name), "", b"");
    }
}

fn ordinal(name: &str) -> u64 {
    name.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Ten characters standing for the pod template, stable per Deployment.
fn template_hash(workload: &Value) -> String {
    let uid = text(&workload["metadata"]["uid"]);
    let digits: u64 = uid.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((digits >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// A pod of the workload's template, named and owned.
fn pod_of(resource: &str, workload: &Value, name: &str) -> Value {
    let template = &workload["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    let workload_name = text(&workload["metadata"]["name"]);
    let owner = if resource == "deployments" {
        let hash = template_hash(workload);
        labels["pod-template-hash"] = json!(hash);
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{workload_name}-{hash}")})
    } else {
        labels["statefulset.kubernetes.io/pod-name"] = json!(name);
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": workload_name})
    };
    let mut owner = owner;
    owner["uid"] = json!(owner_uid(resource, workload));
    owner["controller"] = json!(true);
    owner["blockOwnerDeletion"] = json!(true);
    let mut pod = json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": template["spec"],
    });
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        pod["metadata"]["annotations"] = json!(annotations);
    }
    if resource == "statefulsets" {
        pod["spec"]["hostname"] = json!(name);
    }
    pod
}

/// Counts the workload's pods into its status (written only when it changed).
fn write_status(state: &mut State, key: &Key, resource: &str) {
    let Some(workload) = state.objects.get(key).cloned() else {
        return;
    };
    let pods = owned_pods(state, resource, &workload);
    let live = pods
        .iter()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_string())
        .count();
    let ready = pods
        .iter()
        .filter(|p| p["status"]["containerStatuses"][0]["ready"] == true)
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_string())
        .count();
    let mut status = json!({
        "replicas": live,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "updatedReplicas": live,
        "observedGeneration": workload["metadata"]["generation"],
    });
    if resource == "statefulsets" {
        status["currentReplicas"] = json!(live);
    }
    if workload["status"] != status {
        let mut workload = workload;
        workload["status"] = status;
        state.put(key.clone(), workload);
    }
}

/// A deleted workload's pods are deleted too (garbage collection).
pub(super) fn workload_removed(state: &mut State, resource: &str, workload: &Value) {
    for pod in owned_pods(state, resource, workload) {
        let namespace = text(&pod["metadata"]["namespace"]);
        let name = text(&pod["metadata"]["name"]);
        delete_pod(state, &Target::of("pods", &namespace, &name), "", b"");
    }
}
