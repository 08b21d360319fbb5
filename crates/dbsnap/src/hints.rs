//! What to do, in the command line's words. Libraries say what went wrong
//! (a storage error's kind, a PostgreSQL error's [`Remedy`]); the flag or
//! setting that is the way out is named here, once.

use dbsnap_core::error::{Remedy, StorageError};
use dbsnap_core::CoreError;
use dbsnap_k8s::hint::{Hint, Setting};

/// The hint for `e` that its own text leaves to the application, if any.
pub fn for_error(e: &CoreError) -> Option<String> {
    match e {
        CoreError::Left { error, .. } => for_error(error),
        CoreError::Storage(s) => storage(s).map(str::to_string),
        CoreError::Pg(p) => p.remedy.map(|r| remedy(r).to_string()),
        CoreError::Kubernetes { hint, .. } => Some(kubernetes(hint)),
        CoreError::Verify { .. } => Some(DAMAGED.into()),
        _ => None,
    }
}

/// What to do about a damaged snapshot.
pub const DAMAGED: &str =
    "the file is damaged; use another snapshot (dbsnap list) and take a new one";

/// A Kubernetes hint with its settings as the command line's flags.
pub fn kubernetes(hint: &Hint) -> String {
    hint.render(|s| flag(s).to_string())
}

/// The flag (or flags) that set `s`.
fn flag(s: Setting) -> &'static str {
    match s {
        Setting::Kubeconfig => "--kubeconfig",
        Setting::Context => "--context",
        Setting::Namespace => "-n/--namespace",
        Setting::Container => "--container",
        Setting::PodTimeout => "--pod-timeout",
        Setting::Image => "--image",
        Setting::Registry => "--registry",
        Setting::ForceInsecure => "--force-insecure",
        Setting::ReadSecret => "--read-secret",
        Setting::PortForward => "--via port-forward",
        Setting::ExportObjects => "--k8s-objects",
        Setting::Wait => "--wait",
        Setting::Scale => "--scale",
        Setting::StopCommands => "--stop-cmd/--start-cmd",
        Setting::Databases => "-d/--database",
    }
}

/// A storage error's way out, naming `--dir`/`--repo`: the flags every
/// command other than copy and the bucket commands names its repository
/// with.
fn storage(s: &StorageError) -> Option<&'static str> {
    Some(match s {
        StorageError::NoRepository(_) => {
            "check --dir (or `dir` in dbsnap.toml); `dbsnap create` makes it"
        }
        StorageError::NotARepository(_) => {
            "--dir (or `dir` in dbsnap.toml) names the directory holding the snapshots, not a file"
        }
        StorageError::NoBucket(_) => "check --repo (or `repo` in dbsnap.toml) and the endpoint; dbsnap does not create buckets: create it with your storage's tools (e.g. `aws s3 mb s3://BUCKET`)",
        StorageError::NoSpace(_) => "free space or choose another --dir",
        StorageError::PlainHttp(_) => "pass --force-insecure (or set AWS_ALLOW_HTTP=true) to allow it",
        _ => return None,
    })
}

/// A PostgreSQL error's way out through dbsnap's settings.
fn remedy(r: Remedy) -> &'static str {
    match r {
        Remedy::WaitForLocks => "another session holds a lock on a table: stop the application first, or wait longer (--max-wait for create, --lock-timeout for restore)",
        Remedy::OtherCompression => "this build of the program lacks that compression: use a build with it (e.g. the PGDG packages), or --compress 0-9 (gzip)",
        Remedy::BarrierPrivilege => "the barrier needs UPDATE, DELETE or TRUNCATE privilege on every table; use --consistency snapshot (no locks) or connect as the owner",
        Remedy::BarrierLocked => "a long transaction holds conflicting locks; retry, or use --consistency quiesce",
        Remedy::StopApplication => "stop the application first (--stop-cmd), or grant the role pg_signal_backend",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag a hint names is one of the command line's.
    #[test]
    fn the_flags_hints_name_exist() {
        let mut texts: Vec<&str> = [
            Remedy::WaitForLocks,
            Remedy::OtherCompression,
            Remedy::BarrierPrivilege,
            Remedy::BarrierLocked,
            Remedy::StopApplication,
        ]
        .into_iter()
        .map(remedy)
        .collect();
        let at = || "x".to_string();
        for s in [
            StorageError::NoRepository(at()),
            StorageError::NotARepository(at()),
            StorageError::NoBucket(at()),
            StorageError::NoSpace(at()),
            StorageError::PlainHttp(at()),
        ] {
            texts.push(storage(&s).expect("a hint"));
        }
        texts.extend(Setting::ALL.map(flag));
        let cli = <crate::cli::Cli as clap::CommandFactory>::command();
        let mut known = std::collections::BTreeSet::new();
        let mut stack = vec![&cli];
        while let Some(c) = stack.pop() {
            for a in c.get_arguments() {
                let aliases = a.get_all_aliases().unwrap_or_default();
                for l in a.get_long().into_iter().chain(aliases) {
                    known.insert(format!("--{l}"));
                }
            }
            stack.extend(c.get_subcommands());
        }
        for t in texts {
            for word in t.split(|c: char| c.is_whitespace() || "(),;/".contains(c)) {
                if let Some(flag) = word.strip_prefix("--").filter(|f| !f.is_empty()) {
                    assert!(
                        known.contains(&format!("--{flag}")),
                        "{t}: --{flag} is no flag"
                    );
                }
            }
        }
    }
}
