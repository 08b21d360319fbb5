//! Storage objects' statuses: a PersistentVolumeClaim is bound as it is
//! created; a VolumeSnapshot becomes ready to use shortly after.

use super::*;

/// How long a new VolumeSnapshot takes to become ready.
pub(super) const SNAPSHOT_READY_AFTER: Duration = Duration::from_millis(200);

/// A new claim is `Bound` to a volume of the size it asked for.
pub(super) fn bind_claim(claim: &mut Value) {
    let size = claim["spec"]["resources"]["requests"]["storage"].clone();
    let volume = format!(
        "pvc-{}",
        random_suffix(text(&claim["metadata"]["name"]).len() as u64)
    );
    claim["spec"]["volumeName"] = json!(volume);
    claim["status"] = json!({
        "phase": "Bound",
        "accessModes": claim["spec"]["accessModes"],
        "capacity": {"storage": size},
    });
}

/// A new snapshot is not ready yet; it is shortly.
pub(super) fn snapshot_created(state: &mut State, snapshot: &Value) {
    let mut pending = snapshot.clone();
    pending["status"] = json!({"readyToUse": false});
    let key = key_of("volumesnapshots", snapshot);
    let uid = text(&snapshot["metadata"]["uid"]);
    let claim = text(&snapshot["spec"]["source"]["persistentVolumeClaimName"]);
    let size = state
        .objects
        .get(&("persistentvolumeclaims".into(), key.1.clone(), claim))
        .map_or(json!("1Gi"), |c| c["status"]["capacity"]["storage"].clone());
    state.put(key.clone(), pending);
    state.effects.push(Effect::Later {
        key,
        uid: uid.clone(),
        delay: SNAPSHOT_READY_AFTER,
        change: Box::new(move |snapshot| {
            snapshot["status"] = json!({
                "readyToUse": true,
                "boundVolumeSnapshotContentName": format!("snapcontent-{uid}"),
                "creationTime": now_rfc3339(),
                "restoreSize": size,
            });
        }),
    });
}
