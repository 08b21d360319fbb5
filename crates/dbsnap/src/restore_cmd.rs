//! `restore`, `rollback`, `resume`, `cleanup`: build options (flags over
//! the config), plan, show the plan, confirm, execute, print.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use dbsnap_core::config::Config;
use dbsnap_core::create::Progress;
use dbsnap_core::error::exit;
use dbsnap_core::k8s::{self, K8sSettings, Reaper};
use dbsnap_core::restore::{self, recover, Plan, RestoreOptions};
use dbsnap_core::settings::{self, RestoreFlags};
use dbsnap_core::{inspect, retention, CoreError, SnapshotRef};

use crate::cli::{CleanupArgs, DeleteArgs, GlobalArgs, RestoreArgs, ResumeArgs, RollbackArgs};
use crate::{output, progress};

pub(crate) fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn not_confirmed(what: &str) -> CoreError {
    CoreError::NotConfirmed(format!(
        "{what} overwrites data and needs confirmation; there is no terminal to ask on\nhint: pass --yes to confirm (see the plan with --dry-run)"
    ))
}

/// `dbsnap restore`: straight to the servers, or through the cluster with
/// `--k8s` (the jump pod is deleted whatever the outcome). Everything that
/// needs no jump pod (the snapshot, picked on a terminal; the flags;
/// `--scale`'s workloads) is settled before one starts.
pub async fn run(
    args: RestoreArgs,
    g: &GlobalArgs,
    config: &Config,
    show_progress: bool,
) -> Result<u8, CoreError> {
    let target = args.target.as_ref().map(|t| config.target(t)).transpose()?;
    let target_k8s = target.and_then(|t| t.k8s.as_ref());
    args.k8s.check_used(&args.scale, target_k8s)?;
    let k8s = args.k8s.settings(target_k8s)?;
    if k8s.is_some() && !args.databases.is_empty() {
        return Err(CoreError::Config {
            message: "the databases are named twice: by --database and by --k8s".into(),
            hint: "use one of them".into(),
        });
    }
    let mut opts = options(&args, g, config, k8s.as_ref()).await?;
    let Some(k) = k8s else {
        return run_with(&args, g, show_progress, opts).await;
    };
    let say = crate::k8s_cmd::say(g.json);
    k8s::with_route(
        &k,
        &k8s::run_id(),
        &say,
        &Reaper::default(),
        async |opened| {
            opts.databases = opened.database_names();
            opts.resolver = opened.route.resolver();
            opts.kubernetes = Some(opened.origin.clone());
            run_with(&args, g, show_progress, opts).await
        },
    )
    .await
}

/// The restore's options from the flags and the config, reaching the
/// databases directly (the caller puts a cluster route in).
pub(crate) async fn options(
    args: &RestoreArgs,
    g: &GlobalArgs,
    config: &Config,
    k8s: Option<&K8sSettings>,
) -> Result<RestoreOptions, CoreError> {
    let flags = RestoreFlags {
        target: args.target.clone(),
        stop_cmd: args.stop_cmd.clone(),
        start_cmd: args.start_cmd.clone(),
        checks: args.check.clone(),
        map: args.map.clone(),
        pg_bin: args.load.pg_bin.clone(),
        repository: g.dir.clone(),
    };
    // Snapshots come from --dir, else the named target's repository, else the config's.
    let dir = settings::restore_repository(&flags, config)?;
    let file = match &args.file {
        Some(f) => inspect::resolve_snapshot(f, &g.locations, || {
            Ok(g.locations.resolve(&dir.display().to_string()))
        })?,
        None => pick_snapshot(&dir, &g.locations, &Origin::of(args, k8s))?,
    };
    let metadata = inspect::read_metadata(&file)?;
    // Every setting with more than one source, settled in one place.
    let set = settings::restore(&flags, config, metadata.target.as_deref())?;
    let mut targets = BTreeMap::new();
    if let Some(name) = &set.target {
        targets.insert(name.clone(), set.target_databases.clone());
    }
    let mut hooks = set.hooks.clone();
    let scale = args.scale.hooks(&args.k8s, set.k8s.as_ref()).await?;
    let explicit = args.stop_cmd.is_some() || args.start_cmd.is_some();
    k8s::merge_scale_hooks(&mut hooks, scale, explicit)?;
    Ok(RestoreOptions {
        file,
        databases: args.databases.clone(),
        targets,
        restore_target: args.target.clone(),
        kubernetes: None,
        into_other_origin: args.into_other_origin,
        crypto: g.crypto.clone(),
        only: args.only.clone(),
        map: set.map.clone(),
        drop: args.drop,
        create: args.create,
        no_owner: args.load.no_owner,
        no_privileges: args.load.no_privileges,
        allow_downgrade: args.load.allow_downgrade,
        password_prompt: None,
        create_roles: args.create_roles,
        jobs: args
            .load
            .jobs
            .unwrap_or(dbsnap_core::create::default_jobs() as u32),
        engine: match args.load.engine {
            crate::cli::RestoreEngineArg::Native => dbsnap_core::restore::LoadEngine::Native,
            crate::cli::RestoreEngineArg::PgRestore => dbsnap_core::restore::LoadEngine::PgRestore,
        },
        no_safety_snapshot: args.no_safety_snapshot,
        lock_timeout: args.lock_timeout,
        resolver: dbsnap_core::direct_route(),
        // Safety snapshots: --dir, else the target's repository, else the default.
        safety_repo: g
            .locations
            .resolve(&set.safety_repository.display().to_string())
            .repository(),
        keep_safety_snapshots: config.keep_safety_snapshots(),
        hooks,
        pg_bin: set.pg_bin.clone(),
        checks: set.checks.clone(),
        version_spec: set.version_spec.clone(),
        version_specs: set.version_specs.clone(),
    })
}

async fn run_with(
    args: &RestoreArgs,
    g: &GlobalArgs,
    show_progress: bool,
    mut opts: RestoreOptions,
) -> Result<u8, CoreError> {
    let ui = progress::Ui::new(show_progress);
    let sink: Arc<dyn Progress> = ui.clone();
    if !args.load.no_password {
        opts.password_prompt = password_prompt(&ui);
    }
    let plan = restore::plan(&opts, &*sink).await;
    ui.finish();
    let mut plan = plan?;
    if plan.origin.refuses() {
        // Another app's (or server's) snapshot: said with both sides, and
        // only a terminal without --yes may be asked; --yes never implies it.
        if args.dry_run || args.yes || !interactive() {
            if !g.json {
                output::print_plan(&plan, false, args.dry_run);
            }
            return Err(plan.origin.refusal());
        }
        output::print_plan(&plan, false, false);
        ask("The databases above are not the ones this snapshot was taken from. Restore into them anyway?")?;
        plan.origin.allowed = true;
        opts.into_other_origin = true;
    } else if args.dry_run {
        output::print_plan(&plan, g.json, true);
        return Ok(exit::OK);
    } else if !g.json {
        output::print_plan(&plan, false, false);
    }
    if !args.yes {
        confirm(&plan)?;
    }
    let ui = progress::Ui::new(show_progress);
    let sink: Arc<dyn Progress> = ui.clone();
    let result = restore::execute(&plan, &opts, &sink).await;
    ui.finish();
    let result = result?;
    output::print_restore(&result, g.json);
    if let Some(f) = &result.start_hook_failure {
        eprintln!("error: the restore is complete, but the application was not started again: {f}");
        return Ok(exit::HOOK);
    }
    Ok(exit::OK)
}

/// On a terminal, asks for a server's password (once per server), the
/// progress display set aside meanwhile; None without one.
pub(crate) fn password_prompt(ui: &Arc<progress::Ui>) -> Option<restore::PasswordPrompt> {
    if !interactive() {
        return None;
    }
    let ui = ui.clone();
    Some(Arc::new(move |server: &str| {
        ui.suspend(|| {
            dialoguer::Password::new()
                .with_prompt(format!("password for {server}"))
                .allow_empty_password(false)
                .interact()
                .ok()
        })
    }))
}

/// What the restore is for, as far as it is known before connecting: the
/// picker lists only snapshots that may be of it.
pub(crate) struct Origin {
    target: Option<String>,
    workload: Option<String>,
    namespace: Option<String>,
}

impl Origin {
    fn of(args: &RestoreArgs, k8s: Option<&K8sSettings>) -> Origin {
        Origin::new(args.target.clone(), k8s)
    }

    /// The origin of a named target (or none), through a workload (or not).
    pub(crate) fn new(target: Option<String>, k8s: Option<&K8sSettings>) -> Origin {
        Origin {
            target,
            workload: k8s.map(|k| k.workload.display()),
            namespace: k8s.and_then(|k| k.access.namespace.clone()),
        }
    }

    /// Whether a snapshot may be of this origin: what both record agrees
    /// (the server's identity is checked by the plan).
    pub(crate) fn admits(&self, row: &inspect::ListEntry) -> bool {
        let differs =
            |a: &Option<String>, b: Option<&String>| matches!((a, b), (Some(a), Some(b)) if a != b);
        let k = row.kubernetes.as_ref();
        !differs(&self.target, row.target.as_ref())
            && !differs(&self.workload, k.map(|k| &k.workload))
            && !differs(&self.namespace, k.map(|k| &k.namespace))
    }
}

fn pick_snapshot(
    dir: &std::path::Path,
    locations: &dbsnap_core::Locations,
    origin: &Origin,
) -> Result<dbsnap_core::SnapshotRef, CoreError> {
    if !interactive() {
        return Err(CoreError::Config {
            message: "no snapshot given".into(),
            hint: "pass --file (see `dbsnap list`)".into(),
        });
    }
    let repo = locations.open(dir);
    let usable: Vec<_> = inspect::list(&repo)?
        .into_iter()
        .filter(|r| r.error.is_none())
        .collect();
    let all = usable.len();
    let rows: Vec<_> = usable.into_iter().filter(|r| origin.admits(r)).collect();
    let others = all - rows.len();
    if rows.is_empty() {
        return Err(CoreError::Config {
            message: if others > 0 {
                format!(
                    "no snapshots of this target or workload in {} ({others} of others)",
                    dir.display()
                )
            } else {
                format!("no snapshots in {}", dir.display())
            },
            hint: "pass --dir or --file".into(),
        });
    }
    let default = default_pick(&rows);
    // `list`'s table (numbered, newest first), the default marked.
    let mut out = std::io::stderr();
    let lines = output::list_lines(&rows, time::OffsetDateTime::now_utc());
    for (i, line) in lines.iter().enumerate() {
        let mark = if i == default + 1 { "  (default)" } else { "" };
        let _ = writeln!(out, "{line}{mark}");
    }
    if others > 0 {
        let _ = writeln!(
            out,
            "({others} snapshot{} of other targets or workloads not listed: pass --file to restore one)",
            if others == 1 { "" } else { "s" }
        );
    }
    let choice = dialoguer::Input::<String>::new()
        .with_prompt(format!("Snapshot to restore (1-{})", rows.len()))
        .default((default + 1).to_string())
        .validate_with(|s: &String| pick_index(s, &rows).map(|_| ()))
        .interact_text()
        .map_err(|e| CoreError::NotConfirmed(format!("no snapshot chosen: {e}")))?;
    let choice = pick_index(&choice, &rows).map_err(CoreError::NotConfirmed)?;
    Ok(dbsnap_core::SnapshotRef::new(repo, &rows[choice].name))
}

/// The default pick: the newest snapshot that is not a safety snapshot.
fn default_pick(rows: &[inspect::ListEntry]) -> usize {
    rows.iter()
        .position(|r| r.safety_for.is_none())
        .unwrap_or(0)
}

/// The row a typed answer names: its number in the list, or its file name.
fn pick_index(answer: &str, rows: &[inspect::ListEntry]) -> Result<usize, String> {
    let answer = answer.trim();
    if let Ok(n) = answer.parse::<usize>() {
        if (1..=rows.len()).contains(&n) {
            return Ok(n - 1);
        }
        return Err(format!("type a number from 1 to {}", rows.len()));
    }
    rows.iter()
        .position(|r| r.name == answer)
        .ok_or_else(|| format!("\"{answer}\" is not in the list: type its number"))
}

fn confirm(plan: &Plan) -> Result<(), CoreError> {
    if !interactive() {
        return Err(not_confirmed("this restore"));
    }
    if plan.destructive() {
        for d in plan.databases.iter().filter(|d| d.action.drops_schema()) {
            let typed: String = dialoguer::Input::new()
                .with_prompt(format!(
                    "{} will be replaced. Type its name to confirm",
                    d.live_db
                ))
                .allow_empty(true)
                .interact_text()
                .map_err(|e| CoreError::NotConfirmed(format!("not confirmed: {e}")))?;
            if typed.trim() != d.live_db {
                return Err(CoreError::NotConfirmed(format!(
                    "not confirmed: expected \"{}\"; nothing was changed",
                    d.live_db
                )));
            }
        }
    } else {
        ask("Replace the data of these databases with the snapshot's?")?;
    }
    Ok(())
}

/// A yes/no question, default no; no is an error that changed nothing.
pub(crate) fn ask(question: &str) -> Result<(), CoreError> {
    // y or n, then Enter: a typed "y⏎" must not answer the next question too.
    let ok = dialoguer::Confirm::new()
        .with_prompt(question)
        .wait_for_newline(true)
        .default(false)
        .interact()
        .map_err(|e| CoreError::NotConfirmed(format!("not confirmed: {e}")))?;
    if ok {
        Ok(())
    } else {
        Err(CoreError::NotConfirmed(
            "declined; nothing was changed".into(),
        ))
    }
}

/// `dbsnap rollback`.
pub async fn rollback(args: RollbackArgs, g: &GlobalArgs) -> Result<u8, CoreError> {
    // Nothing to roll back is said before any question or jump pod.
    recover::rollback_run(args.id.as_deref())?;
    if !args.yes && !args.dry_run {
        if !interactive() {
            return Err(not_confirmed("a rollback"));
        }
        ask("Swap the previous databases back in (the restored copies are kept)?")?;
    }
    let r = with_recovery_route(&args.k8s, g.json, true, async |opened| {
        let resolver = opened.map(|o| o.route.resolver());
        recover::rollback(
            args.id.as_deref(),
            access(resolver.as_deref(), &args.databases, g),
            args.dry_run,
        )
        .await
    })
    .await?;
    output::print_dry_run_value(
        &serde_json::to_value(&r).unwrap_or_default(),
        args.dry_run,
        g.json,
        || {
            for (db, kept) in &r.databases {
                if args.dry_run {
                    println!("would roll back {db} (restore {}): the previous database would be live again; the restored copy would be kept as {kept}", r.id);
                } else {
                    println!("rolled back {db}: the previous database is live again; the restored copy is kept as {kept}");
                }
            }
            if args.dry_run {
                println!("dry run: nothing was changed");
            }
        },
    );
    Ok(exit::OK)
}

/// `dbsnap resume`.
pub async fn resume(args: ResumeArgs, g: &GlobalArgs) -> Result<u8, CoreError> {
    let needed = recover::routed_work(recover::Work::Resume)?;
    let r = with_recovery_route(&args.k8s, g.json, needed, async |opened| {
        let resolver = opened.map(|o| o.route.resolver());
        recover::resume(access(resolver.as_deref(), &args.databases, g)).await
    })
    .await?;
    output::print_value(
        &serde_json::to_value(&r).unwrap_or_default(),
        g.json,
        || {
            if r.is_empty() {
                println!("no interrupted restore");
            }
            for run in &r {
                println!("restore {} of {}:", run.id, run.file);
                for (db, phase) in &run.databases {
                    println!("  {db}: {}", phase.describe());
                }
                for a in &run.actions {
                    println!("  {a}");
                }
            }
        },
    );
    Ok(exit::OK)
}

/// `dbsnap cleanup`: kept databases on the servers, and safety snapshots
/// beyond `keep_safety_snapshots` in the repository.
pub async fn cleanup(args: CleanupArgs, g: &GlobalArgs, config: &Config) -> Result<u8, CoreError> {
    let change = args.yes && !args.dry_run;
    let dir = crate::cli::repo_dir(g, config, None);
    let repo = g.locations.open(&dir);
    // A repository named by --dir or the config must exist; the default
    // one not existing yet just has no safety snapshots.
    let safety = match inspect::list(&repo) {
        Err(e) if crate::cli::missing_default_repo(&e, &dir) => Vec::new(),
        Err(e) => return Err(e),
        Ok(_) => {
            retention::prune_safety_snapshots(&repo, config.keep_safety_snapshots(), None, !change)?
        }
    };
    // Through the cluster only when a journal made that way, or a -d, needs a server.
    let needed = !args.databases.is_empty() || recover::routed_work(recover::Work::Cleanup)?;
    let cleaned = with_recovery_route(&args.k8s, g.json, needed, async |opened| {
        let resolver = opened.map(|o| o.route.resolver());
        let servers = opened.is_some() || args.k8s.pod.k8s.is_none();
        recover::cleanup(
            access(resolver.as_deref(), &args.databases, g),
            &repo,
            change,
            servers,
        )
        .await
    })
    .await?;
    output::print_cleanup(&cleaned, &safety, change, args.dry_run, g.json);
    // Non-zero only when a server that needed cleaning up was not.
    Ok(cleaned.failed.first().map_or(exit::OK, |f| f.exit_code))
}

/// `dbsnap delete`: one snapshot, after confirmation.
pub fn delete(args: DeleteArgs, g: &GlobalArgs, snapshot: &SnapshotRef) -> Result<u8, CoreError> {
    let target = retention::deletable(snapshot)?;
    retention::refuse_pinned(snapshot)?;
    if !args.dry_run && !args.yes {
        if !interactive() {
            return Err(CoreError::NotConfirmed(format!(
                "deleting {} needs confirmation; there is no terminal to ask on\nhint: pass --yes to confirm (see what would go with --dry-run)",
                target.path
            )));
        }
        ask(&format!(
            "Delete snapshot {} ({}, taken {})?",
            target.path,
            output::human_bytes(target.size),
            target.created_at.as_deref().unwrap_or("at an unknown time")
        ))?;
    }
    if !args.dry_run {
        retention::delete(snapshot)?;
    }
    output::print_dry_run_value(
        &serde_json::to_value(&target).unwrap_or_default(),
        args.dry_run,
        g.json,
        || {
            let verb = if args.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            println!(
                "{verb}: {} ({})",
                target.path,
                output::human_bytes(target.size)
            );
            if args.dry_run {
                println!("dry run: nothing was changed");
            }
        },
    );
    Ok(exit::OK)
}

/// After a restore took safety snapshot `taken`: removes the repository's
/// safety snapshots beyond the newest `keep` (never `taken`). A failure
/// here is a warning: the restore itself succeeded.
/// The journal's servers reached directly, or through `resolver` (the
/// cluster route the restore used).
fn access<'a>(
    resolver: Option<&'a dyn dbsnap_core::Resolver>,
    creds: &'a [String],
    g: &'a GlobalArgs,
) -> recover::Access<'a> {
    recover::Access {
        resolver: resolver.unwrap_or(&dbsnap_core::DIRECT),
        creds,
        locations: &g.locations,
    }
}

/// With `--k8s`: the route a restore through the cluster used, open again
/// (a new jump pod) for rollback, resume or cleanup while `work` runs.
/// `needed`: whether anything needs it; a route is never opened for
/// nothing (the flags are still checked).
async fn with_recovery_route<T>(
    k8s: &crate::k8s_cmd::K8sArgs,
    quiet: bool,
    needed: bool,
    work: impl AsyncFnOnce(Option<&k8s::Opened>) -> Result<T, CoreError>,
) -> Result<T, CoreError> {
    let settings = k8s.settings(None)?;
    let say = crate::k8s_cmd::say(quiet);
    let run = k8s::run_id();
    k8s::with_route_if(
        settings.as_ref(),
        needed,
        &run,
        &say,
        &Reaper::default(),
        work,
    )
    .await
}
