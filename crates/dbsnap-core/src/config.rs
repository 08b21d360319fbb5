//! `dbsnap.toml`: named targets and defaults, and where dbsnap keeps its
//! files (`DBSNAP_HOME`, default `~/.dbsnap`).
//!
//! Lookup order for the config file: `--config`, else `./dbsnap.toml`, else
//! `$DBSNAP_HOME/config.toml`; none at all is fine (flags alone work).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dbsnap_archive::snapshot::ConsistencyMethod;
use dbsnap_pg::schema_version::VersionSpec;
use serde::Deserialize;

use crate::error::CoreError;
use dbsnap_storage::s3::S3Options;
use dbsnap_storage::{Locations, NamedLocation};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Extra directories holding pg_dump/pg_restore, searched first.
    #[serde(default)]
    pub pg_bin: Vec<PathBuf>,
    /// Default repository: a directory or `s3://bucket/prefix` (`repo` is
    /// the same key).
    #[serde(alias = "repo")]
    pub dir: Option<PathBuf>,
    /// S3 repositories' endpoint, region, addressing, TLS.
    pub s3: Option<S3Config>,
    /// Named repositories, each with its own service and credentials,
    /// usable wherever a repository or location is taken.
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// Safety snapshots kept per repository (default 3); older ones are
    /// removed after a restore takes a new one, and by `cleanup`.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_safety_snapshots: Option<usize>,
    /// Named targets.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// How long logs and finished restore journals are kept.
    #[serde(default)]
    pub retention: crate::housekeeping::Retention,
    /// `prune`'s rules when no `--keep-*` flag is given.
    pub prune: Option<PruneConfig>,
    /// Encryption of new snapshots, and the keys to open encrypted ones.
    pub encryption: Option<EncryptionConfig>,
    /// Where the file was read from.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[prune]`: which snapshots `prune` keeps (see `dbsnap prune --help`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// The newest N per target.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_last: Option<usize>,
    /// The newest of each of the last N hours with a snapshot.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_hourly: Option<usize>,
    /// ... days.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_daily: Option<usize>,
    /// ... ISO weeks.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_weekly: Option<usize>,
    /// ... months.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_monthly: Option<usize>,
    /// ... years.
    #[serde(default, deserialize_with = "value::count")]
    pub keep_yearly: Option<usize>,
    /// Everything taken within this long (`7d`, `12h`, ...).
    #[serde(default, deserialize_with = "value::within")]
    pub keep_within: Option<String>,
}

/// `[s3]`: how to reach S3 repositories. Credentials are never here: they
/// come from the standard AWS sources (environment, web identity, instance
/// or container role). The AWS environment (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ALLOW_HTTP`, `AWS_CA_BUNDLE`) wins over these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server (AWS when unset).
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`, default true); false
    /// for virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: Option<bool>,
    /// Allow a plain-HTTP endpoint (like `--force-insecure`).
    pub force_insecure: Option<bool>,
    /// PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Upload part size in MiB (default 16; S3 allows 10,000 parts, so
    /// 16 MiB parts hold snapshots up to 156 GiB).
    #[serde(default, deserialize_with = "value::count")]
    pub part_size_mib: Option<usize>,
}

/// `[repositories.NAME]`: a repository with its own settings, which win
/// over the AWS environment (so two services can be used in one run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A directory, or `s3://BUCKET/PREFIX` (`az://`, `gs://`).
    pub location: String,
    /// As in `[s3]`.
    pub endpoint: Option<String>,
    /// As in `[s3]`.
    pub region: Option<String>,
    /// As in `[s3]`.
    pub path_style: Option<bool>,
    /// As in `[s3]`.
    pub force_insecure: Option<bool>,
    /// As in `[s3]`.
    pub ca_file: Option<PathBuf>,
    /// As in `[s3]`.
    #[serde(default, deserialize_with = "value::count")]
    pub part_size_mib: Option<usize>,
    /// Environment variable holding the access key id (default: the AWS
    /// environment's credentials).
    pub access_key_id_env: Option<String>,
    /// Environment variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
}

/// `[encryption]`: what new snapshots (and restore's safety snapshots)
/// are encrypted to, and the keys reads use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age recipients (`age1…`) or files of them.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Encrypt with the passphrase in `DBSNAP_PASSPHRASE` instead.
    pub passphrase: Option<bool>,
    /// age identity files (secret keys) to open encrypted snapshots.
    #[serde(default)]
    pub identity: Vec<PathBuf>,
}

/// One application's databases and how to snapshot them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Connection strings (URIs or key=value), one per database (none when
    /// `k8s` finds them).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Snapshot file name prefix (default `db-snapshot`).
    pub prefix: Option<String>,
    /// Consistency method.
    pub consistency: Option<ConsistencyMethod>,
    /// Repository for this target: a directory or `s3://bucket/prefix`
    /// (`repo` is the same key).
    #[serde(alias = "repo")]
    pub dir: Option<PathBuf>,
    /// Command that stops the application (quiesce, destructive restores).
    pub stop_cmd: Option<String>,
    /// Command that starts it again; always run after `stop_cmd`.
    pub start_cmd: Option<String>,
    /// pg_dump `--compress` value (e.g. `0`, `gzip:1`, `zstd:3`).
    #[serde(default, deserialize_with = "value::compress")]
    pub compress: Option<String>,
    /// SQL checks that must return true after a restore.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Schema-version settings for every database of the target.
    #[serde(default)]
    pub schema_version: VersionSpec,
    /// Per-database overrides, by database name.
    #[serde(default)]
    pub schema_versions: BTreeMap<String, VersionSpec>,
    /// Reach the databases through a Kubernetes cluster, from this workload.
    pub k8s: Option<K8sTarget>,
}

/// A target's app in Kubernetes: `k8s = { workload = "deploy/core-api",
/// namespace = "poolside", context = "prod" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sTarget {
    /// `deploy/NAME` or `sts/NAME` whose pod template names the databases.
    pub workload: String,
    /// Namespace (default: the context's, then `default`).
    pub namespace: Option<String>,
    /// Kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// Kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The app's container (default: the first).
    pub container: Option<String>,
    /// Image of the jump pod (PostgreSQL client tools and a shell); used
    /// as given, before any registry.
    pub image: Option<String>,
    /// Registry (`HOST[:PORT][/PATH]`) whose newest version tag of
    /// `image_name` is the jump pod's image; failing to find it is an error.
    pub registry: Option<String>,
    /// Name of dbsnap's image in a registry (default `dbsnap`).
    pub image_name: Option<String>,
    /// Environment variable of the app's container whose plain value is
    /// the app's image repository (`HOST/PATH/NAME`): dbsnap's image is
    /// looked for next to it instead of next to the container's image.
    pub image_repository_env: Option<String>,
    /// For the registry only: accept an unverified TLS certificate, or
    /// plain HTTP (the Kubernetes API is always verified).
    pub force_insecure: Option<bool>,
    /// Workloads to scale to 0 while a restore changes the databases
    /// (`["deploy/core-api", "sts/worker"]`).
    #[serde(default)]
    pub scale: Vec<String>,
}

/// dbsnap's home: `DBSNAP_HOME`, else `~/.dbsnap`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("DBSNAP_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    user_home.join(".dbsnap")
}

/// Default repository: `$DBSNAP_HOME/snapshots`.
pub fn default_snapshot_dir() -> PathBuf {
    home().join("snapshots")
}

/// Log directory: `$DBSNAP_HOME/logs`.
pub fn log_dir() -> PathBuf {
    home().join("logs")
}

impl Config {
    /// How the locations a user writes are reached: `[s3]` for plain URLs
    /// (`force_insecure`: the global flag), `[repositories]` by name. A
    /// named repository's credential variable that is unset is an error
    /// naming it.
    pub fn locations(&self, force_insecure: bool) -> Result<Locations, CoreError> {
        let options = |c: &S3Config, own: bool| S3Options {
            endpoint: c.endpoint.clone(),
            region: c.region.clone(),
            virtual_hosted: !c.path_style.unwrap_or(true),
            allow_http: force_insecure || c.force_insecure.unwrap_or(false),
            ca_file: c.ca_file.clone(),
            part_size: c.part_size_mib.map(|m| m << 20),
            own_settings_first: own,
            ..S3Options::default()
        };
        let mut out = Locations {
            defaults: options(&self.s3.clone().unwrap_or_default(), false),
            named: BTreeMap::new(),
        };
        for (name, r) in &self.repositories {
            let s3 = S3Config {
                endpoint: r.endpoint.clone(),
                region: r.region.clone(),
                path_style: r.path_style,
                force_insecure: r.force_insecure,
                ca_file: r.ca_file.clone(),
                part_size_mib: r.part_size_mib,
            };
            let mut o = options(&s3, true);
            o.credentials_env = match (&r.access_key_id_env, &r.secret_access_key_env) {
                (None, None) => None,
                (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
                _ => {
                    return Err(CoreError::Config {
                        message: format!("repository {name}: access_key_id_env and secret_access_key_env go together"),
                        hint: "name both variables, or neither (the AWS environment's credentials)".into(),
                    })
                }
            };
            out.named.insert(
                name.clone(),
                NamedLocation {
                    location: r.location.clone(),
                    options: o,
                },
            );
        }
        Ok(out)
    }

    /// How many safety snapshots to keep per repository.
    pub fn keep_safety_snapshots(&self) -> usize {
        self.keep_safety_snapshots
            .unwrap_or(crate::retention::DEFAULT_KEEP_SAFETY_SNAPSHOTS)
    }

    /// Loads the config per the lookup order; `explicit` must exist.
    pub fn load(explicit: Option<&Path>) -> Result<Config, CoreError> {
        let path = match explicit {
            // Any readable file, `/dev/null` too (no settings at all).
            Some(p) => match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    return Err(CoreError::Config {
                        message: format!("config file \"{}\" is a directory", p.display()),
                        hint: "give --config the path of a dbsnap.toml file".into(),
                    })
                }
                Ok(_) => Some(p.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CoreError::Config {
                        message: format!("config file \"{}\" not found", p.display()),
                        hint: "check the --config path".into(),
                    })
                }
                Err(e) => {
                    return Err(CoreError::Config {
                        message: format!("could not read config file \"{}\": {e}", p.display()),
                        hint: "check the path and its permissions".into(),
                    })
                }
            },
            None => [PathBuf::from("dbsnap.toml"), home().join("config.toml")]
                .into_iter()
                .find(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::Config {
            message: format!("could not read \"{}\": {e}", path.display()),
            hint: "check the file's permissions".into(),
        })?;
        let mut config = Self::parse(&text).map_err(|message| CoreError::Config {
            message: format!("invalid config \"{}\": {message}", path.display()),
            hint: "every key, its flag and its default are in docs/guide/config.md".into(),
        })?;
        config.source = Some(path);
        Ok(config)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_string())
    }

    /// A named target, or an error listing the known ones.
    pub fn target(&self, name: &str) -> Result<&TargetConfig, CoreError> {
        self.targets.get(name).ok_or_else(|| CoreError::Config {
            message: format!(
                "target \"{name}\" is not defined{}",
                self.source
                    .as_ref()
                    .map(|p| format!(" in \"{}\"", p.display()))
                    .unwrap_or(" (no config file found)".into())
            ),
            hint: if self.targets.is_empty() {
                "define [targets.<name>] in dbsnap.toml, or pass -d <connection string>".into()
            } else {
                format!(
                    "known targets: {}",
                    self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            },
        })
    }
}

/// Values checked as the file is read, so that a bad one is an error
/// naming the file, its line and key, for every command (not only the one
/// that uses it).
mod value {
    use serde::de::{Deserializer, Error, Unexpected, Visitor};
    use serde::Deserialize;

    /// A count (of snapshots, MiB, ...): a whole number, 0 or more.
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        struct Count;
        impl Visitor<'_> for Count {
            type Value = usize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number, 0 or more")
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(Count).map(Some)
    }

    /// A `keep_within` duration: `30m`, `12h`, `7d`, ...
    pub fn within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        crate::prune::within(&s).map_err(|why| {
            D::Error::custom(format!("\"{s}\": {why}; {}", crate::prune::WITHIN_EXAMPLE))
        })?;
        Ok(Some(s))
    }

    /// A pg_dump compression: `0`-`9`, `gzip[:LEVEL]`, `none`, `lz4`, `zstd`.
    /// A level alone may be a number (`compress = 1`).
    pub fn compress<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a compression: a level 0-9, \"gzip:LEVEL\", \"none\", \"lz4\" or \"zstd\""
        )]
        enum Given {
            Text(String),
            Level(i64),
        }
        let s = match Given::deserialize(d)? {
            Given::Text(s) => s,
            Given::Level(n) => n.to_string(),
        };
        crate::create::compression_level(&s)
            .map_err(|(why, example)| D::Error::custom(format!("\"{s}\": {why}; {example}")))?;
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_target() {
        let c = Config::parse(
            r#"
            pg_bin = ["/opt/pg/bin"]
            [targets.platform]
            databases = ["postgres://app@db/app-core", "host=db dbname=app-backend"]
            prefix = "platform"
            consistency = "barrier"
            stop_cmd = "kubectl scale deploy/app --replicas=0"
            start_cmd = "kubectl scale deploy/app --replicas=1"
            [targets.platform.schema_version]
            tool = "golang-migrate"
            [targets.platform.schema_versions.app-backend]
            query = "select id from versions"
            [targets.platform.k8s]
            workload = "deploy/core-api"
            registry = "registry.example.com:5000/forge"
            image_name = "tools/dbsnap"
            image_repository_env = "FORGE_API_IMAGE_REPOSITORY"
            force_insecure = true
            "#,
        )
        .unwrap();
        let t = c.target("platform").unwrap();
        assert_eq!(t.databases.len(), 2);
        assert_eq!(t.consistency, Some(ConsistencyMethod::Barrier));
        assert_eq!(t.schema_version.tool.as_deref(), Some("golang-migrate"));
        assert!(t.schema_versions["app-backend"].query.is_some());
        let k8s = t.k8s.as_ref().unwrap();
        assert_eq!(
            k8s.registry.as_deref(),
            Some("registry.example.com:5000/forge")
        );
        assert_eq!(k8s.image_name.as_deref(), Some("tools/dbsnap"));
        assert_eq!(
            k8s.image_repository_env.as_deref(),
            Some("FORGE_API_IMAGE_REPOSITORY")
        );
        assert_eq!(k8s.force_insecure, Some(true));
        assert!(c
            .target("nope")
            .unwrap_err()
            .to_string()
            .contains("known targets: platform"));
    }

    #[test]
    fn a_target_may_name_its_databases_by_k8s_alone() {
        let c = Config::parse(
            "[targets.platform]\nk8s = { workload = \"deploy/core-api\", namespace = \"poolside\" }",
        )
        .unwrap();
        let t = c.target("platform").unwrap();
        assert!(t.databases.is_empty());
        assert_eq!(t.k8s.as_ref().unwrap().workload, "deploy/core-api");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::parse("[targets.x]\ndatabses = []")
            .unwrap_err()
            .contains("databses"));
    }
}
