//! What a user at a terminal sees and types, through a pseudo-terminal:
//! the snapshot pick, the password prompt, colour.

mod common;

use common::pty::Pty;
use common::{create, run, Home};
use dbsnap_test_support::{Cluster, SUPERUSER, SUPERUSER_PASSWORD};

/// Two snapshots of `app` and a safety snapshot taken by a restore;
/// returns (older, newer) snapshot paths.
fn two_snapshots_and_a_safety_snapshot(home: &Home, cluster: &Cluster) -> (String, String) {
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, false); \
         CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let older = create(home, cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    cluster.psql("app", "INSERT INTO t VALUES (2)");
    let newer = create(home, cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, err) = run(home
        .dbsnap()
        .args(["restore", "--yes", "--file", &newer, "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("app")));
    assert_eq!(code, 0, "{err}");
    (older, newer)
}

/// `restore --dry-run` into `app` without `--file`, on a terminal.
fn dry_run_pick(home: &Home, cluster: &Cluster) -> Pty {
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--dry-run", "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("app"));
    Pty::spawn(cmd)
}

#[test]
fn typing_a_number_picks_that_snapshot_and_safety_snapshots_are_not_the_default() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    let (older, newer) = two_snapshots_and_a_safety_snapshot(&home, &cluster);
    let mut pty = dry_run_pick(&home, &cluster);
    let screen = pty.expect("Snapshot to restore");
    // Newest first: the safety snapshot, the newer, the older one.
    let lines: Vec<&str> = screen.lines().filter(|l| l.contains(".tar ")).collect();
    assert_eq!(lines.len(), 3, "{screen}");
    assert!(lines[0].contains("safety snapshot"), "{screen}");
    assert!(!lines[0].contains("(default)"), "{screen}");
    let newer_name = newer.rsplit('/').next().unwrap();
    assert!(
        lines[1].contains(newer_name) && lines[1].contains("(default)"),
        "{screen}"
    );
    assert!(screen.contains("Snapshot to restore (1-3) [2]"), "{screen}");
    pty.send("3\r");
    let (code, screen) = pty.wait();
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains(&format!("restore plan for {older}")),
        "{screen}"
    );
}

#[test]
fn enter_takes_the_newest_snapshot_that_is_not_a_safety_snapshot() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    let (_, newer) = two_snapshots_and_a_safety_snapshot(&home, &cluster);
    let mut pty = dry_run_pick(&home, &cluster);
    pty.expect("Snapshot to restore");
    // A number out of range is refused and asked again.
    pty.send("9\r");
    pty.expect("type a number from 1 to 3");
    pty.send("\r");
    let (code, screen) = pty.wait();
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains(&format!("restore plan for {newer}")),
        "{screen}"
    );
}

/// `restore --yes --file F -d <app without a password>` on a terminal.
fn restore_without_password(home: &Home, cluster: &Cluster, file: &str, extra: &[&str]) -> Pty {
    let mut cmd = home.dbsnap();
    cmd.args(["restore", "--yes", "--file", file, "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url_as(SUPERUSER, None, "app"))
        .args(extra);
    Pty::spawn(cmd)
}

#[test]
fn a_missing_password_is_asked_once_without_echo_and_never_with_no_password() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    let (older, _) = two_snapshots_and_a_safety_snapshot(&home, &cluster);
    let mut pty = restore_without_password(&home, &cluster, &older, &[]);
    pty.expect("password for");
    pty.send(&format!("{SUPERUSER_PASSWORD}\r"));
    let (code, screen) = pty.wait();
    assert_eq!(code, 0, "{screen}");
    // One question (dialoguer redraws the answered prompt as "[hidden]").
    assert_eq!(screen.matches("[hidden]").count(), 1, "{screen}");
    assert_eq!(screen.matches("password for").count(), 2, "{screen}");
    assert!(!screen.contains(SUPERUSER_PASSWORD), "echoed: {screen}");
    // The typed password served the safety snapshot and the restore.
    assert!(screen.contains("safety snapshot:"), "{screen}");
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM t").trim(), "1");

    let pty = restore_without_password(&home, &cluster, &older, &["-w"]);
    let (code, screen) = pty.wait();
    assert_eq!(code, 4, "{screen}");
    assert!(!screen.contains("password for"), "{screen}");
    assert!(
        screen.contains("password"),
        "no authentication error: {screen}"
    );
}

/// `dbsnap -v list` on a terminal, with `NO_COLOR` set to `no_color`.
fn verbose_list_on_a_terminal(no_color: Option<&str>) -> String {
    let home = Home::new();
    let mut cmd = home.dbsnap();
    cmd.args(["-v", "list"]);
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    let (code, screen) = Pty::spawn(cmd).wait_raw();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("info"), "{screen}");
    screen
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    assert!(verbose_list_on_a_terminal(None).contains("\x1b["));
    assert!(verbose_list_on_a_terminal(Some("")).contains("\x1b["));
    assert!(!verbose_list_on_a_terminal(Some("1")).contains("\x1b["));
}
