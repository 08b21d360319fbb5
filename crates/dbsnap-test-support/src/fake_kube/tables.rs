//! `Table` answers for `kubectl get`: each kind's usual columns.

use super::*;

pub(super) const OBJECT_KINDS: [&str; 7] = [
    "Namespace",
    "Pod",
    "Secret",
    "ConfigMap",
    "Service",
    "Deployment",
    "StatefulSet",
];

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
    if !OBJECT_KINDS.contains(&kind) {
        return reply;
    }
    let columns: Vec<Value> = table_columns(kind)
        .iter()
        .map(|(name, kind)| json!({"name": name, "type": kind, "format": "", "description": "", "priority": 0}))
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

pub(super) fn table_columns(kind: &str) -> Vec<(&'static str, &'static str)> {
    let mut columns = vec![("Name", "string")];
    columns.extend(match kind {
        "Namespace" => vec![("Status", "string")],
        "Pod" => vec![
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
        ],
        "Secret" => vec![("Type", "string"), ("Data", "string")],
        "ConfigMap" => vec![("Data", "string")],
        "Service" => vec![("Type", "string"), ("Cluster-IP", "string")],
        "Deployment" => vec![
            ("Ready", "string"),
            ("Up-to-date", "string"),
            ("Available", "string"),
        ],
        "StatefulSet" => vec![("Ready", "string")],
        _ => vec![],
    });
    columns.push(("Age", "string"));
    columns
}

pub(super) fn table_row(kind: &str, object: &Value) -> Value {
    let count = |v: &Value| v.as_object().map_or(0, Map::len).to_string();
    let replicas = |field: &str| object["status"][field].as_i64().unwrap_or(0);
    let ready = format!("{}/{}", replicas("readyReplicas"), replicas("replicas"));
    let mut cells = vec![object["metadata"]["name"].clone()];
    cells.extend(
        match kind {
            "Namespace" => vec![text(&object["status"]["phase"])],
            "Pod" => {
                let (ready, status) = pod_summary(object);
                vec![ready, status, "0".into()]
            }
            "Secret" => vec![text(&object["type"]), count(&object["data"])],
            "ConfigMap" => vec![count(&object["data"])],
            "Service" => vec![
                text(&object["spec"]["type"]),
                text(&object["spec"]["clusterIP"]),
            ],
            "Deployment" => vec![
                ready,
                replicas("updatedReplicas").to_string(),
                replicas("availableReplicas").to_string(),
            ],
            "StatefulSet" => vec![ready],
            _ => vec![],
        }
        .into_iter()
        .map(Value::from),
    );
    cells.push(json!(age(&object["metadata"]["creationTimestamp"])));
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"],
        },
    })
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
