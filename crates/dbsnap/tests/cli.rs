//! The command line itself, without a server: flags that would be ignored
//! are refused, global flags on either side of the command, repository
//! errors, completions and the man page.

mod common;

use common::{run, run_envelope, run_json, Home};
use dbsnap_test_support::free_port;

/// A connection string nobody listens on: a command that got past its
/// argument checks fails with exit 3 instead of 2.
fn nowhere() -> String {
    format!("postgres://postgres:pw@127.0.0.1:{}/app", free_port())
}

#[test]
fn create_refuses_stop_and_start_commands_it_would_not_run() {
    let home = Home::new();
    let marker = home.path().join("stopped");
    let stop = format!("touch {}", marker.display());
    // --stop-cmd/--start-cmd without --consistency quiesce.
    for extra in [
        vec!["--stop-cmd", stop.as_str(), "--start-cmd", "true"],
        vec!["--stop-cmd", stop.as_str()],
        vec!["--stop-cmd", stop.as_str(), "--consistency", "barrier"],
    ] {
        let (code, v, err) = run_json(
            home.dbsnap()
                .args(["create", "-d", &nowhere()])
                .args(&extra),
        );
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert_eq!(v["error"]["kind"], "usage");
        assert!(err.contains("--consistency quiesce"), "{err}");
        assert!(err.contains("hint:"), "{err}");
    }
    // --start-cmd alone, with or without quiesce.
    for extra in [
        vec!["--start-cmd", "true"],
        vec!["--start-cmd", "true", "--consistency", "quiesce"],
    ] {
        let (code, _, err) = run(home
            .dbsnap()
            .args(["create", "-d", &nowhere()])
            .args(&extra));
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(
            err.contains("--start-cmd is given without a stop command"),
            "{err}"
        );
    }
    assert!(!marker.exists(), "a stop command ran");

    // Quiesce from the target: the command-line hooks are accepted (the
    // run then fails only at connecting); a target start_cmd alone is not.
    std::fs::write(
        home.path().join("dbsnap.toml"),
        format!(
            "[targets.q]\ndatabases = [\"{}\"]\nconsistency = \"quiesce\"\n\n[targets.lone]\ndatabases = [\"{}\"]\nconsistency = \"quiesce\"\nstart_cmd = \"true\"\n",
            nowhere(),
            nowhere()
        ),
    )
    .unwrap();
    let (code, _, err) = run(home.dbsnap().args([
        "create",
        "-t",
        "q",
        "--stop-cmd",
        "true",
        "--start-cmd",
        "true",
    ]));
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = run(home.dbsnap().args(["create", "-t", "lone"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the target's start_cmd"), "{err}");
}

#[test]
fn global_flags_go_on_either_side_of_the_command() {
    let home = Home::new();
    let missing = home.path().join("typo-dir");
    let config = home.path().join("my.toml");
    std::fs::write(&config, "").unwrap();
    let flags = [
        "--dir",
        missing.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "-v",
        "--no-progress",
        "--json",
    ];
    let before = [&flags[..], &["list"]].concat();
    let after = [&["list"], &flags[..]].concat();
    for args in [&before[..], &after[..]] {
        let (code, out, err) = run(home.dbsnap().args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
        let msg = &common::error_text(&v);
        assert!(msg.contains(missing.to_str().unwrap()), "{msg}");
        assert!(
            err.contains("info: dbsnap started"),
            "-v had no effect: {err}"
        );
    }
    // A config file named before the command is the one read.
    let (code, _, err) = run(home
        .dbsnap()
        .args(["--config", "/nonexistent.toml", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[test]
fn verify_and_extract_version_take_a_bare_file() {
    let home = Home::new();
    let missing = home.path().join("gone.tar");
    for cmd in ["verify", "extract-version"] {
        for args in [
            vec![cmd, missing.to_str().unwrap()],
            vec![cmd, "--file", missing.to_str().unwrap()],
            vec!["--json", cmd, missing.to_str().unwrap()],
        ] {
            let (code, _, err) = run(home.dbsnap().args(&args));
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(
                err.contains("not found") && err.contains("gone.tar"),
                "{args:?}: {err}"
            );
        }
        // Both at once is ambiguous; neither is an error that says what is missing.
        let (code, _, err) = run(home.dbsnap().args([cmd, "a.tar", "--file", "b.tar"]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("cannot be used with"), "{err}");
        let (code, _, err) = run(home.dbsnap().arg(cmd));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("<FILE>"), "{err}");
    }
}

#[test]
fn rollback_and_cleanup_have_the_dry_run_their_hints_name() {
    let home = Home::new();
    // No restore ever ran: rollback says so and points at cleanup --dry-run.
    let (code, _, err) = run(home.dbsnap().args(["rollback", "--dry-run"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no restore replaced a database"), "{err}");
    assert!(err.contains("dbsnap cleanup --dry-run"), "{err}");
    // ... which exists, and changes nothing.
    let (code, out, err) = run(home.dbsnap().args(["cleanup", "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    let (code, v, err) = run_json(home.dbsnap().args(["cleanup", "--dry-run", "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["dry_run"], true);
}

/// Writes one file of each kind that is not a snapshot into `dir`; returns
/// (path, what the error must say).
fn foreign_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, &'static str)> {
    std::fs::create_dir_all(dir.join("a-directory.tar")).unwrap();
    std::fs::write(dir.join("notes.tar"), "select 1;\n-- not a snapshot\n").unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dbsnap-archive/tests/fixtures/app-core-pg15.dump"
    );
    std::fs::copy(fixture, dir.join("app-core.tar")).unwrap();
    std::fs::copy(fixture, dir.join("app-core.dump")).unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(dir.join("photos.tar")).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_cksum();
    b.append_data(&mut h, "cat.jpg", &b"meow"[..]).unwrap();
    b.finish().unwrap();
    vec![
        (dir.join("a-directory.tar"), "it is a directory"),
        (dir.join("notes.tar"), "text file, not a tar archive"),
        (dir.join("app-core.tar"), "pg_restore"),
        (dir.join("app-core.dump"), "pg_restore"),
        (dir.join("photos.tar"), "tar archive without dbsnap.json"),
    ]
}

#[test]
fn files_that_are_not_snapshots_say_what_they_are_with_one_exit_code() {
    let home = Home::new();
    let files = foreign_files(&home.snapshots());
    for (file, needle) in &files {
        let f = file.to_str().unwrap();
        for args in [
            vec!["verify", f],
            vec!["extract-version", "--file", f],
            vec!["restore", "--file", f, "--yes", "--dry-run"],
        ] {
            let (code, v, err) = run_json(home.dbsnap().args(&args));
            assert_eq!(code, 10, "{args:?}: {err}");
            assert_eq!(v["error"]["kind"], "not_snapshot", "{args:?}: {v}");
            assert!(err.contains("not a dbsnap snapshot"), "{args:?}: {err}");
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(
                !err.contains("truncated") && !err.contains("damaged"),
                "{err}"
            );
        }
    }
    // list flags the *.tar files that are not snapshots, with the same cause.
    let (code, v, err) = run_json(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
    let rows = v["snapshots"].as_array().unwrap();
    for name in ["notes.tar", "app-core.tar", "photos.tar"] {
        let row = rows.iter().find(|r| r["name"] == name).expect(name);
        assert_eq!(row["status"], "not_snapshot", "{row}");
        assert!(row["error"]
            .as_str()
            .unwrap()
            .contains("not a dbsnap snapshot"));
    }
}

/// Every command's name, from `dbsnap --help`.
fn command_names(home: &Home) -> Vec<String> {
    let (code, out, _) = run(home.dbsnap().arg("--help"));
    assert_eq!(code, 0);
    out.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(String::from)
        .collect()
}

#[test]
fn completions_and_man_page_cover_every_command() {
    let home = Home::new();
    let names = command_names(&home);
    for n in ["create", "restore", "delete", "completions", "man"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }
    let (code, bash, err) = run(home.dbsnap().args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        bash.contains("complete -F _dbsnap"),
        "not a bash completion script"
    );
    for n in &names {
        assert!(bash.contains(&format!("dbsnap,{n})")), "bash lacks {n}");
    }
    assert!(
        bash.contains("--dry-run") && bash.contains("--dir"),
        "flags missing"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(home.dbsnap().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("restore"), "{shell}");
    }
    let (code, _, err) = run(home.dbsnap().args(["completions", "tcsh"]));
    assert_eq!(code, 2, "{err}");

    let (code, man, err) = run(home.dbsnap().arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(
        man.contains(".TH dbsnap 1"),
        "not roff: {}",
        &man[..man.len().min(200)]
    );
    assert!(man.contains(".SH SYNOPSIS") && man.contains(".SH OPTIONS"));
    for n in &names {
        assert!(
            man.contains(&format!(".TH dbsnap-{n} 1")),
            "man lacks dbsnap-{n}"
        );
    }
}

/// Commands dbsnap runs itself (`k8s-scale`, the hooks of `--scale`; the
/// jump pod's `__relay`; the watchdog) are in neither the completion
/// scripts nor the man page.
#[test]
fn hidden_commands_are_in_neither_completions_nor_the_man_page() {
    let home = Home::new();
    // k8s-scale is a command, only hidden from --help.
    let (code, out, err) = run(home.dbsnap().args(["k8s-scale", "--help"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DIRECTION"), "{out}");
    assert!(!command_names(&home).iter().any(|n| n == "k8s-scale"));
    let hidden = ["k8s-scale", "k8s__subcmd__scale", "__relay", "watchdog"];
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(home.dbsnap().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("volume-snapshot"), "{shell}: {out}");
        for name in hidden {
            assert!(!out.contains(name), "{shell} completes {name}");
        }
    }
    let (code, man, err) = run(home.dbsnap().arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(man.contains(".TH dbsnap-volume-snapshot 1"), "{man}");
    for name in [
        "k8s\\-scale",
        "k8s-scale",
        "__relay",
        "\\_\\_relay",
        "watchdog",
    ] {
        assert!(!man.contains(name), "the man page has {name}");
    }
}

#[test]
fn a_reader_that_stops_reading_is_not_a_crash() {
    let home = Home::new();
    let snapshots = home.snapshots();
    std::fs::create_dir_all(&snapshots).unwrap();
    for args in [
        vec!["completions", "bash"],
        vec!["man"],
        vec!["list", "--json"],
        vec!["--help"],
    ] {
        // Standard output is a pipe nobody reads: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = home
            .dbsnap()
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(141)),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn a_dir_that_is_a_file_is_a_usage_error_naming_it() {
    let home = Home::new();
    let file = home.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    for cmd in [&["list"][..], &["cleanup"], &["prune", "--keep-last", "1"]] {
        let (code, v, _) = run_json(home.dbsnap().args(cmd).arg("--dir").arg(&file));
        assert_eq!(code, 2, "{cmd:?}: {v}");
        let msg = &common::error_text(&v);
        assert!(
            msg.contains("is not a directory") && msg.contains("--dir"),
            "{msg}"
        );
        // None of them takes --file.
        assert!(!msg.contains("--file"), "{cmd:?}: {msg}");
    }
}

/// A value the parser refuses is a usage error (exit 2) naming the flag
/// and the allowed values; with --json, also the JSON error document.
#[test]
fn refused_flag_values_are_usage_errors_also_in_json() {
    let home = Home::new();
    for (args, says) in [
        (vec!["create", "--jobs", "0"], "0 is not in 1..=64"),
        (vec!["restore", "--jobs", "1000"], "1000 is not in 1..=64"),
        (vec!["restore", "--engine", "bogus"], "native, pg-restore"),
        (vec!["create", "--engine", "bogus"], "native, pg-dump"),
    ] {
        let (code, v, err) = run_json(home.dbsnap().args(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(v["error"]["kind"], "usage", "{args:?}: {v}");
        assert_eq!(v["error"]["exit_code"], 2, "{args:?}: {v}");
        let message = &common::error_text(&v);
        assert!(message.contains(says), "{args:?}: {message}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Help is not an error.
    let (code, out, _) = run(home.dbsnap().args(["--json", "create", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--jobs"), "{out}");
}

#[test]
fn jump_commands_take_only_their_own_flags() {
    let home = Home::new();
    let (code, out, _) = run(home.dbsnap().args(["jump-delete", "--help"]));
    assert_eq!(code, 0);
    for flag in [
        "--image",
        "--registry",
        "--via",
        "--k8s",
        "--pod-timeout",
        "--read-secret",
    ] {
        assert!(
            !out.contains(flag),
            "jump-delete --help lists {flag}:\n{out}"
        );
    }
    let (code, out, _) = run(home.dbsnap().args(["jump-create", "--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("--image") && !out.contains("--via"), "{out}");
    // A jump pod is always a jump pod.
    let (code, _, err) = run(home.dbsnap().args([
        "jump-create",
        "--k8s",
        "deploy/api",
        "--via",
        "port-forward",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--via"), "{err}");
    // A life too short to use is refused, not stretched to 60 s.
    let (code, _, err) =
        run(home
            .dbsnap()
            .args(["jump-create", "--k8s", "deploy/api", "--ttl", "0s"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--ttl 0s"), "{err}");
    // A target naming both an image and a registry, like the two flags.
    std::fs::write(
        home.path().join("dbsnap.toml"),
        "[targets.app]\nk8s = { workload = \"deploy/api\", image = \"postgres:18\", registry = \"registry.example.com\" }\n",
    )
    .unwrap();
    let (code, _, err) = run(home.dbsnap().args(["jump-create", "-t", "app"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("both image = \"postgres:18\" and registry = \"registry.example.com\""),
        "{err}"
    );
    let (code, _, err) = run(home.dbsnap().args([
        "jump-create",
        "--k8s",
        "deploy/api",
        "--image",
        "a",
        "--registry",
        "b",
    ]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_config_path_that_exists_is_read_and_one_that_does_not_is_named() {
    let home = Home::new();
    // /dev/null: a config with no settings, not "not found".
    let (code, _, err) = run(home.dbsnap().args(["--config", "/dev/null", "list"]));
    assert_ne!(code, 2, "{err}");
    assert!(!err.contains("not found"), "{err}");
    let (code, _, err) = run(home
        .dbsnap()
        .args(["--config", "/nonexistent/dbsnap.toml", "list"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("\"/nonexistent/dbsnap.toml\" not found"),
        "{err}"
    );
    let (code, _, err) = run(home.dbsnap().arg("--config").arg(home.path()).arg("list"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn the_exit_code_tables_agree_with_their_one_source() {
    let codes = dbsnap_core::error::EXIT_CODES;
    // docs/SCRIPTING.md's table (the one the README and the user guide
    // link to): the same codes, in order, with the same JSON kinds.
    let source: Vec<(u8, String)> = codes.iter().map(|c| (c.code, c.kind.to_string())).collect();
    let text =
        std::fs::read_to_string(dbsnap_test_support::workspace_root().join("docs/SCRIPTING.md"))
            .unwrap();
    let start = text
        .find("| code | `error.kind` | meaning |")
        .expect("docs/SCRIPTING.md has no exit code table");
    let rows: Vec<(u8, String)> = text[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            (
                cells[0].trim_start_matches("| ").parse().unwrap(),
                cells[1].trim_matches('`').to_string(),
            )
        })
        .collect();
    assert_eq!(rows, source, "docs/SCRIPTING.md's exit code table");
    // --help and the man page list every code with its words.
    let home = Home::new();
    let (code, help, _) = run(home.dbsnap().arg("--help"));
    assert_eq!(code, 0);
    let (code, man, _) = run(home.dbsnap().arg("man"));
    let man = man.replace("\\-", "-").replace("\\*(Aq", "'");
    assert_eq!(code, 0);
    for c in codes {
        assert!(
            help.contains(&format!("{:>3}  {}", c.code, c.short)),
            "--help lacks {}:\n{help}",
            c.code
        );
        assert!(
            man.contains(c.short),
            "the man page lacks exit code {} ({})",
            c.code,
            c.short
        );
    }
}

#[test]
fn a_broken_config_stops_every_command_naming_file_line_and_key() {
    let home = Home::new();
    let config = home.path().join("dbsnap.toml");
    std::fs::write(&config, "dir = \"/tmp\"\n[prune]\nkeep_lst = 3\n").unwrap();
    let commands: &[&[&str]] = &[
        &["list"],
        &["create", "-d", "postgres://127.0.0.1:1/x"],
        &["restore", "--file", "x.tar"],
        &["verify", "x.tar"],
        &["extract-version", "x.tar"],
        &["prune", "--keep-last", "1"],
        &["delete", "x.tar"],
        &["pin", "x.tar"],
        &["copy", "--to", "/tmp/nowhere"],
        &["rollback"],
        &["resume"],
        &["cleanup"],
        &["bucket-verify", "--from", "/tmp/nowhere"],
        &["demo"],
        &["completions", "bash"],
        &["man"],
    ];
    for args in commands {
        let (code, out, err) = run(home.dbsnap().args(*args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("invalid config \"{}\"", config.display()))
                || err.contains("invalid config \"dbsnap.toml\""),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("line 3") && err.contains("keep_lst"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_wrong_command_line_says_what_and_where_the_flags_are_also_in_json() {
    let home = Home::new();
    let (code, v, err) = run_envelope(home.dbsnap().args(["--json", "list", "--bogus"]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        v["error"]["message"], "unexpected argument '--bogus' found",
        "{v}"
    );
    assert!(
        v["error"]["hint"].as_str().is_some_and(
            |h| h.contains("dbsnap list [OPTIONS]") && h.contains("`dbsnap list --help`")
        ),
        "{v}"
    );
    let (code, v, _) = run_envelope(home.dbsnap().args(["create", "--json", "--jobs", "x"]));
    assert_eq!(code, 2);
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("For more information"),
        "{v}"
    );
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("dbsnap create --help"),
        "{v}"
    );
    // No command: said in words, without the hidden commands clap lists.
    for args in [&["--json"][..], &["--no-progress"]] {
        let (code, out, err) = run(home.dbsnap().args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("no command given") && !err.contains("k8s-scale"),
            "{err}"
        );
        if args == ["--json"] {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["error"]["message"], "no command given", "{v}");
        }
    }
}

#[test]
fn a_bad_value_in_the_config_is_refused_as_the_file_is_read() {
    // Every command reads the file; each bad value stops even those that
    // would not use it, naming the line and the key.
    let home = Home::new();
    let config = home.path().join("dbsnap.toml");
    for (text, line, key, why) in [
        (
            "[targets.a]\ndatabases = []\ncompress = \"bogus\"\n",
            3,
            "compress",
            "unknown compression",
        ),
        (
            "[targets.a]\ncompress = \"zstd:99\"\n",
            2,
            "compress",
            "must be 1 to 22",
        ),
        (
            "[prune]\nkeep_last = 2\nkeep_within = \"2 days\"\n",
            3,
            "keep_within",
            "not a duration",
        ),
        (
            "keep_safety_snapshots = -1\n",
            1,
            "keep_safety_snapshots",
            "a whole number",
        ),
        (
            "[prune]\nkeep_daily = \"7\"\n",
            2,
            "keep_daily",
            "a whole number",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        for args in [&["list"][..], &["verify", "x.tar"], &["prune", "--dry-run"]] {
            let (code, out, err) = run(home.dbsnap().args(args));
            assert_eq!(code, 2, "{text}{args:?}: {out}{err}");
            assert!(
                err.contains(&format!("line {line}"))
                    && err.contains(&format!("{key} ="))
                    && err.contains(why),
                "{text}{args:?}: {err}"
            );
        }
    }
    // A level alone may be a number.
    std::fs::write(&config, "[targets.a]\ncompress = 1\n").unwrap();
    let (code, _, err) = run(home.dbsnap().arg("list"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn standard_output_that_cannot_be_written_is_a_storage_error_not_a_crash() {
    let home = Home::new();
    for args in [&["list"][..], &["list", "--json"], &["completions", "bash"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let (code, _, err) = run(home.dbsnap().args(args).stdout(full));
        assert_eq!(code, 9, "{args:?}: {err}");
        assert!(
            err.contains("cannot write standard output") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
