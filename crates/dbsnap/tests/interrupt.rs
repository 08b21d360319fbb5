//! Acceptance: however dbsnap ends — Ctrl-C, SIGTERM, `kill -9` — nothing
//! it started lives on: no session holding a lock on the live database, no
//! pg_dump/pg_restore/psql, no password file anywhere; and a lock wait is
//! bounded, shown, and ends with nothing changed.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_json, Home};
use dbsnap_test_support::Cluster;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The role's password, made at run time: no file (this source, the test
/// binary, build caches) holds it unless something wrote it while running.
fn password() -> &'static str {
    static PASSWORD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PASSWORD.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("Lock3d-{:x}-{nanos:x}", std::process::id())
    })
}

/// A database `app` with a schema version and two tables, owned by `app`
/// (password [`password`]); returns the owner's URL.
fn app_database(cluster: &Cluster) -> String {
    cluster.psql(
        "postgres",
        &format!("CREATE ROLE app LOGIN PASSWORD '{}'", password()),
    );
    cluster.psql("postgres", "CREATE DATABASE app OWNER app");
    cluster.psql(
        "app",
        "SET ROLE app;
         CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO schema_migrations VALUES (1, false);
         CREATE TABLE a AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
         CREATE TABLE b AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;",
    );
    cluster.url_as("app", Some(password()), "app")
}

/// A session of "the application" that holds `lock` until dropped.
struct Blocker(Child);

impl Blocker {
    fn hold(cluster: &Cluster, lock: &str) -> Blocker {
        let mut child = Command::new(cluster.bin_dir().join("psql"))
            .args(["-X", "-q"])
            .arg(cluster.url("app"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "BEGIN; {lock}; SELECT 1;").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster
            .psql(
                "app",
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) \
                 WHERE s.application_name = 'psql' AND l.relation IS NOT NULL AND l.granted \
                 AND l.relation::regclass::text IN ('a', 'b')",
            )
            .trim()
            == "0"
        {
            assert!(Instant::now() < deadline, "the blocker never got its lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        Blocker(child)
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) until a dbsnap session or child of dbsnap waits for a lock.
fn wait_for_lock_wait(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%' \
             AND wait_event_type = 'Lock'",
        )
        .trim()
        == "0"
    {
        assert!(
            Instant::now() < deadline,
            "dbsnap never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// dbsnap's sessions on the server, after a bounded wait for them to end.
fn dbsnap_sessions_after(cluster: &Cluster, wait: Duration) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let s = cluster.psql(
            "postgres",
            "SELECT string_agg(application_name || ' ' || state || ' ' || coalesce(wait_event_type, ''), '; ') \
             FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%'",
        );
        if s.trim().is_empty() || Instant::now() > deadline {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the application can read table `a` now (nobody holds a lock on it).
fn app_can_read_a(cluster: &Cluster) -> bool {
    cluster
        .psql_raw("app", "SET lock_timeout = '1s'; SELECT count(*) FROM a")
        .status
        .success()
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "dbsnap did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn restore_cmd(home: &Home, cluster: &Cluster, file: &str, url: &str) -> Command {
    let mut cmd = common::quick_restore_urls(home, cluster, file, &[url.to_string()]);
    cmd.args(["-v", "--lock-timeout", "60s"]);
    cmd
}

#[test]
fn ctrl_c_and_sigterm_during_a_data_only_restore_leave_no_session_behind() {
    let cluster = Cluster::start(15);
    let url = app_database(&cluster);
    let home = Home::new();
    let file = common::create_from_url(&home, &cluster, &url);
    cluster.psql("app", "SET ROLE app; DELETE FROM a WHERE id > 100");
    let before = common::fingerprint(&cluster, "app");
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // The application reads b: dbsnap locks a, then waits for b, and
        // the application's queries on a now wait for dbsnap.
        let blocker = Blocker::hold(&cluster, "LOCK TABLE b IN ACCESS SHARE MODE");
        let mut child = restore_cmd(&home, &cluster, &file, &url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_lock_wait(&cluster);
        assert!(!app_can_read_a(&cluster), "dbsnap held no lock on a");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 130);
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            err.contains("interrupted by SIG") && err.contains("nothing was changed"),
            "{err}"
        );
        // Right away, not once the blocker lets go: no dbsnap session, no lock.
        assert_eq!(
            dbsnap_sessions_after(&cluster, Duration::from_secs(2)),
            "",
            "{signal}: dbsnap sessions outlived it"
        );
        assert!(app_can_read_a(&cluster), "{signal}: a is still locked");
        drop(blocker);
        assert_eq!(common::fingerprint(&cluster, "app"), before, "{signal}");
    }
}

#[test]
fn a_restore_waiting_for_locks_says_so_and_gives_up_with_nothing_changed() {
    let cluster = Cluster::start(18);
    let url = app_database(&cluster);
    let home = Home::new();
    let file = common::create_from_url(&home, &cluster, &url);
    cluster.psql("app", "SET ROLE app; DELETE FROM a WHERE id > 100");
    let before = common::fingerprint(&cluster, "app");
    let _blocker = Blocker::hold(&cluster, "LOCK TABLE b IN ACCESS SHARE MODE");
    let mut cmd = common::quick_restore_urls(&home, &cluster, &file, std::slice::from_ref(&url));
    cmd.args(["-v", "--lock-timeout", "1s"]);
    let started = Instant::now();
    let (code, v, err) = run_json(&mut cmd);
    let took = started.elapsed();
    assert_eq!(code, 16, "{v}");
    assert_eq!(v["error"]["kind"], "lock_timeout", "{v}");
    let msg = &common::error_text(&v);
    assert!(
        msg.contains("could not lock the tables within 1 s")
            && msg.contains("nothing was changed")
            && msg.contains("--lock-timeout"),
        "{msg}"
    );
    assert!(
        err.contains("waiting for locks on 3 tables (gives up after 1 s)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(common::fingerprint(&cluster, "app"), before);
    assert_eq!(dbsnap_sessions_after(&cluster, Duration::from_secs(2)), "");
}

/// The pid of the watchdog dbsnap `parent` started, once it runs.
fn watchdog_of(parent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (pid, ppid, _, cmdline) in processes() {
            if ppid == parent && cmdline.contains("__dbsnap-watchdog") {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no watchdog started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live processes: (pid, parent pid, process group, command line).
fn processes() -> Vec<(u32, u32, u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((
            pid,
            f[1].parse().unwrap_or(0),
            f[2].parse().unwrap_or(0),
            cmdline,
        ));
    }
    out
}

/// Programs still alive in process group `group`, after a bounded wait.
fn group_after(group: u32, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let left: Vec<String> = processes()
            .into_iter()
            .filter(|p| p.2 == group)
            .map(|p| p.3)
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files under `dir` (recursively) whose content holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        // Test clusters' data directories (the server never sees the
        // password in plain text), checkouts' build and git directories
        // (CI clones into the temporary directory); files above 1 MiB are
        // other tests' snapshots (a password file is one line).
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("dbsnap-pg") || ["target", ".git", ".cache"].contains(&name.as_str()) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            hits.extend(files_holding(&p, needle));
        } else if meta.is_file() && meta.len() < 1 << 20 {
            if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

/// Kills dbsnap with SIGKILL when `ready` says so; then every program it
/// started is gone, and no file anywhere holds the password.
fn kill_nine_when(home: &Home, mut cmd: Command, ready: impl Fn(&[String]) -> bool) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let group = watchdog_of(child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let members: Vec<String> = processes()
            .into_iter()
            .filter(|p| p.2 == group)
            .map(|p| p.3)
            .collect();
        if ready(&members) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {members:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = group_after(group, Duration::from_secs(10));
    assert!(left.is_empty(), "programs outlived dbsnap: {left:?}");
    for dir in [std::env::temp_dir().as_path(), home.path()] {
        let hits = files_holding(dir, password());
        assert!(hits.is_empty(), "the password is on disk: {hits:?}");
    }
}

#[test]
fn kill_minus_nine_leaves_no_program_and_no_password_on_disk() {
    let cluster = Cluster::start(15);
    let url = app_database(&cluster);
    let home = Home::new();
    let create = || {
        let mut cmd = home.dbsnap();
        cmd.args(["create", "--max-wait", "120", "--pg-bin"])
            .arg(cluster.bin_dir())
            .arg("-d")
            .arg(&url);
        cmd
    };
    // While pg_dump waits behind the application's lock.
    {
        let _blocker = Blocker::hold(&cluster, "LOCK TABLE a IN ACCESS EXCLUSIVE MODE");
        let pg_dump_waits = |members: &[String]| {
            members.iter().any(|m| m.contains("pg_dump"))
                && cluster
                    .psql(
                        "postgres",
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbsnap%' \
                         AND wait_event_type = 'Lock'",
                    )
                    .trim()
                    != "0"
        };
        kill_nine_when(&home, create(), pg_dump_waits);
        // pg_dump was told to stop (SIGINT) before being killed: it
        // cancelled its lock wait, so its session is gone even though the
        // application still holds the lock.
        assert_eq!(dbsnap_sessions_after(&cluster, Duration::from_secs(5)), "");
    }
    // As soon as pg_dump runs.
    kill_nine_when(&home, create(), |m| m.iter().any(|m| m.contains("pg_dump")));
    // While pg_restore loads a copy (replace), and while psql replaces in place.
    let file = common::create_from_url(&home, &cluster, &url);
    cluster.psql(
        "app",
        "SET ROLE app; INSERT INTO schema_migrations VALUES (2, false)",
    );
    cluster.psql("postgres", "ALTER ROLE app CREATEDB");
    let replace = common::quick_restore_urls(&home, &cluster, &file, std::slice::from_ref(&url));
    kill_nine_when(&home, replace, |m| {
        m.iter().any(|m| m.contains("pg_restore"))
    });
    // Without CREATEDB the database is replaced in place, through psql (a
    // new home: the interrupted run above waits there for `resume`).
    cluster.psql("postgres", "ALTER ROLE app NOCREATEDB");
    let other = Home::new();
    let in_place = common::quick_restore_urls(&other, &cluster, &file, std::slice::from_ref(&url));
    kill_nine_when(&other, in_place, |m| m.iter().any(|m| m.contains("psql")));
}

#[test]
fn sigterm_during_create_cancels_the_dump_and_its_session() {
    let cluster = Cluster::start(18);
    let url = app_database(&cluster);
    let home = Home::new();
    let _blocker = Blocker::hold(&cluster, "LOCK TABLE a IN ACCESS EXCLUSIVE MODE");
    let mut child = home
        .dbsnap()
        .args(["create", "--max-wait", "120", "--pg-bin"])
        .arg(cluster.bin_dir())
        .arg("-d")
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lock_wait(&cluster);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 130);
    // pg_dump's session waited behind the lock: it is cancelled, not left
    // queued until the application lets go.
    assert_eq!(dbsnap_sessions_after(&cluster, Duration::from_secs(2)), "");
    assert!(!common::pg_dump_running(cluster.port));
    assert!(home.snapshot_dir_entries().is_empty());
}

/// A server that accepts TCP connections and never says a word.
fn silent_server() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn connect_timeout_bounds_a_server_that_never_answers() {
    let (listener, port) = silent_server();
    // Accepted connections stay open and silent.
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let home = Home::new();
    let cases: [(&str, Option<&str>, u64); 2] = [
        // In the connection string; libpq's minimum of 2 s applies to 1.
        (
            "postgres://u@127.0.0.1:{port}/db?connect_timeout=1",
            None,
            2,
        ),
        // From the environment.
        ("postgres://u@127.0.0.1:{port}/db", Some("3"), 3),
    ];
    for (url, env, expect) in cases {
        let mut cmd = home.dbsnap();
        cmd.args(["create", "-d", &url.replace("{port}", &port.to_string())]);
        if let Some(t) = env {
            cmd.env("PGCONNECT_TIMEOUT", t);
        }
        let started = Instant::now();
        let (code, v, _) = run_json(&mut cmd);
        let took = started.elapsed();
        assert_eq!(code, 3, "{v}");
        let msg = &common::error_text(&v);
        assert!(
            msg.contains(&format!(
                "did not complete the connection within {expect} s"
            )),
            "{msg}"
        );
        assert!(
            took >= Duration::from_secs(expect) && took < Duration::from_secs(expect + 10),
            "took {took:?} for a {expect} s timeout"
        );
    }
    drop(held);
}
