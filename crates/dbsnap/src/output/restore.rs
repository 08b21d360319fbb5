//! What the restore family prints: the plan, the result, and cleanup's
//! list of what restores and killed runs left.

use super::*;

/// Prints `cleanup`: kept databases, old safety snapshots and what killed
/// runs left, dropped and removed when `changed`, else what `--yes` would
/// do; then, for each server it could not clean up, a warning with what
/// to do, and an error saying what was done and what was not.
pub fn print_cleanup(
    c: &dbsnap_core::restore::recover::Cleanup,
    safety: &[Removed],
    changed: bool,
    dry_run: bool,
    json: bool,
) {
    let incomplete = cleanup_incomplete(c, safety, changed);
    for f in &c.failed {
        let not = if changed { "dropped" } else { "listed" };
        eprintln!(
            "warning: could not clean up server {}: its kept databases were not {not}:\n  {}\n  to finish: {}",
            f.server,
            f.error.replace('\n', "\n  "),
            f.hint
        );
    }
    if json {
        let failed = match (&incomplete, c.failed.first()) {
            (Some(message), Some(first)) => {
                Some(ErrorDoc::new(first.kind, first.exit_code, message.clone()))
            }
            _ => None,
        };
        Envelope::ok(&json!({
            "kept_copies": c.kept, "safety_snapshots": safety, "leftovers": c.leftovers,
            "failed_servers": c.failed,
        }))
        .dry_run(dry_run)
        .error(failed)
        .print();
    } else {
        print_cleanup_text(c, safety, changed, dry_run);
    }
    if let Some(message) = incomplete {
        eprintln!("error: {message}");
    }
}

pub(super) fn print_cleanup_text(
    c: &dbsnap_core::restore::recover::Cleanup,
    safety: &[Removed],
    changed: bool,
    dry_run: bool,
) {
    let (drop, remove, leftover) = match (changed, dry_run) {
        (true, _) => ("dropped", "removed", "removed"),
        (false, true) => ("would drop", "would remove", "would remove"),
        (false, false) => ("kept", "old safety snapshot", "left by a killed run"),
    };
    match (c.kept.is_empty(), c.failed.is_empty()) {
        (true, true) => println!("no kept databases"),
        (true, false) => println!("no kept databases on the servers reached"),
        _ => {}
    }
    for k in &c.kept {
        println!(
            "{drop}: {} on {} ({})",
            k.name,
            k.server,
            human_bytes(k.bytes.max(0) as u64)
        );
    }
    for s in safety {
        println!("{remove}: {} ({})", s.path, human_bytes(s.size));
    }
    for l in &c.leftovers {
        println!("{leftover}: {l}");
    }
    let any = !c.kept.is_empty() || !safety.is_empty() || !c.leftovers.is_empty();
    if dry_run {
        println!("dry run: nothing was changed");
    } else if !changed && any {
        println!("pass --yes to drop and remove them");
    }
}

/// When a server could not be cleaned up: what was done, and which
/// servers were not.
pub(super) fn cleanup_incomplete(
    c: &dbsnap_core::restore::recover::Cleanup,
    safety: &[Removed],
    changed: bool,
) -> Option<String> {
    if c.failed.is_empty() {
        return None;
    }
    let done = if changed {
        let mut done = vec![format!("dropped {}", plural(c.kept.len(), "kept database"))];
        if !safety.is_empty() {
            done.push(format!(
                "removed {}",
                plural(safety.len(), "old safety snapshot")
            ));
        }
        if !c.leftovers.is_empty() {
            done.push(format!(
                "removed {}",
                plural(c.leftovers.len(), "leftover file")
            ));
        }
        done.join(", ")
    } else {
        format!("listed {}", plural(c.kept.len(), "kept database"))
    };
    let servers: Vec<&str> = c.failed.iter().map(|f| f.server.as_str()).collect();
    Some(format!(
        "cleanup incomplete: {done}; not cleaned up: server {} (see the warning{} above)",
        servers.join(", server "),
        if servers.len() == 1 { "" } else { "s" }
    ))
}

/// Prints a restore plan.
pub fn print_plan(p: &dbsnap_core::restore::Plan, json: bool, dry_run: bool) {
    if json {
        Envelope::ok(p)
            .without(&["warnings"])
            .warnings(&p.warnings)
            .dry_run(dry_run)
            .print();
        return;
    }
    // A dry run's plan is its output (`> plan.txt`); before a confirmation
    // it goes to the terminal with the question.
    let mut out: Box<dyn std::io::Write> = if dry_run {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::stderr())
    };
    let out = &mut out;
    let taken = inspect::parse_time(&p.metadata.created_at).map_or_else(
        || p.metadata.created_at.clone(),
        |t| format!("{} ({})", utc_seconds(t), age(t, OffsetDateTime::now_utc())),
    );
    let _ = writeln!(out, "restore plan for {}", p.file.display());
    let _ = writeln!(
        out,
        "  snapshot taken {taken}, consistency: {}",
        p.metadata.consistency.method.as_str()
    );
    for line in table(&plan_rows(p)) {
        let _ = writeln!(out, "{line}");
    }
    for d in &p.databases {
        let _ = writeln!(out, "  {}: {}", d.live_db, d.reason);
    }
    for m in &p.origin.moves {
        let _ = writeln!(
            out,
            "  {} moves from {} to {} (created there as {})",
            m.snapshot_db, m.from, m.to, m.live_db
        );
    }
    for d in &p.origin.differences {
        let _ = writeln!(out, "  another origin: {d}");
    }
    if !p.origin.differences.is_empty() {
        let _ = writeln!(
            out,
            "  {}",
            if p.origin.allowed {
                "restoring into another origin was allowed (--into-other-origin)"
            } else {
                "a restore into another origin needs --into-other-origin (or a confirmation on a terminal)"
            }
        );
    }
    for u in &p.origin.unchecked {
        let _ = writeln!(out, "  note: {u}");
    }
    match (&p.stop_cmd, &p.start_cmd) {
        (Some(_), _) if p.app_stop.is_some() => {
            let _ = writeln!(out, "  {}", p.app_stop.as_deref().unwrap_or_default());
        }
        (Some(stop), start) => {
            let _ = writeln!(
                out,
                "  the app is stopped first (`{stop}`) and started again after (`{}`)",
                start.as_deref().unwrap_or("no start command!")
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  no stop command: the application keeps running (data-only waits for its table locks, \
                 a replacement ends its sessions); --stop-cmd/--start-cmd stop and start it"
            );
        }
    }
    match &p.commit {
        dbsnap_core::restore::Commit::Single => {}
        dbsnap_core::restore::Commit::TwoPhase => {
            let _ = writeln!(
                out,
                "  the databases commit together: each is prepared first (two-phase commit), then all commit"
            );
        }
        dbsnap_core::restore::Commit::OneAfterAnother { reason } => {
            let _ = writeln!(
                out,
                "  the databases commit one after the other ({reason}): a failure between two commits leaves the ones before restored"
            );
        }
    }
    if p.safety_snapshot {
        let _ = writeln!(out, "  {}, into {}", safety_line(p), p.safety_repo);
    } else {
        let _ = writeln!(out, "  {}", safety_line(p));
    }
    for w in &p.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    if dry_run {
        let _ = writeln!(out, "dry run: nothing was changed");
    }
}

/// The plan's table: a header, then one row per database.
pub(super) fn plan_rows(p: &dbsnap_core::restore::Plan) -> Vec<Vec<String>> {
    let header = [
        "snapshot db",
        "restored into",
        "live version",
        "snapshot version",
        "action",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for d in &p.databases {
        rows.push(vec![
            d.snapshot_db.clone(),
            d.server.clone(),
            d.live_version
                .clone()
                .unwrap_or_else(|| if d.exists { "-" } else { "(missing)" }.into()),
            d.snapshot_version.clone().unwrap_or_else(|| "-".into()),
            d.action.describe().into(),
        ]);
    }
    rows
}

/// Whether (and why not) a safety snapshot is taken, as the plan says it.
pub(super) fn safety_line(p: &dbsnap_core::restore::Plan) -> &'static str {
    if p.safety_snapshot {
        "a safety snapshot of the live databases that change is taken first"
    } else if p.changes_existing() {
        "no safety snapshot (--no-safety-snapshot)"
    } else {
        "no safety snapshot: no database that exists now is changed"
    }
}

/// Prints the result of a restore, with the old safety snapshots it removed.
pub fn print_restore(r: &dbsnap_core::restore::RestoreResult, json: bool) {
    let pruned = &r.removed_safety_snapshots;
    if json {
        Envelope::ok(r)
            .field("removed_safety_snapshots", json!(pruned))
            .error(
                r.start_hook_failure
                    .as_ref()
                    .map(|f| hook_failed("the restore is complete", f)),
            )
            .print();
        return;
    }
    if let Some(s) = &r.safety_snapshot {
        println!("safety snapshot: {}", s.display());
    }
    for p in pruned {
        println!("removed old safety snapshot: {}", p.path);
    }
    for d in &r.databases {
        print!(
            "restored {}: {}, {:.1}s",
            d.database,
            d.action.describe(),
            d.seconds
        );
        if let Some(k) = &d.kept_as {
            print!("; previous database kept as {k} (dbsnap rollback / dbsnap cleanup)");
        }
        println!();
        if let Some(rep) = &d.data_only {
            println!(
                "  {} ({} rows), {}, {}; row counts match the snapshot",
                plural(rep.tables.len(), "table"),
                rep.tables.iter().map(|t| t.restored_rows).sum::<u64>(),
                plural(rep.sequences, "sequence"),
                plural(rep.large_objects, "large object")
            );
        } else if d.row_counts > 0 {
            println!(
                "  row counts of {} match the snapshot",
                plural(d.row_counts, "table")
            );
        }
        for i in &d.ignored {
            println!("  ignored (version-specific): {i}");
        }
    }
    if r.sessions_terminated > 0 {
        println!(
            "ended {} other session(s) on replaced databases",
            r.sessions_terminated
        );
    }
    println!("done in {:.1}s (run {})", r.duration_secs, r.id);
}

/// What `drill` did: the verdict per database, the scratch databases
/// dropped, whether the verdict was recorded.
pub fn print_drill(r: &dbsnap_core::drill::DrillReport, json: bool) {
    if json {
        Envelope::ok(r).print();
        return;
    }
    for name in &r.dropped_leftovers {
        println!("dropped scratch database {name}, left by a drill killed before its end");
    }
    for d in &r.record.databases {
        println!(
            "restored {} into {} on {}: {} ({} rows), {:.1}s; row counts match the snapshot",
            d.database,
            d.scratch,
            d.server,
            plural(d.tables, "table"),
            d.rows,
            d.seconds
        );
    }
    if r.record.checks > 0 {
        println!(
            "{} returned true in every database",
            plural(r.record.checks, "check")
        );
    }
    println!(
        "drill passed: {} in {:.1}s; scratch databases dropped",
        r.file.display(),
        r.record.seconds,
    );
    if r.recorded {
        println!("recorded beside the snapshot (`dbsnap list` shows it)");
    } else {
        println!("the verdict could not be recorded beside the snapshot (see the warning above)");
    }
}
