//! `dbsnap drill`: a test restore into scratch databases (see
//! `dbsnap_core::drill`): the snapshot (the newest of the target unless
//! named), the restore's options as `restore` builds them, straight to the
//! servers or through the cluster with `--k8s`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use dbsnap_core::config::Config;
use dbsnap_core::create::Progress;
use dbsnap_core::drill::{self, DrillOptions};
use dbsnap_core::error::exit;
use dbsnap_core::k8s::{self, Reaper};
use dbsnap_core::settings::{self, RestoreFlags};
use dbsnap_core::{inspect, CoreError};

use crate::cli::{GlobalArgs, LoadArgs, RestoreArgs};
use crate::restore_cmd::{self, Origin};
use crate::{output, progress};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Snapshot file: a path, or a name in --dir (default: the newest snapshot of the target, or of the repository without one; safety snapshots are not drilled unless named).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Named target from the config: its repository, its databases' servers (where the scratch databases go) and its checks (default: the snapshot's target).
    #[arg(short, long)]
    pub target: Option<String>,
    /// Make the scratch databases on this server instead of each database's own: a connection string naming its maintenance database, e.g. postgres://user@host:5432/postgres.
    #[arg(long, value_name = "CONNSTR")]
    pub server: Option<String>,
    /// SQL that must return true in each restored database (repeatable; the target's checks run too).
    #[arg(long, value_name = "SQL")]
    pub check: Vec<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub k8s: crate::k8s_cmd::K8sArgs,
}

impl DrillArgs {
    /// The restore a drill is made of, as `restore` would take it; the
    /// drill puts its own names, `--create` and no hooks on top.
    fn restore(&self, file: PathBuf) -> RestoreArgs {
        RestoreArgs {
            file: Some(file),
            databases: Vec::new(),
            target: self.target.clone(),
            only: Vec::new(),
            map: Vec::new(),
            drop: false,
            create: true,
            into_other_origin: true,
            create_roles: false,
            dry_run: false,
            yes: true,
            no_safety_snapshot: true,
            lock_timeout: std::time::Duration::from_secs(30),
            stop_cmd: None,
            start_cmd: None,
            check: self.check.clone(),
            load: self.load.clone(),
            k8s: self.k8s.clone(),
            scale: Default::default(),
        }
    }
}

pub async fn run(
    args: DrillArgs,
    g: &GlobalArgs,
    config: &Config,
    show_progress: bool,
) -> Result<u8, CoreError> {
    let target = args.target.as_ref().map(|t| config.target(t)).transpose()?;
    let target_k8s = target.and_then(|t| t.k8s.as_ref());
    let k8s = args.k8s.settings(target_k8s)?;
    if k8s.is_some() && args.server.is_some() {
        return Err(CoreError::Config {
            message: "--server and --k8s both say where the scratch databases go".into(),
            hint: "with --k8s they go on the workload's own database servers; drop --server".into(),
        });
    }
    let file = match &args.file {
        Some(f) => f.clone(),
        None => newest(
            &args,
            g,
            config,
            &Origin::new(args.target.clone(), k8s.as_ref()),
        )?,
    };
    let restore = args.restore(file);
    let opts = restore_cmd::options(&restore, g, config, k8s.as_ref()).await?;
    let mut opts = DrillOptions {
        restore: opts,
        server: args.server.clone(),
    };
    let ask = !args.load.no_password;
    let Some(k) = k8s else {
        return drill_with(opts, g, show_progress, ask).await;
    };
    let say = crate::k8s_cmd::say(g.json);
    k8s::with_route(
        &k,
        &k8s::run_id(),
        &say,
        &Reaper::default(),
        async |opened| {
            opts.restore.databases = opened.database_names();
            opts.restore.resolver = opened.route.resolver();
            opts.restore.kubernetes = Some(opened.origin.clone());
            drill_with(opts, g, show_progress, ask).await
        },
    )
    .await
}

async fn drill_with(
    mut opts: DrillOptions,
    g: &GlobalArgs,
    show_progress: bool,
    ask_password: bool,
) -> Result<u8, CoreError> {
    let ui = progress::Ui::new(show_progress);
    let sink: Arc<dyn Progress> = ui.clone();
    if ask_password {
        opts.restore.password_prompt = restore_cmd::password_prompt(&ui);
    }
    let outcome = drill::drill(&opts, &sink).await;
    ui.finish();
    output::print_drill(&outcome?, g.json);
    Ok(exit::OK)
}

/// The newest snapshot of the target (or workload), safety snapshots
/// aside: damaged or not, as its drill is what says.
fn newest(
    args: &DrillArgs,
    g: &GlobalArgs,
    config: &Config,
    origin: &Origin,
) -> Result<PathBuf, CoreError> {
    let flags = RestoreFlags {
        target: args.target.clone(),
        repository: g.dir.clone(),
        ..Default::default()
    };
    let dir = settings::restore_repository(&flags, config)?;
    let rows = inspect::list(&g.locations.open(&dir))?;
    rows.iter()
        .find(|r| r.safety_for.is_none() && r.created_at.is_some() && origin.admits(r))
        .map(|r| PathBuf::from(&r.name))
        .ok_or_else(|| CoreError::Config {
            message: match &args.target {
                Some(t) => format!("no snapshot of target {t} in {}", dir.display()),
                None => format!("no snapshot in {}", dir.display()),
            },
            hint: "take one with `dbsnap create`, or name one with --file".into(),
        })
}
