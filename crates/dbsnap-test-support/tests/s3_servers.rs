//! The S3 servers of the harness, checked with a real client
//! (`object_store`, the crate dbsnap's S3 repository is built on): objects
//! go in and come back whole and by range, list, multipart uploads
//! complete and abort, and both refuse a request signed with the wrong
//! secret.

use dbsnap_test_support::s3::{S3Server, KINDS};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

fn client(server: &S3Server, bucket: &str, secret: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_allow_http(true)
        .with_region(&server.region)
        .with_bucket_name(bucket)
        .with_access_key_id(&server.access_key)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("client")
}

#[tokio::test]
async fn each_server_stores_lists_ranges_and_uploads_in_parts() {
    for kind in KINDS {
        let server = S3Server::start(kind);
        server.create_bucket("backups");
        let s3 = client(&server, "backups", &server.secret_key);
        let small = Path::from("platform/small.tar");
        s3.put(&small, PutPayload::from_static(b"hello, bucket"))
            .await
            .unwrap_or_else(|e| panic!("{kind:?} put: {e}\n{}", server.log()));
        let got = s3.get(&small).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"hello, bucket", "{kind:?}");
        let range = s3.get_range(&small, 7..13).await.unwrap();
        assert_eq!(&range[..], b"bucket", "{kind:?}");

        // Three parts (5 MiB, the S3 minimum, twice, then the rest).
        let big = Path::from("platform/big.tar");
        let data: Vec<u8> = (0..11 << 20).map(|i: u32| (i % 251) as u8).collect();
        let upload = s3.put_multipart(&big).await.unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
        for chunk in data.chunks(1 << 20) {
            w.write(chunk);
        }
        w.finish()
            .await
            .unwrap_or_else(|e| panic!("{kind:?} multipart: {e}\n{}", server.log()));
        let back = s3.get(&big).await.unwrap().bytes().await.unwrap();
        assert!(back[..] == data[..], "{kind:?}: multipart object differs");

        // An aborted upload leaves no object.
        let aborted = Path::from("platform/aborted.tar");
        let mut upload = s3.put_multipart(&aborted).await.unwrap();
        upload
            .put_part(PutPayload::from(vec![7u8; 5 << 20]))
            .await
            .unwrap();
        upload.abort().await.unwrap();

        let mut names: Vec<String> = s3
            .list(Some(&Path::from("platform")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        assert_eq!(
            names,
            ["platform/big.tar", "platform/small.tar"],
            "{kind:?}"
        );
        s3.delete(&small).await.unwrap();
        assert!(
            s3.head(&small).await.is_err(),
            "{kind:?}: deleted object still there"
        );

        let wrong = client(&server, "backups", "not-the-secret");
        let refused = wrong.get(&big).await;
        assert!(refused.is_err(), "{kind:?} accepted a wrong signature");
    }
}
