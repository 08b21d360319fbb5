//! `jump-create`: a jump pod kept running for a person (until its
//! deadline or `jump-delete`), with the kubectl lines that open psql in it
//! for each of the app's databases, no password in any of them.

use std::time::Duration;

use dbsnap_k8s::cluster;
use dbsnap_k8s::discover::{self, Discovered};
use dbsnap_k8s::image::Resolved;
use dbsnap_k8s::pod::{self, Reaper};

use super::{jump_image, k8s_error, K8sSettings};
use crate::hooks::shell_quote;
use crate::CoreError;

/// A kept jump pod and how to reach it.
#[derive(Debug, Clone)]
pub struct KeptJumpPod {
    /// The pod's name.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
    /// Its image, and why that one.
    pub image: Resolved,
    /// One `kubectl exec` line per database server (no password in any).
    pub psql: Vec<String>,
    /// The cluster flags the lines carry (` --kubeconfig F --context C`, or
    /// empty), for other commands about the same cluster.
    pub access_flags: String,
}

/// Starts a jump pod beside the app's workload that lives `ttl` at most
/// (named after `run`), and is not deleted when this process ends.
pub async fn start_kept(
    s: &K8sSettings,
    ttl: Duration,
    run: &str,
) -> Result<KeptJumpPod, CoreError> {
    let (client, namespace, discovery, object) =
        cluster::reach(&s.access, &s.workload, s.container.as_deref())
            .await
            .map_err(k8s_error)?;
    // The caller says the reason with its result.
    let image = jump_image(s, &object, &discovery.container, &|_| {}).await?;
    let mut spec = dbsnap_k8s::jump::pod(&dbsnap_k8s::jump::JumpPod {
        run,
        workload: &object,
        container: &discovery.container,
        image: &image.image,
        deadline_secs: ttl.as_secs(),
    });
    spec["metadata"]["labels"][pod::ROLE_LABEL] = serde_json::Value::String(pod::ROLE_KEPT.into());
    let reaper = Reaper::default();
    let started = pod::JumpPod::start(&client, &namespace, spec, s.pod_timeout, &reaper)
        .await
        .map_err(k8s_error)?
        .keep();
    // The same cluster as this run: its kubeconfig and context, if given.
    let mut access_flags = String::new();
    if let Some(file) = &s.access.kubeconfig {
        access_flags.push_str(&format!(
            " --kubeconfig {}",
            shell_quote(&file.display().to_string())
        ));
    }
    if let Some(context) = &s.access.context {
        access_flags.push_str(&format!(" --context {}", shell_quote(context)));
    }
    let mut seen = Vec::new();
    let psql = discovery
        .databases
        .iter()
        .filter(|d| first_of_its_server(d, &mut seen))
        .map(|d| psql_line(&access_flags, &namespace, &started.name, d))
        .collect();
    Ok(KeptJumpPod {
        pod: started.name.clone(),
        namespace,
        image,
        psql,
        access_flags,
    })
}

/// Whether `d` is the first database found on its server, role and
/// database name (an app often names one database twice: a URL and a
/// `DB_*` group). Settings kept in a Secret cannot be compared here.
fn first_of_its_server(d: &Discovered, seen: &mut Vec<String>) -> bool {
    let Some(key) = discover::database_key(d) else {
        return true;
    };
    if seen.contains(&key) {
        return false;
    }
    seen.push(key);
    true
}

/// `kubectl exec -it ... -- sh -c '... psql ...'`, the password taken
/// from the pod's own environment.
fn psql_line(access: &str, namespace: &str, pod: &str, d: &Discovered) -> String {
    let inner = match discover::password_variable(&d.source) {
        Some(var) => format!(
            "PGPASSWORD=\"${var}\" exec psql \"{}\"",
            d.connection.clone().unwrap_or_default()
        ),
        None => format!("exec psql \"${}\"", d.source),
    };
    format!("kubectl{access} exec -it -n {namespace} {pod} -- sh -c '{inner}'")
}
