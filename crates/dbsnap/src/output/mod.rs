//! What dbsnap prints: plain text for people, one JSON document on standard
//! output with `--json`. Errors go to standard error (and, with `--json`,
//! as a JSON document on standard output too).

use std::path::Path;

use dbsnap_archive::snapshot::Metadata;
use dbsnap_core::create::CreateResult;
use dbsnap_core::demo::DemoResult;
use dbsnap_core::inspect::{self, ListEntry, Status, VerifyReport};
use dbsnap_core::retention::Removed;
use dbsnap_core::CoreError;
use serde_json::json;
use time::OffsetDateTime;

mod envelope;
mod k8s;
mod restore;

pub use envelope::*;
pub use k8s::*;
pub use restore::*;

/// `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Lines of a table whose columns are as wide as their widest cell (left
/// aligned, two spaces apart, each line indented by two spaces).
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        })
        .collect()
}

/// Prints the result of `create`.
pub fn print_create(r: &CreateResult, json: bool) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        Envelope::ok(r)
            .without(&["warnings"])
            .warnings(&r.warnings)
            .error(
                r.start_hook_failure
                    .as_ref()
                    .map(|f| hook_failed("the snapshot is complete", f)),
            )
            .print();
        return;
    }
    println!("snapshot: {}", r.file.display());
    println!(
        "  size {}, {} database(s), {:.1}s",
        human_bytes(r.size),
        r.databases.len(),
        r.duration_secs
    );
    if let Some(e) = &r.encryption {
        println!("  encrypted (age) for: {}", e.key_for.join(", "));
    }
    let c = &r.consistency;
    let how = match (c.method.as_str(), c.consistent_cut) {
        ("snapshot", true) => format!(
            "identical snapshots in every database after {} attempt(s)",
            c.attempts
        ),
        ("barrier", _) => "write barrier (writers paused while snapshots were taken)".to_string(),
        ("quiesce", _) => "application stopped while snapshots were taken".to_string(),
        _ => "per database only (no cross-database guarantee)".to_string(),
    };
    println!("  consistency: {} — {how}", c.method.as_str());
    let rows: Vec<Vec<String>> = r
        .databases
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                format!(
                    "PostgreSQL {}",
                    d.server_version.split_whitespace().next().unwrap_or("")
                ),
                d.schema_version
                    .as_ref()
                    .map(|v| format!("schema {v} ({})", d.schema_tool.as_deref().unwrap_or("")))
                    .unwrap_or("schema -".into()),
                human_bytes(d.bytes),
            ]
        })
        .collect();
    for line in table(&rows) {
        println!("  {line}");
    }
}

/// Prints `list`.
pub fn print_list(dir: &Path, rows: &[ListEntry], json: bool) {
    if json {
        Envelope::ok(&json!({ "dir": dir, "snapshots": rows })).print();
        return;
    }
    if rows.is_empty() {
        println!("no snapshots in {}", dir.display());
        return;
    }
    for line in list_lines(rows, OffsetDateTime::now_utc()) {
        println!("{line}");
    }
}

/// `list`'s text table, ages counted back from `now`.
pub(crate) fn list_lines(rows: &[ListEntry], now: OffsetDateTime) -> Vec<String> {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    let mut lines = vec![format!(
        "{:>3}  {:<width$}  {:<20}  {:>8}  {:>10}  {:<11}  databases (versions)",
        "#", "file", "created (UTC)", "age", "size", "consistency"
    )];
    for (i, r) in rows.iter().enumerate() {
        let created = r.created_at.as_deref().and_then(inspect::parse_time);
        let consistency = match (r.consistency.as_deref(), r.consistent_cut) {
            (Some(m), Some(false)) if m != "none" => format!("{m}!"),
            (Some(m), _) => m.to_string(),
            _ => "-".into(),
        };
        lines.push(format!(
            "{:>3}  {:<width$}  {:<20}  {:>8}  {:>10}  {:<11}  {}",
            i + 1,
            r.name,
            created.map(utc_seconds).unwrap_or_else(|| "-".into()),
            created.map(|t| age(t, now)).unwrap_or_else(|| "-".into()),
            human_bytes(r.size),
            consistency,
            list_details(r)
        ));
    }
    let unusable = rows.iter().filter(|r| r.status != Status::Ok).count();
    if unusable > 0 {
        lines.push(format!(
            "{unusable} file(s) marked !! cannot be restored; `dbsnap verify FILE` checks one in full"
        ));
    }
    lines
}

/// The last column of a `list` row: databases and versions, a safety
/// snapshot's mark, or why the file cannot be used.
fn list_details(r: &ListEntry) -> String {
    if r.status != Status::Ok {
        let what = match r.status {
            Status::Truncated => "TRUNCATED",
            Status::NotSnapshot => "NOT A SNAPSHOT",
            Status::Unsupported => "UNSUPPORTED FORMAT",
            Status::Unreadable => "UNREADABLE",
            Status::Corrupt | Status::Ok => "DAMAGED",
        };
        let why = r
            .error
            .as_deref()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("");
        let why = why.strip_prefix(&format!("{}: ", r.path)).unwrap_or(why);
        return format!("!! {what}: {why}");
    }
    let dbs = r
        .databases
        .iter()
        .zip(&r.versions)
        .map(|(d, v)| format!("{d} ({v})"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = match &r.safety_for {
        Some(run) => format!("{dbs}  [safety snapshot, restore {run}]"),
        None => dbs,
    };
    if r.encrypted {
        line.push_str("  [encrypted]");
    }
    if r.pinned {
        line.push_str("  [pinned]");
    }
    if let Some(d) = &r.drill {
        let day = d.drilled_at.get(..10).unwrap_or(&d.drilled_at);
        let verdict = if d.passed { "passed" } else { "FAILED" };
        line.push_str(&format!("  [drill {verdict} {day}"));
        if let Some(then) = d.passed_at.as_deref().filter(|_| !d.passed) {
            line.push_str(&format!(", passed {}", then.get(..10).unwrap_or(then)));
        }
        line.push(']');
    }
    line
}

/// `2026-11-22 10:15:00Z`: UTC, to the second.
pub fn utc_seconds(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default()
}

/// How long before `now` `t` was: `45s ago`, `12m ago`, `3h ago`, `2d ago`.
pub fn age(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - t).whole_seconds();
    match secs {
        s if s < -60 => "future".into(),
        s if s < 60 => format!("{}s ago", s.max(0)),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// Prints `extract-version`.
pub fn print_versions(path: &dbsnap_core::SnapshotRef, m: &Metadata, json: bool) {
    if json {
        let dbs: Vec<_> = m
            .databases
            .iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "version": d.schema_version.as_ref().map(|v| v.display()),
                    "tool": d.schema_version.as_ref().map(|v| v.tool.clone()),
                    "dirty": d.schema_version.as_ref().map(|v| v.dirty),
                    "schema_version": d.schema_version,
                })
            })
            .collect();
        Envelope::ok(&json!({
            "file": path, "version": m.version_token(), "created_at": m.created_at,
            "format_version": m.format_version, "databases": dbs,
        }))
        .print();
        return;
    }
    for d in &m.databases {
        match &d.schema_version {
            Some(v) => println!("{}\t{}\t{}", d.name, v.display(), v.tool),
            None => println!("{}\t-\t-", d.name),
        }
    }
}

/// Prints `verify`.
pub fn print_verify(r: &VerifyReport, json: bool) {
    // A failed verification reads like every other command's error: the
    // file and what is wrong with it, then what to do.
    let failure = (!r.ok).then(|| {
        let file = r.file.display().to_string();
        let error = r
            .error
            .as_deref()
            .unwrap_or("the snapshot failed verification");
        // Most errors already start with the file.
        let error = error.strip_prefix(&format!("{file}: ")).unwrap_or(error);
        format!("{file}: {error}")
    });
    if json {
        let failed = failure.map(|message| {
            let mut doc = ErrorDoc::new("verify", dbsnap_core::error::exit::VERIFY, message);
            doc.hint = Some(crate::hints::DAMAGED.into());
            doc
        });
        Envelope::ok(r)
            .without(&["ok", "error"])
            .error(failed)
            .print();
        return;
    }
    if r.ok {
        println!("verified: {}", r.file.display());
    }
    for m in &r.members {
        let extra = match (m.toc_entries, m.data_blocks) {
            (Some(t), Some(d)) => format!(
                "  pg_dump archive {}, {t} entries, {d} data blocks",
                m.archive_version.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        let line = format!(
            "  ok  {:<32} {:>10}  sha256 {}…{extra}",
            m.name,
            human_bytes(m.size),
            &m.sha256[..16]
        );
        // The members that passed before a failure lead up to it.
        if r.ok {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if let Some(message) = failure {
        eprintln!("FAILED: {message}\nhint: {}", crate::hints::DAMAGED);
    }
    if r.encrypted && !r.contents_checked {
        println!("encrypted: checksums checked; pass --identity (or set DBSNAP_PASSPHRASE) to read the dumps inside too");
    } else if r.encrypted && r.ok {
        println!("encrypted: decrypted with the key given and every dump read");
    }
}

/// Prints the demo's story.
pub fn print_demo(r: &DemoResult, json: bool) {
    if json {
        let damaged = (!r.verify.ok).then(|| {
            ErrorDoc::new(
                "verify",
                dbsnap_core::error::exit::VERIFY,
                "the demo's snapshot failed verification",
            )
        });
        Envelope::ok(r).error(damaged).print();
        return;
    }
    println!("dbsnap demo");
    println!(
        "  started a throwaway PostgreSQL ({}) in {}",
        r.server_bin.display(),
        r.dir.display()
    );
    println!("  sample platform: {}", r.databases.join(", "));
    println!();
    print_create(&r.create, false);
    println!();
    print_list(&r.dir.join("snapshots"), &r.list, false);
    println!();
    print_verify(&r.verify, false);
    println!();
    if r.kept {
        println!("kept: server running, files in {}", r.dir.display());
        if let Some(s) = &r.try_command {
            println!("snapshot it again with: {s}");
        }
        if let Some(s) = &r.psql_command {
            println!("change its data with: {s}");
        }
        if let Some(s) = &r.stop_command {
            println!("stop the server with: {s}");
        }
        println!(
            "restore a member with stock tools: tar xf {} && pg_restore -l app-core.dump",
            r.create.file.display()
        );
    } else {
        println!("cleaned up (run `dbsnap demo --keep` to keep the server and the snapshot)");
    }
}

/// Prints a JSON value with `"ok": true`, or runs `text` for people.
pub fn print_value(v: &serde_json::Value, json: bool, text: impl FnOnce()) {
    if json {
        Envelope::ok(v).print();
    } else {
        text();
    }
}

/// [`print_value`] for a command with `--dry-run`: the JSON says whether
/// anything was changed (`"dry_run": true` means nothing was).
pub fn print_dry_run_value(v: &serde_json::Value, dry_run: bool, json: bool, text: impl FnOnce()) {
    if json {
        Envelope::ok(v).dry_run(dry_run).print();
    } else {
        text();
    }
}

/// `1 table`, `3 tables`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `1 object`, `3 objects`.
pub fn count_of(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entry(name: &str, created: &str) -> ListEntry {
        ListEntry {
            created_at: Some(created.into()),
            databases: vec!["app".into()],
            versions: vec!["3".into()],
            consistency: Some("snapshot".into()),
            consistent_cut: Some(true),
            ..ListEntry::new(name, format!("/repo/{name}"), 2048)
        }
    }

    #[test]
    fn ages_count_back_from_now() {
        let now = datetime!(2026-11-22 13:15:00 UTC);
        let cases = [
            (datetime!(2026-11-22 13:14:15 UTC), "45s ago"),
            (datetime!(2026-11-22 13:03:00 UTC), "12m ago"),
            (datetime!(2026-11-22 10:15:00 UTC), "3h ago"),
            (datetime!(2026-11-20 09:00:00 UTC), "2d ago"),
            (datetime!(2026-11-22 13:15:30 UTC), "0s ago"),
            (datetime!(2026-11-23 13:15:00 UTC), "future"),
        ];
        for (t, want) in cases {
            assert_eq!(age(t, now), want, "{t}");
        }
    }

    #[test]
    fn list_rows_show_seconds_age_and_flag_what_cannot_be_used() {
        let now = datetime!(2026-11-22 13:15:01 UTC);
        let good = entry(
            "db-snapshot-3-20261122T101500Z.tar",
            "2026-11-22T10:15:00.123456789Z",
        );
        let mut safety = entry("safety-3-20261122T120000Z.tar", "2026-11-22T12:00:00Z");
        safety.safety = true;
        safety.safety_for = Some("20261122T120000Z-1".into());
        let mut cut = entry("half.tar", "2026-11-20T10:15:00+02:00");
        cut.status = Status::Truncated;
        cut.error = Some(
            "/repo/half.tar: snapshot is truncated: no manifest.json at the end of the file".into(),
        );
        let lines = list_lines(&[good, safety, cut], now);
        assert!(
            lines[1].contains("2026-11-22 10:15:00Z") && lines[1].contains("3h ago"),
            "{}",
            lines[1]
        );
        assert!(!lines[1].contains(".123"), "{}", lines[1]);
        assert!(
            lines[2].contains("[safety snapshot, restore 20261122T120000Z-1]"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("2026-11-20 08:15:00Z") && lines[3].contains("2d ago"),
            "{}",
            lines[3]
        );
        assert!(
            lines[3].contains("!! TRUNCATED: snapshot is truncated"),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains("cannot be restored"), "{}", lines[4]);
        // Columns line up whatever the name lengths.
        let col = lines[0].find("created").unwrap();
        assert!(
            lines[1..4].iter().all(|l| l[col..].starts_with("2026-")),
            "{lines:#?}"
        );
    }
}
