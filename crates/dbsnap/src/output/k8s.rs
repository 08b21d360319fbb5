//! What the Kubernetes commands print: jump pods, exported objects,
//! volume snapshots.

use super::*;

/// `jump-create`'s result: the pod and the lines that open psql in it.
pub fn print_jump_created(c: &crate::k8s_jump::JumpCreated, json: bool) {
    if json {
        Envelope::ok(c).print();
        return;
    }
    println!(
        "jump pod {} is running in namespace {} (image {}; it ends in {} s, or with {})",
        c.pod, c.namespace, c.image, c.expires_in_seconds, c.jump_delete
    );
    println!("  image: {}", c.image_reason);
    for line in &c.psql {
        println!("  {line}");
    }
}

/// `jump-delete`'s result.
pub fn print_jump_deleted(names: &[String], json: bool) {
    if json {
        Envelope::ok(&json!({ "deleted": names })).print();
    } else if names.is_empty() {
        println!("no jump pods to delete");
    } else {
        for n in names {
            println!("deleted pod {n}");
        }
    }
}

/// `k8s-objects`'s result: the files written.
pub fn print_objects_written(out: &std::path::Path, files: &[std::path::PathBuf], json: bool) {
    if json {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        Envelope::ok(&json!({ "out": out.display().to_string(), "files": files })).print();
        return;
    }
    for f in files {
        println!("{}", f.display());
    }
    eprintln!(
        "{} written; apply them with: kubectl apply -R -f {}",
        count_of(files.len(), "object"),
        out.display()
    );
}

/// VolumeSnapshots with their readiness.
pub fn print_volume_snapshots(list: &[dbsnap_k8s::volumes::VolumeSnapshot], json: bool) {
    if json {
        Envelope::ok(&json!({ "volume_snapshots": list })).print();
        return;
    }
    if list.is_empty() {
        println!("no VolumeSnapshots");
        return;
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "PVC".into(),
        "READY".into(),
        "SIZE".into(),
        "CREATED".into(),
    ]];
    for s in list {
        rows.push(vec![
            s.name.clone(),
            s.pvc.clone(),
            match (&s.error, s.ready) {
                (Some(e), _) => format!("error: {e}"),
                (None, true) => "yes".into(),
                (None, false) => "no".into(),
            },
            s.restore_size.clone().unwrap_or_default(),
            s.created.clone(),
        ]);
    }
    for line in table(&rows) {
        println!("{line}");
    }
}
