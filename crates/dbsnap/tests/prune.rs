//! `prune`, `pin`, `unpin` on real snapshots: the rules keep what they
//! promise, pinned snapshots and the newest one that verifies always stay,
//! nothing goes without confirmation, and `delete` refuses a pinned one.

mod common;

use common::{run, run_json, Home};
use dbsnap_test_support::Cluster;

fn exists(home: &Home, name: &str) -> bool {
    home.snapshots().join(name).exists()
}

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

fn reasons(v: &serde_json::Value, name: &str) -> String {
    v["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["reasons"].to_string())
        .unwrap_or_default()
}

#[test]
fn prune_keeps_what_the_rules_pins_and_verification_say() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let home = Home::new();
    // Four snapshots, oldest first (prefixes keep their names apart).
    let snaps: Vec<String> = (1..=4)
        .map(|i| {
            let v = common::create(&home, &cluster, &["app"], &["--prefix", &format!("p{i}")]);
            let file = v["file"].as_str().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            file.rsplit('/').next().unwrap().to_string()
        })
        .collect();
    let (s1, s2, s3, s4) = (&snaps[0], &snaps[1], &snaps[2], &snaps[3]);

    // No rule: refused, nothing removed.
    let (code, _, err) = run_json(home.dbsnap().args(["prune", "--yes"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least one rule"), "{err}");

    // Pin the oldest; list shows it.
    let (code, v, err) = run_json(home.dbsnap().args(["pin", s1]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["pinned"], true);
    let (_, v, _) = run_json(home.dbsnap().arg("list"));
    let pinned: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pinned"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(pinned, [s1.as_str()]);

    // A byte flipped inside the newest one: `list` does not see it, verify does.
    let newest = home.snapshots().join(s4);
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();

    // Dry run: the newest stays for `last 1`, the next one as the newest
    // that verifies, the oldest as pinned; only s2 would go.
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["prune", "--keep-last", "1", "--dry-run"]),
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(names(&v, "removed"), [s2.as_str()]);
    assert!(reasons(&v, s4).contains("last 1"), "{v}");
    assert!(reasons(&v, s3).contains("newest verified"), "{v}");
    assert!(reasons(&v, s1).contains("pinned"), "{v}");
    assert_eq!(v["newest_verified"], serde_json::json!([s3]));
    // The damaged one counts for `last 1`: said per snapshot and once for all.
    assert!(reasons(&v, s4).contains("fails verification"), "{v}");
    assert_eq!(v["failing_verification"], serde_json::json!([s4]));
    let (_, out, _) = run(home
        .dbsnap()
        .args(["prune", "--keep-last", "1", "--dry-run"]));
    assert!(
        out.contains(&format!("note: {s4} fails verification: the keep rules count it, so the newest snapshot that verifies ({s3}) is kept as well")),
        "{out}"
    );
    assert!(snaps.iter().all(|s| exists(&home, s)));

    // When no snapshot of a group verifies, prune removes nothing.
    for s in [s1, s2, s3] {
        let path = home.snapshots().join(s);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        bytes[mid] ^= 0xff;
        std::fs::write(home.path().join(format!("{s}.good")), &bytes).unwrap();
    }
    let (code, _, err) = run_json(home.dbsnap().args(["prune", "--keep-last", "1", "--yes"]));
    assert_eq!(code, 10, "{err}");
    assert!(
        err.contains("passes verification") && err.contains("removes nothing"),
        "{err}"
    );
    assert!(snaps.iter().all(|s| exists(&home, s)));
    for s in [s1, s2, s3] {
        std::fs::rename(
            home.path().join(format!("{s}.good")),
            home.snapshots().join(s),
        )
        .unwrap();
    }

    // Without a terminal and without --yes: refused, nothing removed.
    let (code, _, err) = run_json(home.dbsnap().args(["prune", "--keep-last", "1"]));
    assert_eq!(code, 15, "{err}");
    assert!(snaps.iter().all(|s| exists(&home, s)));

    // --yes (and --repo names the repository): s2 goes, the rest stays.
    let (code, out, err) = run(home
        .dbsnap()
        .args(["prune", "--keep-last", "1", "--yes", "--repo"])
        .arg(home.snapshots()));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("removed  {s2}")), "{out}");
    assert!(!exists(&home, s2));
    assert!(exists(&home, s1) && exists(&home, s3) && exists(&home, s4));

    // delete refuses a pinned snapshot until it is unpinned.
    let (code, _, err) = run_json(home.dbsnap().args(["delete", "--yes", s1]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is pinned") && err.contains("dbsnap unpin"),
        "{err}"
    );
    assert!(exists(&home, s1));
    let (code, v, err) = run_json(home.dbsnap().args(["unpin", s1]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["pinned"], false);
    let (code, _, err) = run_json(home.dbsnap().args(["delete", "--yes", s1]));
    assert_eq!(code, 0, "{err}");
    assert!(!exists(&home, s1));
    // No pin file or other leftover in the repository.
    let left: Vec<String> = home
        .snapshot_dir_entries()
        .into_iter()
        .filter(|e| e.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Wrong input is a usage error (exit 2) that names it; nothing is read.
#[test]
fn prune_refuses_what_it_cannot_mean() {
    let home = Home::new();
    let missing = home.path().join("no-such-repo");
    let (code, _, err) = run_json(
        home.dbsnap()
            .args(["prune", "--keep-last", "1", "--dry-run", "--repo"])
            .arg(&missing),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-repo"), "{err}");
    for within in ["7", "7 days", "-1d", "0d", "99999y", "10000000000m"] {
        let flag = format!("--keep-within={within}");
        let (code, v, err) = run_json(home.dbsnap().args(["prune", &flag]));
        assert_eq!(code, 2, "{within}: {err}");
        assert_eq!(v["error"]["kind"], "usage", "{within}: {v}");
        assert!(err.contains("--keep-within"), "{within}: {err}");
    }
}

/// The rules from `[prune]` of the config when no flag is given.
#[test]
fn prune_takes_its_rules_from_the_config() {
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    let home = Home::new();
    let snaps: Vec<String> = (1..=3)
        .map(|i| {
            let v = common::create(&home, &cluster, &["app"], &["--prefix", &format!("c{i}")]);
            std::thread::sleep(std::time::Duration::from_millis(1100));
            v["file"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let config = home.path().join("dbsnap.toml");
    std::fs::write(&config, "[prune]\nkeep_last = 2\n").unwrap();
    let (code, v, err) = run_json(
        home.dbsnap()
            .args(["prune", "--yes", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(names(&v, "removed"), [snaps[0].as_str()]);
    assert!(!exists(&home, &snaps[0]) && exists(&home, &snaps[1]) && exists(&home, &snaps[2]));
    // A bad duration in the config is a usage error naming its line.
    std::fs::write(&config, "[prune]\nkeep_within = \"7 days\"\n").unwrap();
    let (code, _, err) = run_json(
        home.dbsnap()
            .args(["prune", "--dry-run", "--config"])
            .arg(&config),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("7 days") && err.contains("line 2") && err.contains("keep_within ="),
        "{err}"
    );
}
