//! The connection seam: create and restore reach every database through
//! the resolver they are given (here one that knows databases by alias,
//! as a port-forward or a jump-pod route would), and a restore journal
//! records the route so that recovery cannot take another one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dbsnap_core::create::{self, CreateOptions, NoProgress, Progress};
use dbsnap_core::restore::{self, recover, RestoreOptions};
use dbsnap_core::Resolver;
use dbsnap_pg::endpoint::Connecting;
use dbsnap_pg::process::Tool;
use dbsnap_pg::{ConnInfo, PgError, PgErrorKind};
use dbsnap_test_support::Cluster;

/// Knows databases by alias only; records every name it was asked for.
#[derive(Debug)]
struct Aliases {
    urls: BTreeMap<String, String>,
    asked: Mutex<Vec<String>>,
    /// Connections opened and client programs pointed through this route.
    connections: AtomicUsize,
    programs: AtomicUsize,
}

impl Resolver for Aliases {
    fn route(&self) -> &str {
        "alias"
    }

    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError> {
        self.asked.lock().unwrap().push(named.to_string());
        let url = self.urls.get(named).ok_or_else(|| {
            PgError::new(
                PgErrorKind::Config,
                format!("no database is known as {named}"),
            )
        })?;
        ConnInfo::resolve(url).map_err(PgError::from)
    }

    fn connect<'a>(&'a self, info: &'a ConnInfo) -> Connecting<'a> {
        self.connections.fetch_add(1, Ordering::SeqCst);
        Box::pin(dbsnap_pg::connect(info))
    }

    fn prepare_tool(&self, tool: &mut Tool, info: &ConnInfo, tag: &str) -> Result<(), PgError> {
        self.programs.fetch_add(1, Ordering::SeqCst);
        tool.connect(info, tag).map(|_| ())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_and_restore_reach_databases_only_through_the_resolver() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("DBSNAP_HOME", home.path());
    let cluster = Cluster::start(15);
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, false); \
         CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g",
    );
    let aliases = Arc::new(Aliases {
        urls: BTreeMap::from([
            ("app@platform".to_string(), cluster.url("app")),
            ("server@platform".to_string(), cluster.url("postgres")),
        ]),
        asked: Mutex::new(Vec::new()),
        connections: AtomicUsize::new(0),
        programs: AtomicUsize::new(0),
    });
    let repo = dbsnap_core::Location::directory(home.path().join("snapshots")).repository();
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let created = create::create(
        &CreateOptions {
            databases: vec!["app@platform".into()],
            resolver: aliases.clone(),
            resolved: Vec::new(),
            target: None,
            kubernetes: None,
            crypto: dbsnap_core::crypt::Crypto::none(),
            prefix: "route".into(),
            safety_for: None,
            consistency: dbsnap_archive::snapshot::ConsistencyMethod::Snapshot,
            repo: repo.clone(),
            pg_bin: vec![cluster.bin_dir().to_path_buf()],
            hooks: Default::default(),
            compress: None,
            jobs: None,
            engine: Default::default(),
            version_spec: Default::default(),
            version_specs: BTreeMap::new(),
            limits: Default::default(),
            extra_members: Vec::new(),
        },
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(*aliases.asked.lock().unwrap(), vec!["app@platform"]);
    // Its own connection and pg_dump both went through the route.
    assert!(aliases.connections.load(Ordering::SeqCst) >= 1);
    assert_eq!(aliases.programs.load(Ordering::SeqCst), 1);

    cluster.psql("app", "DELETE FROM t WHERE id > 10");
    let opts = RestoreOptions {
        file: created.file.clone(),
        databases: vec!["app@platform".into()],
        targets: BTreeMap::new(),
        restore_target: None,
        kubernetes: None,
        into_other_origin: false,
        crypto: dbsnap_core::crypt::Crypto::none(),
        only: Vec::new(),
        map: BTreeMap::new(),
        drop: false,
        create: false,
        no_owner: false,
        no_privileges: false,
        allow_downgrade: false,
        password_prompt: None,
        keep_safety_snapshots: dbsnap_core::retention::DEFAULT_KEEP_SAFETY_SNAPSHOTS,
        create_roles: false,
        jobs: 1,
        engine: Default::default(),
        no_safety_snapshot: false,
        resolver: aliases.clone(),
        lock_timeout: std::time::Duration::from_secs(30),
        safety_repo: repo.clone(),
        hooks: Default::default(),
        pg_bin: vec![cluster.bin_dir().to_path_buf()],
        checks: Vec::new(),
        version_spec: Default::default(),
        version_specs: BTreeMap::new(),
    };
    let plan = restore::plan(&opts, progress.as_ref()).await.unwrap();
    let done = restore::execute(&plan, &opts, &progress).await.unwrap();
    assert_eq!(cluster.psql("app", "SELECT count(*) FROM t").trim(), "100");
    // The safety snapshot went the same way: nothing was resolved directly.
    assert!(done.safety_snapshot.is_some());
    assert_eq!(
        aliases.programs.load(Ordering::SeqCst),
        2,
        "the safety snapshot's pg_dump"
    );
    assert!(aliases
        .asked
        .lock()
        .unwrap()
        .iter()
        .all(|n| n == "app@platform"));

    // The journal records the route; recovery by another route is refused.
    let journal = std::fs::read_to_string(
        home.path()
            .join("state")
            .join(format!("restore-{}.json", done.id)),
    )
    .unwrap();
    assert!(journal.contains("\"route\": \"alias\""), "{journal}");
    let locations = dbsnap_core::Locations::default();
    let direct = recover::Access {
        locations: &locations,
        resolver: &dbsnap_core::DIRECT,
        creds: &[],
    };
    let cleaned = recover::cleanup(direct, &repo, false, true).await.unwrap();
    assert!(
        cleaned.kept.is_empty() && cleaned.failed.is_empty(),
        "another route's servers were visited"
    );
}
