//! `prune`, `pin`, `unpin`: retention of a repository's snapshots.

use clap::Args;
use dbsnap_core::config::{Config, PruneConfig};
use dbsnap_core::error::exit;
use dbsnap_core::prune::{self, Policy, PruneReport};
use dbsnap_core::{CoreError, SnapshotRef};

use crate::cli::{repo_dir, resolve_file, FileArgs, GlobalArgs};
use crate::output;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Prune only this target's snapshots (its repository, its snapshots).
    #[arg(short, long)]
    pub target: Option<String>,
    /// Keep the newest N snapshots (per target).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
    /// Keep every snapshot taken within this long: 30m, 12h, 7d, 4w, 6M, 1y.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Remove without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Show what would go and why each snapshot stays; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub file: FileArgs,
}

/// The policy (see `dbsnap_core::settings::prune`).
fn policy(args: &PruneArgs, config: &Config) -> Result<Policy, CoreError> {
    let flags = PruneConfig {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within.clone(),
    };
    dbsnap_core::settings::prune(&flags, config)
}

/// `dbsnap prune`.
pub fn prune(args: PruneArgs, g: &GlobalArgs, config: &Config) -> Result<u8, CoreError> {
    let target = args.target.as_ref().map(|t| config.target(t)).transpose()?;
    let policy = policy(&args, config)?;
    let dir = repo_dir(g, config, target);
    let repo = g.locations.open(&dir);
    let now = time::OffsetDateTime::now_utc();
    let plan = match prune::plan(&repo, &policy, args.target.as_deref(), now, &g.crypto) {
        Err(e) if crate::cli::missing_default_repo(&e, &dir) => prune::PruneReport::empty(),
        r => r?,
    };
    let report = if args.dry_run || plan.removed.is_empty() {
        PruneReport {
            dry_run: args.dry_run,
            ..plan
        }
    } else {
        if !args.yes {
            if !crate::restore_cmd::interactive() {
                return Err(CoreError::NotConfirmed(format!(
                    "pruning {} snapshot(s) needs confirmation; there is no terminal to ask on\nhint: pass --yes to confirm (see what would go and why each stays with --dry-run)",
                    plan.removed.len()
                )));
            }
            print_report(&plan, true, false);
            crate::restore_cmd::ask(&format!(
                "Remove these {} snapshot(s) ({})?",
                plan.removed.len(),
                output::human_bytes(plan.freed)
            ))?;
        }
        prune::carry_out(&repo, plan)?
    };
    if g.json {
        output::Envelope::ok(&report)
            .without(&["dry_run"])
            .dry_run(report.dry_run)
            .print();
    } else {
        print_report(&report, report.dry_run, report.dry_run);
    }
    Ok(exit::OK)
}

/// The plan or the outcome, one line per snapshot; `dry_run` adds that
/// nothing changed.
fn print_report(r: &PruneReport, would: bool, dry_run: bool) {
    for k in &r.kept {
        let target = k
            .target
            .as_deref()
            .map(|t| format!("[{t}] "))
            .unwrap_or_default();
        println!("keep    {}  {target}({})", k.name, k.reasons.join(", "));
    }
    let verb = if would { "would remove" } else { "removed" };
    for f in &r.removed {
        println!("{verb}  {}  ({})", f.name, output::human_bytes(f.size));
    }
    match r.removed.len() {
        0 => println!("nothing to remove; {} snapshot(s) kept", r.kept.len()),
        n => println!(
            "{verb} {n} snapshot(s), {}; {} kept",
            output::human_bytes(r.freed),
            r.kept.len()
        ),
    }
    if !r.failing_verification.is_empty() {
        println!(
            "note: {} fail{} verification: the keep rules count {}, so the newest snapshot that verifies ({}) is kept as well",
            r.failing_verification.join(", "),
            if r.failing_verification.len() == 1 { "s" } else { "" },
            if r.failing_verification.len() == 1 { "it" } else { "them" },
            r.newest_verified.join(", ")
        );
    }
    if dry_run && !r.removed.is_empty() {
        println!("dry run: nothing was changed");
    }
}

/// `dbsnap pin` / `dbsnap unpin`.
pub fn pin(args: PinArgs, g: &GlobalArgs, config: &Config, pinned: bool) -> Result<u8, CoreError> {
    let snapshot: SnapshotRef = resolve_file(&args.file, g, config)?;
    dbsnap_core::retention::deletable(&snapshot)?;
    snapshot.repo.set_pinned(&snapshot.name, pinned)?;
    tracing::info!(
        "{} {}",
        if pinned { "pinned" } else { "unpinned" },
        snapshot.display()
    );
    if g.json {
        output::Envelope::ok(&serde_json::json!({ "file": snapshot.display(), "pinned": pinned }))
            .print();
    } else {
        let what = if pinned {
            "pinned (prune keeps it; delete refuses it until `dbsnap unpin`)"
        } else {
            "unpinned"
        };
        println!("{what}: {}", snapshot.display());
    }
    Ok(exit::OK)
}
