//! Acceptance: clear errors with specific exit codes, and no partial file,
//! for every way `create` can be refused or fail.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run, run_json, Home};
use dbsnap_test_support::{free_port, Cluster, SUPERUSER_PASSWORD};

fn create_cmd(home: &Home, cluster: &Cluster, urls: &[String]) -> Command {
    let mut c = home.dbsnap();
    c.arg("create").arg("--pg-bin").arg(cluster.bin_dir());
    for u in urls {
        c.arg("-d").arg(u);
    }
    c
}

/// Runs, expects `code`, checks the message and that nothing was left behind.
fn expect_failure(home: &Home, cmd: &mut Command, code: i32, needles: &[&str]) -> String {
    let (got, v, err) = run_json(cmd);
    assert_eq!(got, code, "exit code; stderr: {err}\njson: {v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["exit_code"], code);
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(err.contains("hint:"), "no hint: {err}");
    let left: Vec<String> = home.snapshot_dir_entries();
    assert!(left.is_empty(), "files left behind: {left:?}");
    err
}

#[test]
fn unreachable_host() {
    let cluster = Cluster::start(15);
    let home = Home::new();
    let url = format!("postgres://postgres:pw@127.0.0.1:{}/app", free_port());
    expect_failure(
        &home,
        &mut create_cmd(&home, &cluster, &[url]),
        3,
        &["could not connect"],
    );
}

/// A --dir that names a file is a usage error naming it (it was exit 9,
/// "File exists"), and the file is left as it was.
#[test]
fn a_dir_that_is_a_file() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let file = home.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let err = expect_failure(
        &home,
        create_cmd(&home, &cluster, &[cluster.url("app")])
            .arg("--dir")
            .arg(&file),
        2,
        &[&format!("repository {} is not a directory", file.display())],
    );
    assert!(!err.contains("--file"), "create has no --file: {err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn wrong_password_missing_database_and_duplicates() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let bad = cluster.url_as("postgres", Some("WrongPassword123"), "app");
    let err = expect_failure(
        &home,
        &mut create_cmd(&home, &cluster, &[bad]),
        4,
        &["password authentication failed"],
    );
    assert!(!err.contains("WrongPassword123"));
    expect_failure(
        &home,
        &mut create_cmd(&home, &cluster, &[cluster.url("nope")]),
        5,
        &["\"nope\" does not exist"],
    );
    expect_failure(
        &home,
        &mut create_cmd(&home, &cluster, &[cluster.url("app"), cluster.url("app")]),
        2,
        &["given twice"],
    );
    // The same database reached by two spellings is caught after connecting.
    let other_spelling = format!(
        "host=localhost port={} user=postgres password={SUPERUSER_PASSWORD} dbname=app",
        cluster.port
    );
    expect_failure(
        &home,
        &mut create_cmd(&home, &cluster, &[cluster.url("app"), other_spelling]),
        2,
        &["same database"],
    );
}

#[test]
fn missing_privilege() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE secret (id int); INSERT INTO secret VALUES (1)",
    );
    cluster.psql("postgres", "CREATE ROLE reader LOGIN PASSWORD 'readerpw'");
    let home = Home::new();
    let url = cluster.url_as("reader", Some("readerpw"), "app");
    expect_failure(
        &home,
        &mut create_cmd(&home, &cluster, &[url]),
        6,
        &["permission denied"],
    );
}

#[test]
fn pg_dump_older_than_the_server() {
    let cluster = Cluster::start(18);
    cluster.create_db("app");
    let home = Home::new();
    // Only PATH and /usr/lib/postgresql/*/bin (PostgreSQL 15) are searched.
    let mut cmd = home.dbsnap();
    cmd.arg("create").arg("-d").arg(cluster.url("app"));
    expect_failure(
        &home,
        &mut cmd,
        7,
        &["pg_dump 18 or newer is needed", "postgresql-client-18"],
    );
}

#[test]
fn databases_on_different_instances_need_quiesce_or_none() {
    let one = Cluster::start(15);
    let two = Cluster::start(15);
    one.create_db("a");
    two.create_db("b");
    let home = Home::new();
    for method in ["snapshot", "barrier"] {
        let mut cmd = create_cmd(&home, &one, &[one.url("a"), two.url("b")]);
        cmd.args(["--consistency", method]);
        expect_failure(
            &home,
            &mut cmd,
            8,
            &["different PostgreSQL instances", "--consistency quiesce"],
        );
    }
    let mut cmd = create_cmd(&home, &one, &[one.url("a"), two.url("b")]);
    cmd.args(["--consistency", "none"]);
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["consistency"]["consistent_cut"], false);
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs failed: the full-disk test needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn full_disk_leaves_nothing_behind() {
    let cluster = Cluster::start(15);
    for db in ["a", "b"] {
        cluster.create_db(db);
        cluster.psql(db, "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 150000) g");
    }
    let disk = Tmpfs::new("3m");
    let home = Home::new();
    let mut cmd = create_cmd(&home, &cluster, &[cluster.url("a"), cluster.url("b")]);
    cmd.arg("--dir").arg(disk.path());
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 9, "{err}\n{v}");
    assert!(err.contains("no space left on device"), "{err}");
    let left: Vec<_> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left on the full disk: {left:?}");
    // No pg_dump survives the failure.
    assert!(
        !common::pg_dump_running(cluster.port),
        "pg_dump still running"
    );
}

#[test]
fn quiesce_runs_stop_then_start_even_when_stop_fails() {
    let cluster = Cluster::start(15);
    cluster.create_db("a");
    let home = Home::new();
    let log = home.path().join("hooks.log");
    let l = log.display();
    let mut cmd = create_cmd(&home, &cluster, &[cluster.url("a")]);
    cmd.args([
        "--consistency",
        "quiesce",
        "--stop-cmd",
        &format!("echo stop >> {l}"),
    ]);
    cmd.args(["--start-cmd", &format!("echo start >> {l}")]);
    let (code, v, err) = run_json(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["consistency"]["method"], "quiesce");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");

    std::fs::remove_file(&log).unwrap();
    let mut cmd = create_cmd(&home, &cluster, &[cluster.url("a")]);
    cmd.args([
        "--consistency",
        "quiesce",
        "--stop-cmd",
        &format!("echo stop >> {l}; exit 3"),
    ]);
    cmd.args(["--start-cmd", &format!("echo start >> {l}")]);
    let before = home.snapshot_dir_entries().len();
    let (code, _, err) = run_json(&mut cmd);
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("the stop command"), "{err}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    assert_eq!(home.snapshot_dir_entries().len(), before);

    // Without --stop-cmd, quiesce is refused up front.
    let mut cmd = create_cmd(&home, &cluster, &[cluster.url("a")]);
    cmd.args(["--consistency", "quiesce"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--stop-cmd"));
}

#[test]
fn quiesce_starts_the_app_again_on_ctrl_c() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let cluster = Cluster::start(15);
    cluster.create_db("a");
    let home = Home::new();
    let log = home.path().join("hooks.log");
    let l = log.display();
    let mut cmd = create_cmd(&home, &cluster, &[cluster.url("a")]);
    cmd.args([
        "--consistency",
        "quiesce",
        "--stop-cmd",
        &format!("echo stop >> {l}; sleep 30"),
    ]);
    cmd.args(["--start-cmd", &format!("echo start >> {l}")]);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("stop")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "stop command never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "stop\nstart\n");
    assert!(home.snapshot_dir_entries().is_empty());
}
