//! Acceptance: `kill -9` of dbsnap at any point of `create` leaves nothing
//! that `list` shows (only complete, verifiable snapshots), and the next
//! `create` succeeds and clears the leftovers.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{run_json, Home};
use dbsnap_test_support::Cluster;

#[test]
fn kill_minus_nine_at_any_point_leaves_no_visible_snapshot() {
    let cluster = Cluster::start(15);
    for db in ["a", "b"] {
        cluster.create_db(db);
        cluster.psql(db, "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 400000) g");
    }
    let home = Home::new();
    // Kill points spread over connecting, the cut, dumping and finishing.
    let delays_ms = [0u64, 20, 60, 120, 250, 400, 700, 1000, 1500, 2500];
    let mut completed = 0;
    let mut listed = 0;
    for d in delays_ms {
        let mut cmd = home.dbsnap();
        cmd.arg("create").arg("--pg-bin").arg(cluster.bin_dir());
        cmd.arg("-d")
            .arg(cluster.url("a"))
            .arg("-d")
            .arg(cluster.url("b"));
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(d));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1;
        }
        // Whatever the moment, list shows only complete snapshots.
        let (code, v, err) = run_json(home.dbsnap().arg("list"));
        assert_eq!(code, 0, "{err}");
        let rows = v["snapshots"].as_array().unwrap();
        // A kill that lands after the rename but before exit leaves a complete
        // snapshot behind; every listed one must verify either way.
        assert!(
            rows.len() >= completed,
            "kill after {d} ms: a completed snapshot is missing: {v}"
        );
        assert!(
            rows.len() <= listed + 1,
            "kill after {d} ms: more than one new snapshot: {v}"
        );
        listed = rows.len();
        for r in rows {
            let (code, v, _) = run_json(
                home.dbsnap()
                    .arg("verify")
                    .arg("--file")
                    .arg(r["path"].as_str().unwrap()),
            );
            assert_eq!(code, 0, "a listed snapshot does not verify: {v}");
        }
    }
    // Orphaned pg_dumps die once their reader is gone (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !common::pg_dump_running(cluster.port) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_dump processes outlived dbsnap"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next create succeeds and removes the leftovers of killed runs.
    let v = common::create(&home, &cluster, &["a", "b"], &[]);
    assert_eq!(v["ok"], true);
    let entries = home.snapshot_dir_entries();
    assert!(
        entries.iter().all(|e| !e.starts_with('.')),
        "leftovers remain: {entries:?}"
    );
    assert_eq!(entries.len(), listed + 1);
}

#[test]
fn ctrl_c_during_the_dump_stops_cleanly() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let cluster = Cluster::start(15);
    cluster.create_db("a");
    cluster.psql("a", "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 3)::text) AS v FROM generate_series(1, 1500000) g");
    let home = Home::new();
    let mut cmd = home.dbsnap();
    cmd.arg("create")
        .arg("--pg-bin")
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(cluster.url("a"));
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until pg_dump runs, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !common::pg_dump_running(cluster.port) {
        assert!(Instant::now() < deadline, "pg_dump never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        home.snapshot_dir_entries().is_empty(),
        "left: {:?}",
        home.snapshot_dir_entries()
    );
    assert!(
        !common::pg_dump_running(cluster.port),
        "pg_dump outlived an interrupted dbsnap"
    );
}
