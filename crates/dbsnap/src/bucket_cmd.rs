//! `bucket-backup`, `bucket-restore`, `bucket-verify` and `bucket-prune`:
//! S3 buckets (usage data, model checkpoints) copied incrementally into a
//! backup location and back, checked, and pruned.

use clap::Args;
use dbsnap_core::error::exit;
use dbsnap_core::CoreError;
use dbsnap_core::{bucket, prune};
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::location::{in_flag_words, Named};
use crate::{output, progress};

/// What a backup location named by --from is, in hints.
const BACKUPS: &str = "the backup location bucket-backup wrote (its --to)";

#[derive(Debug, Args)]
pub struct BucketBackupArgs {
    /// The bucket (or prefix) to back up: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub from: String,
    /// Where its backups go: a directory or s3://BUCKET/PREFIX, one per backed-up bucket (blobs/ and runs/ inside).
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// Read a reused blob again, and compare it with its SHA-256, when it was last verified longer ago than this (30m, 12h, 7d, 4w, 6M, 1y; 0: every reused blob); one that no longer matches is copied again from the source.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub reverify_after: String,
}

#[derive(Debug, Args)]
pub struct BucketVerifyArgs {
    /// The backup location bucket-backup wrote (--to there).
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// Verify this run (an id from `bucket-restore --list`); default: the newest run, the one bucket-restore restores.
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub run: Option<String>,
    /// Verify every run (each blob is read once); a run manifest that cannot be read counts as damage.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct BucketPruneArgs {
    /// The backup location bucket-backup wrote (--to there).
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// Keep the newest N runs.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest run of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest run of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest run of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest run of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest run of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
    /// Keep every run started within this long: 30m, 12h, 7d, 4w, 6M, 1y.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Remove without asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Show which runs would go and why each stays, and how many blobs would be freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BucketRestoreArgs {
    /// The backup location bucket-backup wrote (--to there).
    #[arg(long, value_name = "LOCATION")]
    pub from: String,
    /// Where to put the objects back: s3://BUCKET[/PREFIX] (the same bucket or another), or a directory.
    #[arg(long, value_name = "LOCATION", required_unless_present = "list")]
    pub to: Option<String>,
    /// Restore the newest run that had started by this time (RFC 3339, e.g. 2026-11-20T00:00:00Z): the bucket as it was then; default: the newest run.
    #[arg(long, value_name = "TIME", conflicts_with = "run")]
    pub at: Option<String>,
    /// Restore this run (an id from --list).
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// List the runs and restore nothing.
    #[arg(long)]
    pub list: bool,
    /// Also delete the objects under --to that the run does not have (needs --yes).
    #[arg(long)]
    pub delete_extra: bool,
    /// Confirm --delete-extra.
    #[arg(short, long)]
    pub yes: bool,
}

/// `dbsnap bucket-backup`.
pub async fn backup(
    args: BucketBackupArgs,
    g: &GlobalArgs,
    show_progress: bool,
) -> Result<u8, CoreError> {
    let options = bucket::BackupOptions {
        reverify_after: match args.reverify_after.trim() {
            "0" => std::time::Duration::ZERO,
            w => std::time::Duration::from_secs(
                prune::parse_within(w, "--reverify-after")?.whole_seconds() as u64,
            ),
        },
    };
    let named = [
        Named::from(&args.from, "the bucket to back up"),
        Named::to(&args.to, "where its backups go"),
    ];
    let (from, to) = (
        g.locations.resolve(&args.from),
        g.locations.resolve(&args.to),
    );
    let r = progress::cancellable(show_progress, move |sink, cancel| {
        bucket::backup(&from, &to, options, sink, cancel)
    })
    .await
    .map_err(|e| in_flag_words(e, &named))?;
    if g.json {
        output::Envelope::ok(&r).print();
    } else {
        let reread = match r.reverified {
            0 => String::new(),
            n => format!(" ({n} read again and verified)"),
        };
        println!(
            "run {}: {} objects ({}), {} copied ({}), {} unchanged{reread}, {:.1}s: {} -> {}",
            r.run,
            r.objects,
            output::human_bytes(r.bytes),
            r.copied,
            output::human_bytes(r.copied_bytes),
            r.unchanged,
            r.seconds,
            r.from,
            r.to
        );
        if !r.repaired.is_empty() {
            println!(
                "{} damaged blob(s) found on reuse and copied again from the source: {}",
                r.repaired.len(),
                r.repaired.join(", ")
            );
        }
        if r.removed_temporary > 0 {
            println!(
                "removed {} temporary file(s) a killed run left in blobs/",
                r.removed_temporary
            );
        }
    }
    Ok(exit::OK)
}

/// `dbsnap bucket-verify`: exit 10 when a blob is damaged or missing.
pub async fn verify(
    args: BucketVerifyArgs,
    g: &GlobalArgs,
    show_progress: bool,
) -> Result<u8, CoreError> {
    let which = match (&args.run, args.all) {
        (Some(id), _) => bucket::Which::Run(id.clone()),
        (None, true) => bucket::Which::All,
        (None, false) => bucket::Which::Newest,
    };
    let from = g.locations.resolve(&args.from);
    let r = progress::cancellable(show_progress, move |sink, cancel| {
        bucket::verify(&from, which, sink, cancel)
    })
    .await
    .map_err(|e| in_flag_words(e, &[Named::from(&args.from, BACKUPS)]))?;
    if g.json {
        // A failed verification reads like every other command's error.
        let damaged = r
            .error
            .as_ref()
            .map(|m| output::ErrorDoc::new("verify", exit::VERIFY, m.clone()));
        output::Envelope::ok(&r)
            .without(&["ok", "error"])
            .error(damaged)
            .print();
    } else {
        for d in &r.damaged {
            println!(
                "DAMAGED  {}  blobs/{}  run {}: {}",
                d.key,
                d.blob,
                d.runs.join(", "),
                d.detail
            );
        }
        let runs = match r.runs.as_slice() {
            [one] => format!("run {one}"),
            many => format!("{} runs", many.len()),
        };
        match &r.error {
            None => println!(
                "verified {runs}: {} objects in {} blobs ({} read), each matches its size and SHA-256, {:.1}s: {}",
                r.objects,
                r.blobs,
                output::human_bytes(r.bytes),
                r.seconds,
                r.from
            ),
            Some(e) => eprintln!("FAILED: {e}"),
        }
    }
    Ok(if r.ok { exit::OK } else { exit::VERIFY })
}

/// The keep rules of `bucket-prune`: `prune`'s, from the flags only.
fn keep_policy(a: &BucketPruneArgs) -> Result<prune::Policy, CoreError> {
    let policy = prune::Policy {
        last: a.keep_last.unwrap_or(0),
        hourly: a.keep_hourly.unwrap_or(0),
        daily: a.keep_daily.unwrap_or(0),
        weekly: a.keep_weekly.unwrap_or(0),
        monthly: a.keep_monthly.unwrap_or(0),
        yearly: a.keep_yearly.unwrap_or(0),
        within: a
            .keep_within
            .as_deref()
            .map(|w| prune::parse_within(w, "--keep-within"))
            .transpose()?,
        safety: 0,
    };
    if policy.keeps_nothing() {
        return Err(CoreError::Config {
            message: "bucket-prune needs at least one rule that keeps runs".into(),
            hint: "e.g. --keep-last 7 --keep-daily 14 --keep-weekly 8 --keep-monthly 12 (see what would go with --dry-run)".into(),
        });
    }
    Ok(policy)
}

/// `dbsnap bucket-prune`.
pub fn prune(args: BucketPruneArgs, g: &GlobalArgs) -> Result<u8, CoreError> {
    let from = args.from.clone();
    prune_at(args, g).map_err(|e| in_flag_words(e, &[Named::from(&from, BACKUPS)]))
}

fn prune_at(args: BucketPruneArgs, g: &GlobalArgs) -> Result<u8, CoreError> {
    let policy = keep_policy(&args)?;
    let from = g.locations.resolve(&args.from);
    let plan = bucket::plan_prune(&from, &policy, time::OffsetDateTime::now_utc())?;
    let nothing = plan.removed.is_empty() && plan.removed_blobs == 0;
    let report = if args.dry_run || nothing {
        plan
    } else {
        if !args.yes {
            if !crate::restore_cmd::interactive() {
                return Err(CoreError::NotConfirmed(format!(
                    "pruning {} run(s) and {} blob(s) needs confirmation; there is no terminal to ask on\nhint: pass --yes to confirm (see what would go and why each run stays with --dry-run)",
                    plan.removed.len(),
                    plan.removed_blobs
                )));
            }
            print_prune(&plan, true);
            crate::restore_cmd::ask(&format!(
                "Remove these {} run(s) and {} blob(s) ({})?",
                plan.removed.len(),
                plan.removed_blobs,
                output::human_bytes(plan.freed)
            ))?;
        }
        bucket::prune(&from, &policy, plan)?
    };
    if g.json {
        output::Envelope::ok(&report)
            .without(&["dry_run"])
            .dry_run(report.dry_run)
            .print();
    } else {
        print_prune(&report, report.dry_run);
        if report.dry_run && !nothing {
            println!("dry run: nothing was changed");
        }
    }
    Ok(exit::OK)
}

/// The plan or the outcome of `bucket-prune`, one line per run.
fn print_prune(r: &bucket::PruneReport, would: bool) {
    for k in &r.kept {
        println!("keep    {}  ({})", k.run, k.reasons.join(", "));
    }
    let verb = if would { "would remove" } else { "removed" };
    for f in &r.removed {
        println!(
            "{verb}  {}  ({} objects, {})",
            f.run,
            f.objects,
            output::human_bytes(f.bytes)
        );
    }
    println!(
        "{verb} {} run(s) and {} blob(s) no kept run needs ({}); {} run(s) kept",
        r.removed.len(),
        r.removed_blobs,
        output::human_bytes(r.freed),
        r.kept.len()
    );
    if let Some(why) = &r.blobs_kept_because {
        println!("no blob removed: {why}");
    }
}

/// `dbsnap bucket-restore`.
pub async fn restore(
    args: BucketRestoreArgs,
    g: &GlobalArgs,
    show_progress: bool,
) -> Result<u8, CoreError> {
    if args.list {
        let runs = bucket::runs(&g.locations.resolve(&args.from))
            .map_err(|e| in_flag_words(e, &[Named::from(&args.from, BACKUPS)]))?;
        if g.json {
            output::Envelope::ok(&json!({ "runs": runs })).print();
        } else if runs.is_empty() {
            println!("no runs in {}", args.from);
        } else {
            for r in &runs {
                println!(
                    "{}  started {}  finished {}  {} objects  {}  from {}",
                    r.run,
                    r.started_at,
                    r.finished_at,
                    r.objects,
                    output::human_bytes(r.bytes),
                    r.source
                );
            }
        }
        return Ok(exit::OK);
    }
    let at = match &args.at {
        Some(t) => Some(
            dbsnap_core::inspect::parse_time(t).ok_or_else(|| CoreError::Config {
                message: format!("--at {t}: not a time"),
                hint: "write it as RFC 3339, e.g. 2026-11-20T00:00:00Z".into(),
            })?,
        ),
        None => None,
    };
    if args.delete_extra && !args.yes {
        return Err(CoreError::NotConfirmed(
            "--delete-extra deletes objects under --to that the run does not have\nhint: pass --yes to confirm (without --delete-extra nothing is deleted)".into(),
        ));
    }
    let (from, to) = (args.from.clone(), args.to.clone().unwrap_or_default());
    let named = [
        Named::from(&from, BACKUPS),
        Named::to(&to, "where the objects go back"),
    ];
    let (f, t) = (g.locations.resolve(&from), g.locations.resolve(&to));
    let r = progress::cancellable(show_progress, move |sink, cancel| {
        bucket::restore(
            &f,
            &t,
            args.run.as_deref(),
            at,
            args.delete_extra,
            sink,
            cancel,
        )
    })
    .await
    .map_err(|e| in_flag_words(e, &named))?;
    if g.json {
        output::Envelope::ok(&r).print();
    } else {
        println!(
            "run {} restored: {} objects, {} written ({}), {} already there, {:.1}s: {} -> {}",
            r.run,
            r.objects,
            r.written,
            output::human_bytes(r.written_bytes),
            r.present,
            r.seconds,
            r.from,
            r.to
        );
        if !r.extra.is_empty() {
            let verb = if r.deleted_extra {
                "deleted"
            } else {
                "kept (--delete-extra removes them)"
            };
            println!(
                "{} object(s) not in the run {verb}: {}",
                r.extra.len(),
                r.extra.join(", ")
            );
        }
    }
    Ok(exit::OK)
}
