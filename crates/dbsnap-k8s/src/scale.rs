//! Scaling the app down for a replacing restore and back afterwards, as
//! pure decisions: which workloads (`--scale deploy/core-api,sts/worker`),
//! how many replicas each had (recorded in the journal and in an
//! annotation on the object, so that `resume` restores them after a
//! crash), the patches to send, and refusing workloads a
//! HorizontalPodAutoscaler would scale straight back up.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::cluster::K8sError;
use crate::hint;
use crate::hint::Setting;

/// The annotation holding the replica count before dbsnap scaled to 0.
pub const REPLICAS_BEFORE: &str = "dbsnap.io/replicas-before";

/// A workload to scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// `deployments` or `statefulsets` (the API resource).
    pub resource: String,
    /// Its name.
    pub name: String,
}

impl Workload {
    /// `deploy/core-api` as written.
    pub fn display(&self) -> String {
        let short = if self.resource == "statefulsets" {
            "sts"
        } else {
            "deploy"
        };
        format!("{short}/{}", self.name)
    }
}

/// Parses `deploy/core-api,sts/worker` (also `deployment/…`,
/// `statefulset/…`, `deployments.apps/…`).
pub fn parse_workloads(text: &str) -> Result<Vec<Workload>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (kind, name) = item.split_once('/').ok_or_else(|| {
                format!("\"{item}\": expected KIND/NAME, e.g. deploy/core-api or sts/worker")
            })?;
            let resource = match kind.to_ascii_lowercase().trim_end_matches(".apps") {
                "deploy" | "deployment" | "deployments" => "deployments",
                "sts" | "statefulset" | "statefulsets" => "statefulsets",
                other => {
                    return Err(format!(
                    "\"{item}\": {other} cannot be scaled by dbsnap (use deploy/NAME or sts/NAME)"
                ))
                }
            };
            if name.is_empty() {
                return Err(format!("\"{item}\": the name is missing"));
            }
            if !is_object_name(name) {
                return Err(format!(
                    "\"{item}\": \"{name}\" is not a Kubernetes name (lowercase letters, digits, '-' and '.', at most 253)"
                ));
            }
            Ok(Workload {
                resource: resource.into(),
                name: name.into(),
            })
        })
        .collect()
}

/// Whether `name` is a valid object name (a DNS-1123 subdomain), so that
/// a typo is refused here rather than sent to the API server.
fn is_object_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

/// The replicas to restore later: the annotation of an earlier,
/// interrupted run if there is one (the object is at 0 then), else the
/// current `spec.replicas` (1 when unset, as Kubernetes defaults it).
pub fn replicas_before(object: &Json) -> u32 {
    let annotated = object
        .pointer(&format!(
            "/metadata/annotations/{}",
            REPLICAS_BEFORE.replace('/', "~1")
        ))
        .and_then(Json::as_str)
        .and_then(|v| v.parse().ok());
    annotated.unwrap_or_else(|| {
        object
            .pointer("/spec/replicas")
            .and_then(Json::as_u64)
            .map_or(1, |n| n as u32)
    })
}

/// The merge patch that scales to 0 and records `before`.
pub fn scale_down_patch(before: u32) -> Json {
    json!({
        "metadata": {"annotations": {REPLICAS_BEFORE: before.to_string()}},
        "spec": {"replicas": 0}
    })
}

/// The merge patch that scales back to `before` and drops the record.
pub fn scale_up_patch(before: u32) -> Json {
    json!({
        "metadata": {"annotations": {REPLICAS_BEFORE: null}},
        "spec": {"replicas": before}
    })
}

/// The HorizontalPodAutoscaler (from an `autoscaling/v2` list) that
/// targets `workload`, if any: it would scale the app straight back up.
pub fn autoscaler_of(hpas: &Json, workload: &Workload) -> Option<String> {
    let kind = if workload.resource == "statefulsets" {
        "StatefulSet"
    } else {
        "Deployment"
    };
    hpas["items"].as_array()?.iter().find_map(|h| {
        let target = &h["spec"]["scaleTargetRef"];
        (target["kind"] == kind && target["name"] == workload.name.as_str()).then(|| {
            h["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    })
}

/// What a scale-down did: each workload and the replicas it had.
pub type Scaled = Vec<(Workload, u32)>;

fn api_error(e: kube::Error, verb: &str, what: &str, namespace: &str) -> K8sError {
    match &e {
        kube::Error::Api(s) if s.code == 404 => K8sError::new(
            format!("{what} not found in namespace {namespace}"),
            hint!["check ", Setting::Scale, " and ", Setting::Namespace, " (kubectl get deploy,sts -n NAMESPACE)"],
        ),
        kube::Error::Api(s) if s.code == 403 => K8sError::new(
            format!("RBAC denied: cannot {verb} {what} in namespace {namespace}: {}", s.message),
            format!("ask for a Role that allows get and patch on deployments and statefulsets and list on pods (kubectl auth can-i {verb} {} -n {namespace})", what.split('/').next().unwrap_or_default()),
        ),
        _ => K8sError::new(
            format!("cannot {verb} {what} in namespace {namespace}: {}", crate::cluster::describe(&e)),
            "check that the cluster is reachable (kubectl cluster-info)",
        ),
    }
}

fn dynamic(client: &Client, namespace: &str, w: &Workload) -> Api<DynamicObject> {
    let (kind, plural) = if w.resource == "statefulsets" {
        ("StatefulSet", "statefulsets")
    } else {
        ("Deployment", "deployments")
    };
    let gvk = GroupVersionKind::gvk("apps", "v1", kind);
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Refuses workloads a HorizontalPodAutoscaler manages: it would scale
/// them straight back up while the database is being replaced.
async fn refuse_autoscaled(
    client: &Client,
    namespace: &str,
    workloads: &[Workload],
) -> Result<(), K8sError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => serde_json::to_value(l).unwrap_or(Json::Null),
        // No autoscaling API (or not allowed to list it): nothing to find.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => return Ok(()),
        Err(e) => return Err(api_error(e, "list", "horizontalpodautoscalers", namespace)),
    };
    for w in workloads {
        if let Some(hpa) = autoscaler_of(&list, w) {
            return Err(K8sError::new(
                format!("{} is scaled by HorizontalPodAutoscaler {hpa}, which would start it again during the restore", w.display()),
                hint!["stop the app another way (", Setting::StopCommands, format!("), or remove the autoscaler for the restore (kubectl delete hpa {hpa} -n {namespace}) and apply it again after")],
            ));
        }
    }
    Ok(())
}

/// Checks, before anything changes, that each workload exists, may be
/// read, and is not scaled by an autoscaler.
pub async fn preflight(
    client: &Client,
    namespace: &str,
    workloads: &[Workload],
) -> Result<(), K8sError> {
    for w in workloads {
        dynamic(client, namespace, w)
            .get(&w.name)
            .await
            .map_err(|e| api_error(e, "get", &w.display(), namespace))?;
    }
    refuse_autoscaled(client, namespace, workloads).await
}

/// Scales each workload to 0 (recording its replicas in an annotation)
/// and waits up to `wait` until its pods are gone. If they are not, the
/// workloads are scaled back and the error says which pods remain, and
/// that `wait_flag` (the caller's flag setting `wait`) gives them longer.
pub async fn scale_down(
    client: &Client,
    namespace: &str,
    workloads: &[Workload],
    wait: Duration,
    wait_flag: &str,
) -> Result<Scaled, K8sError> {
    refuse_autoscaled(client, namespace, workloads).await?;
    let mut done: Scaled = Vec::new();
    let mut selectors = Vec::new();
    for w in workloads {
        let api = dynamic(client, namespace, w);
        let object = api
            .get(&w.name)
            .await
            .map_err(|e| api_error(e, "get", &w.display(), namespace))?;
        let json = serde_json::to_value(&object).unwrap_or(Json::Null);
        let before = replicas_before(&json);
        let patched = api
            .patch(
                &w.name,
                &PatchParams::default(),
                &Patch::Merge(scale_down_patch(before)),
            )
            .await;
        if let Err(e) = patched {
            scale_up(
                client,
                namespace,
                &done.iter().map(|(w, _)| w.clone()).collect::<Vec<_>>(),
            )
            .await
            .ok();
            return Err(api_error(e, "patch", &w.display(), namespace));
        }
        selectors.push(selector_of(&json));
        done.push((w.clone(), before));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for sel in selectors.iter().filter(|s| !s.is_empty()) {
            let list = pods
                .list(&ListParams::default().labels(sel))
                .await
                .map_err(|e| api_error(e, "list", "pods", namespace))?;
            left.extend(list.items.into_iter().filter_map(|p| p.metadata.name));
        }
        if left.is_empty() {
            return Ok(done);
        }
        if started.elapsed() >= wait {
            let names: Vec<Workload> = done.iter().map(|(w, _)| w.clone()).collect();
            scale_up(client, namespace, &names).await.ok();
            return Err(K8sError::new(
                format!("the app's pods were still running {} s after scaling to 0: {} (the app was scaled back; nothing was changed)", wait.as_secs(), left.join(", ")),
                format!("raise {wait_flag}, or check what keeps the pods (kubectl describe pod NAME)"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `key=value,...` from a workload's `spec.selector.matchLabels`.
fn selector_of(object: &Json) -> String {
    object
        .pointer("/spec/selector/matchLabels")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Scales each workload back to the replicas its annotation recorded and
/// drops the annotation. A workload without the annotation is left alone
/// (it was never scaled down, or is back already). Returns what was done.
pub async fn scale_up(
    client: &Client,
    namespace: &str,
    workloads: &[Workload],
) -> Result<Scaled, K8sError> {
    let mut done = Vec::new();
    let mut first_error = None;
    for w in workloads {
        let api = dynamic(client, namespace, w);
        let object = match api.get(&w.name).await {
            Ok(o) => serde_json::to_value(&o).unwrap_or(Json::Null),
            Err(e) => {
                first_error.get_or_insert(api_error(e, "get", &w.display(), namespace));
                continue;
            }
        };
        let annotated = object
            .pointer(&format!(
                "/metadata/annotations/{}",
                REPLICAS_BEFORE.replace('/', "~1")
            ))
            .is_some();
        if !annotated {
            continue;
        }
        let before = replicas_before(&object);
        match api
            .patch(
                &w.name,
                &PatchParams::default(),
                &Patch::Merge(scale_up_patch(before)),
            )
            .await
        {
            Ok(_) => done.push((w.clone(), before)),
            Err(e) => {
                first_error.get_or_insert(api_error(e, "patch", &w.display(), namespace));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_as_users_write_them() {
        let w = parse_workloads("deploy/core-api, sts/worker,deployments.apps/web").unwrap();
        assert_eq!(
            w.iter().map(Workload::display).collect::<Vec<_>>(),
            ["deploy/core-api", "sts/worker", "deploy/web"]
        );
        assert!(parse_workloads("core-api")
            .unwrap_err()
            .contains("KIND/NAME"));
        assert!(parse_workloads("job/x")
            .unwrap_err()
            .contains("cannot be scaled"));
        assert!(parse_workloads("deploy/")
            .unwrap_err()
            .contains("name is missing"));
    }

    #[test]
    fn replicas_come_back_even_after_an_interrupted_run() {
        assert_eq!(replicas_before(&json!({"spec": {"replicas": 3}})), 3);
        assert_eq!(replicas_before(&json!({"spec": {}})), 1);
        // An earlier run scaled to 0 and died: the annotation remembers 3.
        let interrupted = json!({
            "metadata": {"annotations": {REPLICAS_BEFORE: "3"}},
            "spec": {"replicas": 0}
        });
        assert_eq!(replicas_before(&interrupted), 3);
        assert_eq!(scale_down_patch(3)["spec"]["replicas"], 0);
        assert_eq!(
            scale_down_patch(3)["metadata"]["annotations"][REPLICAS_BEFORE],
            "3"
        );
        assert_eq!(scale_up_patch(3)["spec"]["replicas"], 3);
        assert!(scale_up_patch(3)["metadata"]["annotations"][REPLICAS_BEFORE].is_null());
    }

    #[test]
    fn an_autoscaled_workload_is_found() {
        let hpas = json!({"items": [
            {"metadata": {"name": "web-hpa"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}}
        ]});
        let web = Workload {
            resource: "deployments".into(),
            name: "web".into(),
        };
        let worker = Workload {
            resource: "statefulsets".into(),
            name: "web".into(),
        };
        assert_eq!(autoscaler_of(&hpas, &web), Some("web-hpa".into()));
        assert_eq!(autoscaler_of(&hpas, &worker), None);
    }
}
