//! `create`: its flags, checked against each other and the target, over
//! `dbsnap.toml`, then the snapshot taken (directly or through a cluster).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dbsnap_archive::snapshot::{ConsistencyMethod, KubernetesOrigin};
use dbsnap_core::config::Config;
use dbsnap_core::consistency::CutLimits;
use dbsnap_core::create::{self, CreateOptions, Progress};
use dbsnap_core::error::exit;
use dbsnap_core::k8s::{run_id, Reaper};
use dbsnap_core::settings::{self, CreateFlags};
use dbsnap_core::CoreError;

use crate::cli::GlobalArgs;
use crate::{output, progress};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Consistency {
    /// Identical transaction snapshots in every database (default; no impact on the app).
    Snapshot,
    /// Block writers for milliseconds with SHARE locks while snapshots are taken.
    Barrier,
    /// Run --stop-cmd, take the snapshots, run --start-cmd.
    Quiesce,
    /// Each database on its own, like pg_dump (no cross-database guarantee).
    None,
}

impl From<Consistency> for ConsistencyMethod {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Snapshot => ConsistencyMethod::Snapshot,
            Consistency::Barrier => ConsistencyMethod::Barrier,
            Consistency::Quiesce => ConsistencyMethod::Quiesce,
            Consistency::None => ConsistencyMethod::None,
        }
    }
}

/// `--engine` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// pg_dump writes the schema; dbsnap copies table data in parallel.
    Native,
    /// pg_dump writes everything.
    PgDump,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Database connection string (URI or key=value); repeat for each database.
    #[arg(short = 'd', long = "database", value_name = "CONNSTR")]
    pub databases: Vec<String>,
    /// Named target from the config file.
    #[arg(short, long)]
    pub target: Option<String>,
    /// Snapshot file name prefix (default: db-snapshot).
    #[arg(long)]
    pub prefix: Option<String>,
    /// How to make one moment across databases.
    #[arg(long, value_enum)]
    pub consistency: Option<Consistency>,
    /// Command that stops the application (for --consistency quiesce).
    #[arg(long, value_name = "CMD")]
    pub stop_cmd: Option<String>,
    /// Command that starts it again; always run after --stop-cmd.
    #[arg(long, value_name = "CMD")]
    pub start_cmd: Option<String>,
    /// Compression of the data: a zlib level 0-9 (default 2), gzip[:LEVEL],
    /// none, or lz4/zstd[:LEVEL] (written by pg_dump 16+, restorable by pg_restore 16+ only).
    #[arg(long)]
    pub compress: Option<String>,
    /// Connections copying table data at once, per database (default: the machine's cores).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Who writes the data: dbsnap's parallel COPY (native) or pg_dump alone.
    #[arg(long, value_enum, default_value_t = EngineArg::Native)]
    pub engine: EngineArg,
    /// Directory with pg_dump (searched before PATH); repeatable.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Vec<PathBuf>,
    /// Most attempts at a consistent cut.
    #[arg(long, default_value_t = 200)]
    pub max_attempts: u32,
    /// Most seconds spent establishing a consistent cut, and waiting for a lock on any table while dumping.
    #[arg(long, default_value_t = 30)]
    pub max_wait: u64,
    /// Lock timeout of each write-barrier attempt, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub lock_timeout: u64,
    /// Also store the namespace's Deployments, StatefulSets, ConfigMaps, Services, Ingresses, PVCs and CronJobs (as YAML, under k8s/) in the snapshot.
    #[arg(long)]
    pub k8s_objects: bool,
    /// With --k8s-objects: also store the namespace's Secrets (their values end up in the snapshot).
    #[arg(long, requires = "k8s_objects")]
    pub include_secrets: bool,
    #[command(flatten)]
    pub encrypt: crate::encryption::EncryptArgs,
    #[command(flatten)]
    pub k8s: crate::k8s_cmd::K8sArgs,
    #[command(flatten)]
    pub scale: crate::k8s_cmd::ScaleArgs,
}

pub async fn create_cmd(
    args: CreateArgs,
    g: &GlobalArgs,
    config: &Config,
    show_progress: bool,
) -> Result<u8, CoreError> {
    // Every setting with more than one source, settled in one place.
    let set = settings::create(
        &CreateFlags {
            databases: args.databases.clone(),
            target: args.target.clone(),
            prefix: args.prefix.clone(),
            consistency: args.consistency.map(Into::into),
            stop_cmd: args.stop_cmd.clone(),
            start_cmd: args.start_cmd.clone(),
            compress: args.compress.clone(),
            pg_bin: args.pg_bin.clone(),
            repository: g.dir.clone(),
        },
        config,
    )?;
    let target_k8s = set.k8s.as_ref();
    args.k8s.check_used(&args.scale, target_k8s)?;
    let k8s = args.k8s.settings(target_k8s)?;
    if k8s.is_some() && !set.databases.is_empty() {
        return Err(CoreError::Config {
            message: "the databases are named twice: by --database (or the target's databases) and by --k8s (or the target's k8s)".into(),
            hint: "use one of them".into(),
        });
    }
    let consistency = set.consistency;
    let mut hooks = set.hooks.clone();
    if consistency == ConsistencyMethod::Quiesce || args.scale.scale.is_some() {
        let scale = args.scale.hooks(&args.k8s, target_k8s).await?;
        if scale.is_some() && consistency != ConsistencyMethod::Quiesce {
            return Err(CoreError::Config {
                message: "--scale stops the app only with --consistency quiesce".into(),
                hint: "add --consistency quiesce, or drop --scale (snapshots need no stopped app)"
                    .into(),
            });
        }
        let explicit = args.stop_cmd.is_some() || args.start_cmd.is_some();
        dbsnap_core::k8s::merge_scale_hooks(&mut hooks, scale, explicit)?;
    }
    let databases = set.databases.clone();
    let extra_members = if args.k8s_objects {
        let access = args.k8s.pod.cluster.access(target_k8s);
        let say = crate::k8s_cmd::say(g.json);
        dbsnap_core::k8s::export_objects(&access, args.include_secrets, &say).await?
    } else {
        Vec::new()
    };
    let make_opts = |databases: Vec<String>,
                     resolver: Arc<dyn dbsnap_core::Resolver>,
                     kubernetes: Option<KubernetesOrigin>| CreateOptions {
        databases,
        resolver,
        resolved: Vec::new(),
        target: set.target.clone(),
        kubernetes,
        crypto: g.crypto.clone(),
        prefix: set.prefix.clone(),
        safety_for: None,
        consistency,
        repo: g
            .locations
            .resolve(&set.repository.display().to_string())
            .repository(),
        pg_bin: set.pg_bin.clone(),
        hooks: hooks.clone(),
        compress: set.compress.clone(),
        jobs: args.jobs.map(|j| j as usize),
        engine: match args.engine {
            EngineArg::Native => dbsnap_core::create::Engine::Native,
            EngineArg::PgDump => dbsnap_core::create::Engine::PgDump,
        },
        version_spec: set.version_spec.clone(),
        version_specs: set.version_specs.clone(),
        limits: CutLimits {
            max_attempts: args.max_attempts,
            max_wait: Duration::from_secs(args.max_wait),
            lock_timeout: Duration::from_millis(args.lock_timeout),
        },
        extra_members: extra_members.clone(),
    };
    let ui = progress::Ui::new(show_progress);
    let sink: Arc<dyn Progress> = ui.clone();
    // Ctrl-C / SIGTERM: dropping the work removes the partial file, kills
    // pg_dump, and (quiesce) runs the start command (dbsnap-core's StartGuard);
    // queries still in flight are cancelled; the jump pod's guard deletes
    // it, and the reaper waits for that.
    let reaper = Reaper::default();
    let work = async {
        let Some(k) = &k8s else {
            let opts = make_opts(databases, dbsnap_core::direct_route(), None);
            return create::create(&opts, &sink).await;
        };
        let say = crate::k8s_cmd::say(g.json);
        dbsnap_core::k8s::with_route(k, &run_id(), &say, &reaper, async |opened| {
            let names = opened.database_names();
            let opts = make_opts(names, opened.route.resolver(), Some(opened.origin.clone()));
            create::create(&opts, &sink).await
        })
        .await
    };
    let result = tokio::select! {
        r = work => r,
        s = dbsnap_core::hooks::termination_signal() => {
            dbsnap_core::hooks::stop_everything().await;
            reaper.reap().await;
            Err(CoreError::Interrupted(format!(" by {s}; no snapshot was written")))
        }
    };
    ui.finish();
    let result = result?;
    output::print_create(&result, g.json);
    if let Some(f) = &result.start_hook_failure {
        eprintln!(
            "error: the snapshot is complete, but the application was not started again: {f}"
        );
        return Ok(exit::HOOK);
    }
    Ok(exit::OK)
}
