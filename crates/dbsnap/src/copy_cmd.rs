//! `copy`: snapshots from one repository to another.

use std::path::PathBuf;

use clap::Args;
use dbsnap_core::config::Config;
use dbsnap_core::copy::{self, CopyReport};
use dbsnap_core::error::exit;
use dbsnap_core::CoreError;

use crate::cli::GlobalArgs;
use crate::location::{in_flag_words, Named};
use crate::{output, progress};
use dbsnap_core::copy::CopyStatus;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source repository: a directory or s3://BUCKET/PREFIX (default: --dir/--repo, else `dir`/`repo` in the config, else $DBSNAP_HOME/snapshots).
    #[arg(long, value_name = "REPO")]
    pub from: Option<PathBuf>,
    /// Destination repository: a directory (made if missing) or s3://BUCKET/PREFIX.
    #[arg(long, value_name = "REPO")]
    pub to: PathBuf,
    /// Snapshots to copy (names as `dbsnap list` shows them, `.tar` optional); default: all.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// `dbsnap copy`.
pub async fn copy(
    args: CopyArgs,
    g: &GlobalArgs,
    config: &Config,
    show_progress: bool,
) -> Result<u8, CoreError> {
    let from = dbsnap_core::settings::copy_source(args.from.as_ref(), g.dir.as_ref(), config);
    // A source from --dir or the config keeps the storage's own hints.
    let (given_from, given_to) = (
        args.from.as_ref().map(|f| f.to_string_lossy().into_owned()),
        args.to.to_string_lossy().into_owned(),
    );
    let mut named = vec![Named::to(&given_to, "the repository to copy to")];
    named.extend(
        given_from
            .as_deref()
            .map(|f| Named::from(f, "the repository to copy from")),
    );
    let from = g.locations.open(&from);
    let to = g.locations.open(&args.to);
    let report = progress::cancellable(show_progress, move |sink, cancel| {
        copy::copy(&from, &to, &args.names, &*sink, &cancel)
    })
    .await
    .map_err(|e| in_flag_words(e, &named))?;
    print(&report, g.json);
    Ok(report.failure_code().unwrap_or(exit::OK))
}

fn print(r: &CopyReport, as_json: bool) {
    let failed: Vec<_> = r
        .snapshots
        .iter()
        .filter(|s| s.status == CopyStatus::Failed)
        .collect();
    if as_json {
        let failure = failed.first().map(|f| {
            output::ErrorDoc::new(
                f.kind.unwrap_or("internal"),
                f.code,
                format!(
                    "{} of {} snapshot(s) could not be copied; first: {}: {}",
                    failed.len(),
                    r.snapshots.len(),
                    f.name,
                    f.error.as_deref().unwrap_or("")
                ),
            )
        });
        output::Envelope::ok(r).error(failure).print();
        return;
    }
    for s in &r.snapshots {
        let pinned = if s.pinned {
            "; pinned, as at the source"
        } else {
            ""
        };
        match s.status {
            CopyStatus::Copied => println!(
                "copied   {}  ({}, {:.1}s, checked on arrival{pinned})",
                s.name,
                output::human_bytes(s.size),
                s.seconds
            ),
            CopyStatus::Present => println!(
                "present  {}  (already there: same size and manifest; `dbsnap verify` checks it in full{pinned})",
                s.name
            ),
            _ => eprintln!(
                "FAILED   {}: {}",
                s.name,
                s.error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
    let copied = r
        .snapshots
        .iter()
        .filter(|s| s.status == CopyStatus::Copied)
        .count();
    let present = r
        .snapshots
        .iter()
        .filter(|s| s.status == CopyStatus::Present)
        .count();
    let pinned = match r.snapshots.iter().filter(|s| s.pinned).count() {
        0 => String::new(),
        n => format!(" ({n} pinned there, as at the source)"),
    };
    println!(
        "{copied} copied ({}), {present} already present, {} failed{pinned}: {} -> {}",
        output::human_bytes(r.bytes),
        failed.len(),
        r.from,
        r.to
    );
}
