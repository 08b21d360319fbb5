//! Run logs: written by commands that change something (path printed at
//! the end; Kubernetes commands too), by read-only ones only with `-v` or
//! `--log-file`; old logs and journals of finished restores are pruned by
//! age and count.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{create, create_command, run, run_json, Home};
use dbsnap_test_support::fake_kube::FakeKube;
use dbsnap_test_support::Cluster;

fn log_files(home: &Home) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(home.path().join("logs"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Sets a file's modification time with `touch -d` (e.g. "40 days ago").
fn age(path: &Path, when: &str) {
    let st = Command::new("touch")
        .args(["-d", when])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The path printed by `log: PATH` on standard error.
fn printed_log(err: &str) -> PathBuf {
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("log: "))
        .unwrap_or_else(|| panic!("no log path printed: {err}"));
    PathBuf::from(&line["log: ".len()..])
}

#[test]
fn only_writing_commands_log_unless_asked_and_the_path_is_printed() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let file = create(&home, &cluster, &["app"], &[])["file"]
        .as_str()
        .unwrap()
        .to_string();
    // --json: the log is in the JSON world, not on stderr.
    assert_eq!(log_files(&home).len(), 1);
    // Text mode: the path is printed last.
    let (code, _, err) = run(&mut create_command(&home, &cluster, &["app"]));
    assert_eq!(code, 0, "{err}");
    let printed = printed_log(&err);
    assert!(err.trim_end().ends_with(&printed.display().to_string()));
    assert!(log_files(&home).contains(&printed), "{err}");
    assert!(std::fs::read_to_string(&printed)
        .unwrap()
        .contains("snapshot written"));

    std::fs::remove_dir_all(home.path().join("logs")).unwrap();
    for args in [
        vec!["list"],
        vec!["verify", "--file", &file],
        vec!["extract-version", "--file", &file],
        vec!["--help"],
        vec!["list", "--dir", "/nonexistent/dir"],
    ] {
        let (_, _, err) = run(home.dbsnap().args(&args));
        assert!(!err.contains("log:"), "{args:?}: {err}");
        assert!(log_files(&home).is_empty(), "{args:?} wrote a log");
    }
    // -v asks for one.
    let (code, _, err) = run(home.dbsnap().args(["-v", "list"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(log_files(&home), [printed_log(&err)]);
    // --log-file names it, for any command.
    let named = home.path().join("my-logs/verify.log");
    let (code, _, err) = run(home
        .dbsnap()
        .args(["verify", "--file", &file, "--log-file"])
        .arg(&named));
    assert_eq!(code, 0, "{err}");
    assert_eq!(printed_log(&err), named);
    assert!(std::fs::read_to_string(&named)
        .unwrap()
        .contains("dbsnap started"));
    assert_eq!(log_files(&home).len(), 1);
    // JSON mode prints no log line.
    let (code, _, err) = run_json(home.dbsnap().args(["list", "-v"]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("log:"), "{err}");
}

/// The Kubernetes commands follow the same rule: `volume-snapshot list`
/// only reads (no log), `volume-snapshot create` changes the cluster and
/// `k8s-objects --out` writes files (a log each).
#[test]
fn kubernetes_commands_log_when_they_change_something() {
    const NS: &str = "poolside";
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE ROLE app_user LOGIN PASSWORD 'Pw-in-a-Secret-7'; ALTER DATABASE app OWNER TO app_user",
    );
    let kube = FakeKube::start();
    // The jump pod's `dbsnap` is the binary under test.
    kube.map_command("dbsnap", Path::new(env!("CARGO_BIN_EXE_dbsnap")));
    kube.seed_app(
        NS,
        &cluster.url_as("app_user", Some("Pw-in-a-Secret-7"), "app"),
    );
    kube.seed_claim(NS, "data-db-0");
    let home = Home::new();
    let kubeconfig = home.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kubeconfig.to_str().unwrap();
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["create", "--k8s-objects", "--k8s", "deploy/core-api"])
            .args(["-n", NS, "--kubeconfig", kc, "--pg-bin"])
            .arg(cluster.bin_dir())
            .env_remove("KUBECONFIG"),
    );
    assert_eq!(code, 0, "{v}\n{err}");
    let file = v["file"].as_str().unwrap().to_string();
    std::fs::remove_dir_all(home.path().join("logs")).unwrap();

    let (code, _, err) = run(home.dbsnap().args([
        "volume-snapshot",
        "create",
        "--pvc",
        "data-db-0",
        "-n",
        NS,
        "--kubeconfig",
        kc,
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        log_files(&home),
        [printed_log(&err)],
        "volume-snapshot create"
    );

    let (code, out, err) =
        run(home
            .dbsnap()
            .args(["volume-snapshot", "list", "-n", NS, "--kubeconfig", kc]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("data-db-0"), "{out}");
    assert!(!err.contains("log:"), "{err}");
    assert_eq!(
        log_files(&home).len(),
        1,
        "volume-snapshot list wrote a log"
    );

    let out_dir = home.path().join("objects");
    let (code, _, err) = run(home
        .dbsnap()
        .args(["k8s-objects", "--out"])
        .arg(&out_dir)
        .arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(out_dir.join(NS).join("deployment-core-api.yaml").is_file());
    let logged = printed_log(&err);
    assert!(
        log_files(&home).contains(&logged),
        "k8s-objects --out: {err}"
    );
    assert_eq!(log_files(&home).len(), 2);
    assert!(std::fs::read_to_string(&logged)
        .unwrap()
        .contains("dbsnap started"));
}

/// A journal file in `$DBSNAP_HOME/state/`.
fn journal(home: &Home, id: &str, finished: bool, phase: &str, when: &str) -> PathBuf {
    let dir = home.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("restore-{id}.json"));
    let json = serde_json::json!({
        "id": id, "file": "/x/snap.tar", "started_at": "2020-01-01T00:00:00Z",
        "stop_cmd": null, "start_cmd": null, "app_stopped": false, "safety_snapshot": null,
        "databases": [{
            "live": "app", "admin_conn": "host=127.0.0.1 port=1 dbname=postgres",
            "new_name": "app__dbsnap_new_1", "old_name": "app__dbsnap_old_1", "phase": phase
        }],
        "finished": finished,
    });
    std::fs::write(&path, json.to_string()).unwrap();
    age(&path, when);
    path
}

#[test]
fn old_logs_and_finished_journals_are_pruned_by_a_writing_command() {
    let home = Home::new();
    std::fs::write(
        home.path().join("config.toml"),
        "[retention]\nlog_files = 4\njournal_days = 10\n",
    )
    .unwrap();
    let logs = home.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let fake = |name: &str, when: &str| {
        let p = logs.join(format!("dbsnap-{name}.log"));
        std::fs::write(&p, "old").unwrap();
        age(&p, when);
        p
    };
    let old: Vec<PathBuf> = (0..3)
        .map(|i| fake(&format!("old{i}"), "40 days ago"))
        .collect();
    let recent: Vec<PathBuf> = (0..5)
        .map(|i| fake(&format!("recent{i}"), &format!("{} hours ago", i + 1)))
        .collect();
    let other = logs.join("notes.txt");
    std::fs::write(&other, "mine").unwrap();
    let finished_old = journal(&home, "1", true, "committed", "20 days ago");
    let unfinished_old = journal(&home, "2", false, "loading", "20 days ago");
    let swapped_old = journal(&home, "3", true, "swapped", "20 days ago");
    let finished_recent = journal(&home, "4", true, "committed", "1 hour ago");

    // Read-only commands prune nothing.
    let (code, _, _) = run(home.dbsnap().args(["-v", "list"]));
    assert_eq!(code, 0);
    assert!(old.iter().all(|p| p.exists()) && finished_old.exists());

    // A writing command (here one that fails to connect) prunes.
    let (code, _, err) =
        run(home
            .dbsnap()
            .args(["create", "-d", "host=127.0.0.1 port=1 dbname=app"]));
    assert_eq!(code, 3, "{err}");
    let current = printed_log(&err);
    assert!(current.exists());
    assert!(old.iter().all(|p| !p.exists()), "old logs kept");
    // The newest 4 dbsnap logs remain: this run's, the `-v list` one and
    // the 2 most recent fakes.
    let kept: Vec<&PathBuf> = recent.iter().filter(|p| p.exists()).collect();
    assert_eq!(kept, recent[..2].iter().collect::<Vec<_>>());
    assert_eq!(log_files(&home).len(), 5, "4 logs and notes.txt");
    assert!(other.exists(), "a file dbsnap did not write was removed");
    assert!(!finished_old.exists(), "old finished journal kept");
    assert!(
        unfinished_old.exists(),
        "a journal resume needs was removed"
    );
    assert!(swapped_old.exists(), "a journal rollback needs was removed");
    assert!(finished_recent.exists());
}
