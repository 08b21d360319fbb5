//! `bucket-backup` and `bucket-restore`: S3 buckets (usage data, model
//! checkpoints) copied incrementally into a backup location and back.

use clap::Args;
use dbsnap_core::bucket;
use dbsnap_core::error::exit;
use dbsnap_core::CoreError;
use serde_json::json;

use crate::cli::GlobalArgs;
use crate::{output, progress};

#[derive(Debug, Args)]
pub struct BucketBackupArgs {
    /// The bucket (or prefix) to back up: s3://BUCKET[/PREFIX].
    #[arg(long, value_name = "S3_URL")]
    pub from: String,
    /// Where its backups go: a directory or s3://BUCKET/PREFIX, one per backed-up bucket (blobs/ and runs/ inside).
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
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
    let r = progress::cancellable(show_progress, move |sink, cancel| {
        bucket::backup(&args.from, &args.to, sink, cancel)
    })
    .await?;
    if g.json {
        output::print_ok_json(&r);
    } else {
        println!(
            "run {}: {} objects ({}), {} copied ({}), {} unchanged, {:.1}s: {} -> {}",
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
    }
    Ok(exit::OK)
}

/// `dbsnap bucket-restore`.
pub async fn restore(
    args: BucketRestoreArgs,
    g: &GlobalArgs,
    show_progress: bool,
) -> Result<u8, CoreError> {
    if args.list {
        let runs = bucket::runs(&args.from)?;
        if g.json {
            output::print_json(&json!({"ok": true, "runs": runs}));
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
    let to = args.to.clone().unwrap_or_default();
    let r = progress::cancellable(show_progress, move |sink, cancel| {
        bucket::restore(
            &args.from,
            &to,
            args.run.as_deref(),
            at,
            args.delete_extra,
            sink,
            cancel,
        )
    })
    .await?;
    if g.json {
        output::print_ok_json(&r);
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
