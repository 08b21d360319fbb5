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

/// The one shape of every command's `--json` document (docs/SCRIPTING.md):
/// `ok`; `dry_run` for commands that have it; the warnings the run logged;
/// the command's `result`; on failure `error` (and the run's `log`).
#[derive(Debug, serde::Serialize)]
pub struct Envelope {
    /// Whether the command did what it was asked (its exit code is 0).
    pub ok: bool,
    /// With `--dry-run`: true (nothing was changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Warnings the run logged, in order.
    pub warnings: Vec<String>,
    /// What the command produced (also on some failures: a partial copy,
    /// a verification report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDoc>,
    /// The run's log file, on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<std::path::PathBuf>,
}

/// A failure in `--json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorDoc {
    /// The error's kind (the exit code's name, e.g. `usage`, `verify`).
    pub kind: String,
    /// The exit code.
    pub exit_code: u8,
    /// What went wrong.
    pub message: String,
    /// What to do about it, when dbsnap knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ErrorDoc {
    /// `e` as a JSON error: its message and hint apart.
    pub fn of(e: &CoreError) -> ErrorDoc {
        let mut doc = Self::from_text(e.kind_name(), e.exit_code(), &e.to_string());
        if doc.hint.is_none() {
            doc.hint = crate::hints::for_error(e);
        }
        doc
    }

    /// An error from its words (`message\nhint: hint`).
    pub fn from_text(kind: &str, exit_code: u8, text: &str) -> ErrorDoc {
        let (message, hint) = match text.split_once("\nhint: ") {
            Some((m, h)) => (m.to_string(), Some(h.to_string())),
            None => (text.to_string(), None),
        };
        ErrorDoc {
            kind: kind.to_string(),
            exit_code,
            message,
            hint,
        }
    }
}

impl Envelope {
    /// A run that did what it was asked, and what it produced. A result
    /// that cannot be serialized is an internal error, never an empty
    /// success.
    pub fn ok(result: &impl serde::Serialize) -> Envelope {
        match serde_json::to_value(result) {
            Ok(v) => Envelope {
                result: Some(v),
                ..Envelope::done()
            },
            Err(e) => Envelope::failed(ErrorDoc::from_text(
                "internal",
                dbsnap_core::error::exit::INTERNAL,
                &format!("internal: the result cannot be written as JSON: {e}"),
            )),
        }
    }

    /// A run that did what it was asked and has nothing to show.
    pub fn done() -> Envelope {
        Envelope {
            ok: true,
            dry_run: None,
            warnings: Vec::new(),
            result: None,
            error: None,
            log: None,
        }
    }

    /// A run that failed.
    pub fn failed(error: ErrorDoc) -> Envelope {
        Envelope::done().error(Some(error))
    }

    /// With a failure beside the result (a copy where one snapshot
    /// failed, a verification that found damage): `ok` is false.
    pub fn error(mut self, error: Option<ErrorDoc>) -> Envelope {
        if let Some(e) = error {
            self.ok = false;
            self.error = Some(e);
        }
        self
    }

    /// Whether the run was a dry run (nothing was changed).
    pub fn dry_run(mut self, dry_run: bool) -> Envelope {
        self.dry_run = Some(dry_run);
        self
    }

    /// Warnings the result carries (said before those only logged).
    pub fn warnings(mut self, warnings: &[String]) -> Envelope {
        self.warnings.extend(warnings.iter().cloned());
        self
    }

    /// The run's log file.
    pub fn log(mut self, log: Option<&Path>) -> Envelope {
        self.log = log.map(Path::to_path_buf);
        self
    }

    /// Takes a field out of the result that the envelope says instead (a
    /// report's `ok`, `dry_run` or `warnings`, a verdict's `error` text).
    pub fn without(mut self, fields: &[&str]) -> Envelope {
        if let Some(o) = self.result.as_mut().and_then(|r| r.as_object_mut()) {
            for f in fields {
                o.remove(*f);
            }
        }
        self
    }

    /// Adds a field to the result, beside what the command produced.
    pub fn field(mut self, key: &str, value: serde_json::Value) -> Envelope {
        if let Some(o) = self.result.as_mut().and_then(|r| r.as_object_mut()) {
            o.insert(key.to_string(), value);
        }
        self
    }

    /// Prints the document on standard output, with every warning the run
    /// logged (once each) after the result's own.
    pub fn print(mut self) {
        for w in crate::logging::warnings() {
            if !self.warnings.iter().any(|known| w.contains(known.as_str())) {
                self.warnings.push(w);
            }
        }
        match serde_json::to_string_pretty(&self) {
            Ok(text) => println!("{text}"),
            Err(e) => println!(
                "{{\"ok\": false, \"warnings\": [], \"error\": {{\"kind\": \"internal\", \"exit_code\": {}, \"message\": \"internal: the document cannot be written as JSON: {}\"}}}}",
                dbsnap_core::error::exit::INTERNAL,
                e.to_string().replace('"', "'")
            ),
        }
    }
}

impl ErrorDoc {
    /// An error of `kind` (the exit code's name) with its code and message.
    pub fn new(kind: &str, exit_code: u8, message: impl Into<String>) -> ErrorDoc {
        ErrorDoc {
            kind: kind.to_string(),
            exit_code,
            message: message.into(),
            hint: None,
        }
    }
}

/// The error of a run whose work is done but whose start command failed
/// (exit 11): said in `--json` beside the result.
fn hook_failed(done: &str, failure: &str) -> ErrorDoc {
    ErrorDoc::from_text(
        "hook",
        dbsnap_core::error::exit::HOOK,
        &format!("{done}, but the application was not started again: {failure}"),
    )
}

/// Prints an error with its hint.
pub fn print_error(e: &CoreError, json: bool, log: Option<&Path>) {
    eprintln!("error: {e}");
    if let Some(h) = crate::hints::for_error(e) {
        eprintln!("hint: {h}");
    }
    if let Some(l) = log {
        eprintln!("log: {}", l.display());
    }
    if json {
        Envelope::failed(ErrorDoc::of(e)).log(log).print();
    }
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
    if json {
        // A failed verification reads like every other command's error.
        let failed = match &r.error {
            Some(message) => Some(ErrorDoc::new(
                "verify",
                dbsnap_core::error::exit::VERIFY,
                message.clone(),
            )),
            None if !r.ok => Some(ErrorDoc::new(
                "verify",
                dbsnap_core::error::exit::VERIFY,
                "the snapshot failed verification",
            )),
            None => None,
        };
        Envelope::ok(r)
            .without(&["ok", "error"])
            .error(failed)
            .print();
        return;
    }
    if r.ok {
        println!("verified: {}", r.file.display());
        for m in &r.members {
            let extra = match (m.toc_entries, m.data_blocks) {
                (Some(t), Some(d)) => format!(
                    "pg_dump archive {}, {t} entries, {d} data blocks",
                    m.archive_version.as_deref().unwrap_or("")
                ),
                _ => String::new(),
            };
            println!(
                "  ok  {:<32} {:>10}  sha256 {}…  {extra}",
                m.name,
                human_bytes(m.size),
                &m.sha256[..16]
            );
        }
        if r.encrypted && !r.contents_checked {
            println!("encrypted: checksums checked; pass --identity (or set DBSNAP_PASSPHRASE) to read the dumps inside too");
        } else if r.encrypted {
            println!("encrypted: decrypted with the key given and every dump read");
        }
    } else {
        let file = r.file.display().to_string();
        let error = r.error.as_deref().unwrap_or("unknown error");
        // Most errors already start with the file.
        let error = error.strip_prefix(&format!("{file}: ")).unwrap_or(error);
        eprintln!("FAILED: {file}: {error}");
        eprintln!(
            "hint: the file is damaged; use another snapshot (dbsnap list) and take a new one"
        );
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
            "result": c.kept, "safety_snapshots": safety, "leftovers": c.leftovers,
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

fn print_cleanup_text(
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
fn cleanup_incomplete(
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

/// `1 table`, `3 tables`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
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
fn plan_rows(p: &dbsnap_core::restore::Plan) -> Vec<Vec<String>> {
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
fn safety_line(p: &dbsnap_core::restore::Plan) -> &'static str {
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

/// `jump-create`'s result: the pod and the lines that open psql in it.
pub fn print_jump_created(c: &crate::k8s_jump::JumpCreated, json: bool) {
    if json {
        Envelope::ok(c).print();
        return;
    }
    println!(
        "jump pod {} is running in namespace {} (image {}; it ends in {} s, or with {})",
        c.pod, c.namespace, c.image, c.expires_in_seconds, c.jump_delete
    );
    println!("  image: {}", c.image_reason);
    for line in &c.psql {
        println!("  {line}");
    }
}

/// `jump-delete`'s result.
pub fn print_jump_deleted(names: &[String], json: bool) {
    if json {
        Envelope::ok(&json!({ "deleted": names })).print();
    } else if names.is_empty() {
        println!("no jump pods to delete");
    } else {
        for n in names {
            println!("deleted pod {n}");
        }
    }
}

/// `k8s-objects`'s result: the files written.
pub fn print_objects_written(out: &std::path::Path, files: &[std::path::PathBuf], json: bool) {
    if json {
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        Envelope::ok(&json!({ "out": out.display().to_string(), "files": files })).print();
        return;
    }
    for f in files {
        println!("{}", f.display());
    }
    eprintln!(
        "{} written; apply them with: kubectl apply -R -f {}",
        count_of(files.len(), "object"),
        out.display()
    );
}

/// VolumeSnapshots with their readiness.
pub fn print_volume_snapshots(list: &[dbsnap_k8s::volumes::VolumeSnapshot], json: bool) {
    if json {
        Envelope::ok(&json!({ "volume_snapshots": list })).print();
        return;
    }
    if list.is_empty() {
        println!("no VolumeSnapshots");
        return;
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "PVC".into(),
        "READY".into(),
        "SIZE".into(),
        "CREATED".into(),
    ]];
    for s in list {
        rows.push(vec![
            s.name.clone(),
            s.pvc.clone(),
            match (&s.error, s.ready) {
                (Some(e), _) => format!("error: {e}"),
                (None, true) => "yes".into(),
                (None, false) => "no".into(),
            },
            s.restore_size.clone().unwrap_or_default(),
            s.created.clone(),
        ]);
    }
    for line in table(&rows) {
        println!("{line}");
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
