//! The command line itself, without a server: flags that would be ignored
//! are refused, global flags on either side of the command, repository
//! errors, completions and the man page.

mod common;

use common::{run, run_json, Home};
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
