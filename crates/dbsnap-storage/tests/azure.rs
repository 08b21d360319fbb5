//! The object store repository on Azure Blob Storage, against a real
//! Azurite server: the same repository contract as the local directory
//! and S3 (listing, streamed multipart writes invisible until commit,
//! ranges, pins, no overwrite, stale uploads swept).

use dbsnap_storage::s3::{S3Options, S3Repository};
use dbsnap_storage::{Repository, StorageError};
use dbsnap_test_support::azure::{Azurite, ACCOUNT};

fn options(server: &Azurite) -> S3Options {
    let key = server
        .env()
        .into_iter()
        .find(|(k, _)| *k == "AZURE_STORAGE_ACCOUNT_KEY")
        .map(|(_, v)| v)
        .unwrap();
    S3Options {
        allow_http: true,
        part_size: Some(5 << 20),
        credentials: Some((ACCOUNT.to_string(), key)),
        azure_emulator: Some(server.endpoint.clone()),
        ..Default::default()
    }
}

#[test]
fn the_repository_keeps_the_contract_on_azurite() {
    let rt = dbsnap_test_support::runtime();
    let _in = rt.enter();
    let server = Azurite::start();
    server.create_container("backups");
    let n = std::cell::Cell::new(0);
    let opts = options(&server);
    dbsnap_storage::contract::check(&|| {
        n.set(n.get() + 1);
        let url = format!("az://backups/platform/repo{}", n.get());
        Box::new(S3Repository::with_options(&url, &opts).unwrap())
    });
    let missing = S3Repository::with_options("az://nosuch/x", &opts).unwrap();
    match missing.list() {
        Err(StorageError::NoBucket(l)) => assert_eq!(l, "az://nosuch/x"),
        other => panic!("missing container: {other:?}\n{}", server.log()),
    }
}
