//! Settings, once: what the command line says, over the named target,
//! over the config file, over the defaults, in this one place, turned into
//! what a command runs with. The binary parses flags into the `*Flags`
//! structs here (each field `None`/empty when not given) and calls
//! [`create`] or [`restore`]; it never merges a setting itself. Pure: no
//! I/O, no environment (the config is already read).
//!
//! Precedence, for every setting that has more than one source:
//! flag > target > config file > default. Lists that add up (`pg_bin`,
//! `checks`) take every source's entries, the flag's first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dbsnap_archive::snapshot::ConsistencyMethod;
use dbsnap_pg::schema_version::VersionSpec;

use crate::config::{self, Config, K8sTarget, TargetConfig};
use crate::consistency::QuiesceHooks;
use crate::error::CoreError;

/// The one precedence rule: the flag, else the target's value, else the
/// config file's, else the default.
pub fn layered<T>(
    flag: Option<T>,
    target: Option<T>,
    config: Option<T>,
    default: impl FnOnce() -> T,
) -> T {
    flag.or(target).or(config).unwrap_or_else(default)
}

/// The repository a command uses: `--dir`/`--repo`, else the target's
/// `dir`, else the config's `dir`, else `$DBSNAP_HOME/snapshots`. A
/// repository name (`[repositories.NAME]`) is resolved by `Locations`.
pub fn repository(
    flag: Option<&PathBuf>,
    config: &Config,
    target: Option<&TargetConfig>,
) -> PathBuf {
    layered(
        flag.cloned(),
        target.and_then(|t| t.dir.clone()),
        config.dir.clone(),
        config::default_snapshot_dir,
    )
}

/// `copy`'s source: `--from`, else the repository every command uses
/// (`--dir`/`--repo`, the config's `dir`, the default). The destination
/// has one source, `--to`.
pub fn copy_source(from: Option<&PathBuf>, dir: Option<&PathBuf>, config: &Config) -> PathBuf {
    from.cloned()
        .unwrap_or_else(|| repository(dir, config, None))
}

/// `pg_bin`: the flags' directories, then the config's.
fn pg_bin(flags: &[PathBuf], config: &Config) -> Vec<PathBuf> {
    flags.iter().chain(&config.pg_bin).cloned().collect()
}

/// The target `name` names, when one does (unknown: an error listing them).
fn target<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> Result<Option<&'c TargetConfig>, CoreError> {
    name.map(|n| config.target(n)).transpose()
}

/// What `create`'s flags say.
#[derive(Debug, Clone, Default)]
pub struct CreateFlags {
    /// `-d`, repeatable.
    pub databases: Vec<String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--prefix`.
    pub prefix: Option<String>,
    /// `--consistency`.
    pub consistency: Option<ConsistencyMethod>,
    /// `--stop-cmd`.
    pub stop_cmd: Option<String>,
    /// `--start-cmd`.
    pub start_cmd: Option<String>,
    /// `--compress`.
    pub compress: Option<String>,
    /// `--pg-bin`, repeatable.
    pub pg_bin: Vec<PathBuf>,
    /// `--dir`/`--repo`.
    pub repository: Option<PathBuf>,
}

/// `create`, settled.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSettings {
    /// Connection strings (empty when the target's `k8s` finds them).
    pub databases: Vec<String>,
    /// The target's name, recorded in the snapshot.
    pub target: Option<String>,
    /// The target's Kubernetes settings.
    pub k8s: Option<K8sTarget>,
    /// File name prefix.
    pub prefix: String,
    /// How the cut is made.
    pub consistency: ConsistencyMethod,
    /// Stop/start commands (quiesce).
    pub hooks: QuiesceHooks,
    /// `--compress` value, if any.
    pub compress: Option<String>,
    /// Where pg_dump is looked for first.
    pub pg_bin: Vec<PathBuf>,
    /// The repository (a directory, URL or repository name).
    pub repository: PathBuf,
    /// Schema-version settings.
    pub version_spec: VersionSpec,
    /// Per-database overrides.
    pub version_specs: BTreeMap<String, VersionSpec>,
}

/// `create`'s settings from its flags and the config; refuses what cannot
/// mean anything (databases named twice, stop/start commands it would not
/// run).
pub fn create(flags: &CreateFlags, config: &Config) -> Result<CreateSettings, CoreError> {
    let t = target(config, flags.target.as_deref())?;
    if !flags.databases.is_empty() && flags.target.is_some() {
        return Err(CoreError::Config {
            message: "--database and --target both name databases".into(),
            hint: "use one of them".into(),
        });
    }
    let consistency = layered(
        flags.consistency,
        t.and_then(|t| t.consistency),
        None,
        || ConsistencyMethod::Snapshot,
    );
    let hooks = QuiesceHooks {
        stop_cmd: flags
            .stop_cmd
            .clone()
            .or(t.and_then(|t| t.stop_cmd.clone())),
        start_cmd: flags
            .start_cmd
            .clone()
            .or(t.and_then(|t| t.start_cmd.clone())),
        described: None,
    };
    check_create_hooks(flags, consistency, &hooks)?;
    Ok(CreateSettings {
        databases: if flags.databases.is_empty() {
            t.map(|t| t.databases.clone()).unwrap_or_default()
        } else {
            flags.databases.clone()
        },
        target: flags.target.clone(),
        k8s: t.and_then(|t| t.k8s.clone()),
        prefix: layered(
            flags.prefix.clone(),
            t.and_then(|t| t.prefix.clone()),
            None,
            || "db-snapshot".into(),
        ),
        consistency,
        hooks,
        compress: flags
            .compress
            .clone()
            .or(t.and_then(|t| t.compress.clone())),
        pg_bin: pg_bin(&flags.pg_bin, config),
        repository: repository(flags.repository.as_ref(), config, t),
        version_spec: t.map(|t| t.schema_version.clone()).unwrap_or_default(),
        version_specs: t.map(|t| t.schema_versions.clone()).unwrap_or_default(),
    })
}

/// Refuses stop/start commands `create` would not run: a start command
/// without a stop command, and either given on the command line without
/// `--consistency quiesce` (flag or the target's `consistency`). A target's
/// own `stop_cmd`/`start_cmd` also serve `restore`, so they are not an
/// error under another consistency method.
fn check_create_hooks(
    flags: &CreateFlags,
    consistency: ConsistencyMethod,
    hooks: &QuiesceHooks,
) -> Result<(), CoreError> {
    if hooks.start_cmd.is_some() && hooks.stop_cmd.is_none() {
        let from = if flags.start_cmd.is_some() {
            "--start-cmd"
        } else {
            "the target's start_cmd"
        };
        return Err(CoreError::Config {
            message: format!("{from} is given without a stop command; it would never run"),
            hint: "pass --stop-cmd too (with --consistency quiesce), or drop --start-cmd".into(),
        });
    }
    let given: Vec<&str> = [
        flags.stop_cmd.as_ref().map(|_| "--stop-cmd"),
        flags.start_cmd.as_ref().map(|_| "--start-cmd"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !given.is_empty() && consistency != ConsistencyMethod::Quiesce {
        return Err(CoreError::Config {
            message: format!(
                "{} {} only with --consistency quiesce (this snapshot would use {}): {} would be ignored",
                given.join(" and "),
                if given.len() == 1 { "runs" } else { "run" },
                consistency.as_str(),
                if given.len() == 1 { "it" } else { "they" },
            ),
            hint: "add --consistency quiesce (or consistency = \"quiesce\" in the target), or drop them"
                .into(),
        });
    }
    Ok(())
}

/// What `restore`'s flags say.
#[derive(Debug, Clone, Default)]
pub struct RestoreFlags {
    /// `--target`.
    pub target: Option<String>,
    /// `--stop-cmd`.
    pub stop_cmd: Option<String>,
    /// `--start-cmd`.
    pub start_cmd: Option<String>,
    /// `--check`, repeatable.
    pub checks: Vec<String>,
    /// `--map OLD=NEW`, repeatable.
    pub map: Vec<String>,
    /// `--pg-bin`, repeatable.
    pub pg_bin: Vec<PathBuf>,
    /// `--dir`/`--repo`.
    pub repository: Option<PathBuf>,
}

/// `restore`, settled.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreSettings {
    /// The target the restore is for (named, else the snapshot's, when
    /// the config has it).
    pub target: Option<String>,
    /// Its connection strings, to find the snapshot's databases.
    pub target_databases: Vec<String>,
    /// Its Kubernetes settings.
    pub k8s: Option<K8sTarget>,
    /// Stop/start commands.
    pub hooks: QuiesceHooks,
    /// Checks after the restore: the target's, then the flags'.
    pub checks: Vec<String>,
    /// Snapshot database -> live database.
    pub map: BTreeMap<String, String>,
    /// Where pg_restore is looked for first.
    pub pg_bin: Vec<PathBuf>,
    /// Where the safety snapshot goes.
    pub safety_repository: PathBuf,
    /// Schema-version settings.
    pub version_spec: VersionSpec,
    /// Per-database overrides.
    pub version_specs: BTreeMap<String, VersionSpec>,
}

/// The repository `restore` reads snapshots from: `--dir`, else the
/// named target's, else the config's (before the snapshot is known).
pub fn restore_repository(flags: &RestoreFlags, config: &Config) -> Result<PathBuf, CoreError> {
    Ok(repository(
        flags.repository.as_ref(),
        config,
        target(config, flags.target.as_deref())?,
    ))
}

/// `restore`'s settings from its flags, the config and the target the
/// snapshot records (`snapshot_target`), used when no `--target` is given.
pub fn restore(
    flags: &RestoreFlags,
    config: &Config,
    snapshot_target: Option<&str>,
) -> Result<RestoreSettings, CoreError> {
    let named = target(config, flags.target.as_deref())?;
    let (name, t) = match (&flags.target, named) {
        (Some(n), t) => (Some(n.clone()), t),
        (None, _) => match snapshot_target.and_then(|n| config.targets.get(n).map(|t| (n, t))) {
            Some((n, t)) => (Some(n.to_string()), Some(t)),
            None => (None, None),
        },
    };
    let mut map = BTreeMap::new();
    for m in &flags.map {
        let (a, b) = m.split_once('=').ok_or_else(|| CoreError::Config {
            message: format!("--map {m}: expected OLD=NEW"),
            hint: "e.g. --map app-core=app-core-copy".into(),
        })?;
        map.insert(a.to_string(), b.to_string());
    }
    let mut checks: Vec<String> = t.map(|t| t.checks.clone()).unwrap_or_default();
    checks.extend(flags.checks.iter().cloned());
    Ok(RestoreSettings {
        target_databases: t.map(|t| t.databases.clone()).unwrap_or_default(),
        target: name,
        k8s: t.and_then(|t| t.k8s.clone()),
        hooks: QuiesceHooks {
            stop_cmd: flags
                .stop_cmd
                .clone()
                .or(t.and_then(|t| t.stop_cmd.clone())),
            start_cmd: flags
                .start_cmd
                .clone()
                .or(t.and_then(|t| t.start_cmd.clone())),
            described: None,
        },
        checks,
        map,
        pg_bin: pg_bin(&flags.pg_bin, config),
        safety_repository: repository(flags.repository.as_ref(), config, t),
        version_spec: t.map(|t| t.schema_version.clone()).unwrap_or_default(),
        version_specs: t.map(|t| t.schema_versions.clone()).unwrap_or_default(),
    })
}

/// `prune`'s policy: the `--keep-*` flags when any is given (they replace
/// `[prune]` as a whole: a rule not given keeps nothing), else `[prune]`
/// of the config; safety snapshots by `keep_safety_snapshots`.
pub fn prune(
    flags: &config::PruneConfig,
    config: &Config,
) -> Result<crate::prune::Policy, CoreError> {
    let (rules, within) = if *flags == config::PruneConfig::default() {
        let from = match &config.source {
            Some(f) => format!("keep_within in [prune] of {}:", f.display()),
            None => "keep_within in [prune]:".into(),
        };
        (config.prune.clone().unwrap_or_default(), from)
    } else {
        (flags.clone(), "--keep-within".to_string())
    };
    Ok(crate::prune::Policy {
        last: rules.keep_last.unwrap_or(0),
        hourly: rules.keep_hourly.unwrap_or(0),
        daily: rules.keep_daily.unwrap_or(0),
        weekly: rules.keep_weekly.unwrap_or(0),
        monthly: rules.keep_monthly.unwrap_or(0),
        yearly: rules.keep_yearly.unwrap_or(0),
        within: rules
            .keep_within
            .as_deref()
            .map(|w| crate::prune::parse_within(w, &within))
            .transpose()?,
        safety: config.keep_safety_snapshots(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
pg_bin = ["/config/bin"]
dir = "/config/snaps"
[targets.app]
databases = ["postgres://db/app"]
prefix = "app"
consistency = "barrier"
dir = "/target/snaps"
stop_cmd = "stop-app"
start_cmd = "start-app"
compress = "gzip:1"
checks = ["select true"]
[targets.bare]
databases = ["postgres://db/bare"]
"#,
        )
        .unwrap()
    }

    /// Every `create` setting with more than one source: the flag wins,
    /// then the target, then the config, then the default.
    #[test]
    fn create_flags_over_the_target_over_the_config_over_defaults() {
        let c = config();
        let from_target = create(
            &CreateFlags {
                target: Some("app".into()),
                ..Default::default()
            },
            &c,
        )
        .unwrap();
        assert_eq!(from_target.databases, ["postgres://db/app"]);
        assert_eq!(from_target.prefix, "app");
        assert_eq!(from_target.consistency, ConsistencyMethod::Barrier);
        assert_eq!(from_target.compress.as_deref(), Some("gzip:1"));
        assert_eq!(from_target.repository, PathBuf::from("/target/snaps"));
        assert_eq!(from_target.hooks.stop_cmd.as_deref(), Some("stop-app"));
        assert_eq!(from_target.pg_bin, [PathBuf::from("/config/bin")]);

        let flagged = create(
            &CreateFlags {
                target: Some("app".into()),
                prefix: Some("flag".into()),
                consistency: Some(ConsistencyMethod::Quiesce),
                stop_cmd: Some("stop-flag".into()),
                start_cmd: Some("start-flag".into()),
                compress: Some("0".into()),
                pg_bin: vec!["/flag/bin".into()],
                repository: Some("/flag/snaps".into()),
                ..Default::default()
            },
            &c,
        )
        .unwrap();
        assert_eq!(flagged.prefix, "flag");
        assert_eq!(flagged.consistency, ConsistencyMethod::Quiesce);
        assert_eq!(flagged.compress.as_deref(), Some("0"));
        assert_eq!(flagged.repository, PathBuf::from("/flag/snaps"));
        assert_eq!(
            (
                flagged.hooks.stop_cmd.as_deref(),
                flagged.hooks.start_cmd.as_deref()
            ),
            (Some("stop-flag"), Some("start-flag"))
        );
        assert_eq!(
            flagged.pg_bin,
            [PathBuf::from("/flag/bin"), PathBuf::from("/config/bin")]
        );

        // A target without the setting: the config's, else the default.
        let bare = create(
            &CreateFlags {
                target: Some("bare".into()),
                ..Default::default()
            },
            &c,
        )
        .unwrap();
        assert_eq!(bare.repository, PathBuf::from("/config/snaps"));
        assert_eq!(bare.prefix, "db-snapshot");
        assert_eq!(bare.consistency, ConsistencyMethod::Snapshot);
        assert_eq!(bare.compress, None);
        let none = create(
            &CreateFlags {
                databases: vec!["postgres://x/y".into()],
                ..Default::default()
            },
            &Config::default(),
        )
        .unwrap();
        assert_eq!(none.repository, config::default_snapshot_dir());
    }

    #[test]
    fn create_refuses_what_cannot_mean_anything() {
        let c = config();
        let both = create(
            &CreateFlags {
                databases: vec!["postgres://x/y".into()],
                target: Some("app".into()),
                ..Default::default()
            },
            &c,
        );
        assert!(both.is_err());
        let ignored = create(
            &CreateFlags {
                databases: vec!["postgres://x/y".into()],
                stop_cmd: Some("stop".into()),
                ..Default::default()
            },
            &c,
        )
        .unwrap_err();
        assert!(
            ignored.to_string().contains("--consistency quiesce"),
            "{ignored}"
        );
        let unknown = create(
            &CreateFlags {
                target: Some("nope".into()),
                ..Default::default()
            },
            &c,
        );
        assert!(unknown.is_err());
    }

    /// Every `restore` setting with more than one source.
    #[test]
    fn restore_flags_over_the_target_the_snapshot_names_over_the_config() {
        let c = config();
        // No --target: the snapshot's target, when the config has it.
        let s = restore(&RestoreFlags::default(), &c, Some("app")).unwrap();
        assert_eq!(s.target.as_deref(), Some("app"));
        assert_eq!(s.target_databases, ["postgres://db/app"]);
        assert_eq!(s.hooks.stop_cmd.as_deref(), Some("stop-app"));
        assert_eq!(s.checks, ["select true"]);
        assert_eq!(s.safety_repository, PathBuf::from("/target/snaps"));
        // --target wins over the snapshot's; flags over the target.
        let s = restore(
            &RestoreFlags {
                target: Some("bare".into()),
                stop_cmd: Some("stop-flag".into()),
                checks: vec!["select 1 = 1".into()],
                repository: Some("/flag/snaps".into()),
                pg_bin: vec!["/flag/bin".into()],
                map: vec!["a=b".into()],
                ..Default::default()
            },
            &c,
            Some("app"),
        )
        .unwrap();
        assert_eq!(s.target.as_deref(), Some("bare"));
        assert_eq!(s.hooks.stop_cmd.as_deref(), Some("stop-flag"));
        assert_eq!(s.checks, ["select 1 = 1"]);
        assert_eq!(s.safety_repository, PathBuf::from("/flag/snaps"));
        assert_eq!(
            s.pg_bin,
            [PathBuf::from("/flag/bin"), PathBuf::from("/config/bin")]
        );
        assert_eq!(s.map.get("a").map(String::as_str), Some("b"));
        // A snapshot target the config lacks: none, and the config's dir.
        let s = restore(&RestoreFlags::default(), &c, Some("gone")).unwrap();
        assert_eq!(s.target, None);
        assert_eq!(s.safety_repository, PathBuf::from("/config/snaps"));
        assert!(restore(
            &RestoreFlags {
                map: vec!["nothing".into()],
                ..Default::default()
            },
            &c,
            None
        )
        .is_err());
    }

    #[test]
    fn prune_flags_replace_the_configs_rules_as_a_whole() {
        let c =
            Config::parse("keep_safety_snapshots = 5\n[prune]\nkeep_last = 7\nkeep_daily = 14\n")
                .unwrap();
        let from_config = prune(&config::PruneConfig::default(), &c).unwrap();
        assert_eq!(
            (from_config.last, from_config.daily, from_config.safety),
            (7, 14, 5)
        );
        let flagged = prune(
            &config::PruneConfig {
                keep_weekly: Some(2),
                ..Default::default()
            },
            &c,
        )
        .unwrap();
        assert_eq!((flagged.last, flagged.daily, flagged.weekly), (0, 0, 2));
        assert_eq!(
            prune(&config::PruneConfig::default(), &Config::default())
                .unwrap()
                .safety,
            3
        );
    }

    /// `copy`'s source: --from over --dir over the config over the default.
    #[test]
    fn copy_from_over_dir_over_the_config_over_the_default() {
        let c = config();
        let (from, dir) = (PathBuf::from("/from"), PathBuf::from("/dir"));
        assert_eq!(copy_source(Some(&from), Some(&dir), &c), from);
        assert_eq!(copy_source(None, Some(&dir), &c), dir);
        assert_eq!(copy_source(None, None, &c), PathBuf::from("/config/snaps"));
        assert_eq!(
            copy_source(None, None, &Config::default()),
            config::default_snapshot_dir()
        );
    }
}
