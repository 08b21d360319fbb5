//! A real S3 client (object_store) for the bucket-backup tests: puts,
//! reads and deletes objects the way any other program would.
#![allow(dead_code)]

use std::collections::BTreeMap;

use dbsnap_test_support::s3::S3Server;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::ObjectStore;

pub struct Client {
    rt: tokio::runtime::Runtime,
    server_env: Vec<(&'static str, String)>,
}

impl Client {
    pub fn new(server: &S3Server) -> Client {
        Client {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            server_env: server.env(),
        }
    }

    pub fn store(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        let env = |k: &str| {
            self.server_env
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(env("AWS_ENDPOINT_URL"))
            .with_access_key_id(env("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(env("AWS_SECRET_ACCESS_KEY"))
            .with_region(env("AWS_REGION"))
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let s = self.store(bucket);
        let bytes = bytes.to_vec();
        self.rt
            .block_on(s.put(&Key::from(key), bytes.into()))
            .unwrap();
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        let s = self.store(bucket);
        self.rt.block_on(s.delete(&Key::from(key))).unwrap();
    }

    /// Every object under `prefix` of `bucket`, keys relative to it.
    pub fn objects(&self, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        let s = self.store(bucket);
        self.rt.block_on(async {
            let p = Key::from(prefix);
            let listed: Vec<_> = s
                .list((!prefix.is_empty()).then_some(&p))
                .try_collect()
                .await
                .unwrap();
            let mut out = BTreeMap::new();
            for m in listed {
                let bytes = s.get(&m.location).await.unwrap().bytes().await.unwrap();
                let key = m.location.as_ref().to_string();
                let rel = key
                    .strip_prefix(&format!("{prefix}/"))
                    .unwrap_or(&key)
                    .to_string();
                out.insert(rel, bytes.to_vec());
            }
            out
        })
    }
}

impl Client {
    /// One object's bytes, None when there is none.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.store(bucket);
        self.rt.block_on(async {
            match s.get(&Key::from(key)).await {
                Ok(g) => Some(g.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("get {bucket}/{key}: {e}"),
            }
        })
    }
}
