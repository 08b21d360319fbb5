//! `--scale`: the app stopped by scaling its workloads to 0, and started
//! by scaling them back, as the stop and start commands of
//! [`QuiesceHooks`]. The commands are dbsnap's own hidden `k8s-scale`
//! command with the cluster access written out, so that a restore's
//! journal can run the start command again in `dbsnap resume`, after the
//! kubeconfig's current context may have changed.

use std::path::PathBuf;
use std::time::Duration;

use dbsnap_k8s::cluster::{self, ClusterAccess};
use dbsnap_k8s::scale::Workload;

use super::k8s_error;
use crate::consistency::QuiesceHooks;
use crate::hooks::shell_quote;
use crate::CoreError;

/// What to scale, where, and with which program.
#[derive(Debug, Clone)]
pub struct ScaleSettings {
    /// The workloads stopped together.
    pub workloads: Vec<Workload>,
    /// Their cluster and namespace.
    pub access: ClusterAccess,
    /// How long to wait for their pods to be gone after scaling to 0.
    pub timeout: Duration,
    /// The dbsnap executable the commands run (`PROGRAM k8s-scale down|up
    /// --namespace NS [--context C] [--kubeconfig FILE] ... WORKLOADS`).
    pub program: PathBuf,
}

/// The stop and start commands that scale the workloads, with what they do
/// in words (`described`). Checks first that the workloads exist and can
/// be scaled; the namespace is resolved now, so the commands do not depend
/// on a context that could change before `resume`.
pub async fn scale_hooks(s: &ScaleSettings) -> Result<QuiesceHooks, CoreError> {
    let (client, namespace) = cluster::connect(&s.access).await.map_err(k8s_error)?;
    dbsnap_k8s::scale::preflight(&client, &namespace, &s.workloads)
        .await
        .map_err(k8s_error)?;
    let list = s
        .workloads
        .iter()
        .map(Workload::display)
        .collect::<Vec<_>>()
        .join(",");
    let mut base = vec![
        s.program.display().to_string(),
        "k8s-scale".into(),
        "--namespace".into(),
        namespace.clone(),
    ];
    if let Some(c) = &s.access.context {
        base.extend(["--context".into(), c.clone()]);
    }
    if let Some(f) = &s.access.kubeconfig {
        let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        base.extend(["--kubeconfig".into(), f.display().to_string()]);
    }
    let command = |direction: &str, extra: &[String]| {
        let mut words = base.clone();
        words.push(direction.into());
        words.extend(extra.iter().cloned());
        words.push(list.clone());
        words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let wait = format!("{}ms", s.timeout.as_millis());
    Ok(QuiesceHooks {
        stop_cmd: Some(command("down", &["--wait".into(), wait])),
        start_cmd: Some(command("up", &[])),
        described: Some(format!(
            "the app is stopped first (scale {list} in namespace {namespace} to 0, waiting up to {} for its pods to be gone) and scaled back after",
            human_duration(s.timeout)
        )),
    })
}

/// Puts the scale hooks in place of `hooks`: `--scale` is the stop/start
/// command, so it cannot be combined with explicit ones (`explicit`: the
/// command line gave `--stop-cmd`/`--start-cmd`).
pub fn merge_scale_hooks(
    hooks: &mut QuiesceHooks,
    scale: Option<QuiesceHooks>,
    explicit: bool,
) -> Result<(), CoreError> {
    let Some(scale) = scale else {
        return Ok(());
    };
    if explicit {
        return Err(CoreError::Config {
            message: "--scale and --stop-cmd/--start-cmd both stop the app".into(),
            hint: "use one of them".into(),
        });
    }
    hooks.stop_cmd = scale.stop_cmd;
    hooks.start_cmd = scale.start_cmd;
    hooks.described = scale.described;
    Ok(())
}

/// A timeout in words: `5 min`, `1 h`, `90 s`.
fn human_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_words() {
        assert_eq!(human_duration(Duration::from_secs(300)), "5 min");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 h");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 s");
    }

    #[test]
    fn explicit_hooks_refuse_scale() {
        let scale = QuiesceHooks {
            stop_cmd: Some("down".into()),
            start_cmd: Some("up".into()),
            described: Some("scaled".into()),
        };
        let mut hooks = QuiesceHooks::default();
        assert!(merge_scale_hooks(&mut hooks, Some(scale.clone()), true).is_err());
        merge_scale_hooks(&mut hooks, Some(scale), false).unwrap();
        assert_eq!(hooks.start_cmd.as_deref(), Some("up"));
    }
}
