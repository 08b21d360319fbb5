//! Acceptance: a cut is consistent across databases while writers run.
//!
//! Each writer inserts id N into database a, commits, then inserts N into
//! database b, as fast as it can. In a consistent snapshot, ids(b) is a
//! subset of ids(a), and ids(a) minus ids(b) holds at most one id per
//! writer (the one whose second insert was still on its way).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{dump_table_rows, tar_extract, Home};
use dbsnap_test_support::Cluster;

const WRITERS: u64 = 4;

async fn writer(
    cluster_a: String,
    cluster_b: String,
    w: u64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) {
    let (a, ca) = tokio_postgres::connect(&cluster_a, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (b, cb) = tokio_postgres::connect(&cluster_b, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(ca);
    tokio::spawn(cb);
    let ins_a = a.prepare("INSERT INTO ids VALUES ($1, $2)").await.unwrap();
    let ins_b = b.prepare("INSERT INTO ids VALUES ($1, $2)").await.unwrap();
    let mut n: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        a.execute(&ins_a, &[&(w as i64), &n]).await.unwrap();
        b.execute(&ins_b, &[&(w as i64), &n]).await.unwrap();
        written.fetch_add(1, Ordering::Relaxed);
    }
}

fn ids(cluster: &Cluster, dump: &std::path::Path) -> Ids {
    let mut m: BTreeMap<u64, BTreeSet<i64>> = BTreeMap::new();
    for line in dump_table_rows(cluster, dump, "ids") {
        let mut f = line.split('\t');
        let w: u64 = f.next().unwrap().parse().unwrap();
        let n: i64 = f.next().unwrap().parse().unwrap();
        m.entry(w).or_default().insert(n);
    }
    m
}

type Ids = BTreeMap<u64, BTreeSet<i64>>;

fn run_with_writers(major: u32, method: &str) -> (Home, serde_json::Value, Ids, Ids) {
    let cluster = Cluster::start(major);
    for db in ["a", "b"] {
        cluster.create_db(db);
        cluster.psql(
            db,
            "CREATE TABLE ids (writer bigint NOT NULL, n bigint NOT NULL, PRIMARY KEY (writer, n))",
        );
        // Some bulk so the dump takes a moment while writers keep going.
        cluster.psql(
            db,
            "CREATE TABLE filler AS SELECT g, md5(g::text) AS t FROM generate_series(1, 200000) g",
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        handles.push(rt.spawn(writer(
            cluster.url("a"),
            cluster.url("b"),
            w,
            stop.clone(),
            written.clone(),
        )));
    }
    // Wait (bounded) until every writer is under way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while written.load(Ordering::Relaxed) < 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers did not start"
        );
        assert!(!handles.iter().any(|h| h.is_finished()), "a writer failed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let home = Home::new();
    let before = written.load(Ordering::Relaxed);
    let result = common::create(&home, &cluster, &["a", "b"], &["--consistency", method]);
    let after = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        rt.block_on(h).unwrap();
    }
    assert!(
        after > before,
        "writers made no progress while the snapshot was taken"
    );
    let file = PathBuf::from(result["file"].as_str().unwrap());
    let out = cluster.scratch().join("x");
    tar_extract(&file, &out);
    let a = ids(&cluster, &out.join("a.dump"));
    let b = ids(&cluster, &out.join("b.dump"));
    eprintln!(
        "{method} on PostgreSQL {major}: {} attempt(s), {} rows written during the run",
        result["consistency"]["attempts"],
        after - before
    );
    (home, result, a, b)
}

fn assert_consistent(a: &Ids, b: &Ids) {
    let total: usize = a.values().map(|s| s.len()).sum();
    assert!(total > 0, "no rows in the snapshot");
    for w in 0..WRITERS {
        let empty = BTreeSet::new();
        let ia = a.get(&w).unwrap_or(&empty);
        let ib = b.get(&w).unwrap_or(&empty);
        assert!(
            ib.is_subset(ia),
            "writer {w}: ids in b missing from a: {:?}",
            ib.difference(ia).take(5).collect::<Vec<_>>()
        );
        let extra: Vec<_> = ia.difference(ib).collect();
        assert!(
            extra.len() <= 1,
            "writer {w}: {} ids in a but not b: {:?}",
            extra.len(),
            extra.iter().take(5).collect::<Vec<_>>()
        );
    }
}

fn consistent(major: u32, method: &str) {
    let (_home, result, a, b) = run_with_writers(major, method);
    assert_eq!(result["consistency"]["method"], method);
    assert_eq!(result["consistency"]["consistent_cut"], true);
    assert_consistent(&a, &b);
}

#[test]
fn snapshot_method_is_consistent_under_writes_pg15() {
    consistent(15, "snapshot");
}

#[test]
fn snapshot_method_is_consistent_under_writes_pg18() {
    consistent(18, "snapshot");
}

#[test]
fn barrier_method_is_consistent_under_writes_pg15() {
    consistent(15, "barrier");
}

#[test]
fn barrier_method_is_consistent_under_writes_pg18() {
    consistent(18, "barrier");
}

#[test]
fn none_does_not_claim_a_consistent_cut() {
    let (home, result, _, _) = run_with_writers(15, "none");
    assert_eq!(result["consistency"]["method"], "none");
    assert_eq!(result["consistency"]["consistent_cut"], false);
    let file = PathBuf::from(result["file"].as_str().unwrap());
    let (_, v, _) = common::run_json(home.dbsnap().arg("list"));
    assert_eq!(v["snapshots"][0]["path"], file.to_str().unwrap());
    assert_eq!(v["snapshots"][0]["consistency"], "none");
    assert_eq!(v["snapshots"][0]["consistent_cut"], false);
}
