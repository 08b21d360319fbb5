//! `--k8s-objects`: the namespace's objects (as YAML, Secrets only when
//! asked) as members a snapshot stores under `k8s/`.

use dbsnap_k8s::cluster::{self, ClusterAccess};

use super::{k8s_error, Say};
use crate::CoreError;

/// The namespace's objects as snapshot members: names and YAML bytes.
/// Says (through `say`) how many go into the snapshot, and first, with
/// `include_secrets`, that the snapshot will hold the Secrets' values.
pub async fn export_objects(
    access: &ClusterAccess,
    include_secrets: bool,
    say: Say<'_>,
) -> Result<Vec<(String, Vec<u8>)>, CoreError> {
    let (client, namespace) = cluster::connect(access).await.map_err(k8s_error)?;
    if include_secrets {
        say(&format!(
            "warning: --include-secrets stores the Secrets of namespace {namespace} in the snapshot; anyone who can read the snapshot can read them"
        ));
    }
    let objects = dbsnap_k8s::objects::export(&client, &namespace, include_secrets)
        .await
        .map_err(k8s_error)?;
    let n = objects.len();
    say(&format!(
        "k8s: {} of namespace {namespace} {} into the snapshot",
        if n == 1 {
            "1 object".to_string()
        } else {
            format!("{n} objects")
        },
        if n == 1 { "goes" } else { "go" }
    ));
    Ok(objects
        .into_iter()
        .map(|o| (o.member, o.yaml.into_bytes()))
        .collect())
}
