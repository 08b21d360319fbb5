//! `Table` answers for `kubectl get`: each kind's usual columns.

use super::*;

/// Turns a successful get or list into a meta.k8s.io/v1 `Table`.
pub(super) fn tabulate(reply: Reply) -> Reply {
    if reply.status != StatusCode::OK {
        return reply;
    }
    let kind = reply.body["kind"].as_str().unwrap_or("");
    let (kind, objects) = match kind.strip_suffix("List") {
        Some(item_kind) => (
            item_kind,
            reply.body["items"].as_array().cloned().unwrap_or_default(),
        ),
        None => (kind, vec![reply.body.clone()]),
    };
    if !RESOURCES.iter().any(|r| r.kind == kind) {
        return reply;
    }
    let columns: Vec<Value> = table_cells(kind, &Value::Null)
        .iter()
        .map(|(name, _)| json!({"name": name, "type": "string", "format": "", "description": "", "priority": 0}))
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| table_row(kind, o)).collect();
    Reply::ok(json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": reply.body["metadata"]["resourceVersion"]},
        "columnDefinitions": columns,
        "rows": rows,
    }))
}

/// A row: the object's cells under its kind's columns (`Name` first, `Age` last).
pub(super) fn table_row(kind: &str, object: &Value) -> Value {
    let cells: Vec<String> = table_cells(kind, object)
        .into_iter()
        .map(|(_, cell)| cell)
        .collect();
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        },
    })
}

/// Each column of a kind with the object's value in it (the column names
/// alone when `object` is null).
pub(super) fn table_cells(kind: &str, object: &Value) -> Vec<(&'static str, String)> {
    let mut cells = vec![("Name", text(&object["metadata"]["name"]))];
    cells.extend(kind_cells(kind, object));
    cells.push(("Age", age(&object["metadata"]["creationTimestamp"])));
    cells
}

fn kind_cells(kind: &str, o: &Value) -> Vec<(&'static str, String)> {
    let count = |v: &Value| v.as_object().map_or(0, Map::len).to_string();
    let number = |v: &Value| v.as_i64().unwrap_or(0).to_string();
    let status = &o["status"];
    let ready = format!(
        "{}/{}",
        number(&status["readyReplicas"]),
        number(&status["replicas"])
    );
    match kind {
        "Namespace" => vec![("Status", text(&status["phase"]))],
        "Pod" => {
            let (ready, state) = pod_summary(o);
            vec![
                ("Ready", ready),
                ("Status", state),
                ("Restarts", "0".into()),
            ]
        }
        "Secret" => vec![("Type", text(&o["type"])), ("Data", count(&o["data"]))],
        "ConfigMap" => vec![("Data", count(&o["data"]))],
        "Service" => vec![
            ("Type", text(&o["spec"]["type"])),
            ("Cluster-IP", text(&o["spec"]["clusterIP"])),
        ],
        "Deployment" => vec![
            ("Ready", ready),
            ("Up-to-date", number(&status["updatedReplicas"])),
            ("Available", number(&status["availableReplicas"])),
        ],
        "StatefulSet" => vec![("Ready", ready)],
        "PersistentVolumeClaim" => vec![
            ("Status", text(&status["phase"])),
            ("Volume", text(&o["spec"]["volumeName"])),
            ("Capacity", text(&status["capacity"]["storage"])),
            ("StorageClass", text(&o["spec"]["storageClassName"])),
        ],
        "Ingress" => vec![
            ("Class", text(&o["spec"]["ingressClassName"])),
            ("Hosts", joined(&o["spec"]["rules"], "host")),
        ],
        "CronJob" => vec![
            ("Schedule", text(&o["spec"]["schedule"])),
            ("Suspend", (o["spec"]["suspend"] == true).to_string()),
        ],
        "HorizontalPodAutoscaler" => vec![
            (
                "Reference",
                format!(
                    "{}/{}",
                    text(&o["spec"]["scaleTargetRef"]["kind"]),
                    text(&o["spec"]["scaleTargetRef"]["name"])
                ),
            ),
            ("MinPods", number(&o["spec"]["minReplicas"])),
            ("MaxPods", number(&o["spec"]["maxReplicas"])),
        ],
        "VolumeSnapshot" => vec![
            ("ReadyToUse", (status["readyToUse"] == true).to_string()),
            (
                "SourcePVC",
                text(&o["spec"]["source"]["persistentVolumeClaimName"]),
            ),
            ("RestoreSize", text(&status["restoreSize"])),
            ("SnapshotClass", text(&o["spec"]["volumeSnapshotClassName"])),
            (
                "SnapshotContent",
                text(&status["boundVolumeSnapshotContentName"]),
            ),
        ],
        "VolumeSnapshotClass" => vec![
            ("Driver", text(&o["driver"])),
            ("DeletionPolicy", text(&o["deletionPolicy"])),
        ],
        _ => vec![],
    }
}

/// One field of each item of an array, comma separated.
fn joined(items: &Value, field: &str) -> String {
    array(items)
        .iter()
        .map(|item| text(&item[field]))
        .collect::<Vec<_>>()
        .join(",")
}

/// `42s`, `5m`, `3h`, `2d`, as kubectl shows ages.
pub(super) fn age(created: &Value) -> String {
    let format = time::format_description::well_known::Rfc3339;
    let Some(created) = created
        .as_str()
        .and_then(|t| time::OffsetDateTime::parse(t, &format).ok())
    else {
        return "<unknown>".into();
    };
    let seconds = (time::OffsetDateTime::now_utc() - created)
        .whole_seconds()
        .max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
