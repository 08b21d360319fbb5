//! Removing snapshots: `delete` (confirmation on a terminal, `--yes`
//! otherwise, `--dry-run`), safety snapshots marked in `list` and kept to
//! the newest `keep_safety_snapshots` by `cleanup`; and a repository that
//! does not exist is an error naming it, for the interactive pick too.
//! No server needed: the snapshots are written with the archive writer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, run_json, Home};
use dbsnap_archive::snapshot::{Metadata, SnapshotWriter};

/// Writes a well-formed snapshot (no databases) taken at `created_at`.
fn write_snapshot(dir: &Path, name: &str, created_at: &str, safety_for: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let meta: Metadata = serde_json::from_value(serde_json::json!({
        "format_version": "1.0", "tool_version": "0", "created_at": created_at,
        "target": null, "prefix": "p", "safety_for": safety_for,
        "consistency": {"method": "none", "consistent_cut": false, "attempts": 1},
        "databases": []
    }))
    .unwrap();
    let path = dir.join(name);
    let w = SnapshotWriter::new(std::fs::File::create(&path).unwrap(), &meta, 0).unwrap();
    w.finish().unwrap();
    path
}

/// Runs `cmd` on a pseudo-terminal, types `answer` once `prompt` shows (or
/// the command ended); returns the exit code and everything it showed.
fn on_terminal(cmd: &mut Command, prompt: &str, answer: &str) -> (i32, String) {
    let mut cmd = std::mem::replace(cmd, Command::new("true"));
    cmd.stdin(Stdio::null());
    let mut pty = common::pty::Pty::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pty.text().contains(prompt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pty.send(answer);
    pty.wait()
}

#[test]
fn delete_asks_on_a_terminal_needs_yes_otherwise_and_has_a_dry_run() {
    let home = Home::new();
    let dir = home.snapshots();
    let snap = write_snapshot(&dir, "a.tar", "2026-11-20T10:00:00Z", None);
    // No terminal, no --yes: refused with exit 15, the file stays.
    let (code, v, err) = run_json(home.dbsnap().args(["delete", "a.tar"]));
    assert_eq!(code, 15, "{err}");
    assert_eq!(v["error"]["kind"], "not_confirmed");
    assert!(err.contains("--yes"), "{err}");
    assert!(snap.exists());
    // --dry-run: says what would go, nothing changes.
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["delete", "--file", "a.tar", "--dry-run"]),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["name"], "a.tar");
    assert!(snap.exists());
    // On a terminal: "n" keeps it (exit 15), "y" deletes it.
    let (code, out) = on_terminal(
        home.dbsnap().args(["delete", "a.tar"]),
        "Delete snapshot",
        "n\r",
    );
    assert_eq!(code, 15, "{out}");
    assert!(out.contains("a.tar"), "{out}");
    assert!(snap.exists());
    let (code, out) = on_terminal(
        home.dbsnap().args(["delete", "a.tar"]),
        "Delete snapshot",
        "y\r",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deleted:"), "{out}");
    assert!(!snap.exists());
    // Gone, or not a snapshot: refused, nothing removed.
    let (code, _, err) = run(home.dbsnap().args(["delete", "a.tar", "--yes"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not found"), "{err}");
    std::fs::write(dir.join("notes.tar"), "not a snapshot\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not a snapshot\n").unwrap();
    for f in ["notes.tar", "notes.txt"] {
        let (code, v, err) = run_json(home.dbsnap().args(["delete", "--yes"]).arg(dir.join(f)));
        assert_eq!(code, 10, "{f}: {err}");
        assert_eq!(v["error"]["kind"], "not_snapshot", "{f}");
        assert!(dir.join(f).exists());
    }
    // A damaged snapshot can be deleted.
    let full = std::fs::read(write_snapshot(&dir, "b.tar", "2026-11-21T10:00:00Z", None)).unwrap();
    std::fs::write(dir.join("b.tar"), &full[..full.len() - 700]).unwrap();
    let (code, _, err) = run(home.dbsnap().args(["delete", "b.tar", "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert!(!dir.join("b.tar").exists());
}

#[test]
fn safety_snapshots_are_marked_and_cleanup_keeps_the_newest() {
    let home = Home::new();
    let dir = home.path().join("repo");
    write_snapshot(&dir, "app.tar", "2026-11-19T10:00:00Z", None);
    for day in 20..=24 {
        write_snapshot(
            &dir,
            &format!("safety-{day}.tar"),
            &format!("2026-11-{day}T10:00:00Z"),
            Some(&format!("run-{day}")),
        );
    }
    std::fs::write(
        home.path().join("dbsnap.toml"),
        "keep_safety_snapshots = 2\n",
    )
    .unwrap();
    let (code, v, err) = run_json(home.dbsnap().args(["list", "--dir"]).arg(&dir));
    assert_eq!(code, 0, "{err}");
    let rows = v["snapshots"].as_array().unwrap();
    let row = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!(row("safety-20.tar")["safety"], true);
    assert_eq!(row("safety-20.tar")["safety_for"], "run-20");
    assert_eq!(row("app.tar")["safety"], false);
    let (_, out, _) = run(home.dbsnap().args(["list", "--dir"]).arg(&dir));
    let line = |n: &str| out.lines().find(|l| l.contains(n)).unwrap().to_string();
    assert!(
        line("safety-20.tar").contains("[safety snapshot, restore run-20]"),
        "{out}"
    );
    assert!(!line("app.tar").contains("safety"), "{out}");

    let present = || {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let all = present();
    // Without --yes, and with --dry-run: what would go, nothing removed.
    for extra in [&[][..], &["--yes", "--dry-run"][..]] {
        let (code, v, err) = run_json(
            home.dbsnap()
                .args(["cleanup", "--dir"])
                .arg(&dir)
                .args(extra),
        );
        assert_eq!(code, 0, "{err}");
        let names: Vec<&str> = v["safety_snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["safety-22.tar", "safety-21.tar", "safety-20.tar"],
            "{v}"
        );
        assert_eq!(present(), all);
    }
    let (code, out, err) = run(home.dbsnap().args(["cleanup", "--yes", "--dir"]).arg(&dir));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed:") && out.contains("safety-20.tar"),
        "{out}"
    );
    assert_eq!(present(), ["app.tar", "safety-23.tar", "safety-24.tar"]);
}

#[test]
fn a_missing_repository_is_an_error_naming_it() {
    let home = Home::new();
    let typo = home.path().join("snapshts");
    // cleanup with a named repository that does not exist.
    let (code, v, err) = run_json(home.dbsnap().args(["cleanup", "--dir"]).arg(&typo));
    assert_eq!(code, 2, "{err}");
    assert!(common::error_text(&v).contains(typo.to_str().unwrap()));
    // A fresh install: the default repository does not exist yet; list and
    // cleanup say there is nothing, not an error.
    let (code, out, err) = run(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no snapshots"), "{out}");
    let (code, _, err) = run(home.dbsnap().arg("cleanup"));
    assert_eq!(code, 0, "{err}");
    // The interactive pick of restore, on a terminal.
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--no-progress", "--dir"]).arg(&typo);
    let (code, out) = on_terminal(&mut cmd, "error", "");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(typo.to_str().unwrap()) && out.contains("does not exist"),
        "{out}"
    );
}
