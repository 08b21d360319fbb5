//! Scaling the app down for a replacing restore and back afterwards, as
//! pure decisions: which workloads (`--scale deploy/core-api,sts/worker`),
//! how many replicas each had (recorded in the journal and in an
//! annotation on the object, so that `resume` restores them after a
//! crash), the patches to send, and refusing workloads a
//! HorizontalPodAutoscaler would scale straight back up.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

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
            Ok(Workload {
                resource: resource.into(),
                name: name.into(),
            })
        })
        .collect()
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
