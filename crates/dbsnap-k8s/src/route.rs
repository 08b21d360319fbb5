//! The jump-pod route: dbsnap's connections and its client programs reach
//! the app's databases through a relay in a jump pod.
//!
//! The pod takes the app's environment (the kubelet resolves the Secret),
//! and each connection is one exec session running `dbsnap __relay`, which
//! authenticates to the server with the password only the pod sees (see
//! `dbsnap_pg::relay`). Locally, each database server gets a
//! [`Tunnel`]: a Unix socket in a private directory that pg_dump,
//! pg_restore, psql and dbsnap's own connections use as their host. So
//! create and restore run exactly as they do locally — the consistent cut,
//! streaming, checksums, one-transaction data-only restores, the swap —
//! with the password never read by this process.
//!
//! When the image has no `dbsnap`, this dbsnap copies itself into the pod's
//! `/tmp` (same CPU architecture required; a glibc-based image needed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dbsnap_pg::endpoint::Connecting;
use dbsnap_pg::process::Tool;
use dbsnap_pg::relay::{RelayArgs, RELAY_ARG};
use dbsnap_pg::tunnel::{Dial, Duplex, Tunnel};
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind, Resolver};
use kube::Client;
use serde::Serialize;
use serde_json::Value as Json;

use crate::cluster::K8sError;
use crate::discover::{Discovered, Discovery};
use crate::hint;
use crate::hint::Setting;
use crate::pod::{JumpPod, PodGuard};

/// A database reached through the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Database {
    /// Its connection string without password: the name dbsnap uses for it.
    pub name: String,
    /// What found it (`DATABASE_URL`, `POSTGRES_*`, ...).
    pub source: String,
    /// Where each setting came from (never a password).
    pub origins: Vec<String>,
}

/// How the route is set up.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    /// The route's name, recorded in journals (`k8s:NS/deploy/NAME`).
    pub label: String,
    /// How long the jump pod may take to start.
    pub ready_within: Duration,
    /// Waits for the pod's deletion when the route is dropped unclosed.
    pub reaper: crate::pod::Reaper,
}

/// Servers are told apart by address and role: one tunnel each.
type ServerKey = (Vec<String>, Vec<u16>, String);

fn key(info: &ConnInfo) -> ServerKey {
    let ports = (0..info.hosts.len().max(1)).map(|i| info.port(i)).collect();
    (info.hosts.clone(), ports, info.user.clone())
}

/// A route through a jump pod. Close it with [`ClusterRoute::close`]; if
/// it is dropped instead, its guard deletes the pod (see [`crate::pod::Reaper`]).
pub struct ClusterRoute {
    label: String,
    pod: PodGuard,
    relay_dir: Option<String>,
    tunnels: Vec<(ServerKey, Tunnel)>,
}

impl std::fmt::Debug for ClusterRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {:?}", self.label, self.pod)
    }
}

impl ClusterRoute {
    /// Starts the jump pod (`pod` from [`crate::jump::pod`]) and a tunnel
    /// per database server the discovery found. Returns the route and the
    /// databases, in the order found, duplicates removed.
    pub async fn open(
        client: &Client,
        namespace: &str,
        discovery: &Discovery,
        pod: Json,
        options: &RouteOptions,
    ) -> Result<(ClusterRoute, Vec<Database>), K8sError> {
        let removed = crate::pod::sweep(client, namespace).await;
        if !removed.is_empty() {
            tracing::info!(
                "removed jump pods left by killed runs: {}",
                removed.join(", ")
            );
        }
        let run = crate::pod::run_of(&pod).unwrap_or("run").to_string();
        let pod = JumpPod::start(
            client,
            namespace,
            pod,
            options.ready_within,
            &options.reaper,
        )
        .await?;
        tracing::info!("jump pod {} is running in namespace {namespace}", pod.name);
        let mut route = ClusterRoute {
            label: options.label.clone(),
            pod,
            relay_dir: None,
            tunnels: Vec::new(),
        };
        match route.connect_databases(discovery, &run).await {
            Ok(found) => Ok((route, found)),
            Err(e) => {
                route.close().await;
                Err(e)
            }
        }
    }

    async fn connect_databases(
        &mut self,
        discovery: &Discovery,
        run: &str,
    ) -> Result<Vec<Database>, K8sError> {
        let program = self.install_relay(run).await?;
        tracing::info!("relay in pod/{}: {program}", self.pod.name);
        let mut found: Vec<Database> = Vec::new();
        for d in &discovery.databases {
            let args = relay_args(d);
            let name = match &d.connection {
                Some(c) if d.secret_url.is_none() => c.clone(),
                _ => self.describe(&program, &args).await?,
            };
            let info = resolve_here(&name).map_err(|e| {
                K8sError::new(
                    format!("{}: cannot read its settings: {e}", d.source),
                    "map the database in the target",
                )
            })?;
            if found
                .iter()
                .any(|f| resolve_here(&f.name).ok().as_ref() == Some(&info))
            {
                continue;
            }
            let k = key(&info);
            if !self.tunnels.iter().any(|(t, _)| *t == k) {
                let dial = self.dial(&program, &args);
                let label = format!(
                    "jump pod {} (namespace {})",
                    self.pod.name, self.pod.namespace
                );
                let tunnel = Tunnel::open(&label, dial).map_err(|e| {
                    K8sError::new(
                        format!("cannot open a local socket for the tunnel: {e}"),
                        "check that TMPDIR is writable",
                    )
                })?;
                self.tunnels.push((k, tunnel));
            }
            tracing::info!("route to {name} ready ({})", d.source);
            found.push(Database {
                name,
                source: d.source.clone(),
                origins: d.origins.clone(),
            });
        }
        Ok(found)
    }

    /// The command that runs the relay in the pod: the image's own
    /// `dbsnap`, else a copy of this one.
    async fn install_relay(&mut self, run: &str) -> Result<String, K8sError> {
        if self.relay_runs("dbsnap").await? {
            return Ok("dbsnap".into());
        }
        let probe = "echo \"arch=$(uname -m)\"";
        let out = self.sh(probe, &[]).await.map_err(|e| {
            K8sError::new(
                format!("cannot run a shell in the jump pod: {e}"),
                hint!["use an image with a POSIX shell (", Setting::Image, ")"],
            )
        })?;
        let text = String::from_utf8_lossy(&out);
        let arch = text
            .lines()
            .find_map(|l| l.strip_prefix("arch="))
            .unwrap_or_default();
        if arch.trim() != std::env::consts::ARCH {
            return Err(K8sError::new(
                format!("the jump pod's image has no dbsnap, and its architecture ({}) is not this dbsnap's ({})", arch.trim(), std::env::consts::ARCH),
                hint!["use the dbsnap image (", Setting::Image, " or ", Setting::Registry, "; see docs/KUBERNETES.md)"],
            ));
        }
        let exe = std::env::current_exe()
            .and_then(std::fs::read)
            .map_err(|e| {
                K8sError::new(
                    format!("cannot read this dbsnap's executable to copy it into the pod: {e}"),
                    hint!["use the dbsnap image (", Setting::Image, ")"],
                )
            })?;
        let dir = format!("${{TMPDIR:-/tmp}}/dbsnap-{run}");
        let script = format!(
            "umask 077 && mkdir -p \"{dir}\" && cat > \"{dir}/dbsnap.part\" && chmod 700 \"{dir}/dbsnap.part\" && mv \"{dir}/dbsnap.part\" \"{dir}/dbsnap\" && echo \"{dir}/dbsnap\""
        );
        let out = self.sh(&script, &exe).await.map_err(|e| {
            K8sError::new(
                format!("cannot copy dbsnap into the jump pod: {e}"),
                hint!["use the dbsnap image (", Setting::Image, ")"],
            )
        })?;
        let path = String::from_utf8_lossy(&out).trim().to_string();
        self.relay_dir = path.rsplit_once('/').map(|(d, _)| d.to_string());
        if !self.relay_runs(&path).await? {
            return Err(K8sError::new(
                "the copy of dbsnap does not run in the jump pod's image (a musl-based image such as alpine?)",
                hint!["use the dbsnap image or another glibc-based image with PostgreSQL client tools (", Setting::Image, ")"],
            ));
        }
        Ok(path)
    }

    /// Whether `program __relay --probe` runs in the pod (a command that
    /// fails, or is not there, does not; a broken session is an error).
    async fn relay_runs(&self, program: &str) -> Result<bool, K8sError> {
        let ran = self
            .pod
            .run(
                vec![program.into(), RELAY_ARG.into(), "--probe".into()],
                &[],
            )
            .await;
        match ran {
            Ok(out) => Ok(String::from_utf8_lossy(&out).starts_with("dbsnap relay")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(K8sError::new(
                    format!("cannot run commands in the jump pod: {e}"),
                    "check the connection to the cluster and run again",
                ))
            }
            Err(e) => {
                tracing::debug!("{program} is not a dbsnap relay in the pod: {e}");
                Ok(false)
            }
        }
    }

    async fn sh(&self, script: &str, input: &[u8]) -> std::io::Result<Vec<u8>> {
        self.pod
            .run(vec!["sh".into(), "-c".into(), script.into()], input)
            .await
    }

    /// The settings (without password) of a database whose URL is in a
    /// Secret, as the relay in the pod reads them.
    async fn describe(&self, program: &str, args: &RelayArgs) -> Result<String, K8sError> {
        let mut describe = args.clone();
        describe.describe = true;
        let mut command = vec![program.to_string()];
        command.extend(describe.to_args());
        let out = self.pod.run(command, &[]).await.map_err(|e| {
            K8sError::new(
                format!("cannot read the database settings in the jump pod: {e}"),
                "check the app's Secret",
            )
        })?;
        let text = String::from_utf8_lossy(&out).trim().to_string();
        if text.is_empty() {
            return Err(K8sError::new(
                format!(
                    "the relay in the jump pod could not read {:?}",
                    args.url_env
                ),
                "check that the variable is set in the app's pod template",
            ));
        }
        Ok(text)
    }

    fn dial(&self, program: &str, args: &RelayArgs) -> Dial {
        let pod = self.pod.clone();
        let mut command = vec![program.to_string()];
        command.extend(args.to_args());
        Arc::new(move || {
            let pod = pod.clone();
            let command = command.clone();
            Box::pin(async move {
                let stream = pod.exec(command).await?;
                Ok(Box::new(stream) as Box<dyn Duplex>)
            })
        })
    }

    /// The jump pod.
    pub fn pod(&self) -> &JumpPod {
        &self.pod
    }

    /// Closes the tunnels and deletes the pod (and the copy of dbsnap).
    pub async fn close(&self) {
        if let Some(dir) = &self.relay_dir {
            let _ = self.sh(&format!("rm -rf \"{dir}\""), &[]).await;
        }
        self.pod.delete().await;
    }

    fn tunnel_for(&self, info: &ConnInfo) -> Result<&Tunnel, PgError> {
        let k = key(info);
        self.tunnels
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                PgError::new(
                    PgErrorKind::Config,
                    format!("{} does not reach {}", self.label, info.display()),
                )
                .hint("through a cluster, dbsnap reaches the servers the app's configuration names, as its role")
            })
    }
}

impl Resolver for ClusterRoute {
    fn route(&self) -> &str {
        &self.label
    }

    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError> {
        let info = resolve_here(named).map_err(PgError::from)?;
        self.tunnel_for(&info)?;
        Ok(info)
    }

    fn connect<'a>(&'a self, info: &'a ConnInfo) -> Connecting<'a> {
        Box::pin(async move {
            let pointed = self.tunnel_for(info)?.point(info);
            dbsnap_pg::connect(&pointed).await.map_err(|mut e| {
                e.target = Some(info.display());
                e
            })
        })
    }

    fn prepare_tool(&self, tool: &mut Tool, info: &ConnInfo, tag: &str) -> Result<(), PgError> {
        let pointed = self.tunnel_for(info)?.point(info);
        tool.connect(&pointed, tag).map(|_| ())
    }
}

/// Parses a database's name as written, without this machine's libpq
/// environment (no local password may leak into the cluster's route).
fn resolve_here(named: &str) -> Result<ConnInfo, dbsnap_pg::conninfo::ConnInfoError> {
    ConnInfo::resolve_with(named, &BTreeMap::<String, String>::new())
}

/// How the relay finds a discovered database's settings in the pod.
fn relay_args(d: &Discovered) -> RelayArgs {
    let group_password = crate::discover::password_variable(&d.source);
    match group_password {
        Some(var) => RelayArgs {
            conninfo: d.connection.clone(),
            password_env: Some(var.to_string()),
            ..RelayArgs::default()
        },
        None => RelayArgs {
            url_env: Some(d.source.clone()),
            ..RelayArgs::default()
        },
    }
}
