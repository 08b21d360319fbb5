//! The S3 repository on real S3 servers (s3s-fs and moto): the repository
//! contract, multipart uploads with placeholders, and what an upload
//! interrupted by a dead server leaves (nothing visible, nothing stale
//! after the next sweep).

use std::io::{Read, Write};

use dbsnap_storage::s3::{S3Options, S3Repository};
use dbsnap_storage::{Repository, StorageError};
use dbsnap_test_support::s3::{S3Kind, S3Server, KINDS};

/// Options reaching `server`, with the smallest parts S3 allows so that the
/// contract's 13 MiB snapshot is a multipart upload of three parts.
fn options(server: &S3Server) -> S3Options {
    S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some(server.region.clone()),
        allow_http: true,
        part_size: Some(5 << 20),
        credentials: Some((server.access_key.clone(), server.secret_key.clone())),
        ..Default::default()
    }
}

#[test]
fn the_s3_repository_keeps_the_contract_on_each_server() {
    let rt = dbsnap_test_support::runtime();
    let _in = rt.enter();
    for kind in KINDS {
        let server = S3Server::start(kind);
        server.create_bucket("backups");
        let n = std::cell::Cell::new(0);
        let opts = options(&server);
        dbsnap_storage::contract::check(&|| {
            n.set(n.get() + 1);
            let url = format!("s3://backups/platform/repo{}", n.get());
            Box::new(S3Repository::with_options(&url, &opts).unwrap())
        });
        eprintln!("{kind:?}: contract kept");
    }
}

#[test]
fn a_missing_bucket_wrong_credentials_and_a_dead_endpoint_each_say_so() {
    let rt = dbsnap_test_support::runtime();
    let _in = rt.enter();
    let mut server = S3Server::start(S3Kind::S3sFs);
    let repo = S3Repository::with_options("s3://nosuch/x", &options(&server)).unwrap();
    match repo.list() {
        Err(StorageError::NoBucket(l)) => assert_eq!(l, "s3://nosuch/x"),
        other => panic!("missing bucket: {other:?}"),
    }
    server.create_bucket("backups");
    let mut wrong = options(&server);
    wrong.credentials = Some((server.access_key.clone(), "not-the-secret".into()));
    let refused = S3Repository::with_options("s3://backups/x", &wrong).unwrap();
    let text = refused.list().expect_err("a wrong secret").to_string();
    assert!(text.contains("refused the credentials"), "{text}");
    server.kill();
    let e = repo.list().expect_err("a dead endpoint lists nothing");
    let text = e.to_string();
    assert!(
        text.contains("s3://nosuch/x") && text.contains("cannot be reached"),
        "{text}"
    );
}

#[test]
fn a_server_killed_mid_upload_leaves_no_snapshot_and_the_next_sweep_aborts_the_upload() {
    let rt = dbsnap_test_support::runtime();
    let _in = rt.enter();
    let mut server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("backups");
    let repo = S3Repository::with_options("s3://backups/p", &options(&server)).unwrap();
    let mut w = repo.begin("a.tar").unwrap();
    w.write_all(&vec![7u8; 11 << 20]).unwrap();
    server.kill();
    let mut failed = None;
    for _ in 0..4 {
        if let Err(e) = w.write_all(&vec![8u8; 5 << 20]) {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => {
            // The writer gives up: its abort cannot reach the server.
            drop(w);
            e.to_string()
        }
        None => w.commit().expect_err("commit to a dead server").to_string(),
    };
    assert!(e.contains("s3://backups/p/a.tar"), "{e}");
    server.restart();
    assert!(
        !server.open_uploads().is_empty(),
        "the upload should still be open on the server"
    );
    assert!(
        repo.list().unwrap().is_empty(),
        "an interrupted upload is listed"
    );
    let stale = repo.stale().unwrap();
    assert!(
        stale
            .iter()
            .any(|s| s.contains("unfinished upload of a.tar")),
        "{stale:?}"
    );
    repo.remove_stale().unwrap();
    assert!(repo.stale().unwrap().iter().all(|s| !s.contains("a.tar")));
    assert_eq!(server.open_uploads(), Vec::<String>::new());
    // The name is free again.
    let mut w = repo.begin("a.tar").unwrap();
    w.write_all(&vec![1u8; 12 << 20]).unwrap();
    w.commit().unwrap();
    let mut back = Vec::new();
    repo.open("a.tar").unwrap().read_to_end(&mut back).unwrap();
    assert!(back.len() == 12 << 20 && back.iter().all(|&b| b == 1));
}

#[test]
fn requests_run_on_the_application_runtime_and_storage_starts_none() {
    // Outside a runtime there is nothing to run requests on: refused, not
    // a runtime of storage's own.
    let outside = S3Repository::with_options("s3://backups/x", &S3Options::default());
    match outside {
        Err(StorageError::Config(m)) => assert!(m.contains("runtime"), "{m}"),
        other => panic!("opened outside a runtime: {other:?}"),
    }
    // From async code on the application's runtime, a call works and the
    // worker is not stalled: a task spawned beside it still runs.
    let server = S3Server::start(S3Kind::S3sFs);
    server.create_bucket("backups");
    let rt = dbsnap_test_support::runtime();
    let opts = options(&server);
    let listed = rt.block_on(async move {
        let beside = tokio::spawn(async { 7 });
        let repo = S3Repository::with_options("s3://backups/x", &opts).unwrap();
        let listed = repo.list().map(|l| l.len());
        (listed, beside.await.unwrap())
    });
    assert_eq!(listed.1, 7);
    assert_eq!(listed.0.unwrap(), 0);
}
